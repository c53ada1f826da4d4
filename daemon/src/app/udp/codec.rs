//! Wire framing of UDP flows: how one app datagram travels through a tunnel.
//!
//! ```text
//! QUIC DATAGRAM frame = flow:varint | payload        (flow = the flow's stream id)
//! on the flow's stream = len:u16 | payload, repeated (datagrams too large for a frame)
//! ```
//!
//! The flow id is the QUIC stream id of the flow's bidirectional stream, as
//! a QUIC variable-length integer (RFC 9000 section 16), like RFC 9297 tags
//! HTTP datagrams with their request stream. Unlike RFC 9297 it is not
//! divided by four: both ends of a dataChannel open streams, so client- and
//! server-initiated ids must stay distinct.
//!
//! This module is a pure codec: it never touches a socket.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Largest value a QUIC varint holds (2^62 - 1).
pub const MAX_VARINT: u64 = (1 << 62) - 1;

/// Largest payload of one app datagram (what a UDP datagram over IPv4 can hold).
pub const MAX_PAYLOAD: usize = 65_535 - 8 - 20;

/// Why a received datagram frame is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame ends inside its flow id.
    #[error("datagram ends inside its flow id")]
    Truncated,
}

/// How many bytes `v` takes as a varint (`v <= MAX_VARINT`).
pub fn varint_len(v: u64) -> usize {
    match v {
        0..=63 => 1,
        64..=16_383 => 2,
        16_384..=1_073_741_823 => 4,
        _ => 8,
    }
}

/// Appends `v` (clamped to [`MAX_VARINT`]; stream ids never exceed it) as a varint.
pub fn put_varint(out: &mut impl BufMut, v: u64) {
    let v = v.min(MAX_VARINT);
    match varint_len(v) {
        1 => out.put_u8(v as u8),
        2 => out.put_u16(0x4000 | v as u16),
        4 => out.put_u32(0x8000_0000 | v as u32),
        _ => out.put_u64(0xc000_0000_0000_0000 | v),
    }
}

/// Reads a varint from the start of `buf`: the value and its length.
pub fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    let raw = buf.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &raw[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// A DATAGRAM frame payload carrying `payload` for `flow`.
pub fn encode_datagram(flow: u64, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(varint_len(flow) + payload.len());
    put_varint(&mut out, flow);
    out.put_slice(payload);
    out.freeze()
}

/// Splits a received DATAGRAM frame into its flow id and app payload.
pub fn decode_datagram(mut frame: Bytes) -> Result<(u64, Bytes), FrameError> {
    let (flow, n) = get_varint(&frame).ok_or(FrameError::Truncated)?;
    frame.advance(n);
    Ok((flow, frame))
}

/// How many app bytes fit one DATAGRAM frame of `max` bytes for `flow`.
pub fn payload_room(max: usize, flow: u64) -> usize {
    max.saturating_sub(varint_len(flow))
}

/// `payload` framed for the flow's stream (`len:u16 | payload`); `None`
/// when it is longer than a UDP datagram can be.
pub fn encode_stream_frame(payload: &[u8]) -> Option<Bytes> {
    let len = u16::try_from(payload.len()).ok()?;
    let mut out = BytesMut::with_capacity(2 + payload.len());
    out.put_u16(len);
    out.put_slice(payload);
    Some(out.freeze())
}

/// Reassembles `len:u16 | payload` frames from a flow's stream, whatever
/// the read boundaries; holds at most one frame (64 KiB) plus one read.
#[derive(Debug, Default)]
pub struct StreamFrames {
    buf: BytesMut,
}

impl StreamFrames {
    /// Adds bytes read from the stream.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete frame's payload, if one is buffered.
    pub fn next_frame(&mut self) -> Option<Bytes> {
        let len = usize::from(u16::from_be_bytes([*self.buf.first()?, *self.buf.get(1)?]));
        if self.buf.len() < 2 + len {
            return None;
        }
        self.buf.advance(2);
        Some(self.buf.split_to(len).freeze())
    }

    /// Whether bytes of an incomplete frame are buffered (the stream must
    /// not end here).
    pub fn is_partial(&self) -> bool {
        !self.buf.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn varints_match_rfc9000_examples() {
        // RFC 9000 appendix A.1.
        let cases: [(&[u8], u64); 4] = [
            (
                &[0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c],
                151_288_809_941_952_652,
            ),
            (&[0x9d, 0x7f, 0x3e, 0x7d], 494_878_333),
            (&[0x7b, 0xbd], 15_293),
            (&[0x25], 37),
        ];
        for (bytes, v) in cases {
            assert_eq!(get_varint(bytes), Some((v, bytes.len())));
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(out, bytes);
        }
    }

    #[test]
    fn truncated_flow_id_is_an_error() {
        assert_eq!(
            decode_datagram(Bytes::new()).unwrap_err(),
            FrameError::Truncated
        );
        assert_eq!(
            decode_datagram(Bytes::from_static(&[0x40])).unwrap_err(),
            FrameError::Truncated
        );
    }

    #[test]
    fn empty_payloads_survive() {
        let (flow, p) = decode_datagram(encode_datagram(8, b"")).unwrap();
        assert_eq!((flow, p.len()), (8, 0));
        let mut f = StreamFrames::default();
        f.push(&encode_stream_frame(b"").unwrap());
        assert_eq!(f.next_frame().unwrap().len(), 0);
        assert!(!f.is_partial());
    }

    #[test]
    fn oversize_stream_frame_is_refused() {
        assert!(encode_stream_frame(&vec![0; 65_536]).is_none());
        assert!(encode_stream_frame(&vec![0; 65_535]).is_some());
    }

    proptest! {
        #[test]
        fn datagrams_round_trip(flow in 0..=MAX_VARINT, payload in proptest::collection::vec(any::<u8>(), 0..1500)) {
            let frame = encode_datagram(flow, &payload);
            prop_assert_eq!(frame.len(), varint_len(flow) + payload.len());
            let (f, p) = decode_datagram(frame).unwrap();
            prop_assert_eq!(f, flow);
            prop_assert_eq!(&p[..], &payload[..]);
        }

        #[test]
        fn payload_room_plus_id_never_exceeds_max(max in 0usize..70_000, flow in 0..=MAX_VARINT) {
            let room = payload_room(max, flow);
            prop_assert!(room + varint_len(flow) <= max.max(varint_len(flow)));
            if max >= varint_len(flow) {
                prop_assert_eq!(room + varint_len(flow), max);
            }
        }

        #[test]
        fn any_bytes_decode_without_panic(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let _ = decode_datagram(Bytes::from(bytes));
        }

        /// Frames come out whole and in order however the stream was cut.
        #[test]
        fn stream_frames_reassemble_across_any_cuts(
            payloads in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..8),
            cuts in proptest::collection::vec(1usize..64, 1..50),
        ) {
            let wire: Vec<u8> = payloads.iter().flat_map(|p| encode_stream_frame(p).unwrap().to_vec()).collect();
            let mut f = StreamFrames::default();
            let mut out = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < wire.len() {
                let n = cuts[i % cuts.len()].min(wire.len() - at);
                f.push(&wire[at..at + n]);
                at += n;
                i += 1;
                while let Some(p) = f.next_frame() {
                    out.push(p.to_vec());
                }
            }
            prop_assert_eq!(out, payloads);
            prop_assert!(!f.is_partial());
        }
    }
}
