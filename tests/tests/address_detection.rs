//! Public address detection (`publicAddress: autoHttpDetect`) against a local stand-in
//! detector: an `application/octet-stream` answer (nginx `return 200 $remote_addr`, a static
//! file) is used like the original wovenet used it, so the site announces its socket and peers
//! dial it; a failing detector's reason and time show in `GetSite` and `wovenetctl status`.
#![allow(clippy::unwrap_used)] // tests fail by panicking; the harness adds the daemon logs

use std::time::SystemTime;

use wovenet_e2e::*;
use wovenet_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_octet_stream_detector_gets_the_socket_announced_and_dialled() {
    let detector =
        Detector::start(Answer::ok(Some("application/octet-stream"), "127.0.0.1\n")).await;
    let echo = EchoServer::tcp().await;
    let local = Sock::free_tcp();
    let port = free_udp_port();
    let p = Pair::new(
        |b| {
            b.detected_socket(port, detector.url())
                .expose("echo", echo.sock())
        },
        |a| a.remote("b", "echo", &local),
    )
    .await;
    let (a, b) = (p.a.api().await, p.b.api().await);

    let socket = wait_for(
        "b's detected public address",
        WAIT,
        || p.diag(),
        || async {
            let s = b.site().await.sockets.into_iter().next()?;
            (!s.public.is_empty()).then_some(s)
        },
    )
    .await;
    assert_eq!(socket.public, format!("127.0.0.1:{port}"), "{socket:?}");
    assert!(socket.auto_detect, "{socket:?}");
    assert_eq!(
        (socket.detect_error.as_str(), socket.detect_error_at),
        ("", None)
    );
    assert!(detector.requests() >= 1);

    // a dials the announced address: an outbound channel to exactly that socket. (Without an
    // announced socket b could still dial a, so forwarding alone would prove nothing.)
    let dialled = format!("127.0.0.1:{port}");
    wait_for(
        format!("a's outbound channel to b at {dialled}"),
        WAIT,
        || p.diag(),
        || async {
            a.channels().await.into_iter().find(|c| {
                c.peer == "b"
                    && c.direction() == v1::Direction::Outbound
                    && c.state() == v1::ChannelState::Up
                    && c.remote_addr == dialled
            })
        },
    )
    .await;
    p.wait_forward(&local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_detector_says_why_in_get_site_and_wovenetctl_status() {
    let refusing = Detector::start(Answer::status("500 Internal Server Error")).await;
    let garbage = Detector::start(Answer::ok(Some("text/html"), "<html>nope</html>")).await;
    let before = SystemTime::now();
    let site = lone_site("lost", |s| {
        s.detected_socket(free_udp_port(), refusing.url())
            .detected_socket(free_udp_port(), garbage.url())
    })
    .await;
    let api = site.api().await;

    let sockets = wait_for(
        "both detection errors",
        WAIT,
        || site.diag(),
        || async {
            let s = api.site().await.sockets;
            s.iter().all(|x| !x.detect_error.is_empty()).then_some(s)
        },
    )
    .await;
    assert_eq!(
        sockets[0].detect_error,
        format!("'{}' answered HTTP 500", refusing.url())
    );
    assert_eq!(
        sockets[1].detect_error,
        format!(
            "'{}' answered '<html>nope</html>' (content type 'text/html'), which is not an IP address",
            garbage.url()
        )
    );
    for s in &sockets {
        assert!(s.public.is_empty() && s.auto_detect, "{s:?}");
        let at = SystemTime::try_from(s.detect_error_at.unwrap()).unwrap();
        assert!(
            at >= before && at <= SystemTime::now(),
            "{at:?} not between {before:?} and now"
        );
    }

    let ctl = Ctl::site(&site);
    let table = ctl.ok(&["status"]).await;
    let line = format!(
        "public address detection for {} failed at ",
        sockets[0].listen
    );
    assert!(
        table.lines().any(|l| l.starts_with(&line)
            && l.ends_with(&format!(": '{}' answered HTTP 500", refusing.url()))),
        "{table}"
    );
    assert_eq!(table.matches("detection failed").count(), 2, "{table}");
    let json = ctl.json(&["status"]).await;
    assert_eq!(
        json["site"]["sockets"][1]["detect_error"],
        sockets[1].detect_error.as_str(),
        "{json:#}"
    );
    assert!(
        json["site"]["sockets"][0]["detect_error_at"].is_string(),
        "{json:#}"
    );
}
