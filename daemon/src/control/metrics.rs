//! Optional Prometheus endpoint (`metrics.listen`): `GET /metrics` renders
//! the site's stats snapshot in the OpenMetrics text format that Prometheus
//! scrapes; every other path is 404.
//!
//! [`render`] is pure (snapshot in, text out) and tested alone; the HTTP side
//! is a minimal hyper 1 HTTP/1.1 server whose connections stop with the
//! daemon. It keeps no metrics state of its own: every scrape asks the site.

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

type Labels = Vec<(&'static str, String)>;

fn direction(d: StreamDirection) -> String {
    match d {
        StreamDirection::Outbound => "outbound".to_owned(),
        StreamDirection::Inbound => "inbound".to_owned(),
    }
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
    for a in &s.apps {
        let l: Labels = vec![
            ("app", a.app.to_string()),
            ("peer", a.peer.to_string()),
            ("direction", direction(a.direction)),
        ];
        app_sent.get_or_create(&l).inc_by(a.bytes_sent);
        app_received.get_or_create(&l).inc_by(a.bytes_received);
        app_streams.get_or_create(&l).inc_by(a.total_streams);
        app_open
            .get_or_create(&l)
            .set(i64::try_from(a.open_streams).unwrap_or(i64::MAX));
        app_limited.get_or_create(&l).inc_by(a.limited_streams);
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
        let l: Labels = vec![("peer", p.site.to_string())];
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
        let l: Labels = vec![("peer", c.peer.to_string()), ("channel", id.to_string())];
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
    use crate::view::AppStats;

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
            "wovenet_auth_failures_total 3",
            "# EOF",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }
}
