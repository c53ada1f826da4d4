//! The daemon feed task: dial, subscribe to WatchEvents (snapshot then events) and
//! WatchStats, refresh `GetSite` (broker state) and `ListPeers` (identities, trust states
//! and refused identities, which have no events), and forward everything as
//! [`Action::Feed`]. On any failure it reports [`Feed::Lost`] and redials on the capped
//! [`backoff`] schedule, forever. Owned by the loop, which aborts it on exit.
//! It never touches the model.

use std::path::PathBuf;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use wovenet_proto::v1::watch_events_response::Kind;

use super::action::{Action, Feed};
use super::backoff;
use crate::client::Control;

/// Stats sample period asked of the daemon (the sparklines hold one minute of these).
pub const STATS_INTERVAL: Duration = Duration::from_secs(1);
/// How often the site (broker state, uptime origin) and the peers (trust) are re-read.
pub const SITE_REFRESH: Duration = Duration::from_secs(3);

/// Runs until `tx` closes. `control_tx` holds the live client (or `None`) for RPCs.
pub async fn run(
    path: PathBuf,
    tx: mpsc::Sender<Action>,
    control_tx: watch::Sender<Option<Control>>,
) {
    let mut attempt = 0u32;
    loop {
        let reason = session(&path, &tx, &control_tx, &mut attempt).await;
        control_tx.send_replace(None);
        if tx.is_closed() {
            return;
        }
        let retry_in = backoff::delay(attempt);
        attempt = attempt.saturating_add(1);
        tracing::debug!(error = %reason, ?retry_in, "daemon lost");
        if tx
            .send(Action::Feed(Feed::Lost { reason, retry_in }))
            .await
            .is_err()
        {
            return;
        }
        tokio::time::sleep(retry_in).await;
    }
}

/// One connection's life; returns why it ended.
async fn session(
    path: &std::path::Path,
    tx: &mpsc::Sender<Action>,
    control_tx: &watch::Sender<Option<Control>>,
    attempt: &mut u32,
) -> String {
    let mut control = match Control::connect(path).await {
        Ok(c) => c,
        Err(e) => return e.to_string(),
    };
    let mut events = match control.watch_events().await {
        Ok(s) => s,
        Err(e) => return e.message().to_owned(),
    };
    let mut stats = match control.watch_stats(Some(STATS_INTERVAL)).await {
        Ok(s) => s,
        Err(e) => return e.message().to_owned(),
    };
    control_tx.send_replace(Some(control.clone()));
    let mut refresh = tokio::time::interval(SITE_REFRESH);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let feed = tokio::select! {
            m = events.message() => match m {
                Ok(Some(m)) => match m.kind {
                    Some(Kind::Snapshot(s)) => {
                        *attempt = 0;
                        Feed::Snapshot(Box::new(s))
                    }
                    Some(Kind::Event(e)) => Feed::Event(Box::new(e)),
                    None => continue,
                },
                Ok(None) => return "the daemon closed the event stream".to_owned(),
                Err(e) => return e.message().to_owned(),
            },
            m = stats.message() => match m {
                Ok(Some(s)) => Feed::Stats(Box::new(s)),
                Ok(None) => return "the daemon closed the stats stream".to_owned(),
                Err(e) => return e.message().to_owned(),
            },
            _ = refresh.tick() => {
                let site = match control.site().await {
                    Ok(s) => s,
                    Err(e) => return e.message().to_owned(),
                };
                if tx.send(Action::Feed(Feed::Site(Box::new(site)))).await.is_err() {
                    return "console closed".to_owned();
                }
                match control.peers().await {
                    Ok(p) => Feed::Peers(p),
                    Err(e) => return e.message().to_owned(),
                }
            }
        };
        if tx.send(Action::Feed(feed)).await.is_err() {
            return "console closed".to_owned();
        }
    }
}
