//! Public address detection over HTTP (`publicAddress: auto` with `httpDetector.url`).
//!
//! Like the original wovenet, any `2xx` answer whose body, trimmed, is an IPv4
//! or IPv6 address is accepted, whatever its content type: nginx's
//! `return 200 $remote_addr` and static file servers answer
//! `application/octet-stream`. A content type other than `text/plain` is
//! warned about once per URL. The body is read up to a small cap. This module
//! only fetches and parses; when to re-check and what to do with a changed
//! address is the site's decision.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use tracing::warn;

/// Whole-request timeout.
const TIMEOUT: Duration = Duration::from_secs(10);
/// An address is at most 45 characters; anything much longer is not one.
pub const MAX_BODY: usize = 256;

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
    /// The body could not be read or was too long.
    #[error("cannot read the answer of '{url}': {reason}")]
    Body {
        /// The detector URL.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The body is not an IP address.
    #[error(
        "'{url}' answered '{body}' (content type '{content_type}'), which is not an IP address"
    )]
    Parse {
        /// The detector URL.
        url: String,
        /// The trimmed body, escaped and shortened for logs.
        body: String,
        /// The content type it was sent with (`none` when missing), escaped.
        content_type: String,
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
    let body_err = |reason: String| DetectError::Body {
        url: url.to_owned(),
        reason,
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(body_err(format!("longer than {MAX_BODY} bytes")));
    }
    let mut body = Vec::new();
    // Read chunk by chunk so a misbehaving server cannot make us buffer much.
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| body_err(e.to_string()))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_BODY {
            return Err(body_err(format!("longer than {MAX_BODY} bytes")));
        }
    }
    let ip = parse_body(&body).ok_or_else(|| DetectError::Parse {
        url: url.to_owned(),
        body: shorten(&String::from_utf8_lossy(&body)),
        content_type: shorten(content_type.as_deref().unwrap_or("none")),
    })?;
    if !content_type.as_deref().is_some_and(is_text_plain) && first_odd_answer(url) {
        warn!(
            url,
            content_type = ?content_type.as_deref().unwrap_or("none"),
            "the public address detector does not answer 'text/plain'; its body is used anyway"
        );
    }
    Ok(ip)
}

/// URLs already warned about for their content type (from the config: few).
static WARNED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// True the first time `url` is seen answering with another content type
/// than `text/plain` in this process.
fn first_odd_answer(url: &str) -> bool {
    let mut warned = WARNED.lock().unwrap_or_else(PoisonError::into_inner);
    warned
        .get_or_insert_with(HashSet::new)
        .insert(url.to_owned())
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
        // Even when the body would parse.
        let url = serve("500 Internal Server Error", None, "203.0.113.7").await;
        let err = detect(&url).await.unwrap_err();
        assert_eq!(err.to_string(), format!("'{url}' answered HTTP 500"));
    }

    #[tokio::test]
    async fn octet_stream_with_newline_is_accepted_like_the_original() {
        // What nginx's `return 200 "$remote_addr\n"` and static file servers send.
        let url = serve("200 OK", Some("application/octet-stream"), "203.0.113.7\n").await;
        assert_eq!(
            detect(&url).await.unwrap(),
            "203.0.113.7".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn missing_content_type_is_accepted() {
        let url = serve("200 OK", None, "2001:db8::7").await;
        assert_eq!(
            detect(&url).await.unwrap(),
            "2001:db8::7".parse::<IpAddr>().unwrap()
        );
    }

    #[tokio::test]
    async fn json_is_not_an_address_and_the_error_names_its_content_type() {
        let url = serve(
            "200 OK",
            Some("application/json"),
            r#"{"ip":"203.0.113.7"}"#,
        )
        .await;
        let err = detect(&url).await.unwrap_err();
        assert!(matches!(err, DetectError::Parse { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            format!(
                "'{url}' answered '{{\\\"ip\\\":\\\"203.0.113.7\\\"}}' (content type 'application/json'), which is not an IP address"
            )
        );
    }

    #[test]
    fn an_odd_content_type_is_warned_about_once_per_url() {
        assert!(first_odd_answer("http://detector.test/a"));
        assert!(!first_odd_answer("http://detector.test/a"));
        assert!(first_odd_answer("http://detector.test/b"));
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
    async fn an_endless_body_without_length_is_cut_at_the_cap() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = sent.clone();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 2048];
            let _ = stream.read(&mut buf).await;
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n";
            stream.write_all(head.as_bytes()).await.unwrap();
            // Up to 64 MiB, close-delimited: stops when the client hangs up.
            for _ in 0..1024 {
                if stream.write_all(&[b'7'; 64 * 1024]).await.is_err() {
                    break;
                }
                counter.fetch_add(64 * 1024, std::sync::atomic::Ordering::Relaxed);
            }
        });
        let err = detect(&format!("http://{addr}/")).await.unwrap_err();
        assert!(
            matches!(&err, DetectError::Body { reason, .. } if reason == "longer than 256 bytes"),
            "{err}"
        );
        let sent = sent.load(std::sync::atomic::Ordering::Relaxed);
        assert!(sent < 64 << 20, "the client kept reading: {sent} bytes");
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
