//! Hidden `bench-peer` subcommands: the far ends of baseline contenders the
//! bench runs as separate processes. Not for users; output is JSON lines.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Result;
use chunkstream_bench_harness::contenders::rsync_ssh::{SshFiles, SshServer};
use chunkstream_bench_harness::contenders::{iperf3, plain_quinn, plain_tcp, rsync_ssh};
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
        /// Flow-control windows: chunkstream's, quinn's defaults, or a 3 MiB stream window.
        #[arg(long, default_value = "chunkstream")]
        windows: plain_quinn::Windows,
    },
    /// Receive one plain TCP copy; first line: {"event":"listening",...}.
    TcpRecv {
        #[arg(long)]
        listen: SocketAddr,
        /// Kernel Multipath TCP (IPPROTO_MPTCP).
        #[arg(long)]
        mptcp: bool,
    },
    /// Send a file over plain TCP with the named congestion controller.
    TcpSend {
        file: PathBuf,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, value_enum, default_value = "cubic")]
        cc: CcArg,
        /// Kernel Multipath TCP (IPPROTO_MPTCP).
        #[arg(long)]
        mptcp: bool,
    },
    /// Serve one iperf3 test; first line: {"event":"listening",...}.
    Iperf3Recv {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Run one iperf3 test of FILE's size (memory, not the file).
    Iperf3Send {
        file: PathBuf,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long, value_enum, default_value = "cubic")]
        cc: CcArg,
    },
    /// Run a private sshd until one file has arrived in OUT by rsync.
    RsyncRecv {
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        out: PathBuf,
        #[arg(long)]
        state_dir: PathBuf,
    },
    /// rsync FILE over ssh into DEST on the server.
    RsyncSend {
        file: PathBuf,
        #[arg(long)]
        to: SocketAddr,
        #[arg(long)]
        identity: PathBuf,
        #[arg(long)]
        dest: PathBuf,
        /// Sets this network namespace's default controller (never the host's).
        #[arg(long, value_enum)]
        cc: Option<CcArg>,
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
        /// Flow-control windows: chunkstream's, quinn's defaults, or a 3 MiB stream window.
        #[arg(long, default_value = "chunkstream")]
        windows: plain_quinn::Windows,
    },
}

/// How long a wrapped tool may run before it is stopped.
const TOOL_LIMIT: std::time::Duration = std::time::Duration::from_secs(600);

/// Congestion controller choices.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CcArg {
    /// quinn's Cubic.
    Cubic,
    /// quinn's BBR.
    Bbr,
}

impl CcArg {
    fn kernel_name(self) -> &'static str {
        match self {
            CcArg::Cubic => "cubic",
            CcArg::Bbr => "bbr",
        }
    }
}

/// Prints the error as the last JSON line and returns it.
fn report_error(e: anyhow::Error) -> anyhow::Error {
    json_line(&json!({"event": "error", "error": format!("{e:#}"), "usage": self_usage()}));
    e
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
        BenchPeer::TcpRecv { listen, mptcp } => {
            let listener = plain_tcp::bind(listen, mptcp)?;
            json_line(
                &json!({"event": "listening", "addresses": [listener.local_addr()?.to_string()]}),
            );
            let bytes =
                tokio::task::spawn_blocking(move || plain_tcp::serve_one(listener)).await??;
            json_line(
                &json!({"event": "session_done", "ok": true, "bytes": bytes, "usage": self_usage()}),
            );
        }
        BenchPeer::Iperf3Recv { listen } => {
            json_line(&json!({"event": "listening", "addresses": [listen.to_string()]}));
            let usage = tokio::task::spawn_blocking(move || iperf3::serve_one(listen, TOOL_LIMIT))
                .await?
                .map_err(report_error)?;
            json_line(&json!({"event": "session_done", "ok": true, "usage": usage}));
        }
        BenchPeer::Iperf3Send { file, to, cc } => {
            let bytes = std::fs::metadata(&file)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", file.display()))?
                .len();
            let r = tokio::task::spawn_blocking(move || {
                iperf3::send(to, bytes, cc.kernel_name(), TOOL_LIMIT)
            })
            .await?
            .map_err(report_error)?;
            json_line(
                &json!({"event": "done", "bytes": r.bytes_received, "seconds": r.seconds,
                "goodput_bps": r.goodput_bps, "congestion": r.congestion, "verifiable": false,
                "usage": r.usage}),
            );
        }
        BenchPeer::RsyncRecv {
            listen,
            out,
            state_dir,
        } => {
            let usage = tokio::task::spawn_blocking(move || -> Result<_> {
                std::fs::create_dir_all(&out)?;
                let files = SshFiles::prepare(&state_dir)?;
                let mut server = SshServer::start(&files, listen)?;
                json_line(
                    &json!({"event": "listening", "addresses": [listen.to_string()],
                    "identity": files.client_key().display().to_string()}),
                );
                server.wait_for_file(&out, TOOL_LIMIT)?;
                Ok(server.stop())
            })
            .await?
            .map_err(report_error)?;
            json_line(&json!({"event": "session_done", "ok": true, "usage": usage}));
        }
        BenchPeer::RsyncSend {
            file,
            to,
            identity,
            dest,
            cc,
        } => {
            let (r, hash) = tokio::task::spawn_blocking(move || -> Result<_> {
                let r = rsync_ssh::send(
                    &file,
                    to,
                    &identity,
                    &dest,
                    cc.map(CcArg::kernel_name),
                    TOOL_LIMIT,
                )?;
                let mut h = blake3::Hasher::new();
                h.update_reader(std::fs::File::open(&file)?)?;
                Ok((r, h.finalize().to_hex().to_string()))
            })
            .await?
            .map_err(report_error)?;
            json_line(
                &json!({"event": "done", "seconds": r.seconds, "congestion": r.congestion,
                "files": [{"blake3": hash}], "usage": r.usage}),
            );
        }
        BenchPeer::TcpSend {
            file,
            to,
            cc,
            mptcp,
        } => {
            let name = cc.kernel_name();
            match tokio::task::spawn_blocking(move || plain_tcp::send_file(&file, to, name, mptcp))
                .await?
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
        BenchPeer::QuinnRecv {
            listen,
            cc,
            windows,
        } => {
            let (endpoint, identity) = plain_quinn::bind(listen, cc.into(), windows)?;
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
        BenchPeer::QuinnSend {
            file,
            to,
            peer,
            cc,
            windows,
        } => match plain_quinn::send_file(&file, to, peer, cc.into(), windows).await {
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
        },
    }
    Ok(())
}
