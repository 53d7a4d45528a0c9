//! The answer form behind the emailed link: `GET /s/<token>` shows it, `POST /s/<token>`
//! (application/x-www-form-urlencoded: `score`, `comment`) records the answer.
//!
//! Plain server-rendered HTML: no JavaScript, no external assets, labelled controls, a fieldset
//! with a legend for the 0-10 radio scale, an error summary linking to the fields. Everything
//! echoed back (the comment above all) goes through [`escape`](jetmart_kit::html::escape). The token sits in the URL, so
//! pages are not cached and send no referrer; the token is never logged.
//!
//! Status codes: 200 form or thank-you page; 400 the form again with the errors; 404 unknown
//! link; 409 already answered; 410 expired; 413 body far beyond the comment limit; 415 not a
//! form post; 503 storage unavailable. Refusals change nothing.

use axum::Router;
use axum::extract::rejection::{FormRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Form, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use jetmart_kit::html::escape;
use serde::Deserialize;

use crate::domain::TokenError;
use crate::error::{ApiError, FieldViolation};
use crate::store::SurveyRecord;
use crate::surveys::{AnswerInput, ScoreInput, Surveys};

const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The routes, to serve beside the ops endpoints (`Service::pages`).
pub fn router(surveys: Surveys) -> Router {
    // Room for a maximal comment of 4-byte characters, each percent-encoded, plus the score.
    let limit = surveys.max_comment_chars() * 4 * 3 + 1024;
    Router::new()
        .route("/s/{token}", get(show).post(answer))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(surveys)
}

#[derive(Debug, Deserialize)]
struct AnswerForm {
    score: Option<String>,
    comment: Option<String>,
}

async fn show(
    State(surveys): State<Surveys>,
    token: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(token)) = token else {
        return refusal(ApiError::Token(TokenError::Malformed));
    };
    match surveys.open(&token).await {
        Ok(_) => page(
            StatusCode::OK,
            form_page(&FormView::blank(surveys.max_comment_chars())),
        ),
        Err(e) => refusal(e),
    }
}

async fn answer(
    State(surveys): State<Surveys>,
    token: Result<Path<String>, PathRejection>,
    form: Result<Form<AnswerForm>, FormRejection>,
) -> Response {
    let Ok(Path(token)) = token else {
        return refusal(ApiError::Token(TokenError::Malformed));
    };
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => return unreadable(&surveys, &token, &rejection).await,
    };
    let input = AnswerInput {
        score: ScoreInput::from_form(form.score.as_deref()),
        comment: form.comment.clone(),
    };
    match surveys.submit(&token, &input).await {
        Ok((_, record)) => page(StatusCode::OK, thank_you_page(&record)),
        Err(ApiError::Invalid(errors)) => {
            let view = FormView {
                score: match input.score {
                    ScoreInput::Given(n) if (0..=10).contains(&n) => Some(n),
                    _ => None,
                },
                comment: form.comment.as_deref().unwrap_or_default(),
                errors: &errors,
                max_comment_chars: surveys.max_comment_chars(),
            };
            page(StatusCode::BAD_REQUEST, form_page(&view))
        }
        Err(e) => refusal(e),
    }
}

/// A POST whose body is not a readable form: the link's own problem first, then the body's.
async fn unreadable(surveys: &Surveys, token: &str, rejection: &FormRejection) -> Response {
    if let Err(e) = surveys.open(token).await {
        return refusal(e);
    }
    let status = rejection.status();
    let problem = match status {
        StatusCode::PAYLOAD_TOO_LARGE => format!(
            "is far too long: at most {} characters",
            surveys.max_comment_chars()
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            "could not be read: send the form as application/x-www-form-urlencoded".to_owned()
        }
        _ => "could not be read: please fill in the form again".to_owned(),
    };
    let field = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "comment"
    } else {
        "score"
    };
    let errors = [FieldViolation::new(field, problem)];
    let view = FormView {
        errors: &errors,
        ..FormView::blank(surveys.max_comment_chars())
    };
    page(status, form_page(&view))
}

/// The page for a link that cannot be answered, or a failure.
fn refusal(e: ApiError) -> Response {
    let (status, title, text) = match &e {
        ApiError::Token(TokenError::Malformed | TokenError::Unknown) | ApiError::NotFound(_) => (
            StatusCode::NOT_FOUND,
            "Survey not found",
            "This survey link is not valid. Please check that you copied the whole link from the email.",
        ),
        ApiError::Token(TokenError::AlreadyUsed { .. }) => (
            StatusCode::CONFLICT,
            "Already answered",
            "This survey has already been answered. Thank you for your feedback!",
        ),
        ApiError::Token(TokenError::Expired { .. }) => (
            StatusCode::GONE,
            "Survey closed",
            "This survey link has expired, so it no longer accepts answers.",
        ),
        ApiError::Invalid(_) => (
            StatusCode::BAD_REQUEST,
            "Something is missing",
            "The answer could not be read. Please go back and try again.",
        ),
        ApiError::Store(store) => {
            if store.is_unavailable() {
                tracing::warn!(error = %store, "survey store unavailable");
            } else {
                tracing::error!(error = %store, "survey store failure");
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "We could not handle your answer just now. Nothing was recorded; please try again in a moment.",
            )
        }
    };
    let body = format!("<h1>{}</h1>\n<p>{}</p>\n", escape(title), escape(text));
    page(status, layout(title, &body))
}

fn page(status: StatusCode, html: String) -> Response {
    let mut response = (status, Html(html)).into_response();
    let headers = response.headers_mut();
    for (name, value) in [
        (header::CACHE_CONTROL, "no-store"),
        // The token is in the URL: never hand it to another site.
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, CSP),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
    response
}

fn layout(title: &str, body: &str) -> String {
    format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title} – jetmart</title>
<style>
body {{ font-family: system-ui, sans-serif; line-height: 1.5; margin: 0; padding: 1rem; color: #1b1b1b; background: #fff; }}
main {{ max-width: 40rem; margin: 0 auto; }}
fieldset {{ border: 1px solid #767676; padding: 1rem; margin: 0 0 1.5rem; }}
legend {{ font-weight: bold; padding: 0 .25rem; }}
.scale {{ display: flex; flex-wrap: wrap; gap: .5rem; margin-top: .5rem; }}
.scale label {{ display: inline-flex; align-items: center; gap: .25rem; min-width: 2.75rem; min-height: 2.75rem; padding: 0 .5rem; border: 1px solid #767676; border-radius: .25rem; cursor: pointer; }}
.hint {{ color: #505050; margin: .25rem 0; }}
.error {{ color: #b00020; font-weight: bold; margin: .25rem 0; }}
.summary {{ border: 3px solid #b00020; padding: .5rem 1rem; margin-bottom: 1.5rem; }}
.summary a {{ color: #b00020; }}
label[for=comment] {{ display: block; font-weight: bold; }}
textarea {{ width: 100%; box-sizing: border-box; font: inherit; }}
button {{ font: inherit; padding: .5rem 1.5rem; margin-top: 1rem; }}
blockquote {{ white-space: pre-wrap; border-left: 4px solid #767676; margin: 0; padding-left: 1rem; }}
:focus {{ outline: 3px solid #005fcc; outline-offset: 2px; }}
</style>
</head>
<body>
<main>
{body}</main>
</body>
</html>
"#,
        title = escape(title),
    )
}

/// What the form shows: the previous answer and its errors when re-shown.
struct FormView<'a> {
    score: Option<i64>,
    comment: &'a str,
    errors: &'a [FieldViolation],
    max_comment_chars: usize,
}

impl FormView<'static> {
    fn blank(max_comment_chars: usize) -> Self {
        FormView {
            score: None,
            comment: "",
            errors: &[],
            max_comment_chars,
        }
    }
}

fn form_page(view: &FormView<'_>) -> String {
    let error_for = |field: &str| {
        view.errors
            .iter()
            .filter(|v| v.field == field)
            .map(message)
            .collect::<Vec<_>>()
    };
    let mut body = String::new();
    body.push_str("<h1>How did we do?</h1>\n");
    if !view.errors.is_empty() {
        body.push_str(
            "<div class=\"summary\" role=\"alert\" tabindex=\"-1\">\n<h2>There is a problem with your answer</h2>\n<ul>\n",
        );
        for v in view.errors {
            let target = if v.field == "comment" {
                "comment"
            } else {
                "score-0"
            };
            body.push_str(&format!(
                "<li><a href=\"#{target}\">{}</a></li>\n",
                escape(&message(v))
            ));
        }
        body.push_str("</ul>\n</div>\n");
    }
    body.push_str("<form method=\"post\" accept-charset=\"utf-8\">\n");

    let score_errors = error_for("score");
    let mut described = String::from("score-hint");
    if !score_errors.is_empty() {
        described.push_str(" score-error");
    }
    body.push_str(&format!(
        "<fieldset aria-describedby=\"{described}\">\n<legend>How likely are you to recommend jetmart to a friend or colleague? (required)</legend>\n\
         <p class=\"hint\" id=\"score-hint\">0 means not at all likely, 10 means extremely likely.</p>\n"
    ));
    if !score_errors.is_empty() {
        body.push_str(&format!(
            "<p class=\"error\" id=\"score-error\">Error: {}</p>\n",
            escape(&score_errors.join(" "))
        ));
    }
    body.push_str("<div class=\"scale\">\n");
    for n in 0..=10 {
        let checked = if view.score == Some(n) {
            " checked"
        } else {
            ""
        };
        body.push_str(&format!(
            "<label for=\"score-{n}\"><input type=\"radio\" id=\"score-{n}\" name=\"score\" value=\"{n}\" required{checked}> {n}</label>\n"
        ));
    }
    body.push_str("</div>\n</fieldset>\n");

    let comment_errors = error_for("comment");
    let mut described = String::from("comment-hint");
    if !comment_errors.is_empty() {
        described.push_str(" comment-error");
    }
    body.push_str(&format!(
        "<label for=\"comment\">What is the main reason for your score? (optional)</label>\n\
         <p class=\"hint\" id=\"comment-hint\">At most {max} characters.</p>\n",
        max = view.max_comment_chars
    ));
    if !comment_errors.is_empty() {
        body.push_str(&format!(
            "<p class=\"error\" id=\"comment-error\">Error: {}</p>\n",
            escape(&comment_errors.join(" "))
        ));
    }
    let invalid = if comment_errors.is_empty() {
        ""
    } else {
        " aria-invalid=\"true\""
    };
    // The newline after the start tag is eaten by the parser, so a comment that itself begins
    // with a newline is shown as sent.
    body.push_str(&format!(
        "<textarea id=\"comment\" name=\"comment\" rows=\"6\" maxlength=\"{max}\" aria-describedby=\"{described}\"{invalid}>\n{comment}</textarea>\n",
        max = view.max_comment_chars,
        comment = escape(view.comment),
    ));
    body.push_str("<button type=\"submit\">Send my answer</button>\n</form>\n");
    layout("How did we do?", &body)
}

/// A violation as a sentence for people.
fn message(v: &FieldViolation) -> String {
    let field = match v.field.as_str() {
        "score" => "The score",
        "comment" => "The comment",
        other => other,
    };
    format!("{field} {}.", v.description.trim_end_matches('.'))
}

fn thank_you_page(record: &SurveyRecord) -> String {
    let mut body = String::from("<h1>Thank you!</h1>\n");
    if let Some(r) = &record.response {
        body.push_str(&format!(
            "<p>We recorded your score of {} out of 10.</p>\n",
            r.score.value()
        ));
        if let Some(comment) = &r.comment {
            body.push_str(&format!(
                "<p>Your comment:</p>\n<blockquote>{}</blockquote>\n",
                escape(comment)
            ));
        }
    }
    body.push_str("<p>Your feedback helps us improve. You can close this page now.</p>\n");
    layout("Thank you", &body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_is_accessible_and_echoes_escaped() {
        let errors = [FieldViolation::new("score", "is required")];
        let html = form_page(&FormView {
            score: None,
            comment: "</textarea><img src=x onerror=alert(1)>",
            errors: &errors,
            max_comment_chars: 500,
        });
        assert!(html.contains("<fieldset aria-describedby=\"score-hint score-error\">"));
        assert!(html.contains("<legend>"));
        assert_eq!(html.matches("type=\"radio\"").count(), 11);
        for n in 0..=10 {
            assert!(html.contains(&format!("<label for=\"score-{n}\">")));
        }
        assert!(html.contains("maxlength=\"500\""));
        assert!(html.contains("role=\"alert\""));
        assert!(html.contains("The score is required."));
        assert!(html.contains("&lt;/textarea&gt;&lt;img src=x onerror=alert(1)&gt;</textarea>"));
        assert!(!html.contains("<img"));
        assert!(!html.contains("<script"));
        assert!(!html.contains("http"), "no external assets");
    }

    #[test]
    fn a_valid_previous_score_stays_checked() {
        let html = form_page(&FormView {
            score: Some(7),
            ..FormView::blank(10)
        });
        assert!(html.contains("value=\"7\" required checked>"));
        assert_eq!(html.matches(" checked").count(), 1);
    }
}
