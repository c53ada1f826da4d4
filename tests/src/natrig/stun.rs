//! An independent STUN client for checking the rig (and, later, what wovenetd announces): one
//! Binding request from a given UDP socket, answered with the XOR-MAPPED-ADDRESS the server saw.
//! The message codec is `stun-types` (the codec of the `stun-proto` crates), not wovenet code,
//! so a wrong mapping in a test is the rig's or the daemon's fault, never a shared bug.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use stun_types::attribute::XorMappedAddress;
use stun_types::message::{BINDING, Message, MessageClass, MessageWriteVec, TransactionId};
use stun_types::prelude::*;

/// How often a request is sent again while no answer came (UDP may drop it).
pub const RETRANSMIT: Duration = Duration::from_millis(200);

/// A Binding request and its transaction id.
pub fn request() -> (Vec<u8>, TransactionId) {
    let msg = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
    let txid = Message::from_bytes(&msg)
        .expect("invariant: a freshly built STUN request parses")
        .transaction_id();
    (msg, txid)
}

/// The mapped address in `datagram` if it is the success response to transaction `txid`.
pub fn mapped_addr(datagram: &[u8], txid: TransactionId) -> Option<SocketAddr> {
    let msg = Message::from_bytes(datagram).ok()?;
    if msg.transaction_id() != txid
        || !msg.has_method(BINDING)
        || !msg.has_class(MessageClass::Success)
    {
        return None;
    }
    Some(msg.attribute::<XorMappedAddress>().ok()?.addr(txid))
}

/// Sends Binding requests to `server` from `sock` (again every [`RETRANSMIT`]) until the
/// matching success response arrives, and returns the mapped address in it. Other datagrams
/// arriving meanwhile are skipped. `Err` says what was tried when `timeout` passes.
pub async fn binding(
    sock: &tokio::net::UdpSocket,
    server: SocketAddr,
    timeout: Duration,
) -> Result<SocketAddr, String> {
    let (req, txid) = request();
    let start = Instant::now();
    let mut buf = vec![0u8; 2048];
    let mut sent = 0u32;
    let mut skipped = 0u32;
    while start.elapsed() < timeout {
        if let Err(e) = sock.send_to(&req, server).await {
            // A cut path (EPERM) or no route yet: keep trying until the deadline.
            tokio::time::sleep(RETRANSMIT).await;
            if start.elapsed() >= timeout {
                return Err(format!("STUN binding to {server}: send failed: {e}"));
            }
            continue;
        }
        sent += 1;
        let round = Instant::now();
        while round.elapsed() < RETRANSMIT {
            let left = RETRANSMIT.saturating_sub(round.elapsed());
            match tokio::time::timeout(left, sock.recv_from(&mut buf)).await {
                Ok(Ok((n, from))) if from == server => match mapped_addr(&buf[..n], txid) {
                    Some(addr) => return Ok(addr),
                    None => skipped += 1,
                },
                Ok(Ok(_)) => skipped += 1,
                Ok(Err(_)) | Err(_) => break,
            }
        }
    }
    let local = sock
        .local_addr()
        .map_or_else(|e| e.to_string(), |a| a.to_string());
    Err(format!(
        "STUN binding from {local} to {server}: no answer in {timeout:?} ({sent} requests sent, \
         {skipped} other datagrams skipped)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stun_types::message::MessageWriteVec;

    fn success(req: &[u8], mapped: SocketAddr) -> Vec<u8> {
        let req = Message::from_bytes(req).unwrap();
        let mut resp = Message::builder_success(&req, MessageWriteVec::new());
        resp.add_attribute(&XorMappedAddress::new(mapped, req.transaction_id()))
            .unwrap();
        resp.finish()
    }

    #[test]
    fn the_mapped_address_of_the_matching_success_is_returned() {
        let (req, txid) = request();
        assert_eq!(req.len(), 20, "a bare Binding request");
        assert_eq!(&req[..2], &[0x00, 0x01], "Binding request type");
        assert_eq!(&req[4..8], &[0x21, 0x12, 0xa4, 0x42], "magic cookie");
        let mapped: SocketAddr = "198.18.1.1:40000".parse().unwrap();
        assert_eq!(mapped_addr(&success(&req, mapped), txid), Some(mapped));
    }

    #[test]
    fn other_transactions_requests_and_garbage_are_not_answers() {
        let (req, txid) = request();
        let (other, _) = request();
        let mapped: SocketAddr = "198.18.1.1:40000".parse().unwrap();
        assert_eq!(mapped_addr(&success(&other, mapped), txid), None);
        assert_eq!(mapped_addr(&req, txid), None, "a request is no answer");
        assert_eq!(mapped_addr(b"punch", txid), None);
        assert_eq!(mapped_addr(&[], txid), None);
    }

    #[tokio::test]
    async fn binding_gives_up_with_what_it_tried() {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = binding(
            &sock,
            silent.local_addr().unwrap(),
            Duration::from_millis(450),
        )
        .await
        .unwrap_err();
        assert!(err.contains("no answer in 450ms"), "{err}");
        let sent: u32 = err
            .split(" requests sent")
            .next()
            .and_then(|h| h.rsplit('(').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no request count in {err}"));
        assert!((2..=3).contains(&sent), "retransmitted every 200 ms: {err}");
    }

    #[tokio::test]
    async fn binding_reads_the_answer_of_a_loopback_responder() {
        let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let server_addr = server.local_addr().unwrap();
        let responder = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            // Ignore the first request (as if lost), answer the second.
            let _ = server.recv_from(&mut buf).await.unwrap();
            let (n, from) = server.recv_from(&mut buf).await.unwrap();
            server.send_to(b"noise", from).await.unwrap();
            server
                .send_to(&success(&buf[..n], from), from)
                .await
                .unwrap();
        });
        let got = binding(&sock, server_addr, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(got, sock.local_addr().unwrap());
        responder.await.unwrap();
    }
}
