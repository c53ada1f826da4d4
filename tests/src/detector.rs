//! A stand-in for a public address detector (`httpDetector.url`): raw HTTP/1.1 on
//! 127.0.0.1:0 answering every request with one canned [`Answer`] that a test can change
//! while it runs, and counting requests. Written by hand (a few lines over a `TcpListener`)
//! so a test controls every byte: odd content types, no `Content-Length`, endless bodies.
//! It knows nothing of wovenet.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::AbortHandle;

/// What the detector answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Status line after `HTTP/1.1 `, e.g. `200 OK`.
    pub status: String,
    /// `Content-Type`, if any.
    pub content_type: Option<String>,
    /// The body, sent with a `Content-Length`.
    pub body: Vec<u8>,
}

impl Answer {
    /// `200 OK` with `content_type` and `body`.
    pub fn ok(content_type: Option<&str>, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status: "200 OK".to_owned(),
            content_type: content_type.map(str::to_owned),
            body: body.into(),
        }
    }

    /// An error status (e.g. `500 Internal Server Error`) with a short body.
    pub fn status(status: &str) -> Self {
        Self {
            status: status.to_owned(),
            content_type: Some("text/plain".to_owned()),
            body: b"no\n".to_vec(),
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {}\r\n", self.status);
        if let Some(ct) = &self.content_type {
            out.push_str(&format!("Content-Type: {ct}\r\n"));
        }
        out.push_str(&format!(
            "Content-Length: {}\r\nConnection: close\r\n\r\n",
            self.body.len()
        ));
        let mut out = out.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

/// The running detector; stops when dropped.
pub struct Detector {
    url: String,
    answer: Arc<Mutex<Answer>>,
    requests: Arc<AtomicUsize>,
    task: AbortHandle,
}

impl Detector {
    /// Starts answering `answer` on 127.0.0.1, a free port, path `/ip`.
    pub async fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("detector cannot bind 127.0.0.1:0: {e}"));
        let addr = listener
            .local_addr()
            .unwrap_or_else(|e| panic!("detector address: {e}"));
        let answer = Arc::new(Mutex::new(answer));
        let requests = Arc::new(AtomicUsize::new(0));
        let (shared, counter) = (answer.clone(), requests.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let bytes = shared
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .bytes();
                let counter = counter.clone();
                tokio::spawn(async move {
                    // One request per connection; its content does not matter.
                    let mut buf = [0u8; 4096];
                    if matches!(stream.read(&mut buf).await, Ok(n) if n > 0) {
                        counter.fetch_add(1, Ordering::SeqCst);
                        let _ = stream.write_all(&bytes).await;
                        let _ = stream.shutdown().await;
                    }
                });
            }
        })
        .abort_handle();
        Self {
            url: format!("http://{addr}/ip"),
            answer,
            requests,
            task,
        }
    }

    /// The URL for `httpDetector.url`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Answers `answer` from now on.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap_or_else(PoisonError::into_inner) = answer;
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

impl Drop for Detector {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(url: &str) -> String {
        let addr = url
            .strip_prefix("http://")
            .and_then(|r| r.split('/').next())
            .unwrap();
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET /ip HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn answers_what_it_is_told_and_counts() {
        let d = Detector::start(Answer::ok(Some("application/octet-stream"), "127.0.0.1\n")).await;
        assert_eq!(
            get(d.url()).await,
            "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 10\r\n\
             Connection: close\r\n\r\n127.0.0.1\n"
        );
        d.set(Answer::status("500 Internal Server Error"));
        assert!(
            get(d.url())
                .await
                .starts_with("HTTP/1.1 500 Internal Server Error\r\n")
        );
        assert_eq!(d.requests(), 2);
    }
}
