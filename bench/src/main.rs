//! `wovenet-bench`: runs the scenarios and writes `results.json` and `results.md`; also
//! runs the WAN emulator on its own (`wanem`), sweeps namespaces left by killed runs
//! (`cleanup`), redraws the WAN plot from a saved run (`plot`), and serves as its own
//! helper app server (`serve`, hidden). Wiring only.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Parser, Subcommand};
use wovenet_bench::daemon::{self, Profile};
use wovenet_bench::plot;
use wovenet_bench::report::{Failure, Meta, Report};
use wovenet_bench::scenario::{self, Env, Scenario, WanGrid};
use wovenet_bench::wanem::{Wanem, WanemConfig, netns};

/// wovenet benchmark suite: tunnel vs baseline, measured side by side in one run.
///
/// Run it with `cargo run --release -p wovenet-bench -- [--quick] [--out DIR] [SCENARIO...]`.
/// It benchmarks target/release/wovenetd, running `cargo build --release -p
/// wovenet-daemon` first (a no-op when up to date). The emulator, wan, channels and nat
/// scenarios need root (network namespaces, TUN devices; nat also nft, conntrack, coturn).
#[derive(Parser, Debug)]
#[command(name = "wovenet-bench", args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A tiny subset with short windows (a smoke test taking well under a minute).
    #[arg(long)]
    quick: bool,
    /// Where results.json and results.md go [default: <target>/bench-results].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Benchmark this wovenetd instead of building target/release/wovenetd.
    #[arg(long)]
    wovenetd: Option<PathBuf>,
    /// Use (and build) target/debug/wovenetd: only to check the suite itself.
    #[arg(long)]
    debug_binaries: bool,
    /// WAN grid: round-trip times in ms, comma separated.
    #[arg(long, value_delimiter = ',')]
    rtt: Option<Vec<u64>>,
    /// WAN grid: loss rates in percent per direction, comma separated.
    #[arg(long, value_delimiter = ',')]
    loss: Option<Vec<f64>>,
    /// WAN grid: rate caps in Mbit/s, comma separated; 0 means uncapped.
    #[arg(long, value_delimiter = ',')]
    cap: Option<Vec<u64>>,
    /// WAN grid: the tunnel's congestion controllers (cubic, bbr), comma separated.
    #[arg(long, value_delimiter = ',')]
    tunnel_cc: Option<Vec<String>>,
    /// WAN grid: seconds measured per transport and path (after the warm-up).
    #[arg(long)]
    wan_seconds: Option<f64>,
    /// Scenarios to run [default: all].
    #[arg(value_enum)]
    scenarios: Vec<Scenario>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the WAN emulator alone until Ctrl-C (try `ip netns exec NS …` meanwhile).
    Wanem {
        /// Round-trip time in ms.
        #[arg(long, default_value_t = 100)]
        rtt: u64,
        /// Loss in percent per direction.
        #[arg(long, default_value_t = 0.0)]
        loss: f64,
        /// Rate cap in Mbit/s (0: none).
        #[arg(long, default_value_t = 0)]
        cap: u64,
    },
    /// Delete network namespaces left by runs that were killed.
    Cleanup,
    /// Redraw the WAN throughput-vs-loss plot (SVG) from a saved results.json.
    Plot {
        /// The results.json of a run.
        #[arg(long)]
        from: PathBuf,
        /// Where the SVG goes [default: throughput_vs_loss.svg next to --from].
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Serve the benchmark app on 127.0.0.1 (used by the memory scenario).
    #[command(hide = true)]
    Serve,
    /// Relay TCP from 127.0.0.1 to ADDR (the latency scenario's null tunnel).
    #[command(hide = true)]
    Relay {
        /// Where to forward each connection.
        #[arg(long)]
        to: std::net::SocketAddr,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Wanem { rtt, loss, cap }) => rt.block_on(wanem(rtt, loss, cap)),
        Some(Command::Cleanup) => {
            for name in netns::sweep_stale() {
                println!("deleted namespace {name}");
            }
            // The NAT rig's namespaces (`nat` scenario) whose creating process is dead.
            for name in wovenet_e2e::natrig::netns::sweep(false) {
                println!("deleted namespace {name}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Plot { from, out }) => redraw(&from, out),
        Some(Command::Serve) => rt.block_on(serve()),
        Some(Command::Relay { to }) => rt.block_on(relay(to)),
        None => rt.block_on(run(cli.run)),
    };
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

async fn run(args: RunArgs) -> anyhow::Result<ExitCode> {
    let wovenetd = match &args.wovenetd {
        Some(p) => p.clone(),
        None if args.debug_binaries => daemon::find_wovenetd(Profile::Debug)?,
        None => daemon::find_wovenetd(Profile::Release)?,
    };
    let mut grid = if args.quick {
        WanGrid::quick()
    } else {
        WanGrid::full()
    };
    if let Some(v) = args.rtt {
        grid.rtts_ms = v;
    }
    if let Some(v) = args.loss {
        grid.losses_pct = v;
    }
    if let Some(v) = args.cap {
        grid.caps_mbps = v.into_iter().map(|c| (c > 0).then_some(c)).collect();
    }
    if let Some(v) = args.tunnel_cc {
        grid.tunnel_cc = v;
    }
    if let Some(s) = args.wan_seconds {
        grid.duration = Duration::from_secs_f64(s);
    }
    let env = Env {
        wovenetd: wovenetd.clone(),
        helper: std::env::current_exe().ok(),
        quick: args.quick,
        wan: grid,
    };
    let out = args
        .out
        .unwrap_or_else(|| daemon::target_dir().join("bench-results"));
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
    };
    if is_root() {
        for name in netns::sweep_stale() {
            eprintln!("bench: deleted namespace {name} left by a killed run");
        }
    }
    let mut report = Report {
        meta: meta(&env),
        ..Report::default()
    };
    let interrupted = {
        let work = run_all(&env, &scenarios, &out, &mut report);
        tokio::pin!(work);
        tokio::select! {
            () = &mut work => false,
            _ = tokio::signal::ctrl_c() => true,
        }
        // Leaving this block drops the unfinished scenario: its emulator, namespaces
        // and daemons are torn down by their guards.
    };
    if interrupted {
        eprintln!("bench: interrupted; cleaned up, writing what was measured");
        report
            .failures
            .push(Failure::new("run", "interrupted (Ctrl-C)"));
    }
    report.write(&out)?;
    eprintln!(
        "bench: wrote {} and {}",
        out.join("results.json").display(),
        out.join("results.md").display()
    );
    let svg = out.join(plot::FILE_NAME);
    match plot::write(&report.records, &report.failures, &svg) {
        Ok(true) => eprintln!("bench: wrote {}", svg.display()),
        Ok(false) => {}
        // The figures are safe in results.json; `wovenet-bench plot` can redraw later.
        Err(e) => eprintln!("bench: no plot: {e}"),
    }
    Ok(if interrupted {
        ExitCode::from(130)
    } else if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn run_all(env: &Env, scenarios: &[Scenario], out: &std::path::Path, report: &mut Report) {
    for &s in scenarios {
        if s.needs_root() && !is_root() {
            eprintln!("== {}: skipped (needs root)", s.name());
            report.failures.push(Failure::new(
                s.name(),
                "skipped: needs root (network namespaces, TUN devices)",
            ));
            continue;
        }
        eprintln!("== {}", s.name());
        if let Err(e) = scenario::run(s, env, report).await {
            eprintln!("== {} failed: {e}", s.name());
            report.failures.push(Failure::new(s.name(), e.to_string()));
        }
        // Partial results survive a crash or a kill later in the run.
        if let Err(e) = report.write(out) {
            eprintln!("bench: {e}");
        }
    }
}

fn meta(env: &Env) -> Meta {
    let text = |cmd: &str, args: &[&str]| {
        std::process::Command::new(cmd)
            .args(args)
            .current_dir(daemon::workspace_root())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    Meta {
        mode: if env.quick { "quick" } else { "full" }.into(),
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        wovenetd: env.wovenetd.display().to_string(),
        commit: text("git", &["rev-parse", "--short", "HEAD"]),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .map(|s| s.trim().to_owned()),
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
    }
}

async fn wanem(rtt: u64, loss: f64, cap: u64) -> anyhow::Result<ExitCode> {
    let config = WanemConfig::new(Duration::from_millis(rtt), loss / 100.0)
        .with_rate((cap > 0).then_some(cap * 1_000_000));
    let wan = Wanem::start(config)?;
    println!(
        "emulating rtt {rtt} ms, loss {loss} %, cap {} between namespaces:\n  \
         {} (10.77.0.1, control 10.78.0.1)\n  {} (10.77.0.2, control 10.78.0.2)\n\
         e.g. ip netns exec {} iperf3 -c 10.77.0.2\nCtrl-C stops and deletes them.",
        if cap > 0 {
            format!("{cap} Mbit/s")
        } else {
            "none".into()
        },
        wan.ns_a().name(),
        wan.ns_b().name(),
        wan.ns_a().name(),
    );
    tokio::signal::ctrl_c().await?;
    let [a2b, b2a] = wan.stats();
    println!("a→b: {a2b:?}\nb→a: {b2a:?}");
    Ok(ExitCode::SUCCESS)
}

fn redraw(from: &std::path::Path, out: Option<PathBuf>) -> anyhow::Result<ExitCode> {
    let out = out.unwrap_or_else(|| from.with_file_name(plot::FILE_NAME));
    let (records, failures) = plot::load(from)?;
    if !plot::write(&records, &failures, &out)? {
        anyhow::bail!("{}: {}", from.display(), plot::PlotError::NoWanRecords);
    }
    println!("wrote {}", out.display());
    Ok(ExitCode::SUCCESS)
}

async fn serve() -> anyhow::Result<ExitCode> {
    let server =
        wovenet_bench::load::BenchServer::bind((std::net::Ipv4Addr::LOCALHOST, 0).into()).await?;
    println!("listening {}", server.addr());
    std::io::stdout().flush()?;
    // Runs until the parent kills it (it also dies with the parent: PDEATHSIG).
    std::future::pending::<()>().await;
    Ok(ExitCode::SUCCESS)
}

async fn relay(to: std::net::SocketAddr) -> anyhow::Result<ExitCode> {
    let listener = wovenet_bench::load::relay::bind().await?;
    println!("listening {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    wovenet_bench::load::relay::serve(listener, to).await?;
    Ok(ExitCode::SUCCESS)
}
