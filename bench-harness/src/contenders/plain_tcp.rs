//! A plain TCP file copy, the congestion controller set per socket and
//! named in the report: what a user gets from `nc`-style copying, and the
//! TCP baseline that crosses the same emulated link (TUN backend).
//!
//! The sender connects, sets `TCP_CONGESTION`, writes the file and shuts
//! down its write side; the receiver hashes everything it read and answers
//! `b3:<hex>:<bytes>\n`; the sender compares with the hash of what it sent.
//!
//! With `mptcp` both ends open their sockets as `IPPROTO_MPTCP`: kernel
//! Multipath TCP, one subflow per path the receiver's host announces (see
//! the TUN backend's `enable_mptcp`), each subflow under the named
//! congestion controller. The application code is the same; that is
//! MPTCP's promise, and what makes it the multi-path baseline.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// What a finished send reports.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TcpSendReport {
    /// File bytes sent and confirmed.
    pub bytes: u64,
    /// Connect to the receiver's verdict.
    pub seconds: f64,
    /// Bits per second over that time.
    pub goodput_bps: f64,
    /// BLAKE3 of the file, equal at both ends.
    pub blake3: String,
    /// The congestion controller the kernel really used.
    pub congestion: String,
}

fn protocol(mptcp: bool) -> Option<socket2::Protocol> {
    mptcp.then_some(socket2::Protocol::MPTCP)
}

/// Binds a listener (an MPTCP one with `mptcp`).
pub fn bind(listen: SocketAddr, mptcp: bool) -> Result<TcpListener> {
    let bind = || -> std::io::Result<TcpListener> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(listen),
            socket2::Type::STREAM,
            protocol(mptcp),
        )?;
        socket.set_reuse_address(true)?;
        socket.bind(&listen.into())?;
        socket.listen(16)?;
        Ok(socket.into())
    };
    bind().with_context(|| {
        if mptcp {
            format!("cannot listen on {listen} with MPTCP (is net.mptcp.enabled set?)")
        } else {
            format!("cannot listen on {listen}")
        }
    })
}

/// Receives one connection's bytes and answers with their hash.
pub fn serve_one(listener: TcpListener) -> Result<u64> {
    let (mut stream, _) = listener.accept()?;
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    writeln!(stream, "b3:{}:{total}", hasher.finalize().to_hex())?;
    Ok(total)
}

/// Sends `file` with congestion controller `cc` (e.g. `bbr`, `cubic`),
/// over MPTCP with `mptcp`.
pub fn send_file(file: &Path, to: SocketAddr, cc: &str, mptcp: bool) -> Result<TcpSendReport> {
    let mut src =
        std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
    let started = Instant::now();
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(to),
        socket2::Type::STREAM,
        protocol(mptcp),
    )
    .context("cannot open an MPTCP socket (is net.mptcp.enabled set?)")?;
    socket
        .set_tcp_congestion(cc.as_bytes())
        .with_context(|| format!("congestion controller {cc:?} is not available (see /proc/sys/net/ipv4/tcp_available_congestion_control)"))?;
    socket
        .connect(&to.into())
        .with_context(|| format!("cannot connect to {to}"))?;
    let congestion = String::from_utf8_lossy(&socket.tcp_congestion()?)
        .trim_end_matches('\0')
        .to_owned();
    let mut stream: TcpStream = socket.into();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut bytes = 0u64;
    loop {
        let n = src.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        stream.write_all(&buf[..n])?;
        bytes += n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply)?;
    let seconds = started.elapsed().as_secs_f64();
    let hex = hasher.finalize().to_hex().to_string();
    let want = format!("b3:{hex}:{bytes}");
    if reply.trim() != want {
        bail!("receiver got {:?}, sent {want}", reply.trim());
    }
    Ok(TcpSendReport {
        bytes,
        seconds,
        goodput_bps: bytes as f64 * 8.0 / seconds,
        blake3: hex,
        congestion,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_file_copies_and_verifies_on_loopback() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, vec![7u8; 3_000_000]).unwrap();
        let listener = super::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || super::serve_one(listener).unwrap());
        let r = super::send_file(&file, addr, "cubic", false).unwrap();
        assert_eq!(server.join().unwrap(), 3_000_000);
        assert_eq!(
            r.blake3,
            blake3::hash(&vec![7u8; 3_000_000]).to_hex().as_str()
        );
        assert_eq!(r.congestion, "cubic");
        let err = super::send_file(&file, addr, "no-such-cc", false).unwrap_err();
        assert!(format!("{err:#}").contains("not available"), "{err:#}");
    }

    #[test]
    fn a_file_copies_over_mptcp_on_loopback() {
        // MPTCP is a kernel feature: where it is off, say so and skip.
        let enabled =
            std::fs::read_to_string("/proc/sys/net/mptcp/enabled").is_ok_and(|v| v.trim() == "1");
        if !enabled {
            eprintln!("skipped: MPTCP is not enabled in this kernel (net.mptcp.enabled)");
            assert!(std::env::var("CI").is_err(), "CI needs MPTCP");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        let data: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(&file, &data).unwrap();
        let listener = super::bind("127.0.0.1:0".parse().unwrap(), true).unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || super::serve_one(listener).unwrap());
        let r = super::send_file(&file, addr, "bbr", true).unwrap();
        assert_eq!(server.join().unwrap(), 2_000_000);
        assert_eq!(r.blake3, blake3::hash(&data).to_hex().as_str());
        assert_eq!(r.congestion, "bbr");
    }
}
