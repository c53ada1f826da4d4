//! Render tests: each view drawn on ratatui's TestBackend at 80x24 (empty, populated,
//! disconnected, form with error), asserting on the buffer text.

use std::time::{Duration, SystemTime};

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::{Color, Modifier};
use wovenet_proto::v1 as pb;
use wovenet_tui::console::action::{Action, Feed};
use wovenet_tui::console::form::Request;
use wovenet_tui::console::theme::Theme;
use wovenet_tui::console::{Effect, State, Tab, ui};

const A_ID: &str = "a3stb5ycqzkxw2mhe7nvfgrl4pjduo6i";
const B_ID: &str = "hfqku7jmljxqcy44vv6js2nuzo7hxo4u";
const IMPOSTOR_ID: &str = "x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i";

fn buffer(state: &State, w: u16, h: u16, theme: Theme) -> Buffer {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_100);
    t.draw(|f| ui::render(&state.model, &state.view, theme, now, f))
        .expect("draw");
    t.backend().buffer().clone()
}

fn draw(state: &State, w: u16, h: u16) -> String {
    let buf = buffer(state, w, h, Theme::new(false));
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

/// `populated()` with identities: site-a pinned mode, site-b pinned, and another identity
/// claiming site-b, refused, as the feed's `GetSite` and `ListPeers` refreshes bring them.
fn with_trust() -> State {
    let mut s = populated();
    let mut site = s.model.site.clone().expect("populated() has a site");
    site.identity = A_ID.into();
    site.trust_mode = pb::TrustMode::Pinned.into();
    s.update(Action::Feed(Feed::Site(Box::new(site))), SystemTime::now());
    let mut b = s.model.peers[0].clone();
    b.identity = B_ID.into();
    b.trust = pb::TrustState::Pinned.into();
    let impostor = pb::Peer {
        name: "site-b".into(),
        state: pb::PeerState::Refused as i32,
        identity: IMPOSTOR_ID.into(),
        trust: pb::TrustState::Conflict.into(),
        pinned_identity: B_ID.into(),
        refused_messages: 4,
        ..Default::default()
    };
    s.update(
        Action::Feed(Feed::Peers(vec![b, impostor])),
        SystemTime::now(),
    );
    s
}

/// The table line that starts with `first` (after the border) and contains `needle`.
fn row<'a>(out: &'a str, needle: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with("│site-b") && l.contains(needle))
        .unwrap_or_else(|| panic!("no site-b row with {needle:?}:\n{out}"))
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
fn sites_tab_shows_trust_whole_identities_and_the_refused_identity_apart() {
    let s = with_trust();
    let out = draw(&s, 140, 24);
    assert!(
        out.contains(&format!("identity {A_ID}  trust pinned")),
        "{out}"
    );
    let head = out.lines().find(|l| l.starts_with("│site ")).unwrap();
    let words: Vec<&str> = head.split_whitespace().take(5).collect();
    assert_eq!(
        words,
        ["│site", "state", "trust", "identity", "apps"],
        "{out}"
    );
    let accepted: Vec<&str> = row(&out, "connected").split_whitespace().take(5).collect();
    assert_eq!(
        accepted,
        ["│site-b", "connected", "pinned", B_ID, "echo"],
        "{out}"
    );
    let refused: Vec<&str> = row(&out, "refused").split_whitespace().collect();
    assert_eq!(
        refused,
        [
            "│site-b",
            "refused",
            "conflict",
            IMPOSTOR_ID,
            "-",
            "-",
            "-",
            "-",
            "-",
            "│"
        ],
        "{out}"
    );
}

#[test]
fn narrower_screens_shorten_then_leave_the_identity_to_the_detail_pane() {
    let mut s = with_trust();
    let out = draw(&s, 100, 24);
    assert!(row(&out, "pinned").contains("hfqku7jm…"), "{out}");
    assert!(!out.contains(B_ID), "{out}");
    let out = draw(&s, 80, 24);
    let head = out.lines().find(|l| l.starts_with("│site ")).unwrap();
    assert!(!head.contains("identity"), "{out}");
    assert!(row(&out, "connected").contains("pinned"), "{out}");
    assert!(row(&out, "refused").contains("conflict"), "{out}");
    s.update(Action::Enter, SystemTime::now());
    let out = draw(&s, 80, 30);
    assert!(out.contains(&format!("identity: {B_ID}")), "{out}");
    assert!(out.contains("trust: pinned"), "{out}");
}

#[test]
fn a_refused_identitys_detail_names_both_identities_and_the_way_to_accept_it() {
    let mut s = with_trust();
    s.update(Action::Down, SystemTime::now());
    s.update(Action::Enter, SystemTime::now());
    let out = draw(&s, 220, 40);
    for needle in [
        &format!("identity: {IMPOSTOR_ID}") as &str,
        &format!("pinned: {B_ID}"),
        "trust: conflict",
        "refused msgs: 4",
        "press f to forget the pin",
        "│Or run: wovenetctl peers forget site-b ",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
}

#[test]
fn f_asks_before_forgetting_then_shows_the_daemons_answer() {
    let mut s = with_trust();
    s.update(Action::Down, SystemTime::now());
    s.update(Action::ForgetSelected, SystemTime::now());
    let out = draw(&s, 80, 24);
    for needle in [
        "forget the identity pinned for site 'site-b'?",
        &format!("pinned now: {B_ID}") as &str,
        &format!("refused:    {IMPOSTOR_ID}"),
        "next identity that announces 'site-b' is pinned",
        "y forget   n/Esc keep",
    ] {
        assert!(out.contains(needle), "{needle:?} missing:\n{out}");
    }
    let effect = s.update(Action::Confirm(true), SystemTime::now());
    assert_eq!(
        effect,
        Some(Effect::Rpc(Request::ForgetPeer("site-b".into())))
    );
    s.update(
        Action::RpcDone(
            Request::ForgetPeer("site-b".into()),
            Err("siteName: site 'site-b' is pinned by trust.sites in the config file: edit its identity there and restart".into()),
        ),
        SystemTime::now(),
    );
    let out = draw(&s, 160, 24);
    assert!(!out.contains("forget the identity"), "{out}");
    assert!(
        out.contains("error: siteName: site 'site-b' is pinned by trust.sites"),
        "{out}"
    );
}

/// Refused rows are bad (red) and bold, so with `NO_COLOR` they still stand out.
#[test]
fn refused_rows_are_styled_bad_with_or_without_colour() {
    let s = with_trust();
    for (theme, fg) in [
        (Theme::new(true), Some(Color::Red)),
        (Theme::new(false), None),
    ] {
        let buf = buffer(&s, 140, 24, theme);
        let area = buf.area;
        let find = |word: &str| {
            (0..area.height)
                .find_map(|y| {
                    let line: String = (0..area.width).map(|x| buf[(x, y)].symbol()).collect();
                    line.find(word)
                        .map(|i| (line[..i].chars().count() as u16, y))
                })
                .unwrap()
        };
        // The first character of the refused identity, and of the accepted one.
        let (x, y) = find(IMPOSTOR_ID);
        let cell = &buf[(x, y)];
        assert!(cell.modifier.contains(Modifier::BOLD), "{cell:?}");
        assert_eq!((cell.fg != Color::Reset).then_some(cell.fg), fg, "{cell:?}");
        let (x, y) = find(B_ID);
        assert!(!buf[(x, y)].modifier.contains(Modifier::BOLD));
    }
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
fn apps_detail_shows_the_bandwidth_limit_of_either_kind_of_app() {
    let mut s = populated();
    tab(&mut s, Tab::Apps);
    s.update(Action::Enter, SystemTime::now());
    let out = draw(&s, 80, 30);
    assert!(out.contains("bandwidthLimit: unlimited"), "{out}");
    s.model.exposed[0]
        .spec
        .as_mut()
        .expect("spec")
        .bandwidth_limit = "10MiB/s".into();
    let out = draw(&s, 80, 30);
    assert!(
        out.contains("bandwidthLimit: 10MiB/s each way, all streams together"),
        "{out}"
    );
    // The remote app, after the exposed ones.
    s.model.remote[0]
        .spec
        .as_mut()
        .expect("spec")
        .bandwidth_limit = "100Mbit/s".into();
    for _ in 0..s.model.exposed.len() {
        s.update(Action::Down, SystemTime::now());
    }
    let out = draw(&s, 80, 30);
    assert!(out.contains("bandwidthLimit: 100Mbit/s each way"), "{out}");
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
    let Ok(Request::AddExposed(spec)) = form.request() else {
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
    let req = Request::AddExposed(Box::default());
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
    for k in [
        "quit",
        "add app",
        "remove app",
        "forget peer",
        "filter streams",
    ] {
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
    // Wide enough for the trust and identity columns and the whole escaped app names.
    let out = draw(&s, 160, 24);
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
