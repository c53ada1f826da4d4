//! Optional Prometheus endpoint (`metrics.listen`): `GET /metrics` renders
//! the site's stats snapshot in the OpenMetrics text format that Prometheus
//! scrapes; every other path is 404.
//!
//! [`render`] is pure (snapshot in, text out) and tested alone; the HTTP side
//! is a minimal hyper 1 HTTP/1.1 server whose connections stop with the
//! daemon. It keeps no metrics state of its own: every scrape asks the site.
//!
//! Label values are names other sites chose; prometheus-client writes label
//! values as given, so `LabelText` escapes them as OpenMetrics requires, or
//! one peer named `x",a="b` would make every site's `/metrics` unparseable.

use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::site::handle::SiteHandle;
use crate::view::{StatsSnapshot, StreamDirection};

/// Content type of [`render`]'s output.
pub const CONTENT_TYPE_OPENMETRICS: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// A client must send its request headers within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the metrics endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The address could not be bound.
    #[error("metrics.listen {addr}: cannot bind: {source}")]
    Bind {
        /// The configured address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Binds `addr` (port 0 picks a free port; see the listener's local address).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, MetricsError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind { addr, source })
}

/// Serves `GET /metrics` on `listener` until `cancel` fires; each connection
/// is a task on `tracker` that finishes its current request, then closes.
pub async fn serve(
    listener: TcpListener,
    site: SiteHandle,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = cancel.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Typically EMFILE: back off instead of spinning.
                    warn!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (site, cancel) = (site.clone(), cancel.clone());
        tracker.spawn(async move {
            let service = service_fn(move |req| answer(site.clone(), req));
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = result {
                debug!(client.addr = %peer, error = %e, "metrics connection ended with an error");
            }
        });
    }
}

async fn answer(
    site: SiteHandle,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        r
    };
    if req.uri().path() != "/metrics" {
        return Ok(reply(
            StatusCode::NOT_FOUND,
            "not found; try /metrics\n".into(),
        ));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "use GET /metrics\n".into(),
        ));
    }
    let text = match site.stats().await {
        Ok(stats) => render(&stats),
        Err(e) => return Ok(reply(StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n"))),
    };
    Ok(match text {
        Ok(text) => {
            let mut r = reply(StatusCode::OK, text);
            r.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(CONTENT_TYPE_OPENMETRICS),
            );
            r
        }
        Err(_) => reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode metrics\n".into(),
        ),
    })
}

/// A label value, escaped when encoded: `\` as `\\`, `"` as `\"` and a
/// line feed as `\n` (the only escapes OpenMetrics and the Prometheus text
/// format define). Other control characters have no escape and would end the
/// line for some parsers; names cannot contain them (see `config`), and any
/// that still arrive are written as U+FFFD.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct LabelText(String);

impl LabelText {
    fn of(value: impl fmt::Display) -> Self {
        Self(value.to_string())
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), fmt::Error> {
        use std::fmt::Write as _;
        let mut rest = self.0.as_str();
        while let Some(i) = rest.find(|c: char| c == '\\' || c == '"' || c.is_control()) {
            let (plain, tail) = rest.split_at(i);
            encoder.write_str(plain)?;
            let mut chars = tail.chars();
            match chars.next() {
                Some('\\') => encoder.write_str("\\\\")?,
                Some('"') => encoder.write_str("\\\"")?,
                Some('\n') => encoder.write_str("\\n")?,
                Some(_) => encoder.write_char(char::REPLACEMENT_CHARACTER)?,
                None => {}
            }
            rest = chars.as_str();
        }
        encoder.write_str(rest)
    }
}

type Labels = Vec<(&'static str, LabelText)>;

fn direction(d: StreamDirection) -> LabelText {
    LabelText::of(match d {
        StreamDirection::Outbound => "outbound",
        StreamDirection::Inbound => "inbound",
    })
}

/// A counter family registered under `name` (`_total` is appended).
fn counters(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Counter> {
    let f = Family::<Labels, Counter>::default();
    registry.register(name, help, f.clone());
    f
}

/// A gauge family registered under `name`.
fn gauges(registry: &mut Registry, name: &str, help: &str) -> Family<Labels, Gauge> {
    let f = Family::<Labels, Gauge>::default();
    registry.register(name, help, f.clone());
    f
}

/// The snapshot as OpenMetrics text, every metric prefixed `wovenet_`.
pub fn render(s: &StatsSnapshot) -> Result<String, fmt::Error> {
    let mut reg = Registry::with_prefix("wovenet");
    let app_sent = counters(
        &mut reg,
        "app_sent_bytes",
        "Bytes sent into the tunnel per app, peer and direction",
    );
    let app_received = counters(
        &mut reg,
        "app_received_bytes",
        "Bytes received from the tunnel per app, peer and direction",
    );
    let app_streams = counters(&mut reg, "app_streams", "Streams opened since start");
    let app_open = gauges(&mut reg, "app_open_streams", "Streams open now");
    let app_limited = counters(
        &mut reg,
        "app_limited_streams",
        "Streams refused because a limit was reached",
    );
    let app_not_allowed = counters(
        &mut reg,
        "app_not_allowed_streams",
        "Inbound streams refused because the app's allowedSites does not list the peer",
    );
    let app_sent_datagrams = counters(
        &mut reg,
        "app_sent_datagrams",
        "UDP apps: datagrams sent into the tunnel per app, peer and direction",
    );
    let app_received_datagrams = counters(
        &mut reg,
        "app_received_datagrams",
        "UDP apps: datagrams received from the tunnel per app, peer and direction",
    );
    for a in &s.apps {
        let l: Labels = vec![
            ("app", LabelText::of(&a.app)),
            ("peer", LabelText::of(&a.peer)),
            ("direction", direction(a.direction)),
        ];
        app_sent.get_or_create(&l).inc_by(a.bytes_sent);
        app_received.get_or_create(&l).inc_by(a.bytes_received);
        app_streams.get_or_create(&l).inc_by(a.total_streams);
        app_open
            .get_or_create(&l)
            .set(i64::try_from(a.open_streams).unwrap_or(i64::MAX));
        app_limited.get_or_create(&l).inc_by(a.limited_streams);
        app_not_allowed
            .get_or_create(&l)
            .inc_by(a.not_allowed_streams);
        app_sent_datagrams
            .get_or_create(&l)
            .inc_by(a.datagrams_sent);
        app_received_datagrams
            .get_or_create(&l)
            .inc_by(a.datagrams_received);
    }

    let app_limit = gauges(
        &mut reg,
        "app_bandwidth_limit_bytes_per_second",
        "bandwidthLimit of the app, each way (exposed apps: direction inbound, empty peer)",
    );
    let app_throttled = Family::<Labels, Counter<f64, AtomicU64>>::default();
    reg.register(
        "app_throttled_seconds",
        "Time the app's streams waited for its bandwidthLimit, summed over streams, per way",
        app_throttled.clone(),
    );
    for t in &s.throttles {
        // One label set per family (OpenMetrics): an exposed app has an
        // empty peer, which Prometheus treats as no peer label.
        let peer = t.peer.as_ref().map_or(String::new(), ToString::to_string);
        let l: Labels = vec![
            ("app", LabelText::of(&t.app)),
            ("peer", LabelText(peer)),
            ("direction", direction(t.direction)),
        ];
        if let Some(limit) = t.limit {
            // Two listeners of one remote app add up.
            app_limit
                .get_or_create(&l)
                .inc_by(i64::try_from(limit).unwrap_or(i64::MAX));
        }
        for (way, waited) in [
            ("sent", t.throttled_sent),
            ("received", t.throttled_received),
        ] {
            let mut l = l.clone();
            l.push(("way", LabelText::of(way)));
            app_throttled.get_or_create(&l).inc_by(waited.as_secs_f64());
        }
    }

    let peer_sent = counters(
        &mut reg,
        "peer_sent_bytes",
        "UDP bytes sent over the peer's live dataChannels",
    );
    let peer_received = counters(
        &mut reg,
        "peer_received_bytes",
        "UDP bytes received over the peer's live dataChannels",
    );
    let peer_channels = gauges(&mut reg, "peer_channels", "Live dataChannels per peer");
    for p in &s.peers {
        let l: Labels = vec![("peer", LabelText::of(&p.site))];
        peer_sent.get_or_create(&l).inc_by(p.bytes_sent);
        peer_received.get_or_create(&l).inc_by(p.bytes_received);
        peer_channels
            .get_or_create(&l)
            .set(i64::try_from(p.channels).unwrap_or(i64::MAX));
    }

    let ch_sent = counters(&mut reg, "channel_sent_bytes", "UDP bytes sent");
    let ch_received = counters(&mut reg, "channel_received_bytes", "UDP bytes received");
    let ch_sent_packets = counters(&mut reg, "channel_sent_packets", "Packets sent");
    let ch_lost_packets = counters(&mut reg, "channel_lost_packets", "Packets lost");
    let ch_rtt = Family::<Labels, Gauge<f64, AtomicU64>>::default();
    reg.register(
        "channel_rtt_seconds",
        "Smoothed round-trip time",
        ch_rtt.clone(),
    );
    let ch_cwnd = gauges(&mut reg, "channel_cwnd_bytes", "Congestion window");
    let ch_open = gauges(
        &mut reg,
        "channel_open_streams",
        "Streams open on the channel",
    );
    for c in &s.channels {
        let Some(id) = c.id else { continue };
        let l: Labels = vec![
            ("peer", LabelText::of(&c.peer)),
            ("channel", LabelText::of(id)),
        ];
        ch_sent.get_or_create(&l).inc_by(c.path.bytes_sent);
        ch_received.get_or_create(&l).inc_by(c.path.bytes_received);
        ch_sent_packets
            .get_or_create(&l)
            .inc_by(c.path.sent_packets);
        ch_lost_packets
            .get_or_create(&l)
            .inc_by(c.path.lost_packets);
        ch_rtt.get_or_create(&l).set(c.path.rtt.as_secs_f64());
        ch_cwnd
            .get_or_create(&l)
            .set(i64::try_from(c.path.cwnd).unwrap_or(i64::MAX));
        ch_open
            .get_or_create(&l)
            .set(i64::try_from(c.open_streams).unwrap_or(i64::MAX));
    }

    for (name, value) in &s.counters {
        let c = Counter::<u64>::default();
        c.inc_by(*value);
        reg.register(*name, format!("Site counter {name}"), c);
    }

    let mut out = String::new();
    encode(&mut out, &reg)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use crate::config::{AppName, SiteName};
    use crate::view::{AppStats, ThrottleStats};

    use super::*;

    #[test]
    fn render_labels_apps_and_site_counters() {
        let s = StatsSnapshot {
            apps: vec![AppStats {
                app: AppName::new("echo").expect("name"),
                peer: SiteName::new("b").expect("name"),
                direction: StreamDirection::Outbound,
                open_streams: 2,
                total_streams: 5,
                bytes_sent: 1234,
                bytes_received: 99,
                limited_streams: 4,
                not_allowed_streams: 6,
                datagrams_received: 0,
                datagrams_sent: 0,
            }],
            counters: vec![("auth_failures", 3)],
            ..StatsSnapshot::default()
        };
        let text = render(&s).expect("encode");
        for line in [
            "wovenet_app_sent_bytes_total{app=\"echo\",peer=\"b\",direction=\"outbound\"} 1234",
            "wovenet_app_received_bytes_total{app=\"echo\",peer=\"b\",direction=\"outbound\"} 99",
            "wovenet_app_streams_total{app=\"echo\",peer=\"b\",direction=\"outbound\"} 5",
            "wovenet_app_open_streams{app=\"echo\",peer=\"b\",direction=\"outbound\"} 2",
            "wovenet_app_limited_streams_total{app=\"echo\",peer=\"b\",direction=\"outbound\"} 4",
            "wovenet_app_not_allowed_streams_total{app=\"echo\",peer=\"b\",direction=\"outbound\"} 6",
            "wovenet_auth_failures_total 3",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn bandwidth_limits_and_throttled_time_are_labelled_per_app() {
        let s = StatsSnapshot {
            throttles: vec![
                ThrottleStats {
                    app: AppName::new("web").expect("name"),
                    peer: None,
                    direction: StreamDirection::Inbound,
                    limit: Some(4 << 20),
                    throttled_sent: Duration::from_millis(1500),
                    throttled_received: Duration::ZERO,
                },
                ThrottleStats {
                    app: AppName::new("db").expect("name"),
                    peer: Some(SiteName::new("b").expect("name")),
                    direction: StreamDirection::Outbound,
                    limit: None,
                    throttled_sent: Duration::ZERO,
                    throttled_received: Duration::from_millis(250),
                },
            ],
            ..StatsSnapshot::default()
        };
        let text = render(&s).expect("encode");
        let got = samples(&text);
        let web = [("app", "web"), ("peer", ""), ("direction", "inbound")];
        let db = [("app", "db"), ("peer", "b"), ("direction", "outbound")];
        let with = |l: &[(&'static str, &'static str)], way| {
            let mut l = l.to_vec();
            l.push(("way", way));
            labels(&l)
        };
        let mut want = vec![
            (
                "wovenet_app_bandwidth_limit_bytes_per_second".to_owned(),
                labels(&web),
                f64::from(4u32 << 20),
            ),
            (
                "wovenet_app_throttled_seconds".to_owned(),
                with(&web, "sent"),
                1.5,
            ),
            (
                "wovenet_app_throttled_seconds".to_owned(),
                with(&web, "received"),
                0.0,
            ),
            (
                "wovenet_app_throttled_seconds".to_owned(),
                with(&db, "sent"),
                0.0,
            ),
            (
                "wovenet_app_throttled_seconds".to_owned(),
                with(&db, "received"),
                0.25,
            ),
        ];
        want.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        assert_eq!(got, want, "{text}");
    }

    /// One parsed sample: metric family, labels sorted by name, value.
    type Parsed = (String, Vec<(String, String)>, f64);

    /// Every sample of an exposition, parsed by a real OpenMetrics parser.
    fn samples(text: &str) -> Vec<Parsed> {
        use openmetrics_parser::{OpenMetricsValue, openmetrics::parse_openmetrics};
        let parsed = parse_openmetrics(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let mut out = Vec::new();
        for family in parsed.families.values() {
            for sample in family.iter_samples() {
                let labels = sample.get_labelset().expect("labelset");
                let mut labels: Vec<_> =
                    labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                labels.sort();
                let value = match &sample.value {
                    OpenMetricsValue::Counter(c) => c.value.as_f64(),
                    OpenMetricsValue::Gauge(n) | OpenMetricsValue::Unknown(n) => n.as_f64(),
                    other => panic!("unexpected sample {other:?}"),
                };
                out.push((family.family_name.clone(), labels, value));
            }
        }
        out.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        out
    }

    /// Label pairs, sorted by name like [`samples`] returns them.
    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut l: Vec<_> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        l.sort();
        l
    }

    /// Regression: a peer named `x",a="b` (a valid name) was written into
    /// label values as is, and every site's `/metrics` became unparseable
    /// (or, with luck, parsed into labels the peer chose).
    #[test]
    fn hostile_names_are_escaped_and_parse_back_exactly() {
        let hostile = [r#"x",a="b"#, r"back\slash", r#"}{"#, "end\\"];
        let s = StatsSnapshot {
            apps: hostile
                .iter()
                .map(|n| AppStats {
                    app: AppName::new(*n).expect("name"),
                    peer: SiteName::new(*n).expect("name"),
                    direction: StreamDirection::Inbound,
                    open_streams: 1,
                    total_streams: 2,
                    bytes_sent: 3,
                    bytes_received: 4,
                    limited_streams: 5,
                    not_allowed_streams: 6,
                    datagrams_sent: 7,
                    datagrams_received: 8,
                })
                .collect(),
            counters: vec![("auth_failures", 3)],
            ..StatsSnapshot::default()
        };
        let text = render(&s).expect("encode");
        let got = samples(&text);
        let mut want = vec![("wovenet_auth_failures".to_owned(), labels(&[]), 3.0)];
        for n in hostile {
            let l = labels(&[("app", n), ("peer", n), ("direction", "inbound")]);
            for (family, value) in [
                ("wovenet_app_sent_bytes", 3.0),
                ("wovenet_app_received_bytes", 4.0),
                ("wovenet_app_streams", 2.0),
                ("wovenet_app_open_streams", 1.0),
                ("wovenet_app_limited_streams", 5.0),
                ("wovenet_app_not_allowed_streams", 6.0),
                ("wovenet_app_sent_datagrams", 7.0),
                ("wovenet_app_received_datagrams", 8.0),
            ] {
                want.push((family.to_owned(), l.clone(), value));
            }
        }
        want.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
        assert_eq!(got, want, "{text}");
    }

    #[test]
    fn label_text_escapes_what_openmetrics_escapes() {
        let mut reg = Registry::default();
        let f = Family::<Labels, Counter>::default();
        reg.register("x", "x", f.clone());
        for v in ["a\nb", "q\"", "b\\s", "cr\rx", "plain", "ünï"] {
            f.get_or_create(&vec![("v", LabelText::of(v))]).inc();
        }
        let mut text = String::new();
        encode(&mut text, &reg).expect("encode");
        for line in [
            r#"x_total{v="a\nb"} 1"#,
            r#"x_total{v="q\""} 1"#,
            r#"x_total{v="b\\s"} 1"#,
            "x_total{v=\"cr\u{FFFD}x\"} 1",
            r#"x_total{v="plain"} 1"#,
            r#"x_total{v="ünï"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        let values: Vec<String> = samples(&text)
            .into_iter()
            .map(|(_, l, _)| l[0].1.clone())
            .collect();
        assert_eq!(values.len(), 6);
        for v in ["a\nb", "q\"", "b\\s", "plain", "ünï"] {
            assert!(values.iter().any(|x| x == v), "{v:?} not in {values:?}");
        }
    }
}
