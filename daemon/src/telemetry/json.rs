//! The `logger.format: json` line format: one flat JSON object per line, for journald,
//! Loki or `jq`.
//!
//! Keys, in this order: `timestamp` (RFC 3339, UTC, microseconds), `level` (`TRACE`, `DEBUG`,
//! `INFO`, `WARN`, `ERROR`), `target` (the Rust module), `message`, `spans` (the names of the
//! spans the event happened in, outermost first, joined by `:`, e.g. `site:channel`; absent
//! outside any span), then every field of the event and of its spans, sorted by name
//! (`site.name`, `peer.site`, `channel.id`, `app.name`, `error`, ...). Numbers and booleans stay
//! JSON numbers and booleans; anything else is a string.
//!
//! A line never has a key twice: an event's own field wins over a span's field of the same name,
//! an inner span's over an outer one's, and the fixed keys above over any field. Newlines inside
//! values are escaped, so a line is always one whole object.
//!
//! Hand-written (a formatter over tracing-subscriber's own JSON field encoding) because
//! tracing-subscriber's `json()` nests span fields under `span`/`spans` and fills `spans` from
//! the current thread rather than the event's parent span, and `json-subscriber`'s top-level
//! flattening may write a key twice when an event and a span share a field name.

use std::fmt;

use serde_json::{Map, Value};
use tracing::{Event, Subscriber};
use tracing_log::NormalizeEvent;
use tracing_subscriber::field::VisitOutput;
use tracing_subscriber::fmt::format::{JsonFields, JsonVisitor, Writer};
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Keys every line has (`spans` only inside a span), written first in this order.
pub const FIXED_KEYS: [&str; 5] = ["timestamp", "level", "target", "message", "spans"];

/// The event formatter; pair it with [`JsonFields`] for span fields.
#[derive(Debug, Default, Clone, Copy)]
pub struct JsonLines;

impl<S> FormatEvent<S, JsonFields> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, JsonFields>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        // Records that came through the `log` crate carry their real target here.
        let normalized = event.normalized_metadata();
        let meta = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let mut fields = Map::new();
        let mut names = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                names.push(span.name());
                if let Some(f) = span.extensions().get::<FormattedFields<JsonFields>>() {
                    fields.extend(object(&f.fields));
                }
            }
        }
        let mut own = String::new();
        let mut visitor = JsonVisitor::new(&mut own);
        event.record(&mut visitor);
        visitor.finish()?;
        fields.extend(object(&own));

        let mut timestamp = String::new();
        SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let message = fields.remove("message").unwrap_or_default();
        let fixed = [
            Value::String(timestamp),
            Value::String(meta.level().as_str().to_owned()),
            Value::String(meta.target().to_owned()),
            match message {
                Value::Null => Value::String(String::new()),
                m => m,
            },
            Value::String(names.join(":")),
        ];
        let mut line = String::from("{");
        for (key, value) in FIXED_KEYS.iter().zip(fixed) {
            fields.remove(*key);
            if *key == "spans" && names.is_empty() {
                continue;
            }
            push(&mut line, key, &value)?;
        }
        for (key, value) in &fields {
            push(&mut line, key, value)?;
        }
        line.push('}');
        writeln!(writer, "{line}")
    }
}

/// The fields of a JSON object text; nothing if it is not one (a span without fields).
fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

fn push(line: &mut String, key: &str, value: &Value) -> fmt::Result {
    if !line.ends_with('{') {
        line.push(',');
    }
    let key = serde_json::to_string(key).map_err(|_| fmt::Error)?;
    let value = serde_json::to_string(value).map_err(|_| fmt::Error)?;
    line.push_str(&key);
    line.push(':');
    line.push_str(&value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing::{info, info_span, warn};
    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Self;
        fn make_writer(&'a self) -> Self {
            self.clone()
        }
    }

    /// Runs `f` under the JSON subscriber and returns each line parsed, checking that every
    /// line is exactly one object with no key twice.
    fn lines(f: impl FnOnce()) -> Vec<Map<String, Value>> {
        raw_lines(f).into_iter().map(|(_, map)| map).collect()
    }

    /// [`lines`] with each line's text, to check the order of keys.
    fn raw_lines(f: impl FnOnce()) -> Vec<(String, Map<String, Value>)> {
        let buf = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .fmt_fields(JsonFields::new())
            .event_format(JsonLines)
            .with_writer(buf.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, f);
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        assert!(text.ends_with('\n'), "{text:?}");
        text.lines()
            .map(|line| {
                let map: Map<String, Value> = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
                // serde_json keeps the last of duplicate keys: count them in the raw text.
                for key in map.keys() {
                    let quoted = serde_json::to_string(key).unwrap() + ":";
                    assert_eq!(line.matches(&quoted).count(), 1, "{key} twice in {line}");
                }
                (line.to_owned(), map)
            })
            .collect()
    }

    #[test]
    fn fixed_keys_come_first_and_span_fields_are_flat() {
        let out = raw_lines(|| {
            let site = info_span!("site", site.name = "a");
            let _s = site.enter();
            let channel = info_span!("channel", channel.id = 7u64, peer.site = "b");
            let _c = channel.enter();
            info!(bytes = 12u64, ok = true, "channel up");
        });
        assert_eq!(out.len(), 1);
        let (raw, line) = &out[0];
        let mut keys: Vec<&str> = line.keys().map(String::as_str).collect();
        keys.sort_by_key(|k| raw.find(&format!("\"{k}\":")));
        assert_eq!(
            keys,
            [
                "timestamp",
                "level",
                "target",
                "message",
                "spans",
                "bytes",
                "channel.id",
                "ok",
                "peer.site",
                "site.name"
            ],
            "{line:?}"
        );
        assert_eq!(line["level"], "INFO");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["message"], "channel up");
        assert_eq!(line["spans"], "site:channel");
        assert_eq!(line["site.name"], "a");
        assert_eq!(line["peer.site"], "b");
        assert_eq!(line["channel.id"], 7);
        assert_eq!(line["bytes"], 12);
        assert_eq!(line["ok"], true);
        let ts = line["timestamp"].as_str().unwrap();
        assert!(
            ts.len() > 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
    }

    /// tracing-subscriber's own `json()` left `spans` empty for events with an explicit
    /// parent (the daemon's start-up lines), so those lines had no `site.name` in `spans`.
    #[test]
    fn an_explicit_parent_counts_as_much_as_an_entered_span() {
        let out = lines(|| {
            let site = info_span!("site", site.name = "a");
            info!(parent: &site, "site started");
        });
        assert_eq!(out[0]["site.name"], "a", "{:?}", out[0]);
        assert_eq!(out[0]["spans"], "site");
    }

    #[test]
    fn the_event_wins_over_its_spans_and_fixed_keys_over_both() {
        let out = lines(|| {
            let outer = info_span!("site", peer.site = "outer", level = "span");
            let _o = outer.enter();
            let inner = info_span!("peer", peer.site = "inner");
            let _i = inner.enter();
            warn!(target: "t", app = "web", timestamp = "forged", "inner wins");
            warn!(peer.site = "event", "event wins");
        });
        assert_eq!(out[0]["peer.site"], "inner");
        assert_eq!(out[0]["level"], "WARN");
        assert_eq!(out[0]["target"], "t");
        assert_ne!(out[0]["timestamp"], "forged");
        assert_eq!(out[0]["app"], "web");
        assert_eq!(out[1]["peer.site"], "event");
    }

    #[test]
    fn a_newline_in_a_value_stays_inside_one_line() {
        let out = lines(|| {
            let name = "evil\n{\"level\":\"ERROR\"}";
            info!(peer.site = name, "peer said {name}");
            info!("outside any span");
        });
        assert_eq!(out.len(), 2);
        assert_eq!(out[0]["peer.site"], "evil\n{\"level\":\"ERROR\"}");
        assert_eq!(out[0]["level"], "INFO");
        assert!(out[1].get("spans").is_none(), "{:?}", out[1]);
        assert_eq!(out[1]["message"], "outside any span");
    }

    #[test]
    fn a_late_recorded_span_field_is_included() {
        let out = lines(|| {
            let stream = info_span!("stream", app.name = tracing::field::Empty, stream.id = 4u64);
            stream.record("app.name", "web");
            let _s = stream.enter();
            info!("stream opened");
        });
        assert_eq!(out[0]["app.name"], "web", "{:?}", out[0]);
        assert_eq!(out[0]["stream.id"], 4);
    }
}
