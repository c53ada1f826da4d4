//! A site's channels as its control API reports them (gRPC over the site's unix control
//! socket, through wovenet-tui's client): which are up toward a peer and by which route.
//! Reads only; when and how long to wait is the caller's.

use std::path::Path;

use wovenet_proto::v1::{self, ChannelRoute, ChannelState};
use wovenet_tui::client::Control;

/// A control client that (re)connects on demand: the socket appears only once the daemon
/// has started, and a poll must not fail for that.
#[derive(Debug, Default)]
pub struct Channels {
    client: Option<Control>,
}

impl Channels {
    /// The channels `socket`'s daemon lists now; `Err` with the reason (not started yet,
    /// refused, RPC failed) so the caller can retry or report it.
    pub async fn list(&mut self, socket: &Path) -> Result<Vec<v1::Channel>, String> {
        let client = match &mut self.client {
            Some(c) => c,
            None => self
                .client
                .insert(Control::connect(socket).await.map_err(|e| e.to_string())?),
        };
        match client.channels().await {
            Ok(channels) => Ok(channels),
            Err(status) => {
                // A broken connection is made again on the next call.
                self.client = None;
                Err(format!(
                    "ListChannels: {} {}",
                    status.code(),
                    status.message()
                ))
            }
        }
    }
}

/// The routes of the channels toward `peer` that are up, in the order listed.
pub fn up_routes(channels: &[v1::Channel], peer: &str) -> Vec<ChannelRoute> {
    channels
        .iter()
        .filter(|c| c.peer == peer && c.state() == ChannelState::Up)
        .map(v1::Channel::route)
        .collect()
}

/// `direct`, `punched`, `relayed` (what `wovenetctl channels` shows), or `unspecified`.
pub fn route_name(route: ChannelRoute) -> &'static str {
    match route {
        ChannelRoute::Direct => "direct",
        ChannelRoute::Punched => "punched",
        ChannelRoute::Relayed => "relayed",
        ChannelRoute::Unspecified => "unspecified",
    }
}

/// `[punched, relayed]`-style text of `routes`, for messages.
pub fn routes_text(routes: &[ChannelRoute]) -> String {
    let names: Vec<&str> = routes.iter().map(|&r| route_name(r)).collect();
    format!("[{}]", names.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn channel(peer: &str, state: ChannelState, route: ChannelRoute) -> v1::Channel {
        let mut c = v1::Channel {
            peer: peer.into(),
            ..v1::Channel::default()
        };
        c.set_state(state);
        c.set_route(route);
        c
    }

    #[test]
    fn only_channels_up_toward_the_peer_count() {
        let list = [
            channel("b", ChannelState::Connecting, ChannelRoute::Punched),
            channel("c", ChannelState::Up, ChannelRoute::Direct),
            channel("b", ChannelState::Up, ChannelRoute::Relayed),
        ];
        assert_eq!(up_routes(&list, "b"), [ChannelRoute::Relayed]);
        assert_eq!(up_routes(&list, "c"), [ChannelRoute::Direct]);
        assert!(up_routes(&list, "d").is_empty());
        assert_eq!(
            routes_text(&[ChannelRoute::Punched, ChannelRoute::Relayed]),
            "[punched, relayed]"
        );
    }
}
