//! Micro-benchmarks of the hot pure paths (issue 5): the MQTT envelope (seal and open),
//! the stream preamble codec (request and response, encode and decode) and the
//! dataChannel pick. Pure functions only: no sockets, no runtime, so the figures are
//! the cost of the code itself. Kept short (2 s per benchmark) because the machine is
//! shared; `cargo bench -p wovenet-daemon --bench hot_paths` runs them.

// Benchmarks are test code: a broken fixture should stop the run loudly.
#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use wovenet_daemon::app::preamble::{Request, Response, Status};
use wovenet_daemon::config::{AppName, CryptoKey};
use wovenet_daemon::crypto::Keys;
use wovenet_daemon::identity::SiteKey;
use wovenet_daemon::message::envelope;
use wovenet_daemon::tunnel::pick::{Candidate, pick};

const TOPIC: &str = "wovenet/0123456789abcdef0123456789abcdef";

fn envelope_benches(c: &mut Criterion) {
    // Derived once: Argon2 is deliberately slow and not part of the per-message path.
    let keys = Keys::derive(&CryptoKey::new("bench passphrase").unwrap());
    let id = SiteKey::generate().unwrap();
    let now = SystemTime::now();
    let mut g = c.benchmark_group("envelope");
    // An announce of a site with a few apps, and one of a site with many.
    for size in [256usize, 4096] {
        let body = vec![0x5a; size];
        let sealed = envelope::seal(&keys, &id, TOPIC, &body, now);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_with_input(BenchmarkId::new("seal", size), &body, |b, body| {
            b.iter(|| envelope::seal(&keys, &id, black_box(TOPIC), black_box(body), now));
        });
        g.bench_with_input(BenchmarkId::new("open", size), &sealed, |b, sealed| {
            b.iter(|| envelope::open(&keys, black_box(TOPIC), black_box(sealed)).unwrap());
        });
    }
    g.finish();
}

fn preamble_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("preamble");
    let plain = Request {
        app: AppName::new("web-frontend").unwrap(),
        target: None,
        protocol: wovenet_daemon::config::Protocol::Tcp,
        client: None,
    };
    // Range apps carry a target: the longest common request.
    let ranged = Request {
        app: AppName::new("lab-range").unwrap(),
        target: Some(SocketAddr::from(([0xfd00, 0, 0, 0, 0, 0, 0, 0x2a], 8443))),
        protocol: wovenet_daemon::config::Protocol::Tcp,
        client: None,
    };
    for (name, req) in [("plain", &plain), ("v6_target", &ranged)] {
        let bytes = req.encode();
        g.bench_function(BenchmarkId::new("request_encode", name), |b| {
            b.iter(|| black_box(req).encode());
        });
        g.bench_function(BenchmarkId::new("request_decode", name), |b| {
            b.iter(|| Request::decode(black_box(&bytes)).unwrap().unwrap());
        });
    }
    let ok = Response::ok();
    let refused = Response::new(Status::NoSuchApp, "no app named web-frontend here");
    for (name, resp) in [("ok", &ok), ("refused", &refused)] {
        let bytes = resp.encode();
        g.bench_function(BenchmarkId::new("response_encode", name), |b| {
            b.iter(|| black_box(resp).encode());
        });
        g.bench_function(BenchmarkId::new("response_decode", name), |b| {
            b.iter(|| Response::decode(black_box(&bytes)).unwrap().unwrap());
        });
    }
    g.finish();
}

fn pick_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("pick");
    // 1 dataChannel is the default; 4 and 16 are many-channel tunnels. One in four is
    // unhealthy so the filter does work too.
    for n in [1usize, 4, 16] {
        let candidates: Vec<Candidate> = (0..n)
            .map(|index| Candidate {
                index,
                open_streams: (index * 7) % 5,
                rtt: Duration::from_micros(20_000 + (index as u64 * 1_337) % 9_000),
                healthy: n == 1 || index % 4 != 3,
                relayed: false,
                over_tcp: false,
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &candidates, |b, cands| {
            b.iter(|| pick(black_box(cands).iter().copied()).unwrap());
        });
    }
    g.finish();
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = envelope_benches, preamble_benches, pick_benches
}
criterion_main!(hot_paths);
