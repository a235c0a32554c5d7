//! Hidden `bench-peer` subcommands: the far ends of baseline contenders the
//! bench runs as separate processes. Not for users; output is JSON lines.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use chunkstream_bench_harness::contenders::{plain_quinn, plain_tcp};
use chunkstream_bench_harness::usage::self_usage;
use chunkstream_engine::transport::Congestion;
use chunkstream_engine::transport::identity::Fingerprint;
use serde_json::json;

use crate::output::json_line;

/// Baseline peers for the bench (internal).
#[derive(Debug, clap::Subcommand)]
pub enum BenchPeer {
    /// Receive one plain-quinn stream; first line: {"event":"listening",...}.
    QuinnRecv {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long, value_enum, default_value = "cubic")]
        cc: CcArg,
    },
    /// Receive one plain TCP copy; first line: {"event":"listening",...}.
    TcpRecv {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Send a file over plain TCP with the named congestion controller.
    TcpSend {
        file: PathBuf,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, value_enum, default_value = "cubic")]
        cc: CcArg,
    },
    /// Send a file on one plain-quinn stream; last line: the result.
    QuinnSend {
        file: PathBuf,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        peer: Fingerprint,
        #[arg(long, value_enum, default_value = "cubic")]
        cc: CcArg,
    },
}

/// Congestion controller choices.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CcArg {
    /// quinn's Cubic.
    Cubic,
    /// quinn's BBR.
    Bbr,
}

impl From<CcArg> for Congestion {
    fn from(c: CcArg) -> Self {
        match c {
            CcArg::Cubic => Congestion::Cubic,
            CcArg::Bbr => Congestion::Bbr,
        }
    }
}

pub async fn run(cmd: BenchPeer) -> Result<()> {
    match cmd {
        BenchPeer::TcpRecv { listen } => {
            let listener = plain_tcp::bind(listen)?;
            json_line(
                &json!({"event": "listening", "addresses": [listener.local_addr()?.to_string()]}),
            );
            let bytes =
                tokio::task::spawn_blocking(move || plain_tcp::serve_one(listener)).await??;
            json_line(
                &json!({"event": "session_done", "ok": true, "bytes": bytes, "usage": self_usage()}),
            );
        }
        BenchPeer::TcpSend { file, to, cc } => {
            let name = match cc {
                CcArg::Cubic => "cubic",
                CcArg::Bbr => "bbr",
            };
            match tokio::task::spawn_blocking(move || plain_tcp::send_file(&file, to, name)).await?
            {
                Ok(r) => json_line(
                    &json!({"event": "done", "bytes": r.bytes, "seconds": r.seconds,
                    "goodput_bps": r.goodput_bps, "congestion": r.congestion, "files": [{"blake3": r.blake3}], "usage": self_usage()}),
                ),
                Err(e) => {
                    json_line(
                        &json!({"event": "error", "error": format!("{e:#}"), "usage": self_usage()}),
                    );
                    return Err(e);
                }
            }
        }
        BenchPeer::QuinnRecv { listen, cc } => {
            let (endpoint, identity) = plain_quinn::bind(listen, cc.into())?;
            json_line(&json!({
                "event": "listening",
                "addresses": [endpoint.local_addr()?.to_string()],
                "fingerprint": identity.fingerprint().to_string(),
            }));
            let bytes = plain_quinn::serve_one(endpoint).await?;
            json_line(
                &json!({"event": "session_done", "ok": true, "bytes": bytes, "usage": self_usage()}),
            );
        }
        BenchPeer::QuinnSend { file, to, peer, cc } => {
            match plain_quinn::send_file(&file, to, peer, cc.into()).await {
                Ok(r) => json_line(
                    &json!({"event": "done", "bytes": r.bytes, "seconds": r.seconds,
                "goodput_bps": r.goodput_bps, "verified": r.verified, "files": [{"blake3": r.blake3}], "usage": self_usage()}),
                ),
                Err(e) => {
                    json_line(
                        &json!({"event": "error", "error": format!("{e:#}"), "usage": self_usage()}),
                    );
                    return Err(e);
                }
            }
        }
    }
    Ok(())
}
