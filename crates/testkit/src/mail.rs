//! What the SMTP sink stores, parsed: envelope headers followed by the RFC 5322 message.
//!
//! A small MIME reader, enough for what services send: unfolded headers, RFC 2047 encoded words
//! (B and Q), quoted-printable and base64 bodies, nested multiparts (first text/plain and first
//! text/html win), UTF-8 and Latin-1 charsets.

use std::path::PathBuf;

const ENVELOPE_FROM: &str = "x-jetmart-envelope-from";
const ENVELOPE_TO: &str = "x-jetmart-envelope-to";
const AUTH_LOGIN: &str = "x-jetmart-auth-login";

/// One message the sink accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedMail {
    /// The file it is stored in (`<maildir>/new/<name>`).
    pub file: PathBuf,
    /// MAIL FROM of the SMTP transaction.
    pub envelope_from: String,
    /// RCPT TO addresses of the SMTP transaction.
    pub envelope_to: Vec<String>,
    /// The user name the client authenticated with, if it did.
    pub auth_login: Option<String>,
    /// `Message-ID` header as sent, angle brackets included (`<id@host>`).
    pub message_id: Option<String>,
    /// `From` header, encoded words decoded (`Jetmart <noreply@jetmart.test>`).
    pub from: Option<String>,
    /// `To` header, split into its addresses.
    pub to: Vec<String>,
    /// `Cc` header, split into its addresses.
    pub cc: Vec<String>,
    /// `Subject` header, encoded words decoded.
    pub subject: Option<String>,
    /// The text/plain body, transfer encoding and charset decoded, line ends as `\n`. Empty when
    /// the message has no text/plain part.
    pub text: String,
    /// The text/html body, decoded like `text`.
    pub html: Option<String>,
    /// Top-level headers in order: (name as sent, value unfolded and decoded).
    pub headers: Vec<(String, String)>,
    /// The message exactly as received (without the sink's envelope headers).
    pub raw: Vec<u8>,
}

impl ReceivedMail {
    /// Parses a file written by the sink. Never fails: what cannot be parsed stays empty.
    pub fn parse(file: PathBuf, stored: &[u8]) -> ReceivedMail {
        let mut envelope_from = String::new();
        let mut envelope_to = Vec::new();
        let mut auth_login = None;
        let mut pos = 0;
        while pos < stored.len() {
            let end = find_byte(stored, pos, b'\n').unwrap_or(stored.len());
            let line = String::from_utf8_lossy(&stored[pos..end]);
            let Some((name, value)) = line.split_once(':') else {
                break;
            };
            let value = value.trim().to_owned();
            match name.to_ascii_lowercase().as_str() {
                ENVELOPE_FROM => envelope_from = value,
                ENVELOPE_TO => envelope_to.push(value),
                AUTH_LOGIN => auth_login = Some(value),
                _ => break,
            }
            pos = end + 1;
        }
        let message = &stored[pos.min(stored.len())..];
        let entity = Entity::split(message);
        let headers: Vec<(String, String)> = entity
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), decode_encoded_words(v)))
            .collect();
        let mut bodies = Bodies::default();
        bodies.collect(&entity, 0);
        let mut mail = ReceivedMail {
            file,
            envelope_from,
            envelope_to,
            auth_login,
            message_id: None,
            from: None,
            to: Vec::new(),
            cc: Vec::new(),
            subject: None,
            text: bodies.text.unwrap_or_default(),
            html: bodies.html,
            headers,
            raw: message.to_vec(),
        };
        mail.message_id = mail.header("Message-ID").map(str::to_owned);
        mail.from = mail.header("From").map(str::to_owned);
        mail.subject = mail.header("Subject").map(str::to_owned);
        mail.to = entity.header("To").map(split_addresses).unwrap_or_default();
        mail.cc = entity.header("Cc").map(split_addresses).unwrap_or_default();
        mail
    }

    /// First header of that name (case-insensitive), decoded.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header of that name, in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The Message-ID without its angle brackets.
    pub fn message_id_bare(&self) -> Option<&str> {
        self.message_id
            .as_deref()
            .map(|id| id.trim().trim_start_matches('<').trim_end_matches('>'))
    }
}

fn find_byte(data: &[u8], from: usize, byte: u8) -> Option<usize> {
    data.get(from..)?
        .iter()
        .position(|&b| b == byte)
        .map(|i| from + i)
}

/// Headers (unfolded, not yet decoded) and the body of a message or MIME part.
struct Entity<'a> {
    headers: Vec<(String, String)>,
    body: &'a [u8],
}

impl<'a> Entity<'a> {
    fn split(data: &'a [u8]) -> Entity<'a> {
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut pos = 0;
        while pos < data.len() {
            let end = find_byte(data, pos, b'\n').unwrap_or(data.len());
            let line = &data[pos..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            pos = end + 1;
            if line.is_empty() {
                return Entity {
                    headers,
                    body: data.get(pos..).unwrap_or_default(),
                };
            }
            let text = String::from_utf8_lossy(line);
            if text.starts_with([' ', '\t']) {
                if let Some((_, value)) = headers.last_mut() {
                    value.push_str(&text);
                }
            } else if let Some((name, value)) = text.split_once(':') {
                headers.push((name.trim().to_owned(), value.trim_start().to_owned()));
            }
        }
        Entity { headers, body: &[] }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim())
    }

    fn decoded_body(&self) -> Vec<u8> {
        match self
            .header("Content-Transfer-Encoding")
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("base64") => base64_decode(self.body),
            Some("quoted-printable") => qp_decode(self.body),
            _ => self.body.to_vec(),
        }
    }
}

#[derive(Default)]
struct Bodies {
    text: Option<String>,
    html: Option<String>,
}

impl Bodies {
    fn collect(&mut self, entity: &Entity<'_>, depth: usize) {
        let (mime, params) = entity
            .header("Content-Type")
            .map(parse_content_type)
            .unwrap_or_else(|| ("text/plain".to_owned(), Vec::new()));
        let param = |name: &str| {
            params
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
        };
        if mime.starts_with("multipart/") {
            if let (Some(boundary), true) = (param("boundary"), depth < 16) {
                for part in split_multipart(entity.body, boundary) {
                    self.collect(&Entity::split(part), depth + 1);
                }
            }
            return;
        }
        let attachment = entity.header("Content-Disposition").is_some_and(|d| {
            d.trim_start()
                .to_ascii_lowercase()
                .starts_with("attachment")
        });
        if attachment {
            return;
        }
        let slot = match mime.as_str() {
            "text/plain" => &mut self.text,
            "text/html" => &mut self.html,
            _ => return,
        };
        if slot.is_none() {
            let text = decode_charset(
                &entity.decoded_body(),
                param("charset").unwrap_or("us-ascii"),
            );
            *slot = Some(text.replace("\r\n", "\n"));
        }
    }
}

/// ("type/subtype" lowercased, [(param lowercased, value unquoted)]).
fn parse_content_type(value: &str) -> (String, Vec<(String, String)>) {
    let mut pieces = split_outside_quotes(value, ';').into_iter();
    let mime = pieces
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    let params = pieces
        .filter_map(|p| {
            let (name, value) = p.split_once('=')?;
            Some((name.trim().to_ascii_lowercase(), unquote(value.trim())))
        })
        .collect();
    (mime, params)
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    out.extend(chars.next());
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => value.to_owned(),
    }
}

/// Splits at `sep` outside "quotes", <angle brackets> and (comments).
fn split_outside_quotes(value: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let (mut quoted, mut escaped, mut angle, mut paren) = (false, false, 0u32, 0u32);
    for c in value.chars() {
        if escaped {
            escaped = false;
        } else if c == '\\' && quoted {
            escaped = true;
        } else if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            match c {
                '<' => angle += 1,
                '>' => angle = angle.saturating_sub(1),
                '(' => paren += 1,
                ')' => paren = paren.saturating_sub(1),
                _ if c == sep && angle == 0 && paren == 0 => {
                    out.push(std::mem::take(&mut current));
                    continue;
                }
                _ => {}
            }
        }
        current.push(c);
    }
    out.push(current);
    out
}

fn split_addresses(value: &str) -> Vec<String> {
    split_outside_quotes(value, ',')
        .into_iter()
        .map(|a| decode_encoded_words(a.trim()))
        .filter(|a| !a.is_empty())
        .collect()
}

/// The parts of a multipart body, without their delimiter lines.
fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = find_byte(body, pos, b'\n').unwrap_or(body.len());
        let line = body[pos..end].trim_ascii_end();
        if let Some(rest) = line.strip_prefix(delimiter)
            && (rest.is_empty() || rest == b"--")
        {
            if let Some(s) = start {
                // The line break before a delimiter belongs to the delimiter.
                let mut e = pos;
                if e > s && body[e - 1] == b'\n' {
                    e -= 1;
                }
                if e > s && body[e - 1] == b'\r' {
                    e -= 1;
                }
                parts.push(&body[s..e]);
            }
            if rest == b"--" {
                return parts;
            }
            start = Some((end + 1).min(body.len()));
        }
        pos = end + 1;
    }
    if let Some(s) = start
        && s < body.len()
    {
        parts.push(&body[s..]);
    }
    parts
}

fn decode_charset(bytes: &[u8], charset: &str) -> String {
    match charset.trim().to_ascii_lowercase().as_str() {
        // Latin-1 maps byte for byte to the first 256 code points (close enough for 1252).
        "iso-8859-1" | "latin1" | "latin-1" | "iso8859-1" | "windows-1252" | "cp1252" => {
            bytes.iter().map(|&b| char::from(b)).collect()
        }
        _ => String::from_utf8_lossy(bytes).into_owned(),
    }
}

/// RFC 2047: `=?charset?B|Q?text?=` words decoded; whitespace between two encoded words dropped.
fn decode_encoded_words(input: &str) -> String {
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut previous_was_word = false;
    while i < input.len() {
        let Some(rel) = input[i..].find("=?") else {
            out.push_str(&input[i..]);
            break;
        };
        let start = i + rel;
        let gap = &input[i..start];
        match parse_encoded_word(&input[start..]) {
            Some((decoded, len)) => {
                if !(previous_was_word && gap.chars().all(char::is_whitespace)) {
                    out.push_str(gap);
                }
                out.push_str(&decoded);
                i = start + len;
                previous_was_word = true;
            }
            None => {
                out.push_str(&input[i..start + 2]);
                i = start + 2;
                previous_was_word = false;
            }
        }
    }
    out
}

/// (decoded text, length consumed) of an encoded word at the start of `s`.
fn parse_encoded_word(s: &str) -> Option<(String, usize)> {
    let body = s.strip_prefix("=?")?;
    let q1 = body.find('?')?;
    let charset = body[..q1].split('*').next()?;
    let after = &body[q1 + 1..];
    let mut chars = after.chars();
    let encoding = chars.next()?.to_ascii_uppercase();
    if chars.next()? != '?' {
        return None;
    }
    let text_and_rest = &after[2..];
    let end = text_and_rest.find("?=")?;
    let text = &text_and_rest[..end];
    if charset.is_empty()
        || charset.contains(char::is_whitespace)
        || text.contains(char::is_whitespace)
    {
        return None;
    }
    let bytes = match encoding {
        'B' => base64_decode(text.as_bytes()),
        'Q' => q_decode(text.as_bytes()),
        _ => return None,
    };
    let consumed = 2 + q1 + 1 + 2 + end + 2;
    Some((decode_charset(&bytes, charset), consumed))
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn hex_pair(data: &[u8], at: usize) -> Option<u8> {
    Some(hex_value(*data.get(at)?)? << 4 | hex_value(*data.get(at + 1)?)?)
}

/// Q encoding of headers: `_` is a space, `=XX` a byte.
fn q_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'_' => {
                out.push(b' ');
                i += 1;
            }
            b'=' if hex_pair(input, i + 1).is_some() => {
                out.extend(hex_pair(input, i + 1));
                i += 3;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn qp_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        if input[i] != b'=' {
            out.push(input[i]);
            i += 1;
            continue;
        }
        if let Some(byte) = hex_pair(input, i + 1) {
            out.push(byte);
            i += 3;
            continue;
        }
        // Soft line break: '=' then optional blanks then the line end.
        let mut j = i + 1;
        while j < input.len() && (input[j] == b' ' || input[j] == b'\t') {
            j += 1;
        }
        if input.get(j) == Some(&b'\n') {
            i = j + 1;
        } else if input.get(j) == Some(&b'\r') && input.get(j + 1) == Some(&b'\n') {
            i = j + 2;
        } else if j >= input.len() {
            i = j;
        } else {
            out.push(b'=');
            i += 1;
        }
    }
    out
}

/// Lenient base64 (standard or URL alphabet): skips line breaks, padding and junk.
fn base64_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in input {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(envelope: &str, message: &str) -> Vec<u8> {
        let mut v = envelope.replace('\n', "\r\n").into_bytes();
        v.extend(message.replace('\n', "\r\n").into_bytes());
        v
    }

    #[test]
    fn envelope_and_simple_message() {
        let data = stored(
            "X-Jetmart-Envelope-From: shop@jetmart.test\nX-Jetmart-Envelope-To: a@x.test\nX-Jetmart-Envelope-To: b@x.test\n",
            "Message-ID: <m1@jetmart.test>\nFrom: Shop <shop@jetmart.test>\nTo: \"Doe, Ann\" <a@x.test>, b@x.test\nSubject: Your order\n  is confirmed\n\nHello\nBye\n",
        );
        let mail = ReceivedMail::parse("f".into(), &data);
        assert_eq!(mail.envelope_from, "shop@jetmart.test");
        assert_eq!(mail.envelope_to, vec!["a@x.test", "b@x.test"]);
        assert_eq!(mail.auth_login, None);
        assert_eq!(mail.message_id.as_deref(), Some("<m1@jetmart.test>"));
        assert_eq!(mail.message_id_bare(), Some("m1@jetmart.test"));
        assert_eq!(mail.from.as_deref(), Some("Shop <shop@jetmart.test>"));
        assert_eq!(mail.to, vec!["\"Doe, Ann\" <a@x.test>", "b@x.test"]);
        assert_eq!(mail.subject.as_deref(), Some("Your order  is confirmed"));
        assert_eq!(mail.text, "Hello\nBye\n");
        assert!(mail.raw.starts_with(b"Message-ID: <m1@jetmart.test>\r\n"));
    }

    #[test]
    fn encoded_words() {
        assert_eq!(decode_encoded_words("=?utf-8?b?w4RwZmVs?="), "Äpfel");
        assert_eq!(
            decode_encoded_words("=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus?= =?UTF-8?Q?_Bern?="),
            "Grüße aus Bern"
        );
        assert_eq!(
            decode_encoded_words("Re: =?iso-8859-1?q?caf=E9?= ok"),
            "Re: café ok"
        );
        assert_eq!(decode_encoded_words("a =? b ?= c"), "a =? b ?= c");
    }

    #[test]
    fn quoted_printable_and_base64_bodies() {
        assert_eq!(
            qp_decode(b"http://x.test/s/abc=3D1&t=\r\n=3D2 caf=C3=A9="),
            "http://x.test/s/abc=1&t=2 café".as_bytes()
        );
        assert_eq!(base64_decode(b"SGVs\r\nbG8=\r\n"), b"Hello");
        assert_eq!(base64_decode(b"QQ=="), b"A");
    }

    #[test]
    fn nested_multipart_picks_text_and_html() {
        let data = stored(
            "X-Jetmart-Envelope-From: s@x.test\nX-Jetmart-Envelope-To: r@x.test\nX-Jetmart-Auth-Login: smtpuser\n",
            "Subject: multi\nContent-Type: multipart/mixed; boundary=\"outer\"\n\npreamble\n--outer\nContent-Type: multipart/alternative; boundary=inner\n\n--inner\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: quoted-printable\n\nLink: https://survey.test/s/=\ntok123\n--inner\nContent-Type: text/html; charset=utf-8\nContent-Transfer-Encoding: base64\n\nPHA+aGk8L3A+\n--inner--\n--outer\nContent-Type: text/plain\nContent-Disposition: attachment; filename=a.txt\n\nnot the body\n--outer--\nepilogue\n",
        );
        let mail = ReceivedMail::parse("f".into(), &data);
        assert_eq!(mail.auth_login.as_deref(), Some("smtpuser"));
        assert_eq!(mail.text, "Link: https://survey.test/s/tok123");
        assert_eq!(mail.html.as_deref(), Some("<p>hi</p>"));
        assert_eq!(mail.message_id, None);
    }

    #[test]
    fn lettre_messages_round_trip() {
        use lettre::message::{MultiPart, header::ContentType};
        let long_line = format!("https://survey.jetmart.test/s/{}", "x".repeat(120));
        let message = lettre::Message::builder()
            .message_id(Some("<order-42@jetmart.test>".to_owned()))
            .from("Jetmart <noreply@jetmart.test>".parse().unwrap())
            .to("Zoë Müller <zoe@example.test>".parse().unwrap())
            .subject("Bestellung bestätigt ✓")
            .multipart(MultiPart::alternative_plain_html(
                format!("Grüße!\n{long_line}\n"),
                "<p>Grüße!</p>".to_owned(),
            ))
            .unwrap();
        let mut data = b"X-Jetmart-Envelope-From: noreply@jetmart.test\r\nX-Jetmart-Envelope-To: zoe@example.test\r\n".to_vec();
        data.extend(message.formatted());
        let mail = ReceivedMail::parse("f".into(), &data);
        assert_eq!(mail.message_id.as_deref(), Some("<order-42@jetmart.test>"));
        assert_eq!(mail.subject.as_deref(), Some("Bestellung bestätigt ✓"));
        assert_eq!(mail.from.as_deref(), Some("Jetmart <noreply@jetmart.test>"));
        assert_eq!(mail.to.len(), 1);
        assert!(
            mail.to[0].contains("zoe@example.test") && mail.to[0].contains("Zoë Müller"),
            "{:?}",
            mail.to
        );
        assert_eq!(mail.text, format!("Grüße!\n{long_line}\n"));
        assert_eq!(mail.html.as_deref(), Some("<p>Grüße!</p>"));

        let plain = lettre::Message::builder()
            .message_id(None)
            .from("a@x.test".parse().unwrap())
            .to("b@x.test".parse().unwrap())
            .subject("plain")
            .header(ContentType::TEXT_PLAIN)
            .body("just text".to_owned())
            .unwrap();
        let mail = ReceivedMail::parse("f".into(), &plain.formatted());
        assert_eq!(mail.text, "just text");
        assert!(mail.message_id.is_some(), "message_id(None) generates one");
        assert!(mail.message_id_bare().is_some_and(|id| id.contains('@')));
    }
}
