//! The wire format of a TCP dataChannel: the QUIC packets one endpoint would
//! have sent as UDP datagrams, each prefixed by its length as a big-endian
//! `u16`, back to back on the TCP stream. The QUIC connection inside is the
//! same as over UDP (same TLS, key proof, streams), so the framing adds no
//! security of its own and needs none.
//!
//! Sans-IO: [`encode`] appends one transmit (possibly a GSO batch of equal
//! segments) to a buffer, [`codec`] builds the decoder the reader runs
//! (tokio-util's length-delimited codec). A frame is at most [`MAX_PACKET`]
//! bytes by construction (a 2-byte length), so a peer makes us buffer at most
//! that per frame; an empty frame (never a QUIC packet) is the reader's to
//! drop and count. This module does no IO.

use bytes::{BufMut, BytesMut};
use tokio_util::codec::LengthDelimitedCodec;

/// The largest QUIC packet carried: the most a UDP datagram can hold, far
/// above what our endpoints send (`endpoint::TCP_MTU`).
pub const MAX_PACKET: usize = u16::MAX as usize;

/// The length prefix of one frame.
pub const HEADER: usize = 2;

/// Appends `contents` as frames: one per `segment`-sized piece (the last may
/// be shorter) when quinn batched several packets (GSO), else one.
///
/// Packets are at most [`MAX_PACKET`] bytes (quinn never builds larger ones:
/// its payload limit is a `u16`); a larger piece would be a bug upstream and is
/// truncated to nothing rather than corrupting the stream: it is skipped.
pub fn encode(contents: &[u8], segment: Option<usize>, out: &mut BytesMut) {
    let seg = segment.unwrap_or(contents.len()).max(1);
    out.reserve(contents.len() + HEADER * contents.len().div_ceil(seg));
    for packet in contents.chunks(seg) {
        let Ok(len) = u16::try_from(packet.len()) else {
            continue;
        };
        if len == 0 {
            continue;
        }
        out.put_u16(len);
        out.put_slice(packet);
    }
}

/// The decoder of a TCP dataChannel's byte stream: yields one QUIC packet per
/// frame. Empty frames decode as empty packets, which the reader drops.
pub fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_length(HEADER)
        .max_frame_length(MAX_PACKET)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tokio_util::codec::Decoder;

    use super::*;

    /// Feeds `wire` to a decoder in the pieces `cuts` splits it into.
    fn decode_in_pieces(wire: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut codec = codec();
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (wire.len() + 1)).collect();
        cuts.sort_unstable();
        cuts.push(wire.len());
        for cut in cuts {
            buf.extend_from_slice(&wire[at..cut.max(at)]);
            at = cut.max(at);
            while let Some(f) = codec.decode(&mut buf).expect("valid frames") {
                out.push(f.to_vec());
            }
        }
        assert!(buf.is_empty(), "bytes left over");
        out
    }

    proptest! {
        /// Whatever the packets and however TCP splits the bytes, the reader
        /// gets exactly the packets, in order.
        #[test]
        fn packets_survive_any_split(
            packets in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..3000), 0..20),
            cuts in prop::collection::vec(any::<usize>(), 0..30),
        ) {
            let mut wire = BytesMut::new();
            for p in &packets {
                encode(p, None, &mut wire);
            }
            prop_assert_eq!(wire.len(), packets.iter().map(|p| p.len() + HEADER).sum::<usize>());
            prop_assert_eq!(decode_in_pieces(&wire, &cuts), packets);
        }

        /// A GSO batch becomes one frame per segment, the last one shorter.
        #[test]
        fn a_batch_is_split_into_its_segments(
            batch in prop::collection::vec(any::<u8>(), 1..20_000),
            seg in 1usize..2000,
        ) {
            let mut wire = BytesMut::new();
            encode(&batch, Some(seg), &mut wire);
            let want: Vec<Vec<u8>> = batch.chunks(seg).map(<[u8]>::to_vec).collect();
            prop_assert_eq!(decode_in_pieces(&wire, &[]), want);
        }
    }

    #[test]
    fn the_largest_packet_fits_and_a_longer_one_is_never_written() {
        let mut wire = BytesMut::new();
        encode(&vec![7u8; MAX_PACKET], None, &mut wire);
        assert_eq!(&wire[..HEADER], &[0xff, 0xff]);
        assert_eq!(
            decode_in_pieces(&wire, &[1, 5, 40_000]),
            [vec![7u8; MAX_PACKET]]
        );
        // A piece over the limit is skipped, not written with a wrapped length.
        let mut wire = BytesMut::new();
        encode(&vec![1u8; MAX_PACKET + 1], Some(MAX_PACKET + 1), &mut wire);
        assert!(wire.is_empty());
    }

    #[test]
    fn an_empty_frame_decodes_as_an_empty_packet() {
        let mut buf = BytesMut::from(&[0u8, 0, 0, 1, 9][..]);
        let mut c = codec();
        assert_eq!(c.decode(&mut buf).expect("frame").map(|f| f.len()), Some(0));
        assert_eq!(
            c.decode(&mut buf).expect("frame").map(|f| f.to_vec()),
            Some(vec![9])
        );
    }
}
