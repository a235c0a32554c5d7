//! Plain quinn, one unidirectional stream, the file's bytes and nothing
//! else: no blocks, no per-block hashing, no manifest.
//!
//! The receiver hashes what arrives (BLAKE3) and closes the connection with
//! the reason `b3:<hex>:<bytes>`; the sender compares that with the hash of
//! what it read, so a plain-quinn run is verified like every other. Same TLS
//! as chunkstream ([`chunkstream_engine::transport::Tuning`]), chunkstream's
//! windows or quinn's own defaults ([`Windows`]), the congestion controller
//! chosen per run and quinn's own handshake
//! behaviour (RFC 9002's 333 ms initial RTT; a lost handshake packet is
//! congestion to its controllers; each handshake datagram sent once), where
//! chunkstream changes all three. A connection quinn itself
//! aborts (its BBR with large windows can fail with "too many gaps in stream
//! buffer") is reported as that run's error.

use std::io::Read;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use chunkstream_engine::transport::identity::{Fingerprint, Identity};
use chunkstream_engine::transport::{Congestion, Tuning, client_endpoint, server_endpoint};

/// What a finished send reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct QuinnSendReport {
    /// File bytes sent and confirmed.
    pub bytes: u64,
    /// Dial to close.
    pub seconds: f64,
    /// Bits per second over that time.
    pub goodput_bps: f64,
    /// The receiver's BLAKE3 equals the source's.
    pub verified: bool,
    /// BLAKE3 of the file.
    pub blake3: String,
}

/// Which flow-control windows a plain-quinn run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Windows {
    /// chunkstream's ([`Tuning::default`]): 16 MiB per stream, 64 MiB per
    /// connection.
    #[default]
    Chunkstream,
    /// quinn's own defaults (quinn-proto's `TransportConfig::default`):
    /// 1.25 MB per stream (12.5 MB/s × 100 ms), a send window of 8 × that.
    /// Its unlimited connection receive window is left at 10 MB here,
    /// which one stream of 1.25 MB never reaches.
    Quinn,
    /// A 3 MiB stream window and chunkstream's connection window: the
    /// configuration of `shared/BASELINES.md`'s quinn-over-a-lossy-link
    /// table (where a larger window made quinn's BBR abort with "too many
    /// gaps in stream buffer").
    ThreeMib,
}

impl std::str::FromStr for Windows {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "chunkstream" => Ok(Self::Chunkstream),
            "quinn" => Ok(Self::Quinn),
            "3mib" => Ok(Self::ThreeMib),
            other => Err(format!(
                "unknown windows {other:?} (chunkstream, quinn, 3mib)"
            )),
        }
    }
}

fn tuning(cc: Congestion, windows: Windows) -> Tuning {
    let base = Tuning::default();
    let (connection_window, stream_window) = match windows {
        Windows::Chunkstream => (base.connection_window, base.stream_window),
        Windows::Quinn => (10_000_000, 1_250_000),
        Windows::ThreeMib => (base.connection_window, 3 << 20),
    };
    Tuning {
        congestion: cc,
        connection_window,
        stream_window,
        // quinn's own handshake behaviour: RFC 9002's initial RTT, and its
        // controllers as they are.
        initial_rtt: std::time::Duration::from_millis(333),
        tolerate_handshake_loss: false,
        redundant_handshake: false,
        ..base
    }
}

/// Binds a receiver; returns the endpoint and identity so the caller can
/// print where and whom to dial before [`serve_one`].
pub fn bind(
    listen: SocketAddr,
    cc: Congestion,
    windows: Windows,
) -> Result<(quinn::Endpoint, Identity)> {
    let identity = Identity::generate()?;
    let endpoint = server_endpoint(listen, &identity, &tuning(cc, windows))?;
    Ok((endpoint, identity))
}

/// Receives one stream, hashes it, and closes with the hash as the reason.
pub async fn serve_one(endpoint: quinn::Endpoint) -> Result<u64> {
    let conn = endpoint.accept().await.context("endpoint closed")?.await?;
    let mut stream = conn.accept_uni().await?;
    let mut hasher = blake3::Hasher::new();
    let mut pending = Vec::with_capacity(1 << 20);
    let mut total = 0u64;
    while let Some(chunk) = stream.read_chunk(usize::MAX, true).await? {
        total += chunk.bytes.len() as u64;
        pending.extend_from_slice(&chunk.bytes);
        if pending.len() >= 1 << 20 {
            hasher.update(&pending);
            pending.clear();
        }
    }
    hasher.update(&pending);
    let reason = format!("b3:{}:{total}", hasher.finalize().to_hex());
    conn.close(0u32.into(), reason.as_bytes());
    endpoint.wait_idle().await;
    Ok(total)
}

/// Sends `file` on one stream and waits for the receiver's verdict.
pub async fn send_file(
    file: &Path,
    to: SocketAddr,
    peer: Fingerprint,
    cc: Congestion,
    windows: Windows,
) -> Result<QuinnSendReport> {
    let mut src =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let started = Instant::now();
    let (endpoint, _) = client_endpoint("0.0.0.0:0".parse()?, None, peer, &tuning(cc, windows))?;
    let conn = endpoint.connect(to, "chunkstream")?.await?;
    let mut stream = conn.open_uni().await?;
    let mut hasher = blake3::Hasher::new();
    let mut bytes = 0u64;
    loop {
        let mut buf = vec![0u8; 1 << 20];
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        hasher.update(&buf);
        bytes += n as u64;
        stream
            .write_chunk(Bytes::from(buf))
            .await
            .context("quinn stream failed")?;
    }
    stream.finish()?;
    let want = format!("b3:{}:{bytes}", hasher.finalize().to_hex());
    let reason = match conn.closed().await {
        quinn::ConnectionError::ApplicationClosed(c) => {
            String::from_utf8_lossy(&c.reason).into_owned()
        }
        other => bail!("connection ended with: {other}"),
    };
    let seconds = started.elapsed().as_secs_f64();
    let verified = reason == want;
    if !verified {
        bail!("receiver got {reason}, sent {want}");
    }
    Ok(QuinnSendReport {
        bytes,
        seconds,
        goodput_bps: bytes as f64 * 8.0 / seconds,
        verified,
        blake3: want[3..67].to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_windows_name_sets_its_stream_window() {
        for (name, stream) in [
            ("chunkstream", 16u64 << 20),
            ("quinn", 1_250_000),
            ("3mib", 3 << 20),
        ] {
            let w: Windows = name.parse().unwrap();
            assert_eq!(tuning(Congestion::Bbr, w).stream_window, stream, "{name}");
        }
        assert!("huge".parse::<Windows>().unwrap_err().contains("3mib"));
    }
}
