//! The `wovenetctl` command line (clap derive): global socket selection and output format,
//! one subcommand per operation. Only parses; app definitions are passed to the daemon as
//! typed, so that it validates them with the config file's rules and messages.

use std::path::PathBuf;
use std::time::Duration;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

/// Exit codes, shown under `--help`.
pub const EXIT_CODES: &str = "\
Socket selection:
  --socket PATH, else --site NAME (its socket in the default directories), else
  $WOVENET_CONTROL_SOCKET, else the only *.sock in the default directories: yours
  ($XDG_RUNTIME_DIR/wovenet, /run/wovenet for root, /tmp/wovenet-<uid> otherwise),
  then /run/wovenet (where the systemd unit wovenetd@NAME puts NAME.sock).

Output:
  -o table (default) is for people; -o json is for scripts and stable: field names are
  the proto field names in snake_case, enums are lowercase strings (\"connected\"),
  durations are seconds, timestamps RFC 3339 UTC, byte counts plain integers.

Exit status:
  0   success
  1   the daemon refused or failed the request (its message is printed as `error: ...`)
  2   no daemon could be reached (nothing listening, permission denied, no socket or
      several sockets found, or the connection was lost)
  3   reload: applied, except changes that need a restart of wovenetd (listed)
  4   reload: the config file is invalid; nothing changed (every error is printed)
  64  invalid command line";

/// The exit codes of `reload`, shown under `reload --help`.
pub const RELOAD_EXIT_CODES: &str = "\
Exit status:
  0   the file is valid and every change was applied (or there was none)
  1   the daemon refused the request (e.g. it was started without a config file)
  2   no daemon could be reached
  3   the file is valid and every change that can be applied live was; the changes
      listed under \"needs a restart\" (siteName, crypto.key, messageChannel, tunnel.*,
      control.socket, metrics.listen, trust.*, logger.file, logger.format) were not:
      they take effect when wovenetd restarts
  4   the file is invalid: nothing changed, wovenetd keeps running on the configuration
      it had; every error is printed as `path: reason`";

/// Exit code of a reload that left changes for a restart.
pub const EXIT_RELOAD_RESTART: u8 = 3;
/// Exit code of a reload of an invalid file.
pub const EXIT_RELOAD_INVALID: u8 = 4;

/// Exit code for an invalid command line (BSD `EX_USAGE`, as `wovenetd` uses for bad config).
pub const EXIT_USAGE: u8 = 64;

/// `wovenetctl`: see and change a running wovenet site.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "wovenetctl",
    version,
    about = "See and change a running wovenet site through its control socket",
    after_help = EXIT_CODES
)]
pub struct Cli {
    /// Control socket of the daemon.
    #[arg(long, value_name = "PATH", conflicts_with = "site")]
    pub socket: Option<PathBuf>,
    /// Site whose socket in the default directories (yours, then /run/wovenet) to use.
    #[arg(long, value_name = "NAME")]
    pub site: Option<String>,
    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        value_enum,
        default_value_t = Format::Table,
        global = true
    )]
    pub output: Format,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns and human units.
    Table,
    /// JSON with stable field names (one object per line for `events` and `stats`).
    Json,
}

/// The operations.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum Command {
    /// The site: name, identity, trust mode, instance, version, uptime, broker state, tunnel
    /// sockets.
    Status,
    /// Remote sites seen: state, trust, identity, traffic; `peers forget NAME` drops a pin.
    ///
    /// Identities refused for a site name are listed too (state `refused`), with what each
    /// refusal means and the command that accepts a reinstalled site.
    Peers(PeersArgs),
    /// dataChannels (QUIC connections) and pending dials.
    Channels,
    /// Open forwarded connections.
    Streams,
    /// Exposed and remote apps, with each remote app's listener state.
    Apps,
    /// Add or remove an app this site exposes (kept across restarts).
    #[command(subcommand)]
    Expose(ExposeCommand),
    /// Add or remove a remote app served here (kept across restarts).
    #[command(subcommand)]
    Remote(RemoteCommand),
    /// Print a summary of the current state, then follow events until Ctrl-C.
    Events,
    /// Traffic counters and rates per app, peer and dataChannel.
    Stats(StatsArgs),
    /// Re-read the daemon's config file and apply the differences live (like SIGHUP).
    ///
    /// The file is validated as at start. If it is valid, apps and remote apps added,
    /// removed or changed, their limits (maxConnections, udpIdleTimeout, allowedSites) and
    /// logger.level are applied without a restart: unaffected connections and dataChannels
    /// keep flowing, open connections of a removed or changed app run to their end. Apps
    /// added or removed with `expose`/`remote` stay as they are. Changes that need a restart
    /// are listed, not applied. If the file is invalid, nothing changes and every error is
    /// printed.
    #[command(after_help = RELOAD_EXIT_CODES)]
    Reload,
    /// Print a shell completion script.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// `peers [forget NAME]`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct PeersArgs {
    /// Without one: list the peers.
    #[command(subcommand)]
    pub command: Option<PeersCommand>,
}

/// `peers …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum PeersCommand {
    /// Forget the identity pinned for a site name, so a reinstalled site is accepted.
    ///
    /// Like removing its line from SSH's known_hosts: its dataChannels close, and the next
    /// identity that announces the name is pinned (check `wovenetctl peers` shows the one
    /// you expect). Refused for sites listed in trust.sites (edit the config there), for
    /// this site's own name and when trust.mode is open.
    Forget {
        /// siteName of the peer.
        name: String,
    },
}

/// `expose …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum ExposeCommand {
    /// Expose an app: one socket (--socket), or any TCP target in ranges (--port-range
    /// with --address-range).
    Add(ExposeAdd),
    /// Stop exposing an app: it takes no new connections, open ones finish.
    #[command(visible_alias = "remove")]
    Rm {
        /// appName.
        name: String,
    },
}

/// `expose add`: the mode is inferred from the flags.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
#[command(group(ArgGroup::new("target").required(true).args(["socket", "port_range"])))]
pub struct ExposeAdd {
    /// appName, unique on this site.
    #[arg(long)]
    pub name: String,
    /// Single mode: where connections go.
    #[arg(
        long,
        value_name = "tcp:IP:PORT|udp:IP:PORT|unix:PATH",
        conflicts_with_all = ["port_range", "address_range", "protocol"]
    )]
    pub socket: Option<String>,
    /// Range mode: allowed ports or `a-b` ranges (repeat or separate with commas).
    #[arg(
        long,
        value_name = "PORTS",
        value_delimiter = ',',
        requires = "address_range"
    )]
    pub port_range: Vec<String>,
    /// Range mode: allowed IPs or CIDRs (repeat or separate with commas).
    #[arg(
        long,
        value_name = "ADDRESSES",
        value_delimiter = ',',
        requires = "port_range"
    )]
    pub address_range: Vec<String>,
    /// Streams open to the app at once, from all sites (1..1000000; the daemon's
    /// default when not given). Further ones are refused with "limit reached".
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
    /// The only sites that may reach the app, and the only ones it is offered
    /// to (repeat or separate with commas). Not given: every site.
    #[arg(long, value_name = "SITES", value_delimiter = ',')]
    pub allowed_sites: Vec<String>,
    /// Range mode: whether targets are `tcp` (default) or `udp`.
    #[arg(long, value_name = "tcp|udp", requires = "port_range")]
    pub protocol: Option<String>,
    /// UDP apps: seconds without a datagram after which a flow ends
    /// (1..86400; 120 when not given).
    #[arg(long, value_name = "SECONDS")]
    pub udp_idle_timeout: Option<u32>,
    /// Bytes per second each way, shared by every stream of the app, e.g.
    /// 10MiB/s, 500KiB/s, 100Mbit/s (units B kB MB GB KiB MiB GiB bit kbit
    /// Mbit Gbit, then /s). Not given: unlimited.
    #[arg(long, value_name = "RATE")]
    pub bandwidth_limit: Option<String>,
    /// Send a PROXY protocol header (HAProxy's; v1 text, v2 binary) to the app
    /// before each connection's data, carrying the client's address as the
    /// using site saw it. Not for udp apps. Not given: no header.
    #[arg(long, value_name = "v1|v2")]
    pub proxy_protocol: Option<String>,
}

impl ExposeAdd {
    /// `single` with --socket, `range` with ranges (the config file's `mode`).
    pub fn mode(&self) -> &'static str {
        if self.socket.is_some() {
            "single"
        } else {
            "range"
        }
    }
}

/// `remote …`.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub enum RemoteCommand {
    /// Serve another site's app on a local socket.
    Add(RemoteAdd),
    /// Stop serving a remote app (every local socket of it, or only --local).
    #[command(visible_alias = "remove")]
    Rm(RemoteRm),
}

/// `remote add`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RemoteAdd {
    /// siteName of the exposing site.
    #[arg(long)]
    pub site: String,
    /// appName there.
    #[arg(long)]
    pub app: String,
    /// Where this site listens for clients.
    #[arg(long, value_name = "tcp:IP:PORT|udp:IP:PORT|unix:PATH")]
    pub local: String,
    /// Range apps: the target on the remote side (udp:IP:PORT with a udp --local).
    #[arg(long, value_name = "tcp:IP:PORT|udp:IP:PORT")]
    pub app_socket: Option<String>,
    /// Clients served on the local socket at once (1..1000000; the daemon's
    /// default when not given). One more is reset as soon as it connects.
    #[arg(long, value_name = "N")]
    pub max_connections: Option<u32>,
    /// UDP local sockets: seconds without a datagram after which a flow ends
    /// (1..86400; 120 when not given).
    #[arg(long, value_name = "SECONDS")]
    pub udp_idle_timeout: Option<u32>,
    /// Bytes per second each way, shared by every client of the local
    /// socket, e.g. 10MiB/s or 100Mbit/s (as for expose add). Not given:
    /// unlimited.
    #[arg(long, value_name = "RATE")]
    pub bandwidth_limit: Option<String>,
}

/// `remote rm`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct RemoteRm {
    /// siteName of the exposing site.
    #[arg(long)]
    pub site: String,
    /// appName there.
    #[arg(long)]
    pub app: String,
    /// Only the one listening here.
    #[arg(long, value_name = "tcp:IP:PORT|unix:PATH")]
    pub local: Option<String>,
}

/// `stats`.
#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct StatsArgs {
    /// Keep printing a sample every interval until Ctrl-C.
    #[arg(short, long)]
    pub follow: bool,
    /// Time between samples, e.g. 500ms, 2s, 1m (the daemon's default is 1s, minimum 100ms).
    #[arg(short, long, value_name = "DURATION", value_parser = parse_interval)]
    pub interval: Option<Duration>,
}

/// Parses `500ms`, `2s`, `1.5s`, `1m`, `1h`, or a bare number of seconds; must be positive.
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(format!(
                "unknown unit '{other}' in '{s}' (use ms, s, m or h, e.g. 500ms or 2s)"
            ));
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (e.g. 500ms or 2s)"))?;
    let d =
        Duration::try_from_secs_f64(value * scale).map_err(|_| format!("'{s}' is out of range"))?;
    if d.is_zero() {
        return Err(format!("'{s}' must be more than zero"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("wovenetctl").chain(args.iter().copied()))
    }

    fn kind(args: &[&str]) -> ErrorKind {
        match parse(args) {
            Ok(cli) => panic!("{args:?} parsed as {cli:?}"),
            Err(e) => e.kind(),
        }
    }

    #[test]
    fn the_command_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn defaults_are_table_output_and_automatic_socket() {
        let cli = parse(&["status"]).unwrap();
        assert_eq!(cli.output, Format::Table);
        assert_eq!((cli.socket, cli.site), (None, None));
        assert_eq!(cli.command, Command::Status);
    }

    #[test]
    fn socket_and_site_select_the_daemon_but_not_both() {
        let cli = parse(&["--socket", "/tmp/a.sock", "peers"]).unwrap();
        assert_eq!(cli.socket, Some(PathBuf::from("/tmp/a.sock")));
        assert_eq!(cli.command, Command::Peers(PeersArgs { command: None }));
        let cli = parse(&["--site", "a", "peers"]).unwrap();
        assert_eq!(cli.site.as_deref(), Some("a"));
        assert_eq!(
            kind(&["--socket", "/tmp/a.sock", "--site", "a", "peers"]),
            ErrorKind::ArgumentConflict
        );
    }

    #[test]
    fn output_format_is_accepted_before_or_after_the_command() {
        assert_eq!(
            parse(&["-o", "json", "peers"]).unwrap().output,
            Format::Json
        );
        assert_eq!(
            parse(&["channels", "--output", "json"]).unwrap().output,
            Format::Json
        );
        assert_eq!(kind(&["-o", "yaml", "peers"]), ErrorKind::InvalidValue);
    }

    #[test]
    fn expose_add_with_a_socket_is_single_mode() {
        let cli = parse(&[
            "expose",
            "add",
            "--name",
            "echo",
            "--socket",
            "tcp:127.0.0.1:7",
        ])
        .unwrap();
        let Command::Expose(ExposeCommand::Add(add)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(add.name, "echo");
        assert_eq!(add.socket.as_deref(), Some("tcp:127.0.0.1:7"));
        assert_eq!(add.mode(), "single");
        assert!(add.port_range.is_empty() && add.address_range.is_empty());
        assert!(add.allowed_sites.is_empty(), "every site by default");
    }

    #[test]
    fn expose_add_passes_proxy_protocol_on_in_both_modes() {
        for target in [
            &["--socket", "tcp:127.0.0.1:7"][..],
            &["--port-range", "22", "--address-range", "10.0.0.6"][..],
        ] {
            let mut args = vec!["expose", "add", "--name", "x"];
            args.extend_from_slice(target);
            let Command::Expose(ExposeCommand::Add(add)) = parse(&args).unwrap().command else {
                panic!("not expose add")
            };
            assert_eq!(add.proxy_protocol, None, "off unless asked");
            args.extend(["--proxy-protocol", "v2"]);
            let Command::Expose(ExposeCommand::Add(add)) = parse(&args).unwrap().command else {
                panic!("not expose add")
            };
            // The daemon judges the value, with the config file's message.
            assert_eq!(add.proxy_protocol.as_deref(), Some("v2"));
        }
    }

    #[test]
    fn expose_add_allowed_sites_repeat_and_split_on_commas_in_both_modes() {
        for target in [
            &["--socket", "tcp:127.0.0.1:7"][..],
            &["--port-range", "22", "--address-range", "10.0.0.6"][..],
        ] {
            let mut args = vec!["expose", "add", "--name", "x"];
            args.extend_from_slice(target);
            args.extend(["--allowed-sites", "b,c", "--allowed-sites", "d"]);
            let cli = parse(&args).unwrap();
            let Command::Expose(ExposeCommand::Add(add)) = cli.command else {
                panic!("{:?}", cli.command)
            };
            assert_eq!(add.allowed_sites, ["b", "c", "d"]);
        }
    }

    #[test]
    fn expose_add_ranges_repeat_and_split_on_commas() {
        let cli = parse(&[
            "expose",
            "add",
            "--name",
            "vnc",
            "--port-range",
            "5900,5901-5990",
            "--port-range",
            "22",
            "--address-range",
            "10.0.0.6,10.0.2.0/24",
        ])
        .unwrap();
        let Command::Expose(ExposeCommand::Add(add)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(add.mode(), "range");
        assert_eq!(add.socket, None);
        assert_eq!(add.port_range, ["5900", "5901-5990", "22"]);
        assert_eq!(add.address_range, ["10.0.0.6", "10.0.2.0/24"]);
    }

    #[test]
    fn expose_add_needs_a_socket_or_both_ranges_and_not_a_mix() {
        assert_eq!(
            kind(&["expose", "add", "--name", "x"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["expose", "add", "--name", "x", "--port-range", "1"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&[
                "expose",
                "add",
                "--name",
                "x",
                "--address-range",
                "10.0.0.1"
            ]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&[
                "expose",
                "add",
                "--name",
                "x",
                "--socket",
                "tcp:127.0.0.1:1",
                "--port-range",
                "1",
                "--address-range",
                "10.0.0.1"
            ]),
            ErrorKind::ArgumentConflict
        );
        assert_eq!(
            kind(&["expose", "add", "--socket", "tcp:127.0.0.1:1"]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn bandwidth_limit_is_passed_on_as_text_for_the_daemon_to_check() {
        let cli = parse(&[
            "expose",
            "add",
            "--name",
            "x",
            "--socket",
            "tcp:127.0.0.1:1",
            "--bandwidth-limit",
            "10MiB/s",
        ])
        .unwrap();
        let Command::Expose(ExposeCommand::Add(add)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(add.bandwidth_limit.as_deref(), Some("10MiB/s"));
        let cli = parse(&[
            "remote",
            "add",
            "--site",
            "b",
            "--app",
            "x",
            "--local",
            "tcp:127.0.0.1:2",
            "--bandwidth-limit",
            "0MiB/s",
        ])
        .unwrap();
        let Command::Remote(RemoteCommand::Add(add)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        // Refused by the daemon, with the config file's message.
        assert_eq!(add.bandwidth_limit.as_deref(), Some("0MiB/s"));
    }

    #[test]
    fn max_connections_is_optional_and_a_number_the_daemon_range_checks() {
        let cli = parse(&[
            "expose",
            "add",
            "--name",
            "x",
            "--socket",
            "tcp:127.0.0.1:1",
            "--max-connections",
            "0",
        ])
        .unwrap();
        let Command::Expose(ExposeCommand::Add(add)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        // 0 is passed on: the daemon refuses it with the config file's message.
        assert_eq!(add.max_connections, Some(0));
        let cli = parse(&[
            "remote",
            "add",
            "--site",
            "b",
            "--app",
            "x",
            "--local",
            "tcp:127.0.0.1:2",
            "--max-connections",
            "2",
        ])
        .unwrap();
        let Command::Remote(RemoteCommand::Add(add)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(add.max_connections, Some(2));
        assert_eq!(
            kind(&[
                "remote",
                "add",
                "--site",
                "b",
                "--app",
                "x",
                "--local",
                "tcp:127.0.0.1:2",
                "--max-connections",
                "many"
            ]),
            ErrorKind::ValueValidation
        );
    }

    #[test]
    fn app_sockets_are_not_checked_here_so_the_daemon_reports_them() {
        let cli = parse(&["expose", "add", "--name", "x", "--socket", "tcp:nope"]).unwrap();
        let Command::Expose(ExposeCommand::Add(add)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(add.socket.as_deref(), Some("tcp:nope"));
    }

    #[test]
    fn peers_forget_takes_one_name() {
        let cli = parse(&["--site", "a", "peers", "forget", "beta", "-o", "json"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Peers(PeersArgs {
                command: Some(PeersCommand::Forget {
                    name: "beta".into()
                })
            })
        );
        assert_eq!(cli.output, Format::Json);
        // A name that looks like an option goes after `--`, as the suggestions write it.
        let cli = parse(&["peers", "forget", "--", "-x"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Peers(PeersArgs {
                command: Some(PeersCommand::Forget { name: "-x".into() })
            })
        );
        assert_eq!(
            kind(&["peers", "forget"]),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            kind(&["peers", "forget", "a", "b"]),
            ErrorKind::UnknownArgument
        );
        assert_eq!(
            kind(&["peers", "forgot", "a"]),
            ErrorKind::InvalidSubcommand
        );
    }

    #[test]
    fn expose_rm_takes_the_name_and_has_a_remove_alias() {
        for verb in ["rm", "remove"] {
            let cli = parse(&["expose", verb, "echo"]).unwrap();
            assert_eq!(
                cli.command,
                Command::Expose(ExposeCommand::Rm {
                    name: "echo".into()
                })
            );
        }
        assert_eq!(kind(&["expose", "rm"]), ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn remote_add_and_rm_take_site_app_and_sockets() {
        let cli = parse(&[
            "--site",
            "a",
            "remote",
            "add",
            "--site",
            "b",
            "--app",
            "vnc",
            "--local",
            "tcp:127.0.0.1:5900",
            "--app-socket",
            "tcp:10.0.0.6:5900",
        ])
        .unwrap();
        assert_eq!(
            cli.site.as_deref(),
            Some("a"),
            "the global --site is this site"
        );
        assert_eq!(
            cli.command,
            Command::Remote(RemoteCommand::Add(RemoteAdd {
                site: "b".into(),
                app: "vnc".into(),
                local: "tcp:127.0.0.1:5900".into(),
                app_socket: Some("tcp:10.0.0.6:5900".into()),
                max_connections: None,
                udp_idle_timeout: None,
                bandwidth_limit: None,
            }))
        );
        let cli = parse(&["remote", "rm", "--site", "b", "--app", "vnc"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Remote(RemoteCommand::Rm(RemoteRm {
                site: "b".into(),
                app: "vnc".into(),
                local: None,
            }))
        );
        assert_eq!(
            kind(&["remote", "add", "--site", "b", "--app", "vnc"]),
            ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn stats_takes_follow_and_an_interval() {
        let cli = parse(&["stats"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Stats(StatsArgs {
                follow: false,
                interval: None
            })
        );
        let cli = parse(&["stats", "--follow", "--interval", "500ms"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Stats(StatsArgs {
                follow: true,
                interval: Some(Duration::from_millis(500))
            })
        );
        assert_eq!(kind(&["stats", "-i", "soon"]), ErrorKind::ValueValidation);
    }

    #[test]
    fn intervals_accept_common_units() {
        assert_eq!(parse_interval("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_interval("2s"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_interval("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_interval("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_interval("0s").unwrap_err().contains("more than zero"));
        assert!(
            parse_interval("3d")
                .unwrap_err()
                .contains("unknown unit 'd'")
        );
        assert!(parse_interval("ms").unwrap_err().contains("not a duration"));
    }

    #[test]
    fn completions_take_a_known_shell() {
        let cli = parse(&["completions", "bash"]).unwrap();
        assert_eq!(
            cli.command,
            Command::Completions {
                shell: clap_complete::Shell::Bash
            }
        );
        assert_eq!(kind(&["completions", "tcsh"]), ErrorKind::InvalidValue);
    }

    #[test]
    fn help_documents_exit_codes_and_json_stability() {
        let help = Cli::command().render_long_help().to_string();
        for needle in ["Exit status:", "64", "no daemon could be reached", "stable"] {
            assert!(help.contains(needle), "help lacks {needle:?}:\n{help}");
        }
    }
}
