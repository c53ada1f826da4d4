//! `wovenet-tui`: parses `--socket`/`--site`, sends logs to a file (never the terminal),
//! and runs the console between `ratatui::init()` and `ratatui::restore()` so the terminal
//! comes back even on panic. No logic beyond wiring.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use wovenet_tui::client;
use wovenet_tui::console::app;

/// The wovenet operator's console.
#[derive(Debug, Parser)]
#[command(name = "wovenet-tui", version, about)]
struct Args {
    /// Control socket of the daemon to attach to.
    #[arg(long, value_name = "PATH", conflicts_with = "site")]
    socket: Option<PathBuf>,
    /// Site name whose socket is in the default directories (yours, then /run/wovenet).
    #[arg(long, value_name = "NAME")]
    site: Option<String>,
    /// Write debug logs to this file (the terminal is the console's).
    #[arg(long, value_name = "FILE", env = "WOVENET_TUI_LOG")]
    log: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let path = client::resolve(args.socket.as_deref(), args.site.as_deref())?;
    if let Some(file) = &args.log {
        let f = std::fs::File::create(file)
            .with_context(|| format!("cannot create log file {}", file.display()))?;
        tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(f))
            .with_ansi(false)
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_env("WOVENET_LOG")
                    .unwrap_or_else(|_| "wovenet_tui=debug".into()),
            )
            .init();
    }
    let mut terminal = ratatui::init();
    crossterm::execute!(std::io::stdout(), crossterm::event::EnableMouseCapture)?;
    let result = app::run(&mut terminal, path).await;
    let _ = crossterm::execute!(std::io::stdout(), crossterm::event::DisableMouseCapture);
    ratatui::restore();
    result.context("terminal error")
}
