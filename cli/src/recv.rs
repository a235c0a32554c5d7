//! `chunkstream-engine recv`: listen, print how to reach us, receive.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use chunkstream_engine::session::{Receiver, RecvEvent};
use chunkstream_engine::ticket::{self, Ticket};
use chunkstream_engine::transport::Tuning;
use chunkstream_engine::transport::identity::Identity;
use serde_json::json;

use crate::output::{json_line, line};

/// How a receiver listens, where it writes, and who it lets in: shared by
/// `recv` and `serve`.
#[derive(Debug, clap::Args)]
pub struct ReceiveOptions {
    /// Address to listen on (UDP); repeat for several interfaces.
    #[arg(long = "listen", value_name = "ADDR", default_value = "0.0.0.0:4433")]
    pub listen: Vec<SocketAddr>,
    /// Folder the files are written into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Where the receiver keeps its key pair and certificate
    /// [default: $XDG_STATE_HOME/chunkstream-engine or ~/.local/state/chunkstream-engine].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Token senders must present; a random one is made and printed if unset.
    #[arg(long, env = "CHUNKSTREAM_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Sync each file to disk before renaming it and reporting it done
    /// (survives power loss; costs the disk's write speed).
    #[arg(long)]
    pub fsync: bool,
    /// Connections (senders' paths and handshakes) served at once; a sender
    /// beyond this is told the receiver is busy and retries by itself.
    #[arg(long, value_name = "N", default_value_t = chunkstream_engine::session::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Address to put in the printed ticket instead of the listen address
    /// (repeatable; e.g. a public address in front of a NAT). By default an
    /// unspecified listen address (0.0.0.0) is advertised as the address of
    /// the interface the default route leaves by.
    #[arg(long, value_name = "ADDR")]
    pub advertise: Vec<SocketAddr>,
}

/// Receive files from `chunkstream-engine send`.
#[derive(Debug, clap::Args)]
pub struct RecvArgs {
    #[command(flatten)]
    pub receive: ReceiveOptions,
    /// Exit after one session: 0 if it succeeded, 1 if it failed.
    #[arg(long)]
    pub once: bool,
    /// Remove partial files (`NAME.part` and its journal) that no transfer
    /// has written for longer than AGE (e.g. 12h, 7d, 30m, 90s) before
    /// listening. Partial files are listed either way; a send of the same
    /// file resumes from a partial one.
    #[arg(long, value_name = "AGE", value_parser = age)]
    pub discard_partial_older_than: Option<std::time::Duration>,
    /// Print one JSON object per line (the first has "event":"listening").
    #[arg(long)]
    pub json: bool,
    /// Tests: accept no QUIC datagrams (as a peer without the FEC plane).
    #[arg(long, hide = true)]
    pub no_datagrams: bool,
}

/// An age such as `90s`, `30m`, `12h` or `7d`.
fn age(s: &str) -> Result<std::time::Duration, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: u64 = n
        .parse()
        .map_err(|_| format!("{s:?} is not an age (try 12h or 7d)"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => {
            return Err(format!(
                "{s:?} is not an age: use s, m, h or d (try 12h or 7d)"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(n.saturating_mul(secs)))
}

pub fn default_state_dir() -> PathBuf {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("chunkstream-engine")
}

/// A random 128-bit token as hex, from the OS-seeded thread RNG.
pub fn random_token() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A bound receiver, its token and its ticket.
pub struct Bound {
    pub receiver: Receiver,
    pub token: String,
    pub ticket: Result<String, chunkstream_engine::ticket::TicketError>,
    pub state_dir: PathBuf,
}

impl ReceiveOptions {
    /// Loads the identity, binds the endpoints, applies the options, and
    /// makes the ticket.
    pub fn bind(&self, no_datagrams: bool) -> Result<Bound> {
        let state_dir = self.state_dir.clone().unwrap_or_else(default_state_dir);
        let identity = Identity::load_or_create(&state_dir).with_context(|| {
            format!(
                "cannot load or create the receiver identity in {}",
                state_dir.display()
            )
        })?;
        let token = self.token.clone().unwrap_or_else(random_token);
        if token.is_empty() || token.len() > chunkstream_engine::wire::MAX_TOKEN_LEN {
            anyhow::bail!("--token must be 1 to 256 bytes");
        }
        let mut receiver = Receiver::bind(
            &self.listen,
            &self.out,
            token.clone(),
            &identity,
            &Tuning {
                datagram_receive_buffer: if no_datagrams {
                    None
                } else {
                    Tuning::default().datagram_receive_buffer
                },
                ..Tuning::default()
            },
        )?;
        receiver
            .set_max_connections(self.max_connections)
            .set_fsync(self.fsync);
        let addrs = receiver.local_addrs();
        let ticket = Ticket {
            addresses: if self.advertise.is_empty() {
                addrs.iter().map(|a| ticket::advertised(*a)).collect()
            } else {
                self.advertise.clone()
            },
            fingerprint: receiver.fingerprint(),
            token: token.clone(),
        }
        .encode();
        Ok(Bound {
            receiver,
            token,
            ticket,
            state_dir,
        })
    }
}

pub async fn run(args: RecvArgs) -> Result<()> {
    let Bound {
        receiver,
        token,
        ticket,
        ..
    } = args.receive.bind(args.no_datagrams)?;
    let addrs = receiver.local_addrs();
    let fingerprint = receiver.fingerprint().to_string();
    let out = &args.receive.out;
    if args.json {
        json_line(&json!({
            "event": "listening",
            "addresses": addrs.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
            "fingerprint": fingerprint,
            "token": token,
            "ticket": ticket.as_ref().ok(),
            "out": out.display().to_string(),
        }));
    } else {
        for a in &addrs {
            line(&format!("listening on  {a}"));
        }
        line(&format!("fingerprint   {fingerprint}"));
        line(&format!("token         {token}"));
        match &ticket {
            Ok(t) => {
                line(&format!("ticket        {t}"));
                line(&format!(
                    "send with:    chunkstream-engine send FILE... --ticket {t}"
                ));
            }
            Err(e) => {
                eprintln!("warning: no ticket ({e})");
                line(&format!(
                    "send with:    chunkstream-engine send FILE... --to {} --peer {fingerprint} --token {token}",
                    addrs[0]
                ));
            }
        }
    }
    let json = args.json;
    let now = std::time::SystemTime::now();
    if let Some(age) = args.discard_partial_older_than {
        for p in chunkstream_engine::session::discard_partials(out, age, now) {
            if json {
                json_line(
                    &json!({"event": "partial_discarded", "name": p.name, "size": p.size, "age_s": p.age.as_secs_f64()}),
                );
            } else {
                line(&format!(
                    "discarded {}.part ({} bytes, untouched for {})",
                    p.name,
                    p.size,
                    human_age(p.age)
                ));
            }
        }
    }
    for p in chunkstream_engine::session::list_partials(out, now) {
        if json {
            json_line(&json!({"event": "partial", "name": p.name, "size": p.size,
                "journaled_bytes": p.journaled_bytes, "resumable": p.journal, "age_s": p.age.as_secs_f64()}));
        } else {
            line(&format!(
                "partial file {}.part: {} of {} bytes written, {}, last written {} ago",
                p.name,
                p.journaled_bytes,
                p.size,
                if p.journal {
                    "resumable"
                } else {
                    "no journal: not resumable"
                },
                human_age(p.age)
            ));
        }
    }
    let result = receiver
        .serve(args.once, move |event| print_event(json, event))
        .await;
    match result {
        Ok(summary) => {
            if json {
                json_line(
                    &json!({"event": "session_done", "ok": true, "peer": summary.peer.to_string(),
                    "files": summary.files, "bytes": summary.bytes, "seconds": summary.seconds,
                    "usage": chunkstream_bench_harness::usage::self_usage()}),
                );
            } else {
                line(&format!(
                    "session from {} done: {} file(s), {} bytes in {:.2} s",
                    summary.peer, summary.files, summary.bytes, summary.seconds
                ));
            }
            Ok(())
        }
        Err(e) => {
            if json {
                json_line(&json!({"event": "session_done", "ok": false, "error": e.to_string()}));
            }
            Err(e.into())
        }
    }
}

fn print_event(json: bool, event: RecvEvent) {
    match event {
        RecvEvent::Refused { peer, reason } => {
            eprintln!("refused connection from {peer}: {reason}");
            if json {
                json_line(&json!({"event": "refused", "peer": peer.to_string(), "reason": reason}));
            }
        }
        RecvEvent::Busy { peer } => {
            // One line per refusal would flood a terminal under load; the
            // JSON stream has them all, the log has them at debug level.
            tracing::debug!(%peer, "busy: refused a connection");
            if json {
                json_line(&json!({"event": "busy", "peer": peer.to_string()}));
            }
        }
        RecvEvent::SessionStarted { peer, files, bytes } => {
            if json {
                json_line(
                    &json!({"event": "session_started", "peer": peer.to_string(), "files": files, "bytes": bytes}),
                );
            } else {
                line(&format!(
                    "session from {peer}: {files} file(s), {bytes} bytes"
                ));
            }
        }
        RecvEvent::FilesAdded { peer, files, bytes } => {
            if json {
                json_line(
                    &json!({"event": "files_added", "peer": peer.to_string(), "files": files, "bytes": bytes}),
                );
            } else {
                line(&format!("{peer} added {files} file(s), {bytes} bytes"));
            }
        }
        RecvEvent::Resumed {
            name,
            bytes,
            blocks,
        } => {
            if json {
                json_line(
                    &json!({"event": "resumed", "name": name, "resumed_bytes": bytes, "blocks": blocks}),
                );
            } else {
                line(&format!(
                    "resuming {name}: {bytes} bytes ({blocks} blocks) already here, verified"
                ));
            }
        }
        // `recv` reports a session's end as `session_done` when it exits
        // (`--once`); a failed one is logged by the engine.
        RecvEvent::SessionEnded { .. } => {}
        RecvEvent::PathJoined { peer } => {
            if json {
                json_line(&json!({"event": "path_joined", "peer": peer.to_string()}));
            } else {
                line(&format!("path joined from {peer}"));
            }
        }
        RecvEvent::FileDone {
            name,
            blake3,
            bytes,
        } => {
            if json {
                json_line(
                    &json!({"event": "file_done", "name": name, "blake3": blake3, "bytes": bytes}),
                );
            } else {
                line(&format!("received {name} ({bytes} bytes) blake3 {blake3}"));
            }
        }
    }
}

fn human_age(d: std::time::Duration) -> String {
    let s = d.as_secs();
    match s {
        0..=119 => format!("{s} s"),
        120..=7199 => format!("{} min", s / 60),
        7200..=172_799 => format!("{} h", s / 3600),
        _ => format!("{} d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ages_parse_with_their_units() {
        assert_eq!(super::age("90s").unwrap().as_secs(), 90);
        assert_eq!(super::age("12h").unwrap().as_secs(), 43_200);
        assert_eq!(super::age("7d").unwrap().as_secs(), 604_800);
        assert!(super::age("7 weeks").unwrap_err().contains("s, m, h or d"));
        assert!(super::age("h").unwrap_err().contains("not an age"));
    }
}
