//! The bookkeeping every dial loop shares, whatever it dials over (QUIC over
//! UDP, punched or relayed, or framed over TCP): its [`DialStatus`] entry in
//! the registry (there from [`DialBook::open`] until the book is dropped),
//! its redial [`Backoff`], and what an ended channel or a failed attempt
//! records and reports. The loops themselves only connect and carry.

use std::time::{Duration, Instant};

use rand::Rng;
use tracing::{debug, info};

use super::backoff::Backoff;
use super::{ChannelRoute, Ctx, DialStatus, PeerId, TunnelEvent, lock, refused};
use crate::config::Transport;

/// First redial delay, and the cap the delay doubles up to.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(250), Duration::from_secs(30));

/// One dial loop's registry entry and backoff.
pub(super) struct DialBook<'a> {
    ctx: &'a Ctx,
    id: u64,
    peer: &'a PeerId,
    /// `AnnouncedSocket::id` of what it dials, for [`TunnelEvent::DialFailed`].
    socket: u32,
    backoff: Backoff,
}

impl<'a> DialBook<'a> {
    /// Registers a dial loop toward `remote` (one of `peer`'s sockets).
    pub(super) fn open(
        ctx: &'a Ctx,
        peer: &'a PeerId,
        (socket, remote): (u32, std::net::SocketAddr),
        route: ChannelRoute,
        transport: Transport,
    ) -> Self {
        let id = ctx
            .registry
            .next_dial
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        lock(&ctx.registry.dials).insert(
            id,
            DialStatus {
                peer: peer.site.clone(),
                remote,
                channel: None,
                attempts: 0,
                last_error: None,
                since: Instant::now(),
                route,
                transport,
            },
        );
        Self {
            ctx,
            id,
            peer,
            socket,
            backoff: Backoff::new(BACKOFF.0, BACKOFF.1),
        }
    }

    /// Its id in the registry (channels it makes point back to it).
    pub(super) fn id(&self) -> u64 {
        self.id
    }

    /// Failed attempts (and redials) since the last channel that stayed.
    pub(super) fn attempts(&self) -> u32 {
        self.backoff.attempts()
    }

    /// Updates its registry entry.
    pub(super) fn update(&self, f: impl FnOnce(&mut DialStatus)) {
        self.ctx.registry.dial_update(self.id, f);
    }

    /// The channel it made ended with `reason`. A channel the peer refused
    /// (it holds another instance of that name) counts as a failed attempt:
    /// the backoff keeps growing.
    pub(super) fn channel_ended(&mut self, conn: &quinn::Connection, reason: &str) {
        if !refused(conn) {
            self.backoff.reset();
        }
        self.update(|d| {
            d.channel = None;
            d.attempts = 0;
            d.last_error = Some(reason.to_owned());
        });
    }

    /// An attempt failed with `error`: recorded, logged (the first few at
    /// info) and reported to the site, whose fallback counts QUIC failures.
    pub(super) async fn failed(&mut self, error: String) {
        let attempts = self.backoff.attempts() + 1;
        if attempts <= 3 {
            info!(error = %error, attempts, "dial failed");
        } else {
            debug!(error = %error, attempts, "dial failed");
        }
        self.update(|d| {
            d.attempts = attempts;
            d.last_error = Some(error);
        });
        let _ = self
            .ctx
            .events_tx
            .send(TunnelEvent::DialFailed {
                peer: self.peer.clone(),
                socket: self.socket,
                attempts,
            })
            .await;
    }

    /// Waits out the next backoff delay; false when `stop` completed first.
    pub(super) async fn pause(&mut self, stop: impl Future<Output = ()>) -> bool {
        let delay = self.backoff.next_delay(rand::thread_rng().r#gen());
        tokio::select! {
            () = stop => false,
            () = tokio::time::sleep(delay) => true,
        }
    }
}

impl Drop for DialBook<'_> {
    fn drop(&mut self) {
        lock(&self.ctx.registry.dials).remove(&self.id);
    }
}
