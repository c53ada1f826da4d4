//! Render tests: each view drawn on ratatui's TestBackend at 80x24 (empty, populated,
//! disconnected, form with error), asserting on the buffer text.

use std::time::{Duration, SystemTime};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use wovenet_proto::v1 as pb;
use wovenet_tui::console::action::{Action, Feed};
use wovenet_tui::console::form::Request;
use wovenet_tui::console::theme::Theme;
use wovenet_tui::console::{State, Tab, ui};

fn draw(state: &State, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_100);
    t.draw(|f| ui::render(&state.model, &state.view, Theme::new(false), now, f))
        .expect("draw");
    let buf = t.backend().buffer().clone();
    let mut out = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

fn populated() -> State {
    let mut s = State::default();
    let snap = pb::Snapshot {
        site: Some(pb::SiteInfo {
            name: "site-a".into(),
            version: "0.1.0".into(),
            started_at: Some((SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000)).into()),
            broker_state: pb::BrokerState::Connected as i32,
            ..Default::default()
        }),
        peers: vec![pb::Peer {
            name: "site-b".into(),
            state: pb::PeerState::Connected as i32,
            apps: vec!["echo".into()],
            channels: 2,
            ..Default::default()
        }],
        channels: vec![pb::Channel {
            id: 7,
            peer: "site-b".into(),
            state: pb::ChannelState::Up as i32,
            rtt: Some(prost_types::Duration {
                seconds: 0,
                nanos: 1_500_000,
            }),
            sent_packets: 100,
            lost_packets: 2,
            ..Default::default()
        }],
        streams: (0..5000)
            .map(|i| pb::Stream {
                id: i,
                app: if i % 2 == 0 { "echo" } else { "web" }.into(),
                peer: "site-b".into(),
                client_addr: format!("127.0.0.1:{}", 40000 + i),
                ..Default::default()
            })
            .collect(),
        exposed: vec![pb::ExposedApp {
            spec: Some(pb::ExposedAppSpec {
                name: "echo".into(),
                app_socket: "tcp:127.0.0.1:7".into(),
                ..Default::default()
            }),
            live: false,
        }],
        remote: vec![pb::RemoteApp {
            spec: Some(pb::RemoteAppSpec {
                site_name: "site-b".into(),
                app_name: "web".into(),
                local_socket: "127.0.0.1:8080".into(),
                ..Default::default()
            }),
            listener_state: pb::ListenerState::Open as i32,
            ..Default::default()
        }],
        next_seq: 1,
    };
    s.update(
        Action::Feed(Feed::Snapshot(Box::new(snap))),
        SystemTime::now(),
    );
    s.update(
        Action::Feed(Feed::Event(Box::new(pb::Event {
            seq: 1,
            at: None,
            kind: Some(pb::event::Kind::PeerConnected(pb::PeerEvent {
                site: "site-b".into(),
                reason: String::new(),
            })),
        }))),
        SystemTime::now(),
    );
    s
}

fn tab(s: &mut State, t: Tab) {
    s.update(Action::SwitchTab(t), SystemTime::now());
}

#[test]
fn empty_console_shows_connecting_tabs_and_key_hints() {
    let s = State::default();
    let out = draw(&s, 80, 24);
    assert!(out.contains("… connecting"), "{out}");
    assert!(out.contains("1 Sites"), "{out}");
    assert!(out.contains("5 Events"), "{out}");
    assert!(out.contains("(none)"), "{out}");
    assert!(out.contains("? help"), "{out}");
}

#[test]
fn populated_sites_tab_shows_header_and_peer() {
    let s = populated();
    let out = draw(&s, 80, 24);
    assert!(out.contains("site-a v0.1.0"), "{out}");
    assert!(out.contains("up 1m40s"), "{out}");
    assert!(out.contains("broker connected"), "{out}");
    assert!(out.contains("● connected"), "{out}");
    assert!(out.contains("site-b"), "{out}");
}

#[test]
fn a_peer_in_a_name_conflict_shows_it_in_the_table_and_the_detail_pane() {
    let mut s = populated();
    s.model.apply_stats(pb::WatchStatsResponse {
        peers: vec![pb::PeerStats {
            peer: "site-b".into(),
            conflicting_instances: vec!["feedface".into()],
            ..Default::default()
        }],
        ..Default::default()
    });
    s.update(Action::Enter, SystemTime::now());
    let out = draw(&s, 100, 24);
    assert!(out.contains("conflict"), "{out}");
    assert!(out.contains("instance feedface"), "{out}");
    // Cleared by the next sample once the duplicate is gone.
    s.model.apply_stats(pb::WatchStatsResponse {
        peers: vec![pb::PeerStats {
            peer: "site-b".into(),
            ..Default::default()
        }],
        ..Default::default()
    });
    let out = draw(&s, 100, 24);
    assert!(!out.contains("feedface"), "{out}");
}

#[test]
fn tunnels_tab_shows_rtt_and_loss() {
    let mut s = populated();
    tab(&mut s, Tab::Tunnels);
    let out = draw(&s, 80, 24);
    assert!(out.contains("1ms"), "{out}");
    assert!(out.contains("2.0%"), "{out}");
}

#[test]
fn streams_tab_builds_only_visible_rows_and_follows_the_selection() {
    let mut s = populated();
    tab(&mut s, Tab::Streams);
    s.update(Action::Bottom, SystemTime::now());
    let out = draw(&s, 80, 24);
    assert!(out.contains("5000/5000"), "{out}");
    assert!(out.contains("4999"), "{out}");
    assert!(!out.contains("127.0.0.1:40000 "), "{out}");
}

#[test]
fn apps_tab_lists_exposed_and_remote_with_listener_state() {
    let mut s = populated();
    tab(&mut s, Tab::Apps);
    let out = draw(&s, 80, 24);
    assert!(out.contains("exposed"), "{out}");
    assert!(out.contains("site-b/web"), "{out}");
    assert!(out.contains("open"), "{out}");
}

#[test]
fn apps_detail_shows_allowed_sites_and_streams_not_allowed() {
    let mut s = populated();
    tab(&mut s, Tab::Apps);
    s.update(Action::Enter, SystemTime::now());
    let out = draw(&s, 80, 30);
    assert!(out.contains("allowedSites: every site"), "{out}");
    assert!(out.contains("not allowed: 0"), "{out}");

    s.model.exposed[0]
        .spec
        .as_mut()
        .expect("spec")
        .allowed_sites = vec!["site-b".into(), "site-c".into()];
    s.model.apply_stats(pb::WatchStatsResponse {
        apps: vec![
            pb::AppStats {
                app: "echo".into(),
                peer: "site-d".into(),
                direction: pb::StreamDirection::Inbound as i32,
                not_allowed_streams: 3,
                ..Default::default()
            },
            pb::AppStats {
                app: "echo".into(),
                peer: "site-e".into(),
                direction: pb::StreamDirection::Inbound as i32,
                not_allowed_streams: 4,
                ..Default::default()
            },
        ],
        ..Default::default()
    });
    let out = draw(&s, 80, 30);
    assert!(out.contains("allowedSites: site-b, site-c"), "{out}");
    assert!(out.contains("not allowed: 7"), "{out}");
}

#[test]
fn the_add_form_has_an_allowed_sites_field_sent_as_a_list() {
    let mut s = populated();
    s.update(Action::OpenAddApp, SystemTime::now());
    let out = draw(&s, 80, 24);
    assert!(out.contains("allowedSites:"), "{out}");
    let form = s.view.form.as_mut().expect("form open");
    form.exposed[0] = "db".into();
    form.exposed[2] = "tcp:127.0.0.1:5432".into();
    form.exposed[5] = "site-b,site-c".into();
    let Request::AddExposed(spec) = form.request() else {
        panic!("an exposed form sends an exposed spec");
    };
    assert_eq!(spec.allowed_sites, ["site-b", "site-c"]);
}

#[test]
fn events_tab_shows_the_feed() {
    let mut s = populated();
    tab(&mut s, Tab::Events);
    let out = draw(&s, 80, 24);
    assert!(out.contains("peer connected"), "{out}");
}

#[test]
fn detail_pane_shows_a_channels_full_stats() {
    let mut s = populated();
    tab(&mut s, Tab::Tunnels);
    s.update(Action::Enter, SystemTime::now());
    let out = draw(&s, 80, 24);
    assert!(out.contains("lost/sent: 2/100"), "{out}");
}

#[test]
fn disconnected_console_says_so_and_keeps_the_data() {
    let mut s = populated();
    s.update(
        Action::Feed(Feed::Lost {
            reason: "no wovenetd is listening".into(),
            retry_in: Duration::from_secs(2),
        }),
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_099),
    );
    let out = draw(&s, 80, 24);
    assert!(out.contains("disconnected, retrying in 1s"), "{out}");
    assert!(out.contains("no wovenetd is listening"), "{out}");
    assert!(out.contains("site-b"), "{out}");
}

#[test]
fn form_shows_the_daemons_error_inline() {
    let mut s = populated();
    s.update(Action::OpenAddApp, SystemTime::now());
    for c in "bad name".chars() {
        s.update(Action::Char(c), SystemTime::now());
    }
    let req = Request::AddExposed(pb::ExposedAppSpec::default());
    s.update(
        Action::RpcDone(req, Err("apps.exposed[0].name: invalid 'bad name'".into())),
        SystemTime::now(),
    );
    let out = draw(&s, 80, 24);
    assert!(out.contains("add app"), "{out}");
    assert!(out.contains("bad name"), "{out}");
    assert!(out.contains("error: apps.exposed[0].name"), "{out}");
}

#[test]
fn help_overlay_lists_every_bound_key() {
    let mut s = State::default();
    s.update(Action::Help, SystemTime::now());
    let out = draw(&s, 80, 40);
    for k in ["quit", "add app", "remove app", "filter streams"] {
        assert!(out.contains(k), "{k} missing: {out}");
    }
}

/// A snapshot whose peers, channels and events carry a line feed, a bidi override and a
/// zero-width space, as a daemon of another version might report them.
fn hostile() -> State {
    let names = ["evil\nbeta", "gamma\u{202e}ateb", "beta\u{200b}"];
    let mut s = State::default();
    let snap = pb::Snapshot {
        site: Some(pb::SiteInfo {
            name: "site\u{2066}-a".into(),
            ..Default::default()
        }),
        peers: names
            .iter()
            .map(|n| pb::Peer {
                name: (*n).into(),
                state: pb::PeerState::Connected as i32,
                apps: vec![format!("app\u{202e}{n}")],
                ..Default::default()
            })
            .collect(),
        channels: names
            .iter()
            .zip(1..)
            .map(|(n, id)| pb::Channel {
                id,
                peer: (*n).into(),
                state: pb::ChannelState::Up as i32,
                ..Default::default()
            })
            .collect(),
        next_seq: 1,
        ..Default::default()
    };
    s.update(
        Action::Feed(Feed::Snapshot(Box::new(snap))),
        SystemTime::now(),
    );
    s.update(
        Action::Feed(Feed::Event(Box::new(pb::Event {
            seq: 1,
            at: None,
            kind: Some(pb::event::Kind::PeerDisconnected(pb::PeerEvent {
                site: names[1].into(),
                reason: "closed\r\nforged line".into(),
            })),
        }))),
        SystemTime::now(),
    );
    s
}

/// No cell of the screen holds a character that is invisible or moves text around.
fn assert_no_hidden(out: &str) {
    for line in out.lines() {
        assert!(
            !line
                .chars()
                .any(|c| c.is_control() || matches!(c, '\u{200b}' | '\u{202e}' | '\u{2066}')),
            "unescaped character in {line:?}"
        );
    }
}

/// Regression: names and reasons were drawn as received: a bidi override reordered the
/// rest of a row and a zero-width space made two peers look alike.
#[test]
fn hostile_strings_are_shown_escaped_one_row_per_record() {
    let mut s = hostile();
    let out = draw(&s, 120, 24);
    assert_no_hidden(&out);
    assert!(out.contains("site\\u{2066}-a"), "{out}");
    // Peer rows are the lines with traffic columns.
    let rows: Vec<&str> = out.lines().filter(|l| l.contains("0 B")).collect();
    assert_eq!(rows.len(), 3, "{out}");
    assert!(rows[0].contains("evil\\u{a}beta"), "{out}");
    assert!(rows[1].contains("gamma\\u{202e}ateb"), "{out}");
    assert!(rows[1].contains("app\\u{202e}gamma\\u{202e}ateb"), "{out}");
    assert!(rows[2].contains("beta\\u{200b}"), "{out}");

    tab(&mut s, Tab::Tunnels);
    let out = draw(&s, 120, 24);
    assert_no_hidden(&out);
    assert!(out.contains("evil\\u{a}beta"), "{out}");
    assert!(out.contains("gamma\\u{202e}ateb"), "{out}");

    tab(&mut s, Tab::Events);
    let out = draw(&s, 160, 24);
    assert_no_hidden(&out);
    assert!(
        out.contains("gamma\\u{202e}ateb: closed\\u{d}\\u{a}forged line"),
        "{out}"
    );
}
