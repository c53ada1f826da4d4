//! A plain TCP relay: accept on 127.0.0.1, connect to the next hop, copy both ways with
//! no framing and no crypto. Two of them in separate processes form a "null tunnel", the
//! floor any two-process forwarder (wovenet, rathole, …) pays in socket traversals and
//! wake-ups; the latency scenario reports it next to both.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// Binds a listener on 127.0.0.1 (any port) for [`serve`].
pub async fn bind() -> std::io::Result<TcpListener> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await
}

/// Forwards every connection accepted on `listener` to `to` until accepting fails.
/// Connection tasks belong to a JoinSet, so returning (or dropping) ends them.
pub async fn serve(listener: TcpListener, to: SocketAddr) -> std::io::Result<()> {
    let mut conns = JoinSet::new();
    loop {
        let (mut inbound, _) = listener.accept().await?;
        // Reap finished connections so the set does not grow without bound.
        while conns.try_join_next().is_some() {}
        conns.spawn(async move {
            let Ok(mut outbound) = TcpStream::connect(to).await else {
                return;
            };
            // Small messages must not wait for Nagle, as in every forwarder compared.
            let _ = inbound.set_nodelay(true);
            let _ = outbound.set_nodelay(true);
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
    }
}
