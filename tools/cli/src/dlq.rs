//! Dead letters: read the DEADLETTER stream, show one, replay, purge.
//!
//! A dead letter is named by its sequence in DEADLETTER. Its original subject, stream and the
//! consumer that gave up are in the `jetmart-dlq-*` headers the runtime adds
//! ([`jetmart_runtime::deadletter::publish`]); the subject `deadletter.<consumer>.<original>`
//! says the same for messages that lack them.

use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use anyhow::{Context, bail};
use async_nats::jetstream::{self, consumer, message::PublishMessage, stream};
use async_nats::{HeaderMap, HeaderValue};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use jetmart_runtime::catalog::DEADLETTER;
use jetmart_runtime::deadletter::header as dlq;
use jetmart_runtime::envelope::header as ce;

use crate::args::Filter;
use crate::decode;
use crate::out;

/// Counts how often an event was replayed; it travels with the event (and so into a later
/// dead letter of it), which keeps the replay ids of successive replays distinct.
pub const REPLAY_COUNT: &str = "jetmart-replay-count";
/// The dead letter a replayed message came from (`DEADLETTER:<seq>`), for whoever reads it later.
pub const REPLAYED_FROM: &str = "jetmart-replayed-from";
const DLQ_PREFIX: &str = "jetmart-dlq-";
const EVERY_CONSUMER: &str = "note: every consumer of a replayed subject receives the event again; those that had handled it skip it by its ce-id";
/// How long to wait for the next message while reading the stream before calling it stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// One message of the DEADLETTER stream.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    pub seq: u64,
    /// `deadletter.<consumer>.<original subject>`
    pub subject: String,
    /// When it was dead-lettered.
    pub time: DateTime<Utc>,
    pub headers: HeaderMap,
    pub payload: Bytes,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(HeaderValue::as_str)
    }

    /// The consumer (service) that gave up on it.
    pub fn consumer(&self) -> &str {
        self.header(dlq::CONSUMER)
            .or_else(|| self.subject.split('.').nth(1))
            .unwrap_or("?")
    }

    /// The subject it was first published on.
    pub fn original_subject(&self) -> Option<String> {
        if let Some(s) = self.header(dlq::SUBJECT).filter(|s| !s.is_empty()) {
            return Some(s.to_owned());
        }
        // deadletter.<consumer>.<original>
        let mut parts = self.subject.splitn(3, '.');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("deadletter"), Some(_), Some(rest)) if !rest.is_empty() => Some(rest.to_owned()),
            _ => None,
        }
    }

    pub fn reason(&self) -> &str {
        self.header(dlq::REASON).unwrap_or("?")
    }

    pub fn delivered(&self) -> &str {
        self.header(dlq::DELIVERED).unwrap_or("?")
    }

    pub fn error(&self) -> &str {
        self.header(dlq::ERROR).unwrap_or("")
    }

    /// The replay id: see [`replay_msg_id`].
    pub fn replay(&self) -> (String, u64) {
        let count = self
            .header(REPLAY_COUNT)
            .and_then(|c| c.trim().parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        (replay_msg_id(self.header(ce::ID), count, self.seq), count)
    }

    fn from_stream_message(m: async_nats::jetstream::message::StreamMessage) -> Self {
        Self {
            seq: m.sequence,
            subject: m.subject.to_string(),
            time: out::nats_time(m.time),
            headers: m.headers,
            payload: m.payload,
        }
    }
}

/// `Nats-Msg-Id` of a replayed message. JetStream drops a second publish with the same id
/// within the stream's duplicate window, so replaying one dead letter twice stores it once.
/// `count` is the how-manieth replay of this event: an event dead-lettered again after a
/// replay needs a new id, or its next replay would be dropped as a duplicate of the last.
pub fn replay_msg_id(ce_id: Option<&str>, count: u64, dlq_seq: u64) -> String {
    match ce_id.map(str::trim).filter(|id| !id.is_empty()) {
        Some(id) if count <= 1 => format!("replay:{id}"),
        Some(id) => format!("replay:{id}:{count}"),
        None => format!("replay:dlq-{dlq_seq}"),
    }
}

/// The DEADLETTER subject filter for `filter`.
pub fn subject_filter(filter: &Filter) -> String {
    match (&filter.consumer, &filter.subject_filter) {
        (None, None) => "deadletter.>".into(),
        (c, s) => format!(
            "deadletter.{}.{}",
            c.as_deref().unwrap_or("*"),
            s.as_deref().unwrap_or(">")
        ),
    }
}

/// The DEADLETTER stream, or `None` when it was never created (no service has run).
pub async fn dlq_stream(js: &jetstream::Context) -> anyhow::Result<Option<stream::Stream>> {
    match js.get_stream(DEADLETTER.name).await {
        Ok(s) => Ok(Some(s)),
        Err(e) => match e.kind() {
            jetstream::context::GetStreamErrorKind::JetStream(j)
                if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(None)
            }
            _ => Err(anyhow::Error::new(e).context("reading stream DEADLETTER")),
        },
    }
}

/// One dead letter by its sequence; `Ok(None)` if there is none.
pub async fn get(stream: &stream::Stream, seq: u64) -> anyhow::Result<Option<DeadLetter>> {
    match stream.get_raw_message(seq).await {
        Ok(m) => Ok(Some(DeadLetter::from_stream_message(m))),
        Err(e) if e.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(anyhow::Error::new(e).context(format!("reading dead letter {seq}"))),
    }
}

/// Dead letters matching `filter`, oldest first, at most `limit`; and how many match in all.
pub async fn read(
    stream: &stream::Stream,
    filter: &Filter,
    limit: Option<u64>,
) -> anyhow::Result<(Vec<DeadLetter>, u64)> {
    let subject = subject_filter(filter);
    // An ephemeral, unacknowledged reader: it changes nothing and vanishes on its own.
    let reader = stream
        .create_consumer(consumer::pull::Config {
            filter_subject: subject.clone(),
            deliver_policy: consumer::DeliverPolicy::All,
            ack_policy: consumer::AckPolicy::None,
            inactive_threshold: Duration::from_secs(60),
            memory_storage: true,
            ..Default::default()
        })
        .await
        .with_context(|| format!("reading DEADLETTER ({subject})"))?;
    let total = reader.cached_info().num_pending;
    let name = reader.cached_info().name.clone();
    let want = limit.map_or(total, |l| l.min(total));
    let mut letters = Vec::with_capacity(want as usize);
    if want > 0 {
        let mut messages = reader
            .stream()
            .max_messages_per_batch(want.min(256) as usize)
            .messages()
            .await
            .context("reading DEADLETTER")?;
        while (letters.len() as u64) < want {
            let next = tokio::time::timeout(READ_TIMEOUT, messages.next())
                .await
                .context("DEADLETTER stopped delivering")?;
            let Some(m) = next else { break };
            let m = m.context("reading DEADLETTER")?;
            let info = m.info().map_err(|e| anyhow::anyhow!("{e}"))?;
            let (seq, pending, time) = (info.stream_sequence, info.pending, info.published);
            letters.push(DeadLetter {
                seq,
                subject: m.subject.to_string(),
                time: out::nats_time(time),
                headers: m.headers.clone().unwrap_or_default(),
                payload: m.payload.clone(),
            });
            if pending == 0 {
                // Fewer than counted: some were deleted meanwhile.
                break;
            }
        }
    }
    let _ = stream.delete_consumer(&name).await;
    Ok((letters, total))
}

/// `dlq list`
pub async fn list(js: &jetstream::Context, filter: &Filter, limit: u64) -> anyhow::Result<()> {
    let Some(stream) = dlq_stream(js).await? else {
        println!("no dead letters (stream DEADLETTER does not exist yet)");
        return Ok(());
    };
    let (letters, total) = read(&stream, filter, Some(limit)).await?;
    if letters.is_empty() {
        println!("no dead letters{}", describe(filter));
        return Ok(());
    }
    let rows: Vec<Vec<String>> = letters
        .iter()
        .map(|d| {
            vec![
                d.seq.to_string(),
                out::rfc3339(d.time),
                d.consumer().to_owned(),
                d.reason().to_owned(),
                d.delivered().to_owned(),
                d.original_subject().unwrap_or_else(|| "?".into()),
                out::truncate(d.error(), 80),
            ]
        })
        .collect();
    print!(
        "{}",
        out::table(
            &[
                "SEQ",
                "DEAD-LETTERED",
                "CONSUMER",
                "REASON",
                "DELIVERED",
                "SUBJECT",
                "ERROR"
            ],
            &rows
        )
    );
    if total > letters.len() as u64 {
        println!(
            "... {} more (showing the oldest {}; raise --limit)",
            total - letters.len() as u64,
            letters.len()
        );
    }
    Ok(())
}

fn describe(filter: &Filter) -> String {
    match (&filter.consumer, &filter.subject_filter) {
        (None, None) => String::new(),
        _ => format!(" match {}", subject_filter(filter)),
    }
}

fn n_letters(n: u64) -> String {
    out::count(n, "dead letter", "dead letters")
}

fn not_found(seq: u64) -> anyhow::Error {
    anyhow::anyhow!("dead letter {seq} not found")
}

/// `dlq show`
pub async fn show(js: &jetstream::Context, seq: u64) -> anyhow::Result<()> {
    let stream = dlq_stream(js).await?.ok_or_else(|| not_found(seq))?;
    let d = get(&stream, seq).await?.ok_or_else(|| not_found(seq))?;
    print!("{}", render(&d));
    Ok(())
}

/// What `dlq show` prints.
pub fn render(d: &DeadLetter) -> String {
    let mut s = String::new();
    let line = |s: &mut String, k: &str, v: &str| s.push_str(&format!("{k:<15}{v}\n"));
    s.push_str(&format!("dead letter {} ({})\n", d.seq, d.subject));
    line(&mut s, "dead-lettered", &out::rfc3339(d.time));
    line(&mut s, "consumer", d.consumer());
    line(
        &mut s,
        "subject",
        &d.original_subject().unwrap_or_else(|| "?".into()),
    );
    let origin = match (d.header(dlq::STREAM), d.header(dlq::STREAM_SEQ)) {
        (Some(stream), Some(seq)) => format!("{stream} #{seq}"),
        (Some(stream), None) => stream.to_owned(),
        _ => "?".into(),
    };
    line(&mut s, "stream", &origin);
    line(&mut s, "reason", d.reason());
    line(&mut s, "delivered", d.delivered());
    line(&mut s, "event id", d.header(ce::ID).unwrap_or("(none)"));
    line(&mut s, "event type", d.header(ce::TYPE).unwrap_or("(none)"));
    line(&mut s, "error", d.error());
    s.push_str("\nheaders:\n");
    let mut headers: Vec<(String, String)> = d
        .headers
        .iter()
        .flat_map(|(name, values)| {
            values
                .iter()
                .map(move |v| (name.to_string(), v.as_str().to_owned()))
        })
        .collect();
    headers.sort();
    for (name, value) in &headers {
        s.push_str(&format!("  {name}: {value}\n"));
    }
    let type_name = d.header(ce::TYPE);
    match decode::to_json(type_name, &d.payload) {
        Ok(json) => {
            s.push_str(&format!(
                "\npayload ({}, {} bytes):\n{json}\n",
                type_name.unwrap_or("?"),
                d.payload.len()
            ));
        }
        Err(e) => {
            s.push_str(&format!(
                "\npayload ({} bytes) not decoded: {e}\n",
                d.payload.len()
            ));
            s.push_str(&format!("text: {}\n", decode::escaped(&d.payload, 2048)));
            s.push_str(&decode::hex_dump(&d.payload, 1024));
        }
    }
    s
}

/// What one replay did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replayed {
    pub seq: u64,
    pub subject: String,
    pub msg_id: String,
    /// Where JetStream stored it (or the earlier copy, for a duplicate).
    pub stream: String,
    pub stream_seq: u64,
    /// JetStream had this replay id already within its duplicate window and dropped the copy.
    pub duplicate: bool,
}

impl std::fmt::Display for Replayed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.duplicate {
            write!(
                f,
                "dead letter {}: already replayed (Nats-Msg-Id {} is in {} #{}), JetStream dropped this copy; removed from DEADLETTER",
                self.seq, self.msg_id, self.stream, self.stream_seq
            )
        } else {
            write!(
                f,
                "replayed dead letter {} to {} ({} #{}, Nats-Msg-Id {}); removed from DEADLETTER",
                self.seq, self.subject, self.stream, self.stream_seq, self.msg_id
            )
        }
    }
}

/// The headers a replayed message carries: the original ones, minus the dead-letter headers and
/// the old `Nats-Msg-Id`, plus the replay id, count and origin.
pub fn replay_headers(d: &DeadLetter) -> (HeaderMap, String) {
    let (msg_id, count) = d.replay();
    let mut headers = HeaderMap::new();
    for (name, values) in d.headers.iter() {
        let n = name.to_string().to_ascii_lowercase();
        if n.starts_with(DLQ_PREFIX)
            || n == ce::NATS_MSG_ID.to_ascii_lowercase()
            || n == REPLAY_COUNT
            || n == REPLAYED_FROM
        {
            continue;
        }
        for v in values {
            headers.append(name.clone(), v.clone());
        }
    }
    headers.insert(ce::NATS_MSG_ID, msg_id.as_str());
    headers.insert(REPLAY_COUNT, count.to_string().as_str());
    headers.insert(
        REPLAYED_FROM,
        format!("{}:{}", DEADLETTER.name, d.seq).as_str(),
    );
    (headers, msg_id)
}

/// Republishes one dead letter to its original subject and, once stored, deletes it.
pub async fn replay_one(
    js: &jetstream::Context,
    stream: &stream::Stream,
    d: &DeadLetter,
) -> anyhow::Result<Replayed> {
    let subject = d.original_subject().with_context(|| {
        format!(
            "dead letter {}: cannot tell its original subject from {}",
            d.seq, d.subject
        )
    })?;
    let (headers, msg_id) = replay_headers(d);
    let ack = js
        .send_publish(
            subject.clone(),
            PublishMessage::build()
                .headers(headers)
                .payload(d.payload.clone()),
        )
        .await
        .with_context(|| format!("dead letter {}: publishing to {subject}", d.seq))?
        .await
        .with_context(|| {
            format!(
                "dead letter {}: no stream stored {subject} (is its stream there?)",
                d.seq
            )
        })?;
    // Stored (or stored before): the dead letter has done its job.
    if let Err(e) = stream.delete_message(d.seq).await {
        let gone = matches!(
            e.kind(),
            stream::DeleteMessageErrorKind::JetStream(ref j)
                if [
                    jetstream::ErrorCode::NO_MESSAGE_FOUND,
                    jetstream::ErrorCode::SEQUENCE_NOT_FOUND,
                    jetstream::ErrorCode::STREAM_MESSAGE_DELETE_FAILED,
                ]
                .contains(&j.error_code())
        );
        if !gone {
            return Err(anyhow::Error::new(e).context(format!(
                "dead letter {}: replayed, but not deleted from DEADLETTER (replaying it again is harmless)",
                d.seq
            )));
        }
    }
    Ok(Replayed {
        seq: d.seq,
        subject,
        msg_id,
        stream: ack.stream,
        stream_seq: ack.sequence,
        duplicate: ack.duplicate,
    })
}

/// `dlq replay <seq>...`: every one is tried; fails if any failed.
pub async fn replay_seqs(js: &jetstream::Context, seqs: &[u64]) -> anyhow::Result<()> {
    let stream = match dlq_stream(js).await? {
        Some(s) => s,
        None if seqs.len() == 1 => return Err(not_found(seqs[0])),
        None => bail!("stream DEADLETTER does not exist: no dead letters"),
    };
    let (mut failed, mut republished) = (Vec::new(), false);
    for &seq in seqs {
        let result = match get(&stream, seq).await {
            Ok(Some(d)) => replay_one(js, &stream, &d).await,
            Ok(None) => Err(not_found(seq)),
            Err(e) => Err(e),
        };
        match result {
            Ok(r) => {
                println!("{r}");
                republished |= !r.duplicate;
            }
            Err(e) if seqs.len() == 1 => return Err(e),
            Err(e) => {
                eprintln!("jetmartctl: {e:#}");
                failed.push(seq);
            }
        }
    }
    if republished {
        println!("{EVERY_CONSUMER}");
    }
    if !failed.is_empty() {
        bail!(
            "{} of {} not replayed: {failed:?}",
            failed.len(),
            seqs.len()
        );
    }
    Ok(())
}

/// `dlq replay --all`
pub async fn replay_all(js: &jetstream::Context, filter: &Filter) -> anyhow::Result<()> {
    let Some(stream) = dlq_stream(js).await? else {
        println!("no dead letters (stream DEADLETTER does not exist yet)");
        return Ok(());
    };
    let (letters, _) = read(&stream, filter, None).await?;
    if letters.is_empty() {
        println!("no dead letters{}", describe(filter));
        return Ok(());
    }
    let bar = out::bar(letters.len() as u64, "dead letters replayed");
    let (mut replayed, mut duplicates, mut failed) = (0u64, 0u64, Vec::new());
    for d in &letters {
        match replay_one(js, &stream, d).await {
            Ok(r) => {
                bar.suspend(|| println!("{r}"));
                if r.duplicate {
                    duplicates += 1;
                } else {
                    replayed += 1;
                }
            }
            Err(e) => {
                bar.suspend(|| eprintln!("jetmartctl: {e:#}"));
                failed.push(d.seq);
            }
        }
        bar.inc(1);
    }
    bar.finish_and_clear();
    println!(
        "replayed {replayed}, already replayed (dropped by JetStream) {duplicates}, failed {}",
        failed.len()
    );
    if replayed > 0 {
        println!("{EVERY_CONSUMER}");
    }
    if !failed.is_empty() {
        bail!(
            "{} not replayed: {failed:?}",
            n_letters(failed.len() as u64)
        );
    }
    Ok(())
}

/// `dlq purge`
pub async fn purge(js: &jetstream::Context, filter: &Filter, yes: bool) -> anyhow::Result<()> {
    let Some(mut stream) = dlq_stream(js).await? else {
        println!("nothing to purge (stream DEADLETTER does not exist yet)");
        return Ok(());
    };
    let subject = subject_filter(filter);
    // Bound the purge to what exists now, so nothing that arrives after the count (and the
    // confirmation) goes unseen.
    let last_seq = stream
        .info()
        .await
        .context("reading DEADLETTER")?
        .state
        .last_sequence;
    let (_, count) = read(&stream, filter, Some(1)).await?;
    if count == 0 {
        println!("nothing to purge: no dead letters{}", describe(filter));
        return Ok(());
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            bail!(
                "refusing to delete {} ({subject}) without confirmation: stdin is not a terminal; pass --yes",
                n_letters(count)
            );
        }
        eprint!(
            "Delete {} ({subject}) for good? This cannot be undone. [y/N] ",
            n_letters(count)
        );
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            bail!("not confirmed; nothing deleted");
        }
    }
    let spinner = out::spinner(format!("purging {} ({subject})", n_letters(count)));
    let result = stream
        .purge()
        .filter(subject.clone())
        .sequence(last_seq + 1)
        .await
        .context("purging DEADLETTER");
    spinner.finish_and_clear();
    let purged = result?.purged;
    println!("purged {} ({subject})", n_letters(purged));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn letter(headers: &[(&str, &str)], subject: &str) -> DeadLetter {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(*k, *v);
        }
        DeadLetter {
            seq: 7,
            subject: subject.into(),
            time: Utc::now(),
            headers: h,
            payload: Bytes::from_static(b"x"),
        }
    }

    #[test]
    fn filters_become_deadletter_subjects() {
        let f = |c: Option<&str>, s: Option<&str>| {
            subject_filter(&Filter {
                consumer: c.map(Into::into),
                subject_filter: s.map(Into::into),
            })
        };
        assert_eq!(f(None, None), "deadletter.>");
        assert_eq!(f(Some("payment"), None), "deadletter.payment.>");
        assert_eq!(
            f(None, Some("order.placed.*")),
            "deadletter.*.order.placed.*"
        );
        assert_eq!(f(Some("a"), Some("order.>")), "deadletter.a.order.>");
    }

    #[test]
    fn the_original_subject_comes_from_the_header_or_the_dead_letter_subject() {
        let d = letter(
            &[(dlq::SUBJECT, "order.placed.o-1")],
            "deadletter.svc.order.placed.o-1",
        );
        assert_eq!(d.original_subject().unwrap(), "order.placed.o-1");
        assert_eq!(d.consumer(), "svc");
        let d = letter(&[], "deadletter.svc.inventory.low.SKU-1");
        assert_eq!(d.original_subject().unwrap(), "inventory.low.SKU-1");
        assert!(letter(&[], "deadletter.svc").original_subject().is_none());
    }

    #[test]
    fn replay_ids_are_stable_per_dead_letter_and_new_per_replay_generation() {
        assert_eq!(replay_msg_id(Some("e1"), 1, 7), "replay:e1");
        assert_eq!(replay_msg_id(Some("e1"), 2, 9), "replay:e1:2");
        assert_eq!(replay_msg_id(None, 1, 7), "replay:dlq-7");
        assert_eq!(replay_msg_id(Some(" "), 1, 7), "replay:dlq-7");
    }

    #[test]
    fn replay_headers_drop_the_dead_letter_ones_and_keep_the_rest() {
        let d = letter(
            &[
                (ce::ID, "e1"),
                (ce::TYPE, "jetmart.order.v1.OrderPlaced"),
                (ce::NATS_MSG_ID, "dlq:svc:ORDER:3"),
                (dlq::REASON, "permanent"),
                (dlq::ERROR, "boom"),
                (dlq::ORIGINAL_MSG_ID, "e1"),
                ("traceparent", "00-abc-def-01"),
            ],
            "deadletter.svc.order.placed.o-1",
        );
        let (h, id) = replay_headers(&d);
        assert_eq!(id, "replay:e1");
        assert_eq!(h.get(ce::NATS_MSG_ID).unwrap().as_str(), "replay:e1");
        assert_eq!(h.get(ce::ID).unwrap().as_str(), "e1");
        assert_eq!(h.get("traceparent").unwrap().as_str(), "00-abc-def-01");
        assert_eq!(h.get(REPLAY_COUNT).unwrap().as_str(), "1");
        assert_eq!(h.get(REPLAYED_FROM).unwrap().as_str(), "DEADLETTER:7");
        assert!(
            h.iter()
                .all(|(n, _)| !n.to_string().starts_with(DLQ_PREFIX))
        );

        // Dead-lettered again after a replay: the next replay gets the next id.
        let again = letter(
            &[(ce::ID, "e1"), (REPLAY_COUNT, "1")],
            "deadletter.svc.order.placed.o-1",
        );
        let (h, id) = replay_headers(&again);
        assert_eq!(id, "replay:e1:2");
        assert_eq!(h.get(REPLAY_COUNT).unwrap().as_str(), "2");
    }

    #[test]
    fn show_renders_undecodable_payloads_as_hex() {
        let d = letter(
            &[(ce::TYPE, "jetmart.order.v1.OrderPlaced")],
            "deadletter.svc.order.placed.o-1",
        );
        let text = render(&DeadLetter {
            payload: Bytes::from_static(b"\xff\xfe"),
            ..d
        });
        assert!(
            text.contains("not decoded: does not decode as jetmart.order.v1.OrderPlaced"),
            "{text}"
        );
        assert!(text.contains("00000000  ff fe"), "{text}");
    }
}
