//! `wovenetd`: command line, logging, signals and exit codes. No engine logic.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use wovenet_daemon::config::{self, ConfigError};
use wovenet_daemon::control::{Control, socket};
use wovenet_daemon::signals::{Signal, Signals};
use wovenet_daemon::store::Store;
use wovenet_daemon::{Daemon, Options, demo, identity, notify, telemetry};

/// Exit code for a bad configuration (EX_USAGE, like linkerd).
const EXIT_CONFIG: u8 = 64;
/// How long shutdown may take before tasks are abandoned.
const GRACE: Duration = Duration::from_secs(5);

/// wovenet site daemon: connects private networks at the application layer.
#[derive(Parser, Debug)]
#[command(name = "wovenetd", version, about, propagate_version = true)]
struct Cli {
    /// Configuration file (runs the site when no command is given).
    #[arg(long, short = 'c', global = true, env = "WOVENET_CONFIG")]
    config: Option<PathBuf>,
    /// State file for apps added or removed live and pinned site identities
    /// (default: `<config dir>/<config stem>.state.json`). The site's identity
    /// key is kept beside it (`<stem>.identity.key`).
    #[arg(long, global = true, env = "WOVENET_STATE")]
    state: Option<PathBuf>,
    /// Control socket (overrides `control.socket`; without either,
    /// $WOVENET_CONTROL_SOCKET, else `<runtime dir>/wovenet/<siteName>.sock`).
    #[arg(long, global = true, value_name = "PATH")]
    control_socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the site in the foreground until SIGINT or SIGTERM (the default).
    Run,
    /// Validate the configuration without touching the network.
    Check,
    /// Print the site's name and identity fingerprint (creating the identity
    /// key beside the state file if there is none yet), as a `trust.sites` entry.
    Identity,
    /// Run a self-contained demo on loopback: a broker and two sites in one process.
    Demo {
        /// Local port where the demo's remote app is served.
        #[arg(long, default_value_t = 8080)]
        port: u16,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::Check => check(cli.config.as_deref()),
        Command::Identity => identity(cli.config.as_deref(), cli.state),
        Command::Run => run_site(cli.config.as_deref(), cli.state, cli.control_socket),
        Command::Demo { port } => with_runtime(config::DEFAULT_WORKER_THREADS, async move {
            Ok(demo::run(port).await?)
        }),
    }
}

fn load(path: Option<&Path>) -> Result<config::Config, ExitCode> {
    let Some(path) = path else {
        eprintln!("error: no configuration given; use --config FILE (or WOVENET_CONFIG)");
        return Err(ExitCode::from(EXIT_CONFIG));
    };
    config::load_file(path).map_err(|e| {
        match &e {
            ConfigError::Invalid(errs) => {
                eprintln!("error: invalid configuration in {}:", path.display());
                for err in errs {
                    eprintln!("  {err}");
                }
            }
            other => eprintln!("error: {other}"),
        }
        ExitCode::from(EXIT_CONFIG)
    })
}

fn check(path: Option<&Path>) -> ExitCode {
    match load(path) {
        Ok(cfg) => {
            for w in &cfg.warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "configuration OK: site '{}', {} tunnel socket(s), {} exposed app(s), {} remote app(s)",
                cfg.site_name,
                cfg.tunnel.local_sockets.len(),
                cfg.exposed_apps.len(),
                cfg.remote_apps.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Where live changes and pins are kept: the flag, else beside the config.
fn store_for(state: Option<PathBuf>, config: Option<&Path>) -> Option<Store> {
    match (state, config) {
        (Some(file), _) => Some(Store::at(file)),
        (None, Some(config)) => Some(Store::beside(config)),
        (None, None) => None,
    }
}

fn identity(path: Option<&Path>, state: Option<PathBuf>) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let Some(store) = store_for(state, path) else {
        return ExitCode::from(EXIT_CONFIG);
    };
    let file = identity::path_beside(store.path());
    match identity::SiteKey::load_or_create(&file) {
        Ok((key, created)) => {
            let what = if created { "created" } else { "loaded" };
            eprintln!("identity key {what}: {}", file.display());
            println!("siteName: {}", cfg.site_name);
            println!("identity: {}", key.public().fingerprint());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_site(path: Option<&Path>, state: Option<PathBuf>, control: Option<PathBuf>) -> ExitCode {
    let cfg = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let log_level = match telemetry::init(&cfg.logger) {
        Ok(control) => control,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    raise_descriptor_limit();
    let path = path.map(Path::to_path_buf);
    let path = path.as_deref();
    with_runtime(cfg.tunnel.worker_threads, async move {
        // First, so that a SIGHUP during start does not kill the daemon.
        let mut signals = Signals::install().context("cannot install signal handlers")?;
        let store = store_for(state, path);
        // The config key wins over the environment but not over the flag.
        let env = std::env::var_os(wovenet_proto::paths::ENV_SOCKET).map(PathBuf::from);
        let socket = socket::resolve(
            control.as_deref(),
            cfg.control.socket.as_deref(),
            env.as_deref(),
            cfg.site_name.as_str(),
        );
        // Claimed before the site starts, so a second daemon on the same
        // socket stops before it announces itself to anyone.
        let control = Control::bind(&socket, cfg.metrics.listen)
            .await
            .context("cannot start the control plane")?;
        let site = cfg.site_name.clone();
        let options = Options {
            store,
            // Absolute, so reports name it unambiguously (the daemon never changes directory).
            config_file: path.map(|p| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())),
            log_level: Some(log_level),
        };
        let running = Daemon::start_with(cfg, options)
            .await
            .context("cannot start the site")?;
        control.spawn(
            running.handle().clone(),
            running.counters().clone(),
            running.shutdown_token(),
            running.tracker(),
        );
        // The socket has been listening since `bind`: connections succeed now.
        notify::ready(&format!(
            "site '{site}' running, control socket {}",
            socket.display()
        ));
        loop {
            match signals.recv().await {
                Signal::Shutdown => break,
                // The site logs the outcome and publishes it as an event.
                Signal::Reload => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    if let Err(e) = running.handle().reload().await {
                        tracing::warn!(error = %e, "reload failed");
                    }
                }
            }
        }
        tracing::info!("signal received, shutting down");
        notify::stopping(&format!("site '{site}' shutting down"));
        running.shutdown(GRACE).await;
        Ok(())
    })
}

/// Raises the soft `RLIMIT_NOFILE` to the hard limit: every forwarded
/// connection costs a descriptor on each side, and the usual soft default
/// (1024) is far below what a busy site needs. Logs both values; failing to
/// raise it is not fatal (accept loops then pause when descriptors run out).
fn raise_descriptor_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::info!(
                soft.before = soft,
                soft = hard,
                hard,
                "file descriptor limit raised"
            ),
            Err(e) => tracing::warn!(
                soft,
                hard,
                error = %e,
                "cannot raise the file descriptor limit"
            ),
        },
        Ok((soft, hard)) => tracing::info!(soft, hard, "file descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read the file descriptor limit"),
    }
}

/// Runs `f` on a runtime of `workers` threads (`tunnel.workerThreads`).
///
/// One thread is tokio's current-thread scheduler rather than a one-worker
/// pool: `f` then runs on the same thread as the tasks it spawns, without the
/// pool's cross-thread hand-offs. Measured on the rig's 64-byte ping-pong it
/// took 7 µs of CPU off each round trip (119 → 112 µs for both daemons), and
/// bulk throughput was equal or higher.
fn with_runtime(workers: u16, f: impl Future<Output = anyhow::Result<()>>) -> ExitCode {
    let mut builder = if workers <= 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(usize::from(workers));
        b
    };
    let rt = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let run = async {
        // Process-wide, so it outlives every site and ends with the run.
        let stop = tokio_util::sync::CancellationToken::new();
        let trimmer = tokio::spawn(wovenet_daemon::memory::release_after_bursts(stop.clone()));
        let r = f.await;
        stop.cancel();
        let _ = trimmer.await;
        r
    };
    match rt.block_on(run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "fatal");
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
