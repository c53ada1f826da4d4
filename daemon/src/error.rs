//! Showing typed errors: [`Chain`] prints an error with all its sources, for
//! logs and for the last-error fields the control plane shows. Errors stay
//! typed (with `#[source]`) everywhere else; only this formats them. Errors
//! may carry text a peer chose (a QUIC close reason), so what is shown is
//! [`Escaped`]: it cannot end a log line or reorder the text around it.

use std::error::Error;
use std::fmt::{self, Write};

/// Displays `error: source: source…`, every link of the chain, [`Escaped`].
pub struct Chain<'a>(pub &'a (dyn Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", Escaped(&self.0.to_string()))?;
        let mut next = self.0.source();
        while let Some(e) = next {
            write!(f, ": {}", Escaped(&e.to_string()))?;
            next = e.source();
        }
        Ok(())
    }
}

/// Displays text with control characters (line breaks, terminal escapes),
/// bidirectional overrides and isolates, and zero-width characters written as
/// escapes (`\n`, `\u{202e}`); everything else, quotes included, as is.
pub struct Escaped<'a>(pub &'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            if must_escape(c) {
                write!(f, "{}", c.escape_default())?;
            } else {
                f.write_char(c)?;
            }
        }
        Ok(())
    }
}

/// The same characters names may not contain ([`crate::config::invisible`]),
/// plus control characters.
fn must_escape(c: char) -> bool {
    c.is_control() || crate::config::invisible(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn chain_shows_every_source() {
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(Chain(&e).to_string(), "outer: inner");
    }

    #[test]
    fn chain_escapes_what_could_forge_or_reorder_a_line() {
        let e = Outer(std::io::Error::other(
            "bye\n2099-01-01 ERROR forged \u{1b}[31m\u{202e}txet\u{200b} 'quoted'",
        ));
        let shown = Chain(&e).to_string();
        assert_eq!(
            shown,
            "outer: bye\\n2099-01-01 ERROR forged \\u{1b}[31m\\u{202e}txet\\u{200b} 'quoted'"
        );
        assert!(!shown.chars().any(must_escape), "{shown:?}");
    }

    #[test]
    fn a_quic_close_reason_from_the_peer_is_escaped() {
        let close = quinn::ConnectionError::ApplicationClosed(quinn::ApplicationClose {
            error_code: quinn::VarInt::from_u32(7),
            reason: bytes::Bytes::from_static(b"x\r\nINFO channel up"),
        });
        let shown = Chain(&close).to_string();
        assert!(!shown.contains(['\r', '\n']), "{shown:?}");
        assert!(shown.contains("x\\r\\nINFO channel up"), "{shown:?}");
    }
}
