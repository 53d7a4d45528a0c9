//! Answering surveys over HTTP (the emailed link) and gRPC against real NATS and Postgres:
//! the happy path end to end, and every bad input refused with its documented answer while
//! changing nothing.

mod support;

use jetmart_proto::survey::v1::get_survey_request::Lookup;
use jetmart_proto::survey::v1::{
    GetNpsSummaryRequest, GetSurveyRequest, SubmitResponseRequest, SurveyStatus,
};
use sha2::{Digest, Sha256};
use support::*;
use tonic::Code;
use tonic_types::StatusExt;

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn assert_page_headers(r: &HttpResponse) {
    assert_eq!(r.header("content-type"), "text/html; charset=utf-8");
    assert_eq!(r.header("cache-control"), "no-store");
    assert_eq!(r.header("referrer-policy"), "no-referrer");
    assert!(
        r.header("content-security-policy")
            .contains("default-src 'none'")
    );
    assert!(!r.body.contains("<script"), "no JavaScript");
}

#[tokio::test]
async fn an_eligible_orders_link_shows_the_form_and_posting_records_the_answer() {
    let mut s = start(&[]).await;
    let order = Order::new("ada", "EUR", 2_500, day(0));
    let sent = publish_orders(&s.infra.js, std::slice::from_ref(&order)).await;
    settle(&s.infra, std::slice::from_ref(&order)).await;
    let js = &s.infra.js;
    wait_until("survey.requested", WAIT, || async move {
        requested(js).await.len() == 1
    })
    .await;
    let (msg, invitation) = requested(js).await.remove(0);
    assert_eq!(invitation.order_id, order.id.to_string());
    assert_eq!(
        msg.header("jetmart-correlation-id"),
        sent[0].id.to_string(),
        "same saga as the order"
    );
    let token = invitation.token.clone();
    assert!(token.len() == 64 && token.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(invitation.link, format!("{PUBLIC_URL}/s/{token}"));

    // Only the token's hash is stored; once published, the event leaves the outbox too.
    let pool = &s.infra.pool;
    let stored: String = sqlx::query_scalar("SELECT token_hash FROM survey_invitations")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored, sha256_hex(&token));
    let tok = token.clone();
    wait_until("token gone from the outbox", WAIT, || {
        let tok = tok.clone();
        async move {
            let n: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jetmart_outbox WHERE position(convert_to($1, 'UTF8') in payload) > 0",
            )
            .bind(tok)
            .fetch_one(pool)
            .await
            .unwrap();
            n == 0
        }
    })
    .await;
    let everything: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(t)::text FROM survey_invitations t
         UNION ALL SELECT row_to_json(t)::text FROM survey_orders t
         UNION ALL SELECT row_to_json(t)::text FROM survey_customers t",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(everything.iter().all(|row| !row.contains(&token)));

    // Follow the link: the form.
    let path = path_of(&invitation.link);
    let form = get(s.app.http, &path).await.unwrap();
    assert_eq!(form.status, 200, "{}", form.body);
    assert_page_headers(&form);
    let html = &form.body;
    assert!(html.contains("<html lang=\"en\">"));
    assert!(html.contains("<form method=\"post\""));
    assert!(html.contains("<fieldset") && html.contains("<legend>"));
    assert_eq!(html.matches("type=\"radio\" id=\"score-").count(), 11);
    for n in 0..=10 {
        assert!(
            html.contains(&format!("<label for=\"score-{n}\">")),
            "label {n}"
        );
    }
    assert!(html.contains("<label for=\"comment\">"));
    assert!(html.contains("<textarea id=\"comment\" name=\"comment\""));
    assert!(html.contains("maxlength=\"2000\""));
    assert!(
        !html.contains("src=") && !html.contains("<link"),
        "no external assets"
    );

    // Answer it.
    let done = post_form(
        s.app.http,
        &path,
        &[("score", "9"), ("comment", "Fast delivery\r\nthanks")],
    )
    .await;
    assert_eq!(done.status, 200, "{}", done.body);
    assert_page_headers(&done);
    assert!(done.body.contains("Thank you"));
    assert!(done.body.contains("score of 9 out of 10"));
    wait_until("survey.completed", WAIT, || async move {
        completed(js).await.len() == 1
    })
    .await;
    let (msg, answer) = completed(js).await.remove(0);
    assert_eq!(
        msg.subject,
        format!("survey.completed.{}", invitation.survey_id)
    );
    assert_eq!(msg.header("ce-source"), "survey");
    assert_eq!(msg.header("jetmart-correlation-id"), sent[0].id.to_string());
    assert_eq!(answer.survey_id, invitation.survey_id);
    assert_eq!(answer.order_id, order.id.to_string());
    assert_eq!(answer.customer_id, "ada");
    assert_eq!(answer.score, 9);
    assert_eq!(answer.comment, "Fast delivery\nthanks");

    // Read it back over gRPC.
    let by_id = s
        .app
        .grpc
        .get_survey(GetSurveyRequest {
            lookup: Some(Lookup::SurveyId(invitation.survey_id.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    assert_eq!(by_id.status(), SurveyStatus::Completed);
    assert_eq!(by_id.score, Some(9));
    assert_eq!(by_id.comment, "Fast delivery\nthanks");
    assert_eq!(
        by_id.link, "",
        "the link needs the token, which is not stored"
    );
    assert!(by_id.completed_at.is_some());
    let by_token = s
        .app
        .grpc
        .get_survey(GetSurveyRequest {
            lookup: Some(Lookup::Token(token.clone())),
        })
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    assert_eq!(by_token.survey_id, invitation.survey_id);
    assert_eq!(by_token.link, invitation.link);
    let nps = s
        .app
        .grpc
        .get_nps_summary(GetNpsSummaryRequest {})
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(
        (
            nps.promoters,
            nps.passives,
            nps.detractors,
            nps.responses,
            nps.requested
        ),
        (1, 0, 0, 1, 1)
    );
    assert_eq!(nps.nps, 100.0);

    // The link is spent.
    let again = get(s.app.http, &path).await.unwrap();
    assert_eq!(again.status, 409);
    assert!(again.body.contains("already been answered"));
    let repost = post_form(s.app.http, &path, &[("score", "2")]).await;
    assert_eq!(repost.status, 409);
    outbox_drained(pool).await;
    assert_eq!(answer_effects(pool).await, (1, 1, 1));
    assert_eq!(completed(js).await.len(), 1);
}

#[tokio::test]
async fn bad_answers_over_http_get_clear_pages_and_change_nothing() {
    let s = start(&["--max-comment-chars", "50"]).await;
    let inv = invite(&s.infra, &["c1", "c2", "c3"]).await;
    let (p1, p2, p3) = (
        path_of(&inv[0].link),
        path_of(&inv[1].link),
        path_of(&inv[2].link),
    );
    let http = s.app.http;
    let pool = &s.infra.pool;

    // Unknown and malformed links.
    let unknown = format!("/s/{}", "0".repeat(64));
    for path in [unknown.as_str(), "/s/not-a-token", "/s/%3Cscript%3E"] {
        let r = get(http, path).await.unwrap();
        assert_eq!(r.status, 404, "{path}");
        assert_page_headers(&r);
        assert!(r.body.contains("not valid"));
        let r = post_form(http, path, &[("score", "5")]).await;
        assert_eq!(r.status, 404, "{path}");
    }

    // Missing score, with markup in the comment: the form again, the comment escaped.
    let markup = "<script>alert('x')</script> & <b>bold</b>";
    let r = post_form(http, &p1, &[("comment", markup)]).await;
    assert_eq!(r.status, 400);
    assert_page_headers(&r);
    assert!(r.body.contains("role=\"alert\""));
    assert!(r.body.contains("The score is required"));
    assert!(
        r.body
            .contains("<fieldset aria-describedby=\"score-hint score-error\">")
    );
    assert!(r.body.contains(
        "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; &lt;b&gt;bold&lt;/b&gt;</textarea>"
    ));
    assert!(!r.body.contains("<b>bold"));

    // Scores out of range or unreadable.
    for (score, says) in [
        ("11", "between 0 and 10, got 11"),
        ("-1", "between 0 and 10, got -1"),
        ("abc", "whole number from 0 to 10"),
        ("", "is required"),
    ] {
        let r = post_form(http, &p1, &[("score", score)]).await;
        assert_eq!(r.status, 400, "score {score:?}");
        assert!(r.body.contains(says), "score {score:?}: {}", r.body);
        assert_eq!(r.body.matches(" checked").count(), 0);
    }

    // An oversized comment: the form again with the valid score kept.
    let long = "é".repeat(51);
    let r = post_form(http, &p1, &[("score", "5"), ("comment", &long)]).await;
    assert_eq!(r.status, 400);
    assert!(
        r.body
            .contains("The comment must be at most 50 characters, got 51")
    );
    assert!(r.body.contains("aria-invalid=\"true\""));
    assert!(r.body.contains("value=\"5\" required checked>"));
    assert!(r.body.contains(&long), "the comment is kept for editing");

    // Not a form, or a body far beyond any comment.
    let r = request(
        http,
        "POST",
        &p1,
        Some("application/json"),
        br#"{"score":5}"#,
    )
    .await
    .unwrap();
    assert_eq!(r.status, 415);
    let huge = format!("score=5&comment={}", "x".repeat(20_000));
    let r = request(
        http,
        "POST",
        &p1,
        Some("application/x-www-form-urlencoded"),
        huge.as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(r.status, 413);
    assert!(r.body.contains("at most 50 characters"));

    // An expired link.
    expire(pool, &inv[1].survey_id).await;
    let r = get(http, &p2).await.unwrap();
    assert_eq!(r.status, 410);
    assert!(r.body.contains("expired"));
    let r = post_form(http, &p2, &[("score", "7")]).await;
    assert_eq!(r.status, 410);

    outbox_drained(pool).await;
    assert_eq!(answer_effects(pool).await, (0, 0, 0), "nothing changed");

    // A valid answer whose comment is markup: stored as text, shown escaped.
    let comment = "<b>hi</b> & \"q\" <img src=x onerror=alert(1)>";
    let r = post_form(http, &p1, &[("score", "3"), ("comment", comment)]).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains(
            "&lt;b&gt;hi&lt;/b&gt; &amp; &quot;q&quot; &lt;img src=x onerror=alert(1)&gt;"
        )
    );
    assert!(!r.body.contains("<b>") && !r.body.contains("<img"));
    let stored: String = sqlx::query_scalar("SELECT comment FROM survey_responses")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(stored, comment, "stored as the text it is");
    let js = &s.infra.js;
    wait_until("survey.completed", WAIT, || async move {
        completed(js).await.len() == 1
    })
    .await;
    assert_eq!(completed(js).await[0].1.comment, comment);

    // Reuse is refused.
    let r = post_form(http, &p1, &[("score", "10")]).await;
    assert_eq!(r.status, 409);

    // Two answers racing on one link: one wins, the other is told it was answered.
    let (a, b) = tokio::join!(
        post_form(http, &p3, &[("score", "8")]),
        post_form(http, &p3, &[("score", "4")])
    );
    let mut statuses = [a.status, b.status];
    statuses.sort();
    assert_eq!(statuses, [200, 409]);
    outbox_drained(pool).await;
    assert_eq!(answer_effects(pool).await, (2, 2, 2));
    let js = &s.infra.js;
    wait_until("two survey.completed", WAIT, || async move {
        completed(js).await.len() == 2
    })
    .await;
}

#[tokio::test]
async fn bad_answers_over_grpc_get_the_documented_codes_and_change_nothing() {
    let mut s = start(&["--max-comment-chars", "50"]).await;
    let inv = invite(&s.infra, &["g1", "g2", "g3", "g4", "g5"]).await;
    let pool = &s.infra.pool;
    let submit = |token: &str, score: Option<i32>, comment: &str| SubmitResponseRequest {
        token: token.into(),
        score,
        comment: comment.into(),
    };
    let fields = |status: &tonic::Status| -> Vec<String> {
        status
            .get_details_bad_request()
            .expect("BadRequest details")
            .field_violations
            .into_iter()
            .map(|v| v.field)
            .collect()
    };
    let t1 = inv[0].token.as_str();

    let e = s
        .app
        .grpc
        .submit_response(submit("", None, ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert_eq!(fields(&e), ["token", "score"]);
    for token in ["0".repeat(64), "not-a-token".into()] {
        let e = s
            .app
            .grpc
            .submit_response(submit(&token, Some(5), ""))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{token}");
    }
    for (score, comment, expected) in [
        (None, "", vec!["score"]),
        (Some(11), "", vec!["score"]),
        (Some(-1), "", vec!["score"]),
        (Some(5), &*"x".repeat(51), vec!["comment"]),
        (Some(5), "nul\0byte", vec!["comment"]),
        (Some(12), &*"x".repeat(51), vec!["score", "comment"]),
    ] {
        let e = s
            .app
            .grpc
            .submit_response(submit(t1, score, comment))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::InvalidArgument, "{score:?}");
        assert_eq!(fields(&e), expected, "{score:?}");
    }
    expire(pool, &inv[4].survey_id).await;
    let e = s
        .app
        .grpc
        .submit_response(submit(&inv[4].token, Some(5), ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    let failure = e.get_details_precondition_failure().unwrap();
    assert_eq!(failure.violations[0].r#type, "TOKEN_EXPIRED");
    outbox_drained(pool).await;
    assert_eq!(answer_effects(pool).await, (0, 0, 0), "nothing changed");

    // Valid answers; the comment is returned as the text it is.
    let mut answered = Vec::new();
    for (i, score) in [10, 9, 7, 3].into_iter().enumerate() {
        let survey = s
            .app
            .grpc
            .submit_response(submit(&inv[i].token, Some(score), " <i>fine</i> "))
            .await
            .unwrap()
            .into_inner()
            .survey
            .unwrap();
        assert_eq!(survey.status(), SurveyStatus::Completed);
        assert_eq!(survey.score, Some(score));
        assert_eq!(survey.comment, "<i>fine</i>");
        assert_eq!(survey.link, inv[i].link);
        answered.push(survey);
    }
    let e = s
        .app
        .grpc
        .submit_response(submit(t1, Some(1), ""))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition);
    assert_eq!(
        e.get_details_precondition_failure().unwrap().violations[0].r#type,
        "TOKEN_USED"
    );

    // Reads.
    let get = |lookup| GetSurveyRequest { lookup };
    let expired = s
        .app
        .grpc
        .get_survey(get(Some(Lookup::SurveyId(inv[4].survey_id.clone()))))
        .await
        .unwrap()
        .into_inner()
        .survey
        .unwrap();
    assert_eq!(expired.status(), SurveyStatus::Expired);
    assert_eq!(expired.score, None);
    for (lookup, code) in [
        (None, Code::InvalidArgument),
        (Some(Lookup::SurveyId("nope".into())), Code::InvalidArgument),
        (
            Some(Lookup::SurveyId(uuid::Uuid::now_v7().to_string())),
            Code::NotFound,
        ),
        (Some(Lookup::Token("0".repeat(64))), Code::NotFound),
        (Some(Lookup::Token("zz".into())), Code::NotFound),
    ] {
        let e = s
            .app
            .grpc
            .get_survey(get(lookup.clone()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), code, "{lookup:?}");
    }

    // NPS over 10, 9, 7, 3: 2 promoters, 1 passive, 1 detractor -> (2 - 1) / 4 = 25.
    let nps = s
        .app
        .grpc
        .get_nps_summary(GetNpsSummaryRequest {})
        .await
        .unwrap()
        .into_inner()
        .summary
        .unwrap();
    assert_eq!(
        (
            nps.promoters,
            nps.passives,
            nps.detractors,
            nps.responses,
            nps.requested
        ),
        (2, 1, 1, 4, 5)
    );
    assert_eq!(nps.nps, 25.0);
    outbox_drained(pool).await;
    assert_eq!(answer_effects(pool).await, (4, 4, 4));
    let js = &s.infra.js;
    wait_until("four survey.completed", WAIT, || async move {
        completed(js).await.len() == 4
    })
    .await;
}
