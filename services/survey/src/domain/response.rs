//! Validation of a survey answer: a 0-10 score and an optional comment.
//!
//! The comment is plain text. It is stored exactly as normalized here (line endings unified,
//! surrounding whitespace trimmed) and never interpreted: markup such as `<b>` stays literal
//! text, and whatever displays it must escape it. Control characters other than newline and
//! tab are refused (Postgres text cannot even hold NUL).

use super::nps::Score;

/// Default longest comment, in characters.
pub const DEFAULT_MAX_COMMENT_CHARS: usize = 2_000;

/// An answer as received from the form or gRPC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResponseInput {
    pub score: i64,
    /// Empty or whitespace-only means no comment.
    pub comment: Option<String>,
}

/// A valid answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidResponse {
    pub score: Score,
    /// Trimmed, `\n` line endings, at most the configured number of characters.
    pub comment: Option<String>,
}

/// One problem with an answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResponseViolation {
    #[error("score must be between 0 and 10, got {score}")]
    ScoreOutOfRange { score: i64 },
    #[error("comment must be at most {max_chars} characters, got {actual_chars}")]
    CommentTooLong {
        max_chars: usize,
        actual_chars: usize,
    },
    #[error("comment contains control characters")]
    CommentHasControlCharacters,
}

impl ResponseViolation {
    /// The input field at fault (`score` or `comment`).
    pub fn field(&self) -> &'static str {
        match self {
            ResponseViolation::ScoreOutOfRange { .. } => "score",
            ResponseViolation::CommentTooLong { .. }
            | ResponseViolation::CommentHasControlCharacters => "comment",
        }
    }
}

/// Validates an answer, reporting every problem.
pub fn validate_response(
    input: &ResponseInput,
    max_comment_chars: usize,
) -> Result<ValidResponse, Vec<ResponseViolation>> {
    let mut violations = Vec::new();
    let score = Score::new(input.score);
    if score.is_none() {
        violations.push(ResponseViolation::ScoreOutOfRange { score: input.score });
    }
    let comment = input
        .comment
        .as_deref()
        .map(normalize)
        .filter(|c| !c.is_empty());
    if let Some(c) = &comment {
        if c.chars()
            .any(|ch| ch.is_control() && ch != '\n' && ch != '\t')
        {
            violations.push(ResponseViolation::CommentHasControlCharacters);
        }
        let actual_chars = c.chars().count();
        if actual_chars > max_comment_chars {
            violations.push(ResponseViolation::CommentTooLong {
                max_chars: max_comment_chars,
                actual_chars,
            });
        }
    }
    match score {
        Some(score) if violations.is_empty() => Ok(ValidResponse { score, comment }),
        _ => Err(violations),
    }
}

/// Browsers send textarea newlines as CRLF; store `\n` and no surrounding whitespace.
fn normalize(comment: &str) -> String {
    comment
        .replace("\r\n", "\n")
        .replace('\r', "\n")
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn input(score: i64, comment: Option<&str>) -> ResponseInput {
        ResponseInput {
            score,
            comment: comment.map(str::to_owned),
        }
    }

    #[test]
    fn accepts_scores_zero_to_ten() {
        for s in 0..=10 {
            let r = validate_response(&input(s, None), 10).unwrap();
            assert_eq!(i64::from(r.score.value()), s);
            assert_eq!(r.comment, None);
        }
    }

    #[test]
    fn refuses_scores_out_of_range() {
        for s in [-1, 11, i64::MIN, i64::MAX] {
            let v = validate_response(&input(s, None), 10).unwrap_err();
            assert_eq!(v, [ResponseViolation::ScoreOutOfRange { score: s }]);
            assert_eq!(v[0].field(), "score");
        }
    }

    #[test]
    fn comment_is_kept_as_plain_text() {
        let r = validate_response(
            &input(
                9,
                Some("  <script>alert('x')</script>\r\nGreat & fast\r\n "),
            ),
            100,
        )
        .unwrap();
        assert_eq!(
            r.comment.as_deref(),
            Some("<script>alert('x')</script>\nGreat & fast")
        );
        assert_eq!(
            validate_response(&input(9, Some(" \r\n ")), 100)
                .unwrap()
                .comment,
            None
        );
    }

    #[test]
    fn comment_length_counts_characters_after_normalizing() {
        assert!(validate_response(&input(5, Some(&"é".repeat(10))), 10).is_ok());
        let v = validate_response(&input(5, Some(&"é".repeat(11))), 10).unwrap_err();
        assert_eq!(
            v,
            [ResponseViolation::CommentTooLong {
                max_chars: 10,
                actual_chars: 11
            }]
        );
        assert!(validate_response(&input(5, Some("   12345   ")), 5).is_ok());
    }

    #[test]
    fn reports_every_problem() {
        let v = validate_response(&input(12, Some("bad\0byte")), 3).unwrap_err();
        assert_eq!(
            v,
            [
                ResponseViolation::ScoreOutOfRange { score: 12 },
                ResponseViolation::CommentHasControlCharacters,
                ResponseViolation::CommentTooLong {
                    max_chars: 3,
                    actual_chars: 8
                },
            ]
        );
        assert_eq!(v[1].field(), "comment");
    }

    proptest! {
        /// Accepted answers respect every rule; and validation never alters the text beyond
        /// line endings and trimming.
        #[test]
        fn accepted_answers_respect_the_rules(score in -5i64..15, comment in proptest::option::of(".{0,40}")) {
            match validate_response(&input(score, comment.as_deref()), 30) {
                Ok(r) => {
                    prop_assert!((0..=10).contains(&score));
                    if let Some(c) = r.comment {
                        prop_assert!(c.chars().count() <= 30);
                        prop_assert!(!c.is_empty() && c.trim() == c);
                        prop_assert!(!c.contains('\r'));
                        let original = comment.unwrap_or_default().replace("\r\n", "\n").replace('\r', "\n");
                        prop_assert_eq!(original.trim(), c.as_str());
                    }
                }
                Err(v) => prop_assert!(!v.is_empty()),
            }
        }
    }
}
