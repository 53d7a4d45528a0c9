//! Connecting to NATS with the credentials of the URL (`nats://admin:<password>@host:4222`):
//! async-nats 0.51 parses user and password out of a URL but does not send them, so they are
//! passed as connect options here.

use anyhow::Context;

/// `user:password` of the first URL of a comma-separated list that has them, percent-decoded.
pub fn url_credentials(urls: &str) -> anyhow::Result<Option<(String, String)>> {
    for url in urls.split(',') {
        let addr: async_nats::ServerAddr = url
            .trim()
            .parse()
            .with_context(|| format!("NATS URL {url:?}"))?;
        if let Some(user) = addr.username() {
            let password = addr.password().unwrap_or("");
            return Ok(Some((percent_decode(user)?, percent_decode(password)?)));
        }
    }
    Ok(None)
}

/// RFC 3986 percent-decoding of a URL's userinfo part.
pub fn percent_decode(text: &str) -> anyhow::Result<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = text
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .with_context(|| format!("bad percent-escape in {text:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).context("credentials are not UTF-8")
}

/// Connects to a URL or a comma-separated list of a cluster's URLs, authenticating with the
/// user and password in the URL when it has them.
pub async fn connect(urls: &str) -> anyhow::Result<async_nats::Client> {
    let servers = urls
        .split(',')
        .map(|u| u.trim().parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("NATS URL {urls:?}"))?;
    let options = match url_credentials(urls)? {
        Some((user, password)) => {
            async_nats::ConnectOptions::with_user_and_password(user, password)
        }
        None => async_nats::ConnectOptions::new(),
    };
    let shown: Vec<String> = servers
        .iter()
        .map(|s| format!("{}:{}", s.host(), s.port()))
        .collect();
    options
        .connect(servers)
        .await
        .with_context(|| format!("connecting to NATS at {}", shown.join(",")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_first_url_that_has_them() {
        assert_eq!(url_credentials("nats://localhost:4222").unwrap(), None);
        assert_eq!(
            url_credentials("nats://a:4222, nats://admin:p%40ss%3Aw@b:4222").unwrap(),
            Some(("admin".into(), "p@ss:w".into()))
        );
        assert!(url_credentials("nats://[::1").is_err());
        assert_eq!(percent_decode("a%2Fb").unwrap(), "a/b");
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("a%zz").is_err());
    }
}
