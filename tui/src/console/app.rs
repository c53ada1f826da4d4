//! The loop: one `select!` over terminal input, the daemon feed, RPC results and a 1 s tick.
//! Each becomes an [`Action`], `State::update` applies it, and a frame is drawn only when
//! something changed. RPCs run in spawned tasks and report back as [`Action::RpcDone`];
//! the loop owns the feed task and every RPC task and aborts them on exit.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use crossterm::event::{Event as TermEvent, EventStream, KeyEventKind, MouseEventKind};
use ratatui::DefaultTerminal;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;

use super::action::{Action, Feed};
use super::feed;
use super::form::Request;
use super::keymap;
use super::theme::Theme;
use super::ui;
use super::update::{Effect, State};
use crate::client::Control;
use crate::ctl::text;

/// Runs the console on `terminal` against the daemon socket at `path` until the operator quits.
pub async fn run(terminal: &mut DefaultTerminal, path: PathBuf) -> std::io::Result<()> {
    let theme = Theme::from_env();
    let mut state = State {
        dirty: true,
        ..State::default()
    };
    let (tx, mut rx) = mpsc::channel::<Action>(256);
    let (control_tx, control_rx) = watch::channel::<Option<Control>>(None);
    let feed = tokio::spawn(feed::run(path, tx.clone(), control_tx));
    let mut rpcs: JoinSet<()> = JoinSet::new();
    let mut input = EventStream::new();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let result = loop {
        if state.dirty {
            let now = SystemTime::now();
            if let Err(e) = terminal.draw(|f| ui::render(&state.model, &state.view, theme, now, f))
            {
                break Err(e);
            }
            state.dirty = false;
        }
        let action = tokio::select! {
            ev = input.next() => match ev {
                Some(Ok(TermEvent::Key(k))) if k.kind != KeyEventKind::Release => {
                    match keymap::map_key(k, &state.view) {
                        Some(a) => a,
                        None => continue,
                    }
                }
                Some(Ok(TermEvent::Mouse(m))) => match m.kind {
                    MouseEventKind::ScrollDown => Action::Down,
                    MouseEventKind::ScrollUp => Action::Up,
                    _ => continue,
                },
                Some(Ok(TermEvent::Resize(..))) => Action::Redraw,
                Some(Ok(_)) => continue,
                Some(Err(e)) => break Err(e),
                None => break Ok(()),
            },
            Some(a) = rx.recv() => a,
            _ = tick.tick() => Action::Tick,
            Some(_) = rpcs.join_next(), if !rpcs.is_empty() => continue,
        };
        match state.update(action, SystemTime::now()) {
            Some(Effect::Quit) => break Ok(()),
            Some(Effect::Rpc(req)) => {
                let control = control_rx.borrow().clone();
                rpcs.spawn(rpc(control, req, tx.clone()));
            }
            None => {}
        }
    };
    feed.abort();
    rpcs.abort_all();
    result
}

/// Runs one request and sends its outcome back to the loop. After a forget, the peers are
/// read again at once: the site's row goes (and its next identity shows) without waiting
/// for the feed's next refresh.
async fn rpc(control: Option<Control>, req: Request, tx: mpsc::Sender<Action>) {
    let Some(mut c) = control else {
        let result = Err("not connected to the daemon".to_owned());
        let _ = tx.send(Action::RpcDone(req, result)).await;
        return;
    };
    let result = call(&mut c, &req).await;
    let refresh = matches!(req, Request::ForgetPeer(_)) && result.is_ok();
    // The loop may have quit meanwhile; nothing is waiting for the answer then.
    let _ = tx.send(Action::RpcDone(req, result)).await;
    if refresh && let Ok(peers) = c.peers().await {
        let _ = tx.send(Action::Feed(Feed::Peers(peers))).await;
    }
}

async fn call(c: &mut Control, req: &Request) -> Result<String, String> {
    let line = |s: String| s.trim_end().replace('\n', "; ");
    match req {
        Request::AddExposed(spec) => c
            .add_exposed_app(spec.as_ref().clone())
            .await
            .map(|a| line(text::exposed_added(&a))),
        Request::AddRemote(spec) => c
            .add_remote_app(spec.clone())
            .await
            .map(|a| line(text::remote_added(&a))),
        Request::RemoveExposed(name) => c
            .remove_exposed_app(name)
            .await
            .map(|a| line(text::exposed_removed(&a))),
        Request::RemoveRemote { site, app, local } => c
            .remove_remote_app(
                site,
                app,
                Some(local).filter(|l| !l.is_empty()).map(String::as_str),
            )
            .await
            .map(|r| line(text::remote_removed(&r))),
        Request::ForgetPeer(site) => c
            .forget_peer(site)
            .await
            .map(|identity| line(text::peer_forgotten_short(site, &identity))),
    }
    .map_err(|s| s.message().to_owned())
}
