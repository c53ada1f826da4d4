//! Reading wovenetd's JSON log (one object per line): flattening event and span fields so tests
//! can ask for `message`, `peer.site`, `channel.id`, and rendering a readable tail for panic
//! messages. Knows nothing about processes.

use std::collections::BTreeMap;

use serde_json::Value;

/// One parsed log line with its fields flattened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// The line as written.
    pub raw: String,
    /// The event message (`message` or `fields.message`), empty if none.
    pub message: String,
    /// Level (`INFO`, `DEBUG`, ...), empty if none.
    pub level: String,
    /// Every field: top-level keys, then `fields.*` unprefixed, then span fields (which never
    /// shadow event fields). Values that are not strings are kept as JSON text.
    pub fields: BTreeMap<String, String>,
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn merge(
    into: &mut BTreeMap<String, String>,
    obj: &serde_json::Map<String, Value>,
    overwrite: bool,
) {
    for (k, v) in obj {
        if overwrite || !into.contains_key(k) {
            into.insert(k.clone(), text(v));
        }
    }
}

impl LogLine {
    /// Parses one JSON line; `None` for blank or non-JSON lines (e.g. a panic message).
    pub fn parse(line: &str) -> Option<Self> {
        let Value::Object(obj) = serde_json::from_str::<Value>(line.trim()).ok()? else {
            return None;
        };
        let mut fields = BTreeMap::new();
        for (k, v) in &obj {
            if !v.is_object() && k != "spans" {
                fields.insert(k.clone(), text(v));
            }
        }
        if let Some(Value::Object(f)) = obj.get("fields") {
            merge(&mut fields, f, true);
        }
        if let Some(Value::Object(span)) = obj.get("span") {
            merge(&mut fields, span, false);
        }
        if let Some(Value::Array(spans)) = obj.get("spans") {
            for s in spans.iter().rev() {
                if let Value::Object(s) = s {
                    merge(&mut fields, s, false);
                }
            }
        }
        let message = fields.get("message").cloned().unwrap_or_default();
        let level = fields.get("level").cloned().unwrap_or_default();
        Some(Self {
            raw: line.to_owned(),
            message,
            level,
            fields,
        })
    }

    /// A field's value (`peer.site`, `channel.id`, ...).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// Whether the message contains `message` and every `(key, value)` field is equal.
    pub fn matches(&self, message: &str, fields: &[(&str, &str)]) -> bool {
        self.message.contains(message) && fields.iter().all(|(k, v)| self.field(k) == Some(v))
    }

    /// `LEVEL message k=v ...` without timestamps, targets and span internals.
    pub fn render(&self) -> String {
        let mut s = format!("{:5} {}", self.level, self.message);
        for (k, v) in &self.fields {
            if !matches!(
                k.as_str(),
                "message" | "level" | "timestamp" | "target" | "name" | "threadId" | "threadName"
            ) {
                s.push_str(&format!(" {k}={v}"));
            }
        }
        s
    }
}

/// Parses every complete JSON line (a last line without `\n` may still be being written and is
/// skipped).
pub fn parse(text: &str) -> Vec<LogLine> {
    complete_lines(text).filter_map(LogLine::parse).collect()
}

fn complete_lines(text: &str) -> impl Iterator<Item = &str> {
    let complete = match text.rfind('\n') {
        Some(i) => &text[..=i],
        None => "",
    };
    complete.lines()
}

/// The last `n` lines of `text`, JSON lines rendered compactly, other lines kept verbatim.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    let mut out = String::new();
    if start > 0 {
        out.push_str(&format!("  ... {start} earlier lines\n"));
    }
    for l in &lines[start..] {
        match LogLine::parse(l) {
            Some(line) => out.push_str(&format!("  {}\n", line.render())),
            None => out.push_str(&format!("  {l}\n")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLAT: &str = r#"{"timestamp":"t","level":"INFO","message":"channel up","peer.site":"b","channel.id":3,"target":"x"}"#;
    const NESTED: &str = r#"{"timestamp":"t","level":"WARN","fields":{"message":"channel down","reason":"idle"},"span":{"peer.site":"c","name":"peer"},"spans":[{"site.name":"a","name":"site"},{"peer.site":"c","name":"peer"}]}"#;

    #[test]
    fn flattened_json_line_exposes_message_and_fields() {
        let l = LogLine::parse(FLAT).unwrap();
        assert_eq!(l.message, "channel up");
        assert_eq!(l.level, "INFO");
        assert_eq!(l.field("peer.site"), Some("b"));
        assert_eq!(l.field("channel.id"), Some("3"));
        assert!(l.matches("channel", &[("peer.site", "b")]));
        assert!(!l.matches("channel", &[("peer.site", "c")]));
    }

    #[test]
    fn nested_fields_and_span_fields_are_flattened() {
        let l = LogLine::parse(NESTED).unwrap();
        assert_eq!(l.message, "channel down");
        assert_eq!(l.field("reason"), Some("idle"));
        assert_eq!(l.field("peer.site"), Some("c"));
        assert_eq!(l.field("site.name"), Some("a"));
    }

    #[test]
    fn incomplete_last_line_and_garbage_are_skipped() {
        let text = format!("{FLAT}\nthread 'main' panicked\n{NESTED}");
        let lines = parse(&text);
        assert_eq!(lines.len(), 1);
        assert_eq!(parse(&format!("{text}\n")).len(), 2);
    }

    #[test]
    fn tail_renders_json_compactly_and_keeps_other_lines() {
        let text = format!("{FLAT}\n{FLAT}\nplain text\n");
        let t = tail(&text, 2);
        assert!(t.starts_with("  ... 1 earlier lines\n"), "{t}");
        assert!(
            t.contains("INFO  channel up channel.id=3 peer.site=b"),
            "{t}"
        );
        assert!(t.contains("  plain text"), "{t}");
    }
}
