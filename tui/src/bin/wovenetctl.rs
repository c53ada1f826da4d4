//! `wovenetctl`: parses the command line, runs it (see `wovenet_tui::ctl`), prints errors as
//! `error: <message>` on stderr and turns them into the exit codes documented in `--help`.
//! No logic beyond that wiring.

use std::io::{self, Write};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use wovenet_tui::ctl::args::{Command, EXIT_USAGE};
use wovenet_tui::ctl::{self, Cli, CtlError, Sinks};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" that go to stdout and succeed.
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match try_main(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => report(&e),
    }
}

fn try_main(cli: &Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let (stdout, stderr) = (io::stdout(), io::stderr());
    let sinks = Sinks {
        out: &mut stdout.lock(),
        notes: &mut stderr.lock(),
    };
    // The following commands end cleanly on Ctrl-C; the handler is installed
    // before anything is printed, so a SIGINT right after the first line is
    // not lost to the default action. Other commands keep "die on SIGINT".
    let follows = matches!(cli.command, Command::Events | Command::Stats(_));
    let sigint = if follows {
        let _guard = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt()).ok()
    } else {
        None
    };
    runtime.block_on(ctl::run(cli, sinks, interrupted(sigint)))?;
    Ok(())
}

/// Resolves on SIGINT when a handler was installed; otherwise never.
async fn interrupted(sigint: Option<tokio::signal::unix::Signal>) {
    match sigint {
        Some(mut s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

fn report(e: &anyhow::Error) -> ExitCode {
    match e.downcast_ref::<CtlError>() {
        Some(c) if c.is_quiet() => ExitCode::from(c.exit_code()),
        Some(c) => {
            let _ = writeln!(io::stderr(), "error: {c}");
            ExitCode::from(c.exit_code())
        }
        None => {
            let _ = writeln!(io::stderr(), "error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
