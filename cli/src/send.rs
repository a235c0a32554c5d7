//! `chunkstream-engine send`: send files and folders to a receiver.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use chunkstream_engine::manifest::collect_sources;
use chunkstream_engine::multipath::priority::Class;
use chunkstream_engine::multipath::spec::PathSpec;
use chunkstream_engine::session::{SendConfig, SendEvent, SendReport, send_files};
use chunkstream_engine::source::ReaderKind;
use chunkstream_engine::transport::Congestion;
use chunkstream_engine::transport::identity::Fingerprint;
use serde_json::json;

use crate::output::{json_line, line, path_share, progress_bar, rate};
use chunkstream_bench_harness::units::{rate_bits, size};

/// Reader backend choices on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum ReaderArg {
    /// io_uring, falling back to pread if it cannot start.
    Auto,
    /// io_uring only (fails if unavailable).
    Uring,
    /// Positional reads.
    Pread,
}

impl From<ReaderArg> for ReaderKind {
    fn from(r: ReaderArg) -> Self {
        match r {
            ReaderArg::Auto => ReaderKind::Auto,
            ReaderArg::Uring => ReaderKind::Uring,
            ReaderArg::Pread => ReaderKind::Pread,
        }
    }
}

/// Send files and folders (recursively) to `chunkstream-engine recv`.
#[derive(Debug, clap::Args)]
pub struct SendArgs {
    /// Files or folders to send (priority class Normal).
    #[arg(value_name = "PATH", required_unless_present = "priority")]
    pub paths: Vec<PathBuf>,
    /// A file or folder with a priority class: critical=PATH, high=PATH or
    /// normal=PATH (repeatable). While several classes have data they share
    /// the bandwidth 50/30/20 (critical/high/normal); an idle class's share
    /// goes to the others. Both planes, any number of paths.
    #[arg(long, value_name = "CLASS=PATH", value_parser = parse_priority)]
    pub priority: Vec<(Class, PathBuf)>,
    /// The receiver's address, HOST:PORT (one path; shorthand for a single
    /// --path HOST:PORT).
    #[arg(long, value_name = "ADDR", required_unless_present_any = ["path", "ticket"])]
    pub to: Option<String>,
    /// The one-string ticket `recv` printed (cst1…): the receiver's
    /// address, fingerprint and token in one. It stands for --to, --peer
    /// and --token; --to or --path, if given, say where to dial instead.
    #[arg(long, value_name = "TICKET")]
    pub ticket: Option<chunkstream_engine::ticket::Ticket>,
    /// A path: LOCAL=REMOTE[@RATE], where LOCAL is an interface name (bound
    /// with SO_BINDTODEVICE) or a local IP address, REMOTE the receiver's
    /// HOST:PORT on that network, and RATE an optional cap on this path
    /// alone (e.g. eth0=10.0.1.2:4433@50mbit; units kbit, mbit, gbit, KB, MB,
    /// GB). Repeat for several paths (see `paths`). On the FEC plane each
    /// path has its own rate controller and a block's shards spread over all
    /// of them; on the reliable plane blocks go to the path that would
    /// finish them first. A path that dies is made up for on the others and
    /// re-dialled.
    #[arg(long, value_name = "LOCAL=REMOTE[@RATE]", value_parser = PathSpec::parse)]
    pub path: Vec<PathSpec>,
    /// The receiver's certificate fingerprint, as `recv` printed it.
    #[arg(long, value_name = "FINGERPRINT", required_unless_present = "ticket")]
    pub peer: Option<Fingerprint>,
    /// The token `recv` was started with or printed.
    #[arg(
        long,
        env = "CHUNKSTREAM_TOKEN",
        hide_env_values = true,
        required_unless_present = "ticket"
    )]
    pub token: Option<String>,
    /// Block size: a power of two from 1KiB to 64MiB.
    #[arg(long, value_name = "SIZE", default_value = "1MiB", value_parser = size)]
    pub block_size: u64,
    /// Memory for blocks in flight (read, sent, not yet acknowledged), e.g.
    /// 256MiB. It bounds how much is in flight: on a long, fast path the
    /// bandwidth-delay product and the blocks awaiting repairs must fit
    /// (the FEC plane keeps half of it for recovery shards). Default: 64MiB,
    /// scaled up on paths of more than 250 ms round trip (256MiB at 1 s),
    /// at most 512MiB.
    #[arg(long, value_name = "SIZE", value_parser = size)]
    pub memory: Option<u64>,
    /// How source files are read.
    #[arg(long, value_enum, default_value = "auto")]
    pub reader: ReaderArg,
    /// Cap the whole transfer (the sum over all paths), e.g. 200mbit or
    /// 25MB/s. A single path's cap is `--path ...@RATE`.
    #[arg(long, value_name = "RATE", value_parser = rate_bits)]
    pub max_rate: Option<u64>,
    /// Send every block, even those the receiver already holds from an
    /// interrupted earlier send of the same files (by default those are
    /// checked block by block against the source and skipped).
    #[arg(long)]
    pub no_resume: bool,
    /// Start every path from 10 Mbit/s, as on a first send, instead of
    /// from half of what the last send to the same receiver over the same
    /// path carried (within a day, and if its round trip is about the
    /// same). What this send learns is still remembered.
    #[arg(long)]
    pub cold_start: bool,
    /// Where the sender remembers what each path carried
    /// (`path-memory.json`) [default: $XDG_STATE_HOME/chunkstream-engine,
    /// or ~/.local/state/chunkstream-engine].
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Give up if the receiver does not answer within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub connect_timeout: u64,
    /// Keep dialling a receiver that refuses the connection as busy (it
    /// serves as many senders as it takes) for this many seconds, with
    /// jittered back-off, before giving up.
    #[arg(long, value_name = "SECS", default_value_t = 120)]
    pub busy_timeout: u64,
    /// Data plane: `fec` (Reed-Solomon-coded shards as QUIC datagrams over
    /// every path, repaired on the receiver's reports, each path paced by
    /// its own rate controller; keeps its speed on lossy paths), `reliable`
    /// (one QUIC stream per block, QUIC retransmits; collapses on lossy
    /// paths, fastest on clean LANs above ~3 Gbit/s), or `auto`: fec, and
    /// reliable if the receiver takes no QUIC datagrams.
    #[arg(long, value_enum, default_value = "auto")]
    pub plane: PlaneArg,
    /// FEC plane: recovery shards sent up front, `adaptive` (from the
    /// measured loss rate plus two standard deviations; measured best up to
    /// 5 % loss, equal at 10-20 %) or DATA+PARITY, e.g. 10+3 (30 %).
    #[arg(long, value_name = "RATIO", default_value = "adaptive")]
    pub fec: chunkstream_engine::fec::accounts::Redundancy,
    /// Congestion control: `rate` (ours; default on the FEC plane), `cubic`
    /// (quinn's; default on the reliable plane) or `bbr` (quinn's).
    #[arg(long, value_name = "CC")]
    pub cc: Option<chunkstream_engine::transport::Congestion>,
    /// FEC plane: the UDP payload size, fixed for the session (one shard per
    /// datagram). `auto`: the MTU of the route to the receiver less the
    /// headers, 1200 to 6550 (1452 on a 1500-byte Ethernet link, 6550 on
    /// loopback and jumbo-frame LANs); a BYTES size from 1200 to 16383 pins
    /// that; `discover` leaves quinn's MTU discovery on (shards cut to the
    /// size at the start). Above 1452 the first handshake proves the size:
    /// if the path drops such datagrams (a black hole) the session falls
    /// back to 1452 within a few round trips and says so.
    #[arg(long, value_name = "auto|discover|BYTES", default_value = "auto")]
    pub mtu: chunkstream_engine::transport::path_mtu::MtuChoice,
    /// Print the result as one JSON object on the last line of stdout.
    #[arg(long)]
    pub json: bool,
    /// Fault injection for tests: flip a byte in every N-th shard.
    #[arg(long, value_name = "N", hide = true)]
    pub corrupt_every: Option<u64>,
}

fn parse_priority(s: &str) -> Result<(Class, PathBuf), String> {
    let (class, path) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected CLASS=PATH, e.g. critical=./db.dump"))?;
    Ok((class.parse()?, PathBuf::from(path)))
}

/// Data plane choices on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlaneArg {
    /// fec; reliable if the receiver takes no datagrams.
    Auto,
    /// One QUIC stream per block.
    Reliable,
    /// Coded shards in QUIC datagrams.
    Fec,
}

impl PlaneArg {
    /// What `auto` means. Decision (recorded in README): the FEC plane,
    /// on any number of paths and with priorities, because on any lossy
    /// path it keeps its speed where the reliable plane does not finish
    /// (results/README.md), and on a clean WAN path it is within a few % of
    /// it. The engine falls back to the reliable plane, and says so, when
    /// the receiver takes no datagrams.
    fn resolve(self) -> Self {
        match self {
            Self::Auto => Self::Fec,
            chosen => chosen,
        }
    }
}

fn resolve(to: &str) -> Result<SocketAddr> {
    to.to_socket_addrs()
        .with_context(|| format!("cannot resolve receiver address {to:?} (expected HOST:PORT)"))?
        .next()
        .with_context(|| format!("receiver address {to:?} resolves to nothing"))
}

pub async fn run(args: SendArgs) -> Result<()> {
    let mut paths = args.path.clone();
    if let Some(to) = &args.to {
        paths.insert(0, PathSpec::to(resolve(to)?));
    }
    let (peer, token) = match &args.ticket {
        Some(t) => {
            if args.peer.is_some_and(|p| p != t.fingerprint) {
                anyhow::bail!(
                    "--peer {} differs from the ticket's fingerprint {}; give one or the other",
                    args.peer.expect("checked"),
                    t.fingerprint
                );
            }
            if paths.is_empty() {
                paths.push(PathSpec::to(t.addresses[0]));
            }
            (t.fingerprint, t.token.clone())
        }
        // clap requires both when there is no ticket.
        None => match (args.peer, args.token.clone()) {
            (Some(p), Some(t)) => (p, t),
            _ => anyhow::bail!("give --ticket, or --peer and --token"),
        },
    };
    let max_rate = args.max_rate.map(|bits| bits / 8);
    if max_rate == Some(0) {
        anyhow::bail!("--max-rate must be above zero");
    }
    let (_, warnings) = chunkstream_engine::multipath::spec::PathList::new(paths.clone(), max_rate)
        .map_err(anyhow::Error::msg)?;
    for w in warnings {
        eprintln!("warning: {w}");
    }
    // Positional inputs are Normal; each --priority input keeps its class.
    let mut sources = Vec::new();
    let mut classes = Vec::new();
    if !args.paths.is_empty() {
        let s = collect_sources(&args.paths)?;
        classes.extend(std::iter::repeat_n(Class::Normal, s.len()));
        sources.extend(s);
    }
    for (class, path) in &args.priority {
        let s = collect_sources(std::slice::from_ref(path))?;
        classes.extend(std::iter::repeat_n(*class, s.len()));
        sources.extend(s);
    }
    let state_dir = args
        .state_dir
        .clone()
        .unwrap_or_else(crate::recv::default_state_dir);
    let peer_key = peer.to_string();
    let mut cfg = SendConfig::new(paths[0].remote, peer, token);
    if !args.cold_start {
        match crate::path_memory::recall(&state_dir, &peer_key, &paths) {
            Ok(memory) => cfg.path_memory = memory,
            Err(e) => eprintln!("warning: {e:#}; every path starts cold"),
        }
    }
    cfg.paths = paths;
    cfg.classes = classes;
    let plane = args.plane.resolve();
    cfg.block_size = args.block_size;
    cfg.memory_budget = args
        .memory
        .map(|m| usize::try_from(m).unwrap_or(usize::MAX));
    cfg.reader = args.reader.into();
    cfg.max_rate = max_rate;
    cfg.resume = !args.no_resume;
    cfg.connect_timeout = Duration::from_secs(args.connect_timeout.max(1));
    cfg.busy_timeout = Duration::from_secs(args.busy_timeout);
    if plane == PlaneArg::Fec {
        cfg.fec = Some(chunkstream_engine::send::FecConfig {
            redundancy: args.fec,
            corrupt_every: args.corrupt_every,
            mtu: args.mtu,
            ..Default::default()
        });
    }
    cfg.tuning.congestion = args.cc.unwrap_or(match plane {
        PlaneArg::Fec => Congestion::Rate,
        PlaneArg::Reliable | PlaneArg::Auto => Congestion::Cubic,
    });
    chunkstream_engine::manifest::block_size_log2(cfg.block_size)?;

    let json = args.json;
    let mut bar = None;
    let mut last_progress: Option<std::time::Instant> = None;
    let mut path_rates: Vec<chunkstream_engine::multipath::spec::PathRate> = Vec::new();
    let started = std::time::Instant::now();
    let result = send_files(sources, &cfg, |event| match event {
        SendEvent::Started {
            total_bytes,
            reader,
            files,
            remote,
        } => {
            tracing::info!(%remote, %reader, files, total_bytes, "transfer started");
            bar = progress_bar(*total_bytes, json);
        }
        SendEvent::Acked {
            acked_bytes,
            resumed_bytes,
            by_class,
            rtt,
            ..
        } => {
            if let Some(b) = &bar {
                b.set_position(*acked_bytes);
                let paths: Vec<String> = path_rates
                    .iter()
                    .enumerate()
                    .map(|(i, p)| format!("p{i} {:.0} Mbit/s {:?}", p.rate_bps / 1e6, p.state).to_lowercase())
                    .collect();
                b.set_message(if paths.len() <= 1 {
                    format!("rtt {:.1} ms", rtt.as_secs_f64() * 1e3)
                } else {
                    paths.join(" | ")
                });
            }
            // At most every 200 ms: acknowledged bytes in all and per class.
            if json && last_progress.is_none_or(|t| t.elapsed() >= Duration::from_millis(200)) {
                last_progress = Some(std::time::Instant::now());
                json_line(&json!({"event": "progress", "at": started.elapsed().as_secs_f64(),
                    "acked_bytes": acked_bytes,
                    "resumed_bytes": resumed_bytes,
                    "by_class": {"critical": by_class[0], "high": by_class[1], "normal": by_class[2]},
                    "rtt_ms": rtt.as_secs_f64() * 1e3, "paths": path_rates}));
            }
        }
        SendEvent::FileDone { name, .. } => tracing::debug!(%name, "file verified by receiver"),
        // `send` never holds its session open.
        SendEvent::FilesAdded { .. } => {}
        SendEvent::Path(change) => {
            let why = change.reason.as_deref().map_or(String::new(), |r| format!(": {r}"));
            if json {
                json_line(&json!({"event": "path", "path": change.path, "name": change.name, "state": change.state, "at": change.at, "reason": change.reason}));
            } else if let Some(b) = &bar {
                b.println(format!("path {} ({}) {:?} at {:.1} s{why}", change.path, change.name, change.state, change.at));
            } else {
                eprintln!("path {} ({}) {:?} at {:.1} s{why}", change.path, change.name, change.state, change.at);
            }
        }
        SendEvent::PathRates(rates) => path_rates.clone_from(rates),
        SendEvent::PlaneFallback { reason } => {
            eprintln!("warning: FEC plane unavailable ({reason}); sending on the reliable plane");
        }
        SendEvent::Busy { attempt, retry_in } => {
            let msg = format!("the receiver is busy; dialling again in {:.1} s (refusal {attempt})", retry_in.as_secs_f64());
            if json {
                json_line(&json!({"event": "busy", "attempt": attempt, "retry_in_s": retry_in.as_secs_f64()}));
            } else if let Some(b) = &bar {
                b.println(msg);
            } else {
                eprintln!("{msg}");
            }
        }
        SendEvent::MtuFallback { tried, using } => {
            eprintln!("warning: the path did not carry {tried}-byte datagrams (a black hole behind the route's MTU); sending {using}-byte datagrams");
            if json {
                json_line(&json!({"event": "mtu_fallback", "tried": tried, "using": using}));
            }
        }
    })
    .await;
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    match result {
        Ok(report) => {
            print_report(&report, json);
            let now = std::time::SystemTime::now();
            if let Err(e) = crate::path_memory::save(&state_dir, &peer_key, &report.paths, now) {
                eprintln!("warning: the paths' rates are not remembered: {e:#}");
            }
            Ok(())
        }
        Err(e) => {
            if json {
                json_line(&json!({"event": "error", "error": e.to_string()}));
            }
            Err(e.into())
        }
    }
}

fn print_report(r: &SendReport, json: bool) {
    if json {
        json_line(&json!({
            "event": "done",
            "files": r.files,
            "bytes": r.bytes,
            "seconds": r.seconds,
            "goodput_bps": r.goodput_bps,
            "reader": r.reader,
            "plane": r.plane,
            "wire_bytes": r.wire_bytes,
            "block_latency_ms": r.block_latency,
            "fec": r.fec,
            "paths": r.paths,
            "usage": chunkstream_bench_harness::usage::self_usage(),
        }));
        return;
    }
    if r.files.len() <= 10 {
        for f in &r.files {
            let resumed = if f.resumed_bytes > 0 {
                format!(", {} already at the receiver", f.resumed_bytes)
            } else {
                String::new()
            };
            line(&format!(
                "{}  {}  ({} bytes{resumed})",
                f.blake3, f.name, f.bytes
            ));
        }
    }
    line(&format!(
        "sent {} file(s), {} bytes in {:.2} s: {} (verified by the receiver; reader {}, {} plane)",
        r.files.len(),
        r.bytes,
        r.seconds,
        rate(r.goodput_bps),
        r.reader,
        r.plane.name()
    ));
    for p in r
        .paths
        .iter()
        .filter(|p| r.paths.len() > 1 || p.warm_start == Some(true))
    {
        let warm = if p.warm_start == Some(true) {
            ", started from the rate remembered of it"
        } else {
            ""
        };
        line(&format!(
            "path {}, {:?}{warm}",
            path_share(p, &r.paths),
            p.state
        ));
    }
    if let Some(f) = &r.fec {
        line(&format!(
            "fec {} with {} control: {} shards of {} bytes ({} source, {} recovery up front, {} repairs), random loss {:.1} %",
            f.redundancy,
            f.congestion,
            f.shards_sent,
            f.shard_bytes,
            f.source_shards,
            f.upfront_recovery,
            f.repair_shards,
            f.random_loss * 100.0
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::PlaneArg;

    #[test]
    fn auto_is_fec_and_an_explicit_choice_stands() {
        assert_eq!(PlaneArg::Auto.resolve(), PlaneArg::Fec);
        assert_eq!(PlaneArg::Fec.resolve(), PlaneArg::Fec);
        assert_eq!(PlaneArg::Reliable.resolve(), PlaneArg::Reliable);
    }
}
