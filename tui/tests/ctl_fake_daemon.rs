//! `wovenetctl` (the real binary) against an in-process fake `ControlService` on a unix
//! socket: socket selection, what each command sends, output in both formats, the daemon's
//! error messages passed through unchanged, exit codes, and following feeds. The real daemon
//! is exercised by `tests/tests/ctl_cli.rs`; this file pins the CLI's side of the contract.

#![allow(clippy::unwrap_used)] // helpers outside #[test] fns are test code too

use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Output;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::UnixListener;
use tokio::process::Command;
use tokio_stream::Stream;
use tokio_stream::wrappers::UnixListenerStream;
use tonic::{Request, Response, Status};
use wovenet_proto::v1::control_service_server::{ControlService, ControlServiceServer};
use wovenet_proto::v1::*;

/// This site's identity, as the fake reports it.
const ALPHA_ID: &str = "a3stb5ycqzkxw2mhe7nvfgrl4pjduo6i";
/// beta's pinned identity.
const BETA_ID: &str = "hfqku7jmljxqcy44vv6js2nuzo7hxo4u";
/// Another identity claiming beta's name.
const IMPOSTOR_ID: &str = "x7rq2mfk4dzl3pwn6yb5tcehv2sjoa7i";

const BAD_SOCKET: &str = "localExposedApps[0].appSocket: 'tcp:nope' is not a valid tcp socket, expected tcp:IP:PORT (IPv6 as tcp:[::1]:PORT)";

type Feed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Canned answers; records what it was asked.
#[derive(Clone, Default)]
struct Fake {
    seen: Arc<Mutex<Vec<String>>>,
    /// End the event feed after its two messages instead of holding it open.
    end_feed: bool,
    /// List peers and channels whose names and errors carry line feeds, bidi overrides
    /// and zero-width characters (as a daemon of another version might send).
    hostile: bool,
    /// How `reload` ends (`None`: the daemon has no config file).
    reload: Option<ReloadOutcome>,
}

/// Peer names a hostile or older daemon could report: a forged row, a bidi override that
/// reverses the rest of the row, a zero-width space that makes "beta" look like another.
const HOSTILE_NAMES: [&str; 3] = [
    "evil\nbeta      connected",
    "gamma\u{202e}detcennoc",
    "beta\u{200b}",
];

impl Fake {
    fn saw(&self, what: String) {
        self.seen.lock().unwrap().push(what);
    }
}

fn site() -> SiteInfo {
    SiteInfo {
        name: "alpha".into(),
        instance: "abcd".into(),
        version: "9.9.9".into(),
        started_at: Some(prost_types::Timestamp {
            seconds: 1_714_557_600,
            nanos: 0,
        }),
        uptime: Some(prost_types::Duration {
            seconds: 65,
            nanos: 0,
        }),
        broker_url: "mqtt://127.0.0.1:1883".into(),
        broker_state: BrokerState::Connected as i32,
        broker_reason: String::new(),
        sockets: vec![TunnelSocket {
            listen: "0.0.0.0:40001".into(),
            public: "127.0.0.1:40001".into(),
            auto_detect: false,
            ..Default::default()
        }],
        identity: ALPHA_ID.into(),
        trust_mode: TrustMode::Strict.into(),
    }
}

fn remote_spec() -> RemoteAppSpec {
    RemoteAppSpec {
        site_name: "beta".into(),
        app_name: "echo".into(),
        local_socket: "tcp:127.0.0.1:6000".into(),
        app_socket: String::new(),
        max_connections: None,
        udp_idle_timeout: None,
        bandwidth_limit: String::new(),
    }
}

#[tonic::async_trait]
impl ControlService for Fake {
    async fn get_site(
        &self,
        _: Request<GetSiteRequest>,
    ) -> Result<Response<GetSiteResponse>, Status> {
        Ok(Response::new(GetSiteResponse { site: Some(site()) }))
    }

    async fn list_peers(
        &self,
        _: Request<ListPeersRequest>,
    ) -> Result<Response<ListPeersResponse>, Status> {
        if self.hostile {
            let peers = HOSTILE_NAMES
                .iter()
                .map(|n| Peer {
                    name: (*n).into(),
                    state: PeerState::Connected as i32,
                    apps: vec![format!("app\u{2066}{n}")],
                    ..Default::default()
                })
                .collect();
            return Ok(Response::new(ListPeersResponse { peers }));
        }
        Ok(Response::new(ListPeersResponse {
            peers: vec![
                Peer {
                    name: "beta".into(),
                    state: PeerState::Connected as i32,
                    channels: 1,
                    bytes_sent: 4096,
                    identity: BETA_ID.into(),
                    trust: TrustState::Pinned.into(),
                    ..Default::default()
                },
                Peer {
                    name: "beta".into(),
                    state: PeerState::Refused as i32,
                    identity: IMPOSTOR_ID.into(),
                    trust: TrustState::Conflict.into(),
                    pinned_identity: BETA_ID.into(),
                    refused_messages: 2,
                    ..Default::default()
                },
            ],
        }))
    }

    async fn list_channels(
        &self,
        _: Request<ListChannelsRequest>,
    ) -> Result<Response<ListChannelsResponse>, Status> {
        if self.hostile {
            let channels = HOSTILE_NAMES
                .iter()
                .zip(1..)
                .map(|(n, id)| Channel {
                    id,
                    peer: (*n).into(),
                    state: ChannelState::Up as i32,
                    last_error: format!("closed by peer: {n}\r\n\u{1b}[2Jcleared"),
                    ..Default::default()
                })
                .collect();
            return Ok(Response::new(ListChannelsResponse { channels }));
        }
        Ok(Response::new(ListChannelsResponse {
            channels: vec![Channel {
                id: 1,
                peer: "beta".into(),
                state: ChannelState::Up as i32,
                direction: Direction::Inbound as i32,
                ..Default::default()
            }],
        }))
    }

    async fn list_streams(
        &self,
        _: Request<ListStreamsRequest>,
    ) -> Result<Response<ListStreamsResponse>, Status> {
        Ok(Response::new(ListStreamsResponse { streams: vec![] }))
    }

    async fn list_apps(
        &self,
        _: Request<ListAppsRequest>,
    ) -> Result<Response<ListAppsResponse>, Status> {
        Ok(Response::new(ListAppsResponse {
            exposed: vec![],
            remote: vec![RemoteApp {
                spec: Some(remote_spec()),
                listener_state: ListenerState::Open as i32,
                listen_addr: "127.0.0.1:6000".into(),
                ..Default::default()
            }],
        }))
    }

    async fn add_exposed_app(
        &self,
        r: Request<AddExposedAppRequest>,
    ) -> Result<Response<AddExposedAppResponse>, Status> {
        let spec = r.into_inner().app.unwrap_or_default();
        self.saw(format!("add_exposed_app {spec:?}"));
        if spec.app_socket == "tcp:nope" {
            return Err(Status::invalid_argument(BAD_SOCKET));
        }
        Ok(Response::new(AddExposedAppResponse {
            app: Some(ExposedApp {
                spec: Some(spec),
                live: true,
            }),
        }))
    }

    async fn remove_exposed_app(
        &self,
        r: Request<RemoveExposedAppRequest>,
    ) -> Result<Response<RemoveExposedAppResponse>, Status> {
        let name = r.into_inner().name;
        Err(Status::not_found(format!("no exposed app '{name}'")))
    }

    async fn add_remote_app(
        &self,
        r: Request<AddRemoteAppRequest>,
    ) -> Result<Response<AddRemoteAppResponse>, Status> {
        let spec = r.into_inner().app.unwrap_or_default();
        self.saw(format!("add_remote_app {spec:?}"));
        Ok(Response::new(AddRemoteAppResponse {
            app: Some(RemoteApp {
                spec: Some(spec),
                listener_state: ListenerState::Waiting as i32,
                live: true,
                ..Default::default()
            }),
        }))
    }

    async fn forget_peer(
        &self,
        r: Request<ForgetPeerRequest>,
    ) -> Result<Response<ForgetPeerResponse>, Status> {
        let r = r.into_inner();
        self.saw(format!("forget_peer {r:?}"));
        match r.site_name.as_str() {
            "ghost" => Err(Status::not_found("no identity is pinned for site 'ghost'")),
            "alpha" => Err(Status::invalid_argument(
                "siteName: 'alpha' is this site's own name",
            )),
            _ => Ok(Response::new(ForgetPeerResponse {
                identity: BETA_ID.into(),
            })),
        }
    }

    async fn remove_remote_app(
        &self,
        r: Request<RemoveRemoteAppRequest>,
    ) -> Result<Response<RemoveRemoteAppResponse>, Status> {
        let r = r.into_inner();
        self.saw(format!("remove_remote_app {r:?}"));
        Ok(Response::new(RemoveRemoteAppResponse {
            removed: vec![RemoteApp {
                spec: Some(remote_spec()),
                ..Default::default()
            }],
        }))
    }

    async fn reload(&self, _: Request<ReloadRequest>) -> Result<Response<ReloadResponse>, Status> {
        self.saw("reload".into());
        let outcome = self.reload.ok_or_else(|| {
            Status::failed_precondition(
                "no config file to reload: this site was started without one",
            )
        })?;
        let mut report = ReloadReport {
            outcome: outcome.into(),
            config_file: "/etc/wovenet/alpha.yaml".into(),
            ..Default::default()
        };
        match outcome {
            ReloadOutcome::Invalid => {
                report.errors = vec![
                    ConfigFieldError {
                        path: "localExposedApps[0].appSocket".into(),
                        reason: "'tcp:nope' is not a valid tcp socket".into(),
                    },
                    ConfigFieldError {
                        path: "siteName".into(),
                        reason: "is required".into(),
                    },
                ];
            }
            _ => {
                report.exposed_added = vec![ExposedAppSpec {
                    name: "web".into(),
                    mode: "single".into(),
                    app_socket: "tcp:127.0.0.1:80".into(),
                    ..Default::default()
                }];
                report.remote_removed = vec![remote_spec()];
                report.log_level = "debug".into();
                if outcome == ReloadOutcome::NeedsRestart {
                    report.needs_restart = vec!["siteName".into(), "tunnel.localSockets".into()];
                }
            }
        }
        Ok(Response::new(ReloadResponse {
            report: Some(report),
        }))
    }

    type WatchEventsStream = Feed<WatchEventsResponse>;

    async fn watch_events(
        &self,
        _: Request<WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        let messages = vec![
            Ok(WatchEventsResponse {
                kind: Some(watch_events_response::Kind::Snapshot(Snapshot {
                    site: Some(site()),
                    next_seq: 7,
                    ..Default::default()
                })),
            }),
            Ok(WatchEventsResponse {
                kind: Some(watch_events_response::Kind::Event(Event {
                    seq: 7,
                    at: Some(prost_types::Timestamp {
                        seconds: 1_714_557_600,
                        nanos: 0,
                    }),
                    kind: Some(event::Kind::ListenerOpened(remote_spec())),
                })),
            }),
        ];
        let head = tokio_stream::iter(messages);
        let feed: Feed<WatchEventsResponse> = if self.end_feed {
            Box::pin(head)
        } else {
            Box::pin(tokio_stream::StreamExt::chain(
                head,
                tokio_stream::pending(),
            ))
        };
        Ok(Response::new(feed))
    }

    type WatchStatsStream = Feed<WatchStatsResponse>;

    async fn watch_stats(
        &self,
        r: Request<WatchStatsRequest>,
    ) -> Result<Response<Self::WatchStatsStream>, Status> {
        self.saw(format!("watch_stats {:?}", r.into_inner().interval));
        let sample = |n: u64| {
            Ok(WatchStatsResponse {
                counters: [("bad_preambles".to_owned(), n)].into(),
                ..Default::default()
            })
        };
        let samples = tokio_stream::iter((1..=3).map(sample));
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::chain(
            samples,
            tokio_stream::pending(),
        ))))
    }
}

/// A fake daemon listening on `<tempdir>/<name>.sock`.
struct Daemon {
    _dir: Option<tempfile::TempDir>,
    path: PathBuf,
    fake: Fake,
    server: tokio::task::JoinHandle<()>,
}

impl Daemon {
    async fn start(fake: Fake) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut d = Self::start_at(dir.path().join("alpha.sock"), fake);
        d._dir = Some(dir);
        d
    }

    fn start_at(path: PathBuf, fake: Fake) -> Self {
        let listener = UnixListener::bind(&path).unwrap();
        let service = ControlServiceServer::new(fake.clone());
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(UnixListenerStream::new(listener))
                .await
                .unwrap();
        });
        Self {
            _dir: None,
            path,
            fake,
            server,
        }
    }

    fn seen(&self) -> Vec<String> {
        self.fake.seen.lock().unwrap().clone()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn ctl() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_wovenetctl"));
    c.env_remove("WOVENET_CONTROL_SOCKET").kill_on_drop(true);
    c
}

async fn run(socket: &Path, args: &[&str]) -> Output {
    tokio::time::timeout(
        Duration::from_secs(20),
        ctl().arg("--socket").arg(socket).args(args).output(),
    )
    .await
    .expect("wovenetctl did not finish within 20 s")
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(o: &Output) -> String {
    assert_eq!(
        o.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        stdout(o),
        stderr(o)
    );
    stdout(o)
}

fn json(o: &Output) -> Value {
    serde_json::from_str(&ok(o)).unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", stdout(o)))
}

#[tokio::test]
async fn status_prints_the_site_in_both_formats() {
    let d = Daemon::start(Fake::default()).await;
    let table = ok(&run(&d.path, &["status"]).await);
    assert!(table.starts_with("site          alpha\n"), "{table}");
    assert!(table.contains("uptime        1m5s\n"), "{table}");
    assert!(table.contains("broker state  connected\n"), "{table}");
    assert!(
        table.contains(&format!(
            "\nidentity      {ALPHA_ID}\ntrust mode    strict\n"
        )),
        "{table}"
    );
    let v = json(&run(&d.path, &["-o", "json", "status"]).await);
    assert_eq!(v["site"]["name"], "alpha");
    assert_eq!(v["site"]["identity"], ALPHA_ID);
    assert_eq!(v["site"]["trust_mode"], "strict");
    assert_eq!(v["site"]["uptime"], 65.0);
    assert_eq!(v["site"]["broker_state"], "connected");
}

#[tokio::test]
async fn lists_print_tables_and_json() {
    let d = Daemon::start(Fake::default()).await;
    let peers = ok(&run(&d.path, &["peers"]).await);
    assert!(
        peers.lines().nth(1).unwrap().starts_with("beta  connected"),
        "{peers}"
    );
    let v = json(&run(&d.path, &["peers", "-o", "json"]).await);
    assert_eq!(v["peers"][0]["bytes_sent"], 4096);
    assert_eq!(v["peers"][0]["trust"], "pinned");
    assert_eq!(v["peers"][0]["identity"], BETA_ID);
    let channels = ok(&run(&d.path, &["channels"]).await);
    assert!(channels.contains("inbound"), "{channels}");
    assert_eq!(
        json(&run(&d.path, &["-o", "json", "channels"]).await)["channels"][0]["state"],
        "up"
    );
    assert_eq!(ok(&run(&d.path, &["streams"]).await), "no streams\n");
    assert_eq!(
        json(&run(&d.path, &["-o", "json", "streams"]).await),
        serde_json::json!({"streams": []})
    );
    let apps = ok(&run(&d.path, &["apps"]).await);
    assert!(apps.contains("beta  echo  tcp:127.0.0.1:6000"), "{apps}");
    assert_eq!(
        json(&run(&d.path, &["-o", "json", "apps"]).await)["remote"][0]["listener_state"],
        "open"
    );
}

/// Regression: table cells were printed as received, so a peer name with a line feed
/// added a forged row and a bidi override reordered what followed it on the line.
#[tokio::test]
async fn hostile_strings_are_escaped_one_row_per_record() {
    let d = Daemon::start(Fake {
        hostile: true,
        ..Fake::default()
    })
    .await;
    for (args, header) in [(&["peers"][..], "NAME"), (&["channels"][..], "PEER")] {
        let out = ok(&run(&d.path, args).await);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 1 + HOSTILE_NAMES.len(), "{out}");
        assert!(lines[0].starts_with(header), "{out}");
        for line in &lines {
            assert!(
                !line
                    .chars()
                    .any(|c| c.is_control() || matches!(c, '\u{200b}' | '\u{202e}' | '\u{2066}')),
                "unescaped character in {line:?}"
            );
        }
        assert!(
            lines[1].starts_with("evil\\u{a}beta      connected"),
            "{out}"
        );
        assert!(lines[2].starts_with("gamma\\u{202e}detcennoc"), "{out}");
        assert!(lines[3].starts_with("beta\\u{200b}"), "{out}");
    }
    let peers = ok(&run(&d.path, &["peers"]).await);
    assert!(
        peers.contains("app\\u{2066}gamma\\u{202e}detcennoc"),
        "{peers}"
    );
    let channels = ok(&run(&d.path, &["channels"]).await);
    assert!(
        channels.contains("closed by peer: beta\\u{200b}\\u{d}\\u{a}\\u{1b}[2Jcleared"),
        "{channels}"
    );
    // Scripts get the daemon's strings unchanged.
    assert_eq!(
        json(&run(&d.path, &["-o", "json", "peers"]).await)["peers"][1]["name"],
        HOSTILE_NAMES[1]
    );
}

#[tokio::test]
async fn peers_show_a_refused_identity_and_the_command_that_accepts_it() {
    let d = Daemon::start(Fake::default()).await;
    let out = ok(&run(&d.path, &["peers"]).await);
    let rows: Vec<Vec<&str>> = out
        .lines()
        .take(3)
        .map(|l| l.split_whitespace().take(4).collect())
        .collect();
    assert_eq!(
        rows,
        [
            vec!["NAME", "STATE", "TRUST", "IDENTITY"],
            vec!["beta", "connected", "pinned", BETA_ID],
            vec!["beta", "refused", "conflict", IMPOSTOR_ID],
        ],
        "{out}"
    );
    // The command repeats how this one chose the daemon, so it can be pasted as is.
    let command = format!(
        "accept it with: wovenetctl --socket {} peers forget beta\n",
        d.path.display()
    );
    assert!(out.ends_with(&command), "{out}");
    assert!(
        out.contains(&format!(
            "beta is pinned to identity {BETA_ID} (2 messages refused)"
        )),
        "{out}"
    );
    let v = json(&run(&d.path, &["-o", "json", "peers"]).await);
    assert_eq!(
        v["peers"][1],
        serde_json::json!({"name": "beta", "instance": "", "state": "refused", "apps": [],
            "last_seen": null, "channels": 0, "streams": 0, "bytes_sent": 0,
            "bytes_received": 0, "conflicting_instances": [], "identity": IMPOSTOR_ID,
            "trust": "conflict", "pinned_identity": BETA_ID, "refused_messages": 2})
    );
}

#[tokio::test]
async fn peers_forget_sends_the_name_and_says_what_happens_next() {
    let d = Daemon::start(Fake::default()).await;
    let out = ok(&run(&d.path, &["peers", "forget", "beta"]).await);
    assert_eq!(
        out,
        format!(
            "forgot site beta: identity {BETA_ID} is no longer pinned and its dataChannels are \
             closed\nthe next identity that announces beta is pinned: check that `wovenetctl \
             peers` shows the one you expect\n"
        )
    );
    assert_eq!(
        json(&run(&d.path, &["-o", "json", "peers", "forget", "beta"]).await),
        serde_json::json!({"identity": BETA_ID})
    );
    assert_eq!(
        d.seen(),
        [
            r#"forget_peer ForgetPeerRequest { site_name: "beta" }"#,
            r#"forget_peer ForgetPeerRequest { site_name: "beta" }"#
        ]
    );
    // The daemon's refusals, unchanged, with exit status 1 and nothing on stdout.
    for (name, message) in [
        ("ghost", "no identity is pinned for site 'ghost'"),
        ("alpha", "siteName: 'alpha' is this site's own name"),
    ] {
        let o = run(&d.path, &["peers", "forget", name]).await;
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert_eq!(stderr(&o), format!("error: {message}\n"));
        assert!(o.stdout.is_empty(), "{}", stdout(&o));
    }
    assert_eq!(
        d.seen().last().unwrap(),
        r#"forget_peer ForgetPeerRequest { site_name: "alpha" }"#
    );
}

#[tokio::test]
async fn expose_add_sends_the_inferred_mode_and_split_ranges() {
    let d = Daemon::start(Fake::default()).await;
    let out = ok(&run(
        &d.path,
        &[
            "expose",
            "add",
            "--name",
            "echo",
            "--socket",
            "tcp:127.0.0.1:7",
        ],
    )
    .await);
    assert_eq!(out, "added exposed app echo (single tcp:127.0.0.1:7)\n");
    let v = json(
        &run(
            &d.path,
            &[
                "-o",
                "json",
                "expose",
                "add",
                "--name",
                "vnc",
                "--port-range",
                "5900,5901-5990",
                "--address-range",
                "10.0.2.0/24",
                "--allowed-sites",
                "beta,gamma",
                "--bandwidth-limit",
                "10MiB/s",
            ],
        )
        .await,
    );
    assert_eq!(v["app"]["spec"]["mode"], "range");
    assert_eq!(v["app"]["spec"]["bandwidth_limit"], "10MiB/s");
    assert_eq!(
        v["app"]["spec"]["allowed_sites"],
        serde_json::json!(["beta", "gamma"])
    );
    assert_eq!(v["app"]["live"], true);
    let seen = d.seen();
    assert!(
        seen[0].contains(r#"mode: "single", app_socket: "tcp:127.0.0.1:7""#),
        "{seen:?}"
    );
    assert!(
        seen[1].contains(r#"mode: "range", app_socket: "", port_range: ["5900", "5901-5990"], address_range: ["10.0.2.0/24"]"#),
        "{seen:?}"
    );
    assert!(
        seen[0].contains("allowed_sites: []")
            && seen[1].contains(r#"allowed_sites: ["beta", "gamma"]"#),
        "{seen:?}"
    );
    assert!(
        seen[0].contains(r#"bandwidth_limit: """#)
            && seen[1].contains(r#"bandwidth_limit: "10MiB/s""#),
        "{seen:?}"
    );
}

#[tokio::test]
async fn the_daemons_message_is_printed_unchanged_with_exit_code_1() {
    let d = Daemon::start(Fake::default()).await;
    let o = run(
        &d.path,
        &["expose", "add", "--name", "x", "--socket", "tcp:nope"],
    )
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert_eq!(stderr(&o), format!("error: {BAD_SOCKET}\n"));
    assert!(o.stdout.is_empty());
    let o = run(&d.path, &["-o", "json", "expose", "rm", "ghost"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stderr(&o), "error: no exposed app 'ghost'\n");
}

#[tokio::test]
async fn reload_prints_what_changed_and_exits_0_when_all_applied() {
    let d = Daemon::start(Fake {
        reload: Some(ReloadOutcome::Applied),
        ..Fake::default()
    })
    .await;
    let table = ok(&run(&d.path, &["reload"]).await);
    assert_eq!(
        table,
        "reloaded /etc/wovenet/alpha.yaml: 3 changes applied\n\
         \x20 exposed app added   web (single tcp:127.0.0.1:80)\n\
         \x20 remote app removed  beta/echo on tcp:127.0.0.1:6000\n\
         \x20 log level           debug\n"
    );
    let doc = json(&run(&d.path, &["-o", "json", "reload"]).await);
    let r = &doc["report"];
    assert_eq!(r["outcome"], "applied");
    assert_eq!(r["exposed_added"][0]["name"], "web");
    assert_eq!(r["remote_removed"][0]["local_socket"], "tcp:127.0.0.1:6000");
    assert_eq!(r["log_level"], "debug");
    assert_eq!(r["needs_restart"], serde_json::json!([]));
    assert_eq!(d.seen(), ["reload", "reload"]);
}

#[tokio::test]
async fn reload_exits_3_listing_what_needs_a_restart() {
    let d = Daemon::start(Fake {
        reload: Some(ReloadOutcome::NeedsRestart),
        ..Fake::default()
    })
    .await;
    let o = run(&d.path, &["reload"]).await;
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("3 changes applied"), "{out}");
    assert!(
        out.ends_with("not applied, needs a restart of wovenetd: siteName, tunnel.localSockets\n"),
        "{out}"
    );
    assert!(o.stderr.is_empty(), "the report says it: {}", stderr(&o));
    let o = run(&d.path, &["-o", "json", "reload"]).await;
    assert_eq!(o.status.code(), Some(3));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["report"]["outcome"], "needs_restart");
    assert_eq!(
        doc["report"]["needs_restart"],
        serde_json::json!(["siteName", "tunnel.localSockets"])
    );
}

#[tokio::test]
async fn reload_of_an_invalid_file_exits_4_with_every_error() {
    let d = Daemon::start(Fake {
        reload: Some(ReloadOutcome::Invalid),
        ..Fake::default()
    })
    .await;
    let o = run(&d.path, &["reload"]).await;
    assert_eq!(o.status.code(), Some(4), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    assert_eq!(
        stderr(&o),
        "error: invalid configuration in /etc/wovenet/alpha.yaml; nothing changed, wovenetd \
         keeps running on the previous one:\n  \
         localExposedApps[0].appSocket: 'tcp:nope' is not a valid tcp socket\n  \
         siteName: is required\n"
    );
    let o = run(&d.path, &["-o", "json", "reload"]).await;
    assert_eq!(o.status.code(), Some(4));
    let doc: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(doc["report"]["outcome"], "invalid");
    assert_eq!(
        doc["report"]["errors"][0]["path"],
        "localExposedApps[0].appSocket"
    );
    assert!(
        stderr(&o).contains("siteName: is required"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn reload_without_a_config_file_is_the_daemons_error_with_exit_1() {
    let d = Daemon::start(Fake::default()).await;
    let o = run(&d.path, &["reload"]).await;
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(
        stderr(&o),
        "error: no config file to reload: this site was started without one\n"
    );
}

#[tokio::test]
async fn reload_help_documents_its_exit_codes() {
    let help = ok(&ctl().args(["reload", "--help"]).output().await.unwrap());
    for needle in ["Exit status:", "  3 ", "needs a restart", "  4 ", "invalid"] {
        assert!(help.contains(needle), "lacks {needle:?}:\n{help}");
    }
}

#[tokio::test]
async fn remote_add_and_rm_send_what_was_given() {
    let d = Daemon::start(Fake::default()).await;
    let out = ok(&run(
        &d.path,
        &[
            "remote",
            "add",
            "--site",
            "beta",
            "--app",
            "vnc",
            "--local",
            "tcp:127.0.0.1:5900",
            "--app-socket",
            "tcp:10.0.2.9:5900",
        ],
    )
    .await);
    assert_eq!(
        out,
        "added remote app beta/vnc on tcp:127.0.0.1:5900 -> tcp:10.0.2.9:5900; listener waiting for the site to offer the app\n"
    );
    let v = json(
        &run(
            &d.path,
            &[
                "-o", "json", "remote", "rm", "--site", "beta", "--app", "echo",
            ],
        )
        .await,
    );
    assert_eq!(v["removed"][0]["spec"]["app_name"], "echo");
    let seen = d.seen();
    assert!(
        seen[0].contains(r#"app_socket: "tcp:10.0.2.9:5900""#),
        "{seen:?}"
    );
    assert!(seen[1].contains(r#"local_socket: """#), "{seen:?}");
}

#[tokio::test]
async fn no_daemon_exits_2_naming_the_socket() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.sock");
    let o = run(&missing, &["status"]).await;
    assert_eq!(o.status.code(), Some(2));
    let err = stderr(&o);
    assert!(
        err.starts_with("error: no wovenetd is listening on "),
        "{err}"
    );
    assert!(err.contains(&missing.display().to_string()), "{err}");
    // A stale socket file (bound, nobody listening) reads the same.
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let o = run(&stale, &["peers"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("no wovenetd is listening"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn the_socket_comes_from_the_environment_or_the_site_name() {
    let d = Daemon::start(Fake::default()).await;
    let o = ctl()
        .env("WOVENET_CONTROL_SOCKET", &d.path)
        .arg("status")
        .output()
        .await
        .unwrap();
    assert!(ok(&o).contains("alpha"));

    // --site NAME and "the only socket" both look in $XDG_RUNTIME_DIR/wovenet.
    let runtime = tempfile::tempdir().unwrap();
    let wovenet = runtime.path().join("wovenet");
    std::fs::create_dir(&wovenet).unwrap();
    let _only = Daemon::start_at(wovenet.join("alpha.sock"), Fake::default());
    let with_env = |args: &[&str]| {
        let mut c = ctl();
        c.env("XDG_RUNTIME_DIR", runtime.path()).args(args);
        c
    };
    let o = with_env(&["--site", "alpha", "status"])
        .output()
        .await
        .unwrap();
    assert!(ok(&o).contains("alpha"));
    let o = with_env(&["status"]).output().await.unwrap();
    assert!(ok(&o).contains("alpha"));
    std::fs::write(wovenet.join("beta.sock"), b"").unwrap();
    let o = with_env(&["status"]).output().await.unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("several sites run here (alpha, beta); choose one with --site NAME"),
        "{}",
        stderr(&o)
    );
}

#[tokio::test]
async fn events_print_the_summary_then_follow_until_killed() {
    let d = Daemon::start(Fake::default()).await;
    for (format, first, second) in [
        ("table", "site alpha (connected)", "listener opened"),
        (
            "json",
            r#"{"snapshot":{"site":{"name":"alpha""#,
            r#""kind":"listener_opened""#,
        ),
    ] {
        let mut child = ctl()
            .arg("--socket")
            .arg(&d.path)
            .args(["-o", format, "events"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut next = async || {
            tokio::time::timeout(Duration::from_secs(20), lines.next_line())
                .await
                .expect("no line within 20 s")
                .unwrap()
                .expect("stdout closed")
        };
        let l1 = next().await;
        assert!(l1.starts_with(first), "{l1}");
        let l2 = next().await;
        assert!(l2.contains(second), "{l2}");
        if format == "json" {
            let v: Value = serde_json::from_str(&l2).unwrap();
            assert_eq!(v["event"]["listener_opened"]["app_name"], "echo");
        }
        // Still following: it has not exited on its own.
        assert!(child.try_wait().unwrap().is_none());
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
}

#[tokio::test]
async fn events_end_when_the_daemon_ends_the_feed() {
    let d = Daemon::start(Fake {
        end_feed: true,
        ..Fake::default()
    })
    .await;
    let o = run(&d.path, &["events"]).await;
    assert_eq!(ok(&o).lines().count(), 2, "{}", stdout(&o));
    assert_eq!(stderr(&o), "the daemon ended the event feed\n");
}

#[tokio::test]
async fn stats_prints_one_sample_unless_following() {
    let d = Daemon::start(Fake::default()).await;
    let table = ok(&run(&d.path, &["stats"]).await);
    assert_eq!(table.matches("stats at").count(), 1, "{table}");
    assert!(table.contains("bad_preambles      1"), "{table}");
    let line = ok(&run(&d.path, &["-o", "json", "stats", "--interval", "250ms"]).await);
    assert_eq!(line.lines().count(), 1, "{line}");
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["counters"]["bad_preambles"], 1);
    assert!(
        d.seen().last().unwrap().contains("nanos: 250000000"),
        "{:?}",
        d.seen()
    );

    let mut child = ctl()
        .arg("--socket")
        .arg(&d.path)
        .args(["-o", "json", "stats", "--follow"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for n in 1..=3 {
        let l = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["counters"]["bad_preambles"], n);
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn ctrl_c_ends_events_with_success() {
    let d = Daemon::start(Fake::default()).await;
    let mut child = ctl()
        .arg("--socket")
        .arg(&d.path)
        .arg("events")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .unwrap()
            .unwrap();
    }
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill(2) with a pid we own; no memory is involved.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn completions_need_no_daemon() {
    let o = ctl().args(["completions", "bash"]).output().await.unwrap();
    let script = ok(&o);
    assert!(script.contains("_wovenetctl()"), "{script}");
    assert!(script.contains("expose"), "{script}");
    assert!(script.contains("forget"), "{script}");
    let o = ctl().args(["completions", "zsh"]).output().await.unwrap();
    assert!(ok(&o).contains("#compdef wovenetctl"));
}

#[tokio::test]
async fn bad_command_lines_exit_64() {
    let o = ctl()
        .args(["expose", "add", "--name", "x"])
        .output()
        .await
        .unwrap();
    assert_eq!(o.status.code(), Some(64));
    assert!(stderr(&o).contains("--socket"), "{}", stderr(&o));
    let o = ctl().args(["--help"]).output().await.unwrap();
    assert!(ok(&o).contains("Exit status:"));
}
