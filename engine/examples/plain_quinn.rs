//! Plain quinn, one stream: the yardstick for chunkstream's single-path
//! goodput.
//!
//! Same TLS, same windows and socket buffers as chunkstream
//! ([`chunkstream_engine::transport`]), but no files, no hashing, no blocks:
//! the sender writes `--bytes` from one in-memory buffer on a single
//! unidirectional stream, the receiver reads and discards it, then closes
//! the connection. The sender reports goodput from dialling to that close,
//! which is how `chunkstream-engine send` measures too.
//!
//! ```text
//! plain_quinn recv --listen 127.0.0.1:5002            # prints "FINGERPRINT <hex>"
//! plain_quinn send --to 127.0.0.1:5002 --peer <hex> --bytes 1073741824 [--buffer-mib 1]
//! ```
//! `--buffer-mib` is how much distinct memory the sender cycles through: 1 (the
//! default) keeps the data hot in cache, the most flattering case for quinn; a
//! few hundred MiB makes quinn read memory the way a file transfer must.
//! The sender prints one JSON line: `{"bytes":..,"seconds":..,"goodput_bps":..}`.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use chunkstream_engine::transport::identity::{Fingerprint, Identity};
use chunkstream_engine::transport::{Tuning, client_endpoint, server_endpoint};

fn arg(args: &[String], name: &str) -> Result<String> {
    let i = args
        .iter()
        .position(|a| a == name)
        .with_context(|| format!("missing {name}"))?;
    args.get(i + 1)
        .cloned()
        .with_context(|| format!("{name} needs a value"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("recv") => recv(arg(&args, "--listen")?.parse()?).await,
        Some("send") => {
            send(
                arg(&args, "--to")?.parse()?,
                arg(&args, "--peer")?.parse()?,
                arg(&args, "--bytes")?.parse()?,
                arg(&args, "--buffer-mib")
                    .unwrap_or_else(|_| "1".into())
                    .parse()?,
            )
            .await
        }
        _ => bail!("usage: plain_quinn recv --listen ADDR | send --to ADDR --peer FP --bytes N"),
    }
}

async fn recv(listen: SocketAddr) -> Result<()> {
    let identity = Identity::generate()?;
    let endpoint = server_endpoint(listen, &identity, &Tuning::default())?;
    println!(
        "FINGERPRINT {} {}",
        identity.fingerprint(),
        endpoint.local_addr()?
    );
    let conn = endpoint.accept().await.context("endpoint closed")?.await?;
    let mut stream = conn.accept_uni().await?;
    let mut total = 0u64;
    while let Some(chunk) = stream.read_chunk(usize::MAX, true).await? {
        total += chunk.bytes.len() as u64;
    }
    conn.close(0u32.into(), b"done");
    endpoint.wait_idle().await;
    eprintln!("received {total} bytes");
    Ok(())
}

async fn send(to: SocketAddr, peer: Fingerprint, bytes: u64, buffer_mib: usize) -> Result<()> {
    // Distinct, incompressible content, allocated before the clock starts.
    let mut content = vec![0u8; buffer_mib.max(1) << 20];
    let mut xof = blake3::Hasher::new().update(b"plain quinn").finalize_xof();
    xof.fill(&mut content);
    let content = Bytes::from(content);
    let started = Instant::now();
    let (endpoint, _) = client_endpoint("0.0.0.0:0".parse()?, None, peer, &Tuning::default())?;
    let conn = endpoint.connect(to, "chunkstream")?.await?;
    let mut stream = conn.open_uni().await?;
    let mut left = bytes;
    let mut at = 0usize;
    while left > 0 {
        let n = left.min(1 << 20).min((content.len() - at) as u64) as usize;
        stream.write_chunk(content.slice(at..at + n)).await?;
        at = (at + n) % content.len();
        left -= n as u64;
    }
    stream.finish()?;
    let reason = conn.closed().await;
    if !matches!(reason, quinn::ConnectionError::ApplicationClosed(_)) {
        bail!("connection ended with {reason}");
    }
    let seconds = started.elapsed().as_secs_f64();
    println!(
        "{{\"bytes\":{bytes},\"seconds\":{seconds},\"goodput_bps\":{}}}",
        bytes as f64 * 8.0 / seconds
    );
    Ok(())
}
