//! Public address detection over HTTP (`publicAddress: auto` with `httpDetector.url`).
//!
//! The detector URL must answer `text/plain` with nothing but an IPv4 or IPv6
//! address, as the original wovenet required. This module only fetches and
//! parses; when to re-check and what to do with a changed address is the
//! site's decision.

use std::net::IpAddr;
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;

/// Whole-request timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// An address is at most 45 characters; anything much longer is not one.
const MAX_BODY: usize = 256;

/// Why the public address could not be detected; says which step failed.
#[derive(Debug, thiserror::Error)]
pub enum DetectError {
    /// The request failed (DNS, connect, TLS, timeout).
    #[error("cannot reach '{url}': {source}")]
    Request {
        /// The detector URL.
        url: String,
        /// The transport error.
        source: reqwest::Error,
    },
    /// The server answered with a non-2xx status.
    #[error("'{url}' answered HTTP {status}")]
    Status {
        /// The detector URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The response is not `text/plain`.
    #[error("'{url}' answered content type '{content_type}', expected 'text/plain'")]
    ContentType {
        /// The detector URL.
        url: String,
        /// What it sent (`none` when missing).
        content_type: String,
    },
    /// The body could not be read or was too long.
    #[error("cannot read the answer of '{url}': {reason}")]
    Body {
        /// The detector URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The body is not an IP address.
    #[error("'{url}' answered '{body}', which is not an IP address")]
    Parse {
        /// The detector URL.
        url: String,
        /// The trimmed body, escaped and shortened for logs.
        body: String,
    },
}

/// Fetches `url` and parses the body as this host's public IP address.
pub async fn public_ip(client: &reqwest::Client, url: &str) -> Result<IpAddr, DetectError> {
    let request_err = |source| DetectError::Request {
        url: url.to_owned(),
        source,
    };
    let mut response = client
        .get(url)
        .timeout(TIMEOUT)
        .send()
        .await
        .map_err(request_err)?;
    let status = response.status();
    if !status.is_success() {
        return Err(DetectError::Status {
            url: url.to_owned(),
            status: status.as_u16(),
        });
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if !content_type.as_deref().is_some_and(is_text_plain) {
        return Err(DetectError::ContentType {
            url: url.to_owned(),
            content_type: content_type.unwrap_or_else(|| "none".into()),
        });
    }
    let mut body = Vec::new();
    // Read chunk by chunk so a misbehaving server cannot make us buffer much.
    while let Some(chunk) = response.chunk().await.map_err(|e| DetectError::Body {
        url: url.to_owned(),
        reason: e.to_string(),
    })? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(DetectError::Body {
                url: url.to_owned(),
                reason: format!("longer than {MAX_BODY} bytes"),
            });
        }
    }
    parse_body(&body).ok_or_else(|| DetectError::Parse {
        url: url.to_owned(),
        body: shorten(&String::from_utf8_lossy(&body)),
    })
}

/// `text/plain`, in any case, with or without parameters such as a charset.
fn is_text_plain(value: &str) -> bool {
    value
        .split(';')
        .next()
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/plain"))
}

fn parse_body(body: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(body).ok()?.trim().parse().ok()
}

fn shorten(body: &str) -> String {
    let escaped: String = body.trim().escape_debug().collect();
    match escaped.char_indices().nth(64) {
        Some((i, _)) => format!("{}…", &escaped[..i]),
        None => escaped,
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Serves one canned HTTP response per connection, forever (until the test ends).
    async fn serve(
        status: &'static str,
        content_type: Option<&'static str>,
        body: &'static str,
    ) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = [0u8; 2048];
                let _ = stream.read(&mut buf).await;
                let ct = content_type
                    .map(|c| format!("Content-Type: {c}\r\n"))
                    .unwrap_or_default();
                let response = format!(
                    "HTTP/1.1 {status}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            }
        });
        format!("http://{addr}/ip")
    }

    async fn detect(url: &str) -> Result<IpAddr, DetectError> {
        // No proxy: the environment's HTTP_PROXY must not intercept loopback tests.
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        public_ip(&client, url).await
    }

    #[tokio::test]
    async fn plain_text_ipv4_with_newline_is_parsed() {
        let url = serve("200 OK", Some("text/plain; charset=utf-8"), "203.0.113.7\n").await;
        assert_eq!(
            detect(&url).await.unwrap(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn plain_text_ipv6_without_charset_is_parsed() {
        let url = serve("200 OK", Some("Text/Plain"), " 2001:db8::1 ").await;
        assert_eq!(
            detect(&url).await.unwrap(),
            "2001:db8::1".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn non_success_status_is_reported() {
        let url = serve("503 Service Unavailable", Some("text/plain"), "busy").await;
        assert!(matches!(
            detect(&url).await,
            Err(DetectError::Status { status: 503, .. })
        ));
    }

    #[tokio::test]
    async fn wrong_content_type_is_reported() {
        let url = serve(
            "200 OK",
            Some("application/json"),
            r#"{"ip":"203.0.113.7"}"#,
        )
        .await;
        let err = detect(&url).await.unwrap_err();
        assert!(matches!(err, DetectError::ContentType { .. }), "{err}");
        assert!(err.to_string().contains("application/json"), "{err}");
    }

    #[tokio::test]
    async fn missing_content_type_is_reported() {
        let url = serve("200 OK", None, "203.0.113.7").await;
        let err = detect(&url).await.unwrap_err();
        assert!(matches!(err, DetectError::ContentType { .. }), "{err}");
        assert!(err.to_string().contains("'none'"), "{err}");
    }

    #[tokio::test]
    async fn garbage_body_is_a_parse_error() {
        let url = serve("200 OK", Some("text/plain"), "<html>hello\u{1b}</html>").await;
        let err = detect(&url).await.unwrap_err();
        assert!(matches!(err, DetectError::Parse { .. }), "{err}");
        assert!(err.to_string().contains("<html>hello\\u{1b}"), "{err}");
    }

    #[tokio::test]
    async fn oversized_body_is_refused() {
        let big: &'static str = Box::leak("1".repeat(4096).into_boxed_str());
        let url = serve("200 OK", Some("text/plain"), big).await;
        assert!(matches!(detect(&url).await, Err(DetectError::Body { .. })));
    }

    #[tokio::test]
    async fn unreachable_server_is_a_request_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = detect(&format!("http://{addr}/")).await.unwrap_err();
        assert!(matches!(err, DetectError::Request { .. }), "{err}");
    }

    #[test]
    fn content_type_essence_ignores_parameters_and_case() {
        assert!(is_text_plain("text/plain"));
        assert!(is_text_plain("TEXT/PLAIN ; charset=us-ascii"));
        assert!(!is_text_plain("text/html"));
        assert!(!is_text_plain("text/plainx"));
    }
}
