//! Running one parsed `wovenetctl` command: pick and dial the socket, make the call, write
//! the result in the chosen format, follow feeds until told to stop. Errors keep the
//! daemon's message unchanged and carry their exit code; printing them is the binary's job.

use std::error::Error as _;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use clap::CommandFactory;
use serde::Serialize;
use tonic::{Code, Status};
use wovenet_proto::v1::{ExposedAppSpec, ReloadOutcome, RemoteAppSpec};

use super::args::{
    Cli, Command, EXIT_RELOAD_INVALID, EXIT_RELOAD_RESTART, ExposeCommand, Format, PeersCommand,
    RemoteCommand, StatsArgs,
};
use super::{json, shell, text};
use crate::client::{self, ClientError, Control};

/// Why a command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No daemon could be reached (exit 2).
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The daemon answered with an error (exit 1); displays its message unchanged.
    #[error("{}", status_message(.0))]
    Daemon(Status),
    /// The connection broke during a call (exit 2).
    #[error("lost the connection to wovenetd on {path}: {reason}")]
    Lost {
        /// The socket path.
        path: PathBuf,
        /// What the transport said.
        reason: String,
    },
    /// Writing the output failed (exit 1, or 0 for a closed pipe: `… | head`).
    #[error("cannot write output: {0}")]
    Output(#[from] io::Error),
    /// A reload applied everything but the changes that need a restart (exit 3); the
    /// printed report lists them, so nothing more is said.
    #[error("some changes need a restart of wovenetd")]
    ReloadNeedsRestart,
    /// A reload found the config file invalid (exit 4): the message lists every error.
    #[error("{0}")]
    ReloadInvalid(String),
}

impl CtlError {
    /// A status as received: the daemon's own, or one made by the transport when the
    /// connection broke (those carry the underlying error as their source).
    pub fn from_status(status: Status, path: &Path) -> Self {
        match status.source() {
            Some(source)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Internal
                ) =>
            {
                Self::Lost {
                    path: path.to_path_buf(),
                    reason: format!("{}: {source}", status_message(&status)),
                }
            }
            _ => Self::Daemon(status),
        }
    }

    /// The process exit code (documented in `--help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Daemon(_) => 1,
            Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe => 0,
            Self::Output(_) => 1,
            Self::Client(_) | Self::Lost { .. } => 2,
            Self::ReloadNeedsRestart => EXIT_RELOAD_RESTART,
            Self::ReloadInvalid(_) => EXIT_RELOAD_INVALID,
        }
    }

    /// Whether nothing should be printed: the reader of our output went away, or the
    /// output already says it all.
    pub fn is_quiet(&self) -> bool {
        matches!(self, Self::Output(e) if e.kind() == io::ErrorKind::BrokenPipe)
            || matches!(self, Self::ReloadNeedsRestart)
    }
}

/// The status message, or the code's description when the daemon sent none.
fn status_message(s: &Status) -> String {
    if s.message().is_empty() {
        s.code().description().to_owned()
    } else {
        s.message().to_owned()
    }
}

/// Where output goes: results to `out`, notes for people (feed ended) to `notes`.
pub struct Sinks<'a> {
    /// Results (stdout).
    pub out: &'a mut dyn Write,
    /// Notes (stderr).
    pub notes: &'a mut dyn Write,
}

/// Runs `cli`: completions locally, everything else against the daemon it selects.
/// `stop` ends `events` and `stats --follow` (Ctrl-C in the binary).
pub async fn run(
    cli: &Cli,
    sinks: Sinks<'_>,
    stop: impl Future<Output = ()>,
) -> Result<(), CtlError> {
    if let Command::Completions { shell } = cli.command {
        return completions(shell, sinks.out);
    }
    let path = client::resolve(cli.socket.as_deref(), cli.site.as_deref())?;
    let mut control = Control::connect(&path).await?;
    let call = Call {
        path: &path,
        selection: shell::selection(cli.socket.as_deref(), cli.site.as_deref()),
        format: cli.output,
    };
    execute(&mut control, &call, &cli.command, sinks, stop).await
}

/// How a command reaches and answers: the socket, how it was chosen (repeated in the
/// commands suggested to the operator, see [`shell::selection`]) and the output format.
#[derive(Debug, Clone)]
pub struct Call<'a> {
    /// The control socket.
    pub path: &'a Path,
    /// ` --site NAME`, ` --socket PATH` or nothing.
    pub selection: String,
    /// Output format.
    pub format: Format,
}

/// Writes the completion script for `shell`.
pub fn completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<(), CtlError> {
    // Generated into memory first: clap_complete panics on write errors (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "wovenetctl", &mut script);
    out.write_all(&script)?;
    out.flush()?;
    Ok(())
}

/// One result: pretty JSON, or the table text.
fn emit(
    out: &mut dyn Write,
    format: Format,
    json: &impl Serialize,
    table: impl FnOnce() -> String,
) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, json)?;
            out.write_all(b"\n")?;
        }
        Format::Table => out.write_all(table().as_bytes())?,
    }
    out.flush()
}

/// One item of a feed: a compact JSON line, or the table text.
fn emit_line(
    out: &mut dyn Write,
    format: Format,
    json: &impl Serialize,
    table: impl FnOnce() -> String,
) -> io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer(&mut *out, json)?;
            out.write_all(b"\n")?;
        }
        Format::Table => out.write_all(table().as_bytes())?,
    }
    out.flush()
}

/// Runs one daemon command on a connected client.
pub async fn execute(
    control: &mut Control,
    call: &Call<'_>,
    command: &Command,
    sinks: Sinks<'_>,
    stop: impl Future<Output = ()>,
) -> Result<(), CtlError> {
    let format = call.format;
    let st = |s: Status| CtlError::from_status(s, call.path);
    let out = sinks.out;
    let now = SystemTime::now();
    match command {
        Command::Status => {
            let site = control.site().await.map_err(st)?;
            let json = json::GetSite {
                site: (&site).into(),
            };
            emit(out, format, &json, || text::status(&site))?;
        }
        Command::Peers(args) => match &args.command {
            None => {
                let peers = control.peers().await.map_err(st)?;
                let json = json::ListPeers {
                    peers: peers.iter().map(Into::into).collect(),
                };
                emit(out, format, &json, || {
                    text::peers(&peers, now, &call.selection)
                })?;
            }
            Some(PeersCommand::Forget { name }) => {
                let identity = control.forget_peer(name).await.map_err(st)?;
                let json = json::PeerForgotten {
                    identity: identity.clone(),
                };
                emit(out, format, &json, || text::peer_forgotten(name, &identity))?;
            }
        },
        Command::Channels => {
            let channels = control.channels().await.map_err(st)?;
            let json = json::ListChannels {
                channels: channels.iter().map(Into::into).collect(),
            };
            emit(out, format, &json, || text::channels(&channels))?;
        }
        Command::Streams => {
            let streams = control.streams().await.map_err(st)?;
            let json = json::ListStreams {
                streams: streams.iter().map(Into::into).collect(),
            };
            emit(out, format, &json, || text::streams(&streams))?;
        }
        Command::Apps => {
            let apps = control.apps().await.map_err(st)?;
            emit(out, format, &json::ListApps::from(&apps), || {
                text::apps(&apps)
            })?;
        }
        Command::Expose(ExposeCommand::Add(add)) => {
            let spec = ExposedAppSpec {
                name: add.name.clone(),
                mode: add.mode().to_owned(),
                app_socket: add.socket.clone().unwrap_or_default(),
                port_range: add.port_range.clone(),
                address_range: add.address_range.clone(),
                max_connections: add.max_connections,
                allowed_sites: add.allowed_sites.clone(),
                protocol: add.protocol.clone().unwrap_or_default(),
                udp_idle_timeout: add.udp_idle_timeout,
                bandwidth_limit: add.bandwidth_limit.clone().unwrap_or_default(),
                proxy_protocol: add.proxy_protocol.clone().unwrap_or_default(),
            };
            let app = control.add_exposed_app(spec).await.map_err(st)?;
            let json = json::ExposedAppChange { app: (&app).into() };
            emit(out, format, &json, || text::exposed_added(&app))?;
        }
        Command::Expose(ExposeCommand::Rm { name }) => {
            let app = control.remove_exposed_app(name).await.map_err(st)?;
            let json = json::ExposedAppChange { app: (&app).into() };
            emit(out, format, &json, || text::exposed_removed(&app))?;
        }
        Command::Remote(RemoteCommand::Add(add)) => {
            let spec = RemoteAppSpec {
                site_name: add.site.clone(),
                app_name: add.app.clone(),
                local_socket: add.local.clone(),
                app_socket: add.app_socket.clone().unwrap_or_default(),
                max_connections: add.max_connections,
                udp_idle_timeout: add.udp_idle_timeout,
                bandwidth_limit: add.bandwidth_limit.clone().unwrap_or_default(),
            };
            let app = control.add_remote_app(spec).await.map_err(st)?;
            let json = json::RemoteAppAdded { app: (&app).into() };
            emit(out, format, &json, || text::remote_added(&app))?;
        }
        Command::Remote(RemoteCommand::Rm(rm)) => {
            let removed = control
                .remove_remote_app(&rm.site, &rm.app, rm.local.as_deref())
                .await
                .map_err(st)?;
            let json = json::RemoteAppsRemoved {
                removed: removed.iter().map(Into::into).collect(),
            };
            emit(out, format, &json, || text::remote_removed(&removed))?;
        }
        Command::Reload => {
            let report = control.reload().await.map_err(st)?;
            let outcome = ReloadOutcome::try_from(report.outcome).ok();
            let invalid = outcome == Some(ReloadOutcome::Invalid);
            let json = json::Reload {
                report: (&report).into(),
            };
            // An invalid file's report is the error message: table output has nothing else.
            if format == Format::Json || !invalid {
                emit(out, format, &json, || text::reload(&report))?;
            }
            match outcome {
                Some(ReloadOutcome::Invalid) => {
                    return Err(CtlError::ReloadInvalid(text::reload_invalid(&report)));
                }
                Some(ReloadOutcome::NeedsRestart) => return Err(CtlError::ReloadNeedsRestart),
                _ => {}
            }
        }
        Command::Events => {
            let mut feed = control.watch_events().await.map_err(st)?;
            let mut stop = std::pin::pin!(stop);
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    msg = feed.message() => match msg.map_err(st)? {
                        Some(m) => emit_line(out, format, &json::WatchEvents::from(&m), || {
                            text::watch_event(&m)
                        })?,
                        None => {
                            writeln!(sinks.notes, "the daemon ended the event feed")?;
                            break;
                        }
                    },
                }
            }
        }
        Command::Stats(StatsArgs { follow, interval }) => {
            let mut feed = control.watch_stats(*interval).await.map_err(st)?;
            let mut stop = std::pin::pin!(stop);
            let mut first = true;
            loop {
                tokio::select! {
                    () = &mut stop => break,
                    msg = feed.message() => match msg.map_err(st)? {
                        Some(m) => {
                            if !first && format == Format::Table {
                                out.write_all(b"\n")?;
                            }
                            first = false;
                            emit_line(out, format, &json::Stats::from(&m), || text::stats(&m))?;
                            if !follow {
                                break;
                            }
                        }
                        None => {
                            writeln!(sinks.notes, "the daemon ended the stats feed")?;
                            break;
                        }
                    },
                }
            }
        }
        Command::Completions { shell } => completions(*shell, out)?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_errors_keep_their_message_and_exit_1() {
        let msg = "localExposedApps[0].appSocket: 'tcp:nope' is not a valid tcp socket";
        let e = CtlError::from_status(Status::invalid_argument(msg), Path::new("/s"));
        assert_eq!(e.to_string(), msg);
        assert_eq!(e.exit_code(), 1);
        assert!(!e.is_quiet());
        let empty = CtlError::from_status(Status::not_found(""), Path::new("/s"));
        assert_eq!(empty.to_string(), "Some requested entity was not found");
    }

    #[test]
    fn a_broken_connection_exits_2_naming_the_socket() {
        let broken = Status::from_error(Box::new(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        let e = CtlError::from_status(broken, Path::new("/run/wovenet/a.sock"));
        assert_eq!(e.exit_code(), 2);
        let text = e.to_string();
        assert!(
            text.starts_with("lost the connection to wovenetd on /run/wovenet/a.sock: "),
            "{text}"
        );
        assert!(text.contains("connection reset by peer"), "{text}");
    }

    #[test]
    fn no_daemon_exits_2_and_a_closed_pipe_exits_0_quietly() {
        let e = CtlError::from(ClientError::NoDaemon {
            path: "/s".into(),
            reason: "refused".into(),
        });
        assert_eq!(e.exit_code(), 2);
        let pipe = CtlError::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert_eq!((pipe.exit_code(), pipe.is_quiet()), (0, true));
        let full = CtlError::from(io::Error::from(io::ErrorKind::StorageFull));
        assert_eq!((full.exit_code(), full.is_quiet()), (1, false));
    }

    #[test]
    fn completions_are_written_for_each_shell() {
        for shell in [clap_complete::Shell::Bash, clap_complete::Shell::Fish] {
            let mut out = Vec::new();
            completions(shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            assert!(script.contains("wovenetctl"), "{script}");
        }
    }
}
