//! Human units for table output: byte counts, rates, durations, ages, timestamps and
//! the lowercase names of the API's enums. Pure functions; JSON output never uses them
//! (scripts get raw numbers there).

use std::time::{Duration, SystemTime};

use wovenet_proto::v1::{
    BrokerState, ChannelRoute, ChannelState, ChannelTransport, Direction, ListenerState, PeerState,
    ReloadOutcome, StreamDirection, TrustMode, TrustState,
};

/// Shown in a table cell that has no value.
pub const EMPTY: &str = "-";

/// `0 B`, `512 B`, `1.5 KiB`, `12.0 MiB`, … (binary units, one decimal above bytes).
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    // Precision loss above 2^53 bytes is irrelevant at one decimal.
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// A rate in bytes per second: `1.5 MiB/s`; `-` when not a finite, non-negative number.
pub fn rate(bytes_per_second: f64) -> String {
    if !bytes_per_second.is_finite() || bytes_per_second < 0.0 {
        return EMPTY.to_owned();
    }
    // Rounded to whole bytes: the unit formatter shows one decimal at most anyway.
    format!("{}/s", bytes(bytes_per_second.round() as u64))
}

/// A compact duration: `350µs`, `350ms`, `12s`, `2m5s`, `1h2m`, `3d4h` (two units at most,
/// truncated, a zero second unit left out: `2m`, `1h`).
pub fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        let micros = d.subsec_micros();
        return match micros {
            0 => "0s".to_owned(),
            1..=999 => format!("{micros}µs"),
            _ => format!("{}ms", d.subsec_millis()),
        };
    }
    let (days, hours, minutes, seconds) =
        (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    let (big, big_unit, small, small_unit) = if days > 0 {
        (days, "d", hours, "h")
    } else if hours > 0 {
        (hours, "h", minutes, "m")
    } else if minutes > 0 {
        (minutes, "m", seconds, "s")
    } else {
        return format!("{seconds}s");
    };
    if small == 0 {
        format!("{big}{big_unit}")
    } else {
        format!("{big}{big_unit}{small}{small_unit}")
    }
}

/// A proto duration for a table: `-` when absent or negative.
pub fn proto_duration(d: Option<&prost_types::Duration>) -> String {
    d.and_then(|d| Duration::try_from(*d).ok())
        .map_or_else(|| EMPTY.to_owned(), duration)
}

/// A proto duration as seconds (JSON output); `None` when absent or negative.
pub fn seconds(d: Option<&prost_types::Duration>) -> Option<f64> {
    d.and_then(|d| Duration::try_from(*d).ok())
        .map(|d| d.as_secs_f64())
}

/// RFC 3339 in UTC with at most millisecond precision: `2024-05-01T10:00:00.123Z`.
pub fn timestamp(ts: &prost_types::Timestamp) -> String {
    let mut t = *ts;
    t.normalize();
    t.nanos = t.nanos / 1_000_000 * 1_000_000;
    t.to_string()
}

/// How long before `now` `ts` was: `3s ago`; `-` when absent, `now` when in the future
/// (clocks of daemon and client are the same host's, so only rounding gets it there).
pub fn ago(ts: Option<&prost_types::Timestamp>, now: SystemTime) -> String {
    let Some(then) = ts.and_then(|t| SystemTime::try_from(*t).ok()) else {
        return EMPTY.to_owned();
    };
    match now.duration_since(then) {
        Ok(d) if d.as_secs() > 0 => format!("{} ago", duration(d)),
        _ => "now".to_owned(),
    }
}

/// `yes` / `no`.
pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `s` unless `n` is one, for "1 peer" / "2 peers".
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// The empty-cell marker for an empty string.
pub fn or_empty(s: &str) -> &str {
    if s.is_empty() { EMPTY } else { s }
}

/// `PREFIX_SOME_VALUE` → `some_value`; `unknown` for a value this client does not know
/// (a newer daemon).
fn enum_name(name: Option<&'static str>, prefix: &str) -> String {
    match name {
        Some(n) => n.strip_prefix(prefix).unwrap_or(n).to_ascii_lowercase(),
        None => "unknown".to_owned(),
    }
}

/// `connecting`, `connected`, `reconnecting`, `unspecified` or `unknown`.
pub fn broker_state(v: i32) -> String {
    enum_name(
        BrokerState::try_from(v).ok().map(|e| e.as_str_name()),
        "BROKER_STATE_",
    )
}

/// `discovered`, `connecting`, `connected`, `gone`, `refused`, `unspecified` or `unknown`.
pub fn peer_state(v: i32) -> String {
    enum_name(
        PeerState::try_from(v).ok().map(|e| e.as_str_name()),
        "PEER_STATE_",
    )
}

/// `outbound`, `inbound`, `unspecified` or `unknown` (who dialled a dataChannel).
pub fn direction(v: i32) -> String {
    enum_name(
        Direction::try_from(v).ok().map(|e| e.as_str_name()),
        "DIRECTION_",
    )
}

/// `direct`, `punched`, or `direct` from a daemon that predates routes.
pub fn channel_route(v: i32) -> String {
    match ChannelRoute::try_from(v) {
        Ok(ChannelRoute::Unspecified) => "direct".to_owned(),
        r => enum_name(r.ok().map(|e| e.as_str_name()), "CHANNEL_ROUTE_"),
    }
}

/// `quic` (also when unset: a daemon that predates TCP channels), `tcp` or
/// `unknown`.
pub fn channel_transport(v: i32) -> String {
    match ChannelTransport::try_from(v) {
        Ok(ChannelTransport::Unspecified) => "quic".to_owned(),
        t => enum_name(t.ok().map(|e| e.as_str_name()), "CHANNEL_TRANSPORT_"),
    }
}

/// `up`, `connecting`, `unspecified` or `unknown`.
pub fn channel_state(v: i32) -> String {
    enum_name(
        ChannelState::try_from(v).ok().map(|e| e.as_str_name()),
        "CHANNEL_STATE_",
    )
}

/// `outbound`, `inbound`, `unspecified` or `unknown` (which way a stream goes).
pub fn stream_direction(v: i32) -> String {
    enum_name(
        StreamDirection::try_from(v).ok().map(|e| e.as_str_name()),
        "STREAM_DIRECTION_",
    )
}

/// `open`, `waiting`, `failed`, `unspecified` or `unknown`.
pub fn listener_state(v: i32) -> String {
    enum_name(
        ListenerState::try_from(v).ok().map(|e| e.as_str_name()),
        "LISTENER_STATE_",
    )
}

/// `applied`, `needs_restart`, `invalid`, `unspecified` or `unknown` (how a reload ended).
pub fn reload_outcome(v: i32) -> String {
    enum_name(
        ReloadOutcome::try_from(v).ok().map(|e| e.as_str_name()),
        "RELOAD_OUTCOME_",
    )
}

/// `pinned`, `new`, `conflict`, `not_allowed`, `unpinned`, `unspecified` or `unknown`
/// (where a peer's identity stands).
pub fn trust_state(v: i32) -> String {
    enum_name(
        TrustState::try_from(v).ok().map(|e| e.as_str_name()),
        "TRUST_STATE_",
    )
}

/// `pinned`, `strict`, `open`, `unspecified` or `unknown` (`trust.mode`).
pub fn trust_mode(v: i32) -> String {
    enum_name(
        TrustMode::try_from(v).ok().map(|e| e.as_str_name()),
        "TRUST_MODE_",
    )
}

/// A trust state for people: [`trust_state`] with words apart (`not allowed`), `-` when
/// not set (a peer known only from an event, or a daemon that predates identities).
pub fn trust_cell(v: i32) -> String {
    cell(trust_state(v)).replace('_', " ")
}

/// Characters of an identity fingerprint shown where the whole one does not fit.
pub const SHORT_IDENTITY: usize = 8;

/// The first [`SHORT_IDENTITY`] characters of a fingerprint and `…`, so a shortened one
/// never passes for a whole one; `-` when empty. Only for narrow screens: a prefix is
/// cheap to forge, so wherever an operator compares identities the whole one is shown.
pub fn short_identity(fingerprint: &str) -> String {
    if fingerprint.is_empty() {
        return EMPTY.to_owned();
    }
    let mut chars = fingerprint.chars();
    let head: String = chars.by_ref().take(SHORT_IDENTITY).collect();
    if chars.next().is_some() {
        format!("{head}…")
    } else {
        head
    }
}

/// An enum name for a table cell: `-` instead of `unspecified`.
pub fn cell(name: String) -> String {
    if name == "unspecified" {
        EMPTY.to_owned()
    } else {
        name
    }
}

/// A stream's kind: `tcp` (byte stream) or `udp` (datagram flow); daemons
/// before UDP apps send nothing, which means `tcp`.
pub fn stream_kind(kind: &str) -> String {
    if kind.is_empty() {
        "tcp".to_owned()
    } else {
        kind.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_use_binary_units_with_one_decimal() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1024), "1.0 KiB");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(5 * 1024 * 1024 + 512 * 1024), "5.5 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(bytes(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn rates_are_bytes_per_second_and_nonsense_is_a_dash() {
        assert_eq!(rate(0.0), "0 B/s");
        assert_eq!(rate(1536.4), "1.5 KiB/s");
        assert_eq!(rate(f64::NAN), "-");
        assert_eq!(rate(-1.0), "-");
    }

    #[test]
    fn durations_show_at_most_two_units() {
        let ms = Duration::from_millis;
        assert_eq!(duration(Duration::ZERO), "0s");
        assert_eq!(duration(Duration::from_micros(350)), "350µs");
        assert_eq!(duration(ms(350)), "350ms");
        assert_eq!(duration(ms(12_900)), "12s");
        assert_eq!(duration(Duration::from_secs(125)), "2m5s");
        assert_eq!(duration(Duration::from_secs(120)), "2m");
        assert_eq!(duration(Duration::from_secs(3_725)), "1h2m");
        assert_eq!(duration(Duration::from_secs(3_600)), "1h");
        assert_eq!(
            duration(Duration::from_secs(3 * 86_400 + 4 * 3_600 + 59)),
            "3d4h"
        );
    }

    #[test]
    fn proto_durations_absent_or_negative_are_dashes() {
        let d = prost_types::Duration {
            seconds: 1,
            nanos: 500_000_000,
        };
        assert_eq!(proto_duration(Some(&d)), "1s");
        assert_eq!(seconds(Some(&d)), Some(1.5));
        assert_eq!(proto_duration(None), "-");
        let neg = prost_types::Duration {
            seconds: -1,
            nanos: 0,
        };
        assert_eq!(proto_duration(Some(&neg)), "-");
        assert_eq!(seconds(Some(&neg)), None);
    }

    #[test]
    fn timestamps_are_rfc3339_utc_to_the_millisecond() {
        let t = prost_types::Timestamp {
            seconds: 1_714_557_600,
            nanos: 123_456_789,
        };
        assert_eq!(timestamp(&t), "2024-05-01T10:00:00.123Z");
        let whole = prost_types::Timestamp {
            seconds: 1_714_557_600,
            nanos: 0,
        };
        assert_eq!(timestamp(&whole), "2024-05-01T10:00:00Z");
    }

    #[test]
    fn ages_are_relative_to_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        let t = |s| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        };
        assert_eq!(ago(Some(&t(997)), now), "3s ago");
        assert_eq!(ago(Some(&t(1_000 - 125)), now), "2m5s ago");
        assert_eq!(ago(Some(&t(1_000)), now), "now");
        assert_eq!(ago(Some(&t(1_005)), now), "now");
        assert_eq!(ago(None, now), "-");
    }

    #[test]
    fn enum_names_are_lowercase_without_prefix() {
        assert_eq!(
            broker_state(BrokerState::Reconnecting as i32),
            "reconnecting"
        );
        assert_eq!(peer_state(PeerState::Connected as i32), "connected");
        assert_eq!(peer_state(PeerState::Unspecified as i32), "unspecified");
        assert_eq!(direction(Direction::Inbound as i32), "inbound");
        assert_eq!(channel_state(ChannelState::Up as i32), "up");
        assert_eq!(
            stream_direction(StreamDirection::Outbound as i32),
            "outbound"
        );
        assert_eq!(listener_state(ListenerState::Waiting as i32), "waiting");
        assert_eq!(listener_state(99), "unknown");
        assert_eq!(cell(peer_state(0)), "-");
        assert_eq!(peer_state(PeerState::Refused as i32), "refused");
        assert_eq!(trust_state(TrustState::NotAllowed as i32), "not_allowed");
        assert_eq!(trust_state(TrustState::New as i32), "new");
        assert_eq!(trust_mode(TrustMode::Strict as i32), "strict");
        assert_eq!(trust_mode(42), "unknown");
    }

    #[test]
    fn trust_cells_are_words_and_unset_is_a_dash() {
        assert_eq!(trust_cell(TrustState::NotAllowed as i32), "not allowed");
        assert_eq!(trust_cell(TrustState::Conflict as i32), "conflict");
        assert_eq!(trust_cell(TrustState::Unspecified as i32), "-");
    }

    #[test]
    fn short_identities_are_marked_as_shortened() {
        assert_eq!(
            short_identity("hfqku7jmljxqcy44vv6js2nuzo7hxo4u"),
            "hfqku7jm…"
        );
        assert_eq!(short_identity("hfqku7jm"), "hfqku7jm");
        assert_eq!(short_identity(""), "-");
    }

    #[test]
    fn plurals_and_empty_cells() {
        assert_eq!(plural(1, "peer"), "1 peer");
        assert_eq!(plural(0, "peer"), "0 peers");
        assert_eq!(or_empty(""), "-");
        assert_eq!(or_empty("x"), "x");
        assert_eq!(yes_no(true), "yes");
    }
}
