//! Deterministic pseudo-random test data and SHA-256 digests of streams, so both ends of a
//! transfer can agree on what should arrive without keeping 64 MiB around. No sockets here
//! beyond generic `AsyncRead`/`AsyncWrite` helpers.

use std::fmt;
use std::io;
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// A SHA-256 digest, shown as hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// SplitMix64 finaliser: a cheap, well-mixed function of one u64.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// An endless byte stream determined by `seed`: byte `i` depends only on `(seed, i)`, so the
/// stream is the same whatever the chunk sizes used to read it.
#[derive(Debug, Clone)]
pub struct DataGen {
    seed: u64,
    pos: u64,
}

impl DataGen {
    /// Starts at position 0.
    pub fn new(seed: u64) -> Self {
        Self { seed, pos: 0 }
    }

    /// Fills `buf` with the next `buf.len()` bytes.
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        while i < buf.len() {
            let block = self.pos / 8;
            let within = (self.pos % 8) as usize;
            let word = mix(self.seed ^ mix(block)).to_le_bytes();
            let n = (8 - within).min(buf.len() - i);
            buf[i..i + n].copy_from_slice(&word[within..within + n]);
            i += n;
            self.pos += n as u64;
        }
    }
}

/// The first `len` bytes of the stream for `seed`.
pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    DataGen::new(seed).fill(&mut v);
    v
}

/// SHA-256 of the first `len` bytes of the stream for `seed`, computed without holding them.
pub fn sha256_of(seed: u64, len: u64) -> Digest {
    let mut source = DataGen::new(seed);
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        source.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        left -= n as u64;
    }
    Digest(hasher.finalize().into())
}

/// SHA-256 of a byte slice.
pub fn sha256(data: &[u8]) -> Digest {
    Digest(Sha256::digest(data).into())
}

/// Writes the first `len` bytes of the stream for `seed` to `w` (does not shut it down).
pub async fn write_stream<W: AsyncWrite + Unpin>(w: &mut W, seed: u64, len: u64) -> io::Result<()> {
    let mut source = DataGen::new(seed);
    let mut buf = vec![0; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        source.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).await?;
        left -= n as u64;
    }
    w.flush().await
}

/// Reads `r` to EOF and returns how many bytes came and their SHA-256. On a read error returns
/// the error together with how many bytes had arrived by then.
pub async fn hash_to_end<R: AsyncRead + Unpin>(
    r: &mut R,
) -> Result<(u64, Digest), (u64, io::Error)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0; 64 * 1024];
    let mut total = 0u64;
    loop {
        match r.read(&mut buf).await {
            Ok(0) => return Ok((total, Digest(hasher.finalize().into()))),
            Ok(n) => {
                hasher.update(&buf[..n]);
                total += n as u64;
            }
            Err(e) => return Err((total, e)),
        }
    }
}

/// What [`both_ways`] saw: the digests each direction should have, what came back, and how
/// long the transfer took.
#[derive(Debug)]
pub struct BothWays {
    /// SHA-256 of the `len` bytes sent (what the far app should report).
    pub up: Digest,
    /// SHA-256 of the `len` bytes the far app sends (what should come back).
    pub down: Digest,
    /// Bytes read to the end, and their SHA-256.
    pub received: (u64, Digest),
    /// From the first byte written to the end of both directions.
    pub took: Duration,
}

/// The bulk exchange of the forwarding tests: writes `len` bytes of `up_seed` on `stream` and
/// half-closes it while reading to its end, within `limit`; the far app is expected to send
/// `len` bytes of `down_seed`. An error names what failed (a timeout, the sending side, or the
/// receiving side with how many bytes had arrived).
pub async fn both_ways<S: AsyncRead + AsyncWrite>(
    stream: S,
    (up_seed, down_seed): (u64, u64),
    len: u64,
    limit: Duration,
) -> Result<BothWays, String> {
    let expected =
        tokio::task::spawn_blocking(move || (sha256_of(up_seed, len), sha256_of(down_seed, len)));
    let start = Instant::now();
    let (mut r, mut w) = tokio::io::split(stream);
    let send = async {
        write_stream(&mut w, up_seed, len).await?;
        w.shutdown().await
    };
    let (sent, received) =
        tokio::time::timeout(limit, async { tokio::join!(send, hash_to_end(&mut r)) })
            .await
            .map_err(|_| format!("{len} bytes each way not done within {limit:?}"))?;
    let took = start.elapsed();
    sent.map_err(|e| format!("sending {len} bytes failed: {e}"))?;
    let received = received.map_err(|(n, e)| format!("receiving failed after {n} bytes: {e}"))?;
    let (up, down) = expected
        .await
        .map_err(|e| format!("hashing the expected data failed: {e}"))?;
    Ok(BothWays {
        up,
        down,
        received,
        took,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_is_independent_of_chunk_sizes() {
        let whole = bytes(7, 1000);
        let mut source = DataGen::new(7);
        let mut pieces = Vec::new();
        for size in [1usize, 3, 8, 13, 64, 911] {
            let mut b = vec![0; size];
            source.fill(&mut b);
            pieces.extend_from_slice(&b);
        }
        assert_eq!(&whole[..], &pieces[..1000]);
    }

    #[test]
    fn different_seeds_give_different_data() {
        assert_ne!(bytes(1, 64), bytes(2, 64));
    }

    #[test]
    fn streamed_digest_matches_digest_of_bytes() {
        let len = 200_003;
        assert_eq!(sha256_of(9, len as u64), sha256(&bytes(9, len)));
    }

    #[tokio::test]
    async fn write_stream_then_hash_to_end_agree() {
        let (mut a, mut b) = tokio::io::duplex(4096);
        let writer = tokio::spawn(async move {
            write_stream(&mut a, 5, 300_000).await.unwrap();
            a.shutdown().await.unwrap();
        });
        let (n, d) = hash_to_end(&mut b).await.unwrap();
        writer.await.unwrap();
        assert_eq!(n, 300_000);
        assert_eq!(d, sha256_of(5, 300_000));
    }
}
