//! Runs a scenario: every contender, over the same emulated links, as
//! separate processes of the `chunkstream-engine` executable.
//!
//! For each point of the scenario, contender and repetition, the runner
//! builds the link (one [`crate::link::LinkModel`] per direction): either a
//! UDP relay in front of the receiver, or, with `backend = "tun"`, two
//! network namespaces joined through TUN devices with the receiver in one
//! and the sender in the other, so TCP contenders cross the same link. It
//! samples the link's counters every 250 ms for the throughput series and
//! waits for the sender (bounded by the scenario's timeout); the TUN
//! namespaces are removed after every run, also when it fails. A transfer counts only if it is verified: the
//! sender's reported BLAKE3 and, for chunkstream, a fresh hash of the file
//! the receiver wrote, both equal to the source's.
//!
//! Random loss applies to the data direction (client → server). The
//! reverse direction has the same rate and delay and no random loss, so
//! acknowledgements see the same round trip without being thinned.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::link::LinkConfig;
use crate::link::relay::{Relay, RelayConfig};
use crate::link::tun::{ADDR_B, TunLink, path_addr};
use crate::report::{Report, Run};
use crate::scenario::{Backend, Contender, Point, Scenario};
use crate::usage::{ProcessUsage, running_as_root};

/// Where and with what a scenario runs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The `chunkstream-engine` executable.
    pub exe: PathBuf,
    /// Scratch folder for the source file and received copies.
    pub work_dir: PathBuf,
    /// The command line to record in the report.
    pub command: String,
}

/// Runs every point × contender × repetition of `scenario`.
pub async fn run_scenario(
    scenario: &Scenario,
    cfg: &RunnerConfig,
    mut progress: impl FnMut(&str),
) -> Result<Report> {
    if scenario.backend == Backend::Tun && !running_as_root() {
        anyhow::bail!(
            "scenario {} uses backend = \"tun\", which needs root (network namespaces and /dev/net/tun); run it with sudo, or use the relay backend",
            scenario.name
        );
    }
    std::fs::create_dir_all(&cfg.work_dir)?;
    let source = cfg.work_dir.join("payload.bin");
    let source_hash = write_source(&source, scenario.file_size)?;
    let mut report = Report::new(scenario, scenario.backend.name(), cfg.command.clone());
    let points = scenario.points();
    let total = points.len() * scenario.contenders.len() * scenario.repetitions as usize;
    let mut n = 0;
    for point in &points {
        for &contender in &scenario.contenders {
            for repetition in 1..=scenario.repetitions {
                n += 1;
                let what = format!(
                    "[{n}/{total}] {}{} #{repetition}",
                    contender.name(),
                    point
                        .loss
                        .map(|l| format!(" at {}% loss", l * 100.0))
                        .unwrap_or_default()
                );
                progress(&format!("{what} ..."));
                let seed = 1000 * u64::from(repetition) + n as u64;
                let run = run_once(
                    cfg,
                    contender,
                    point,
                    repetition,
                    &source,
                    &source_hash,
                    scenario,
                    seed,
                )
                .await;
                progress(&format!(
                    "{what}: {}",
                    match (&run.goodput_bps, &run.error) {
                        (Some(g), _) => format!(
                            "{:.1} Mbit/s in {:.1} s, {}",
                            g / 1e6,
                            run.seconds,
                            if run.verifiable {
                                "verified"
                            } else {
                                "the tool's own rate, unverifiable"
                            }
                        ),
                        (None, Some(e)) => format!(
                            "failed: {e} (link carried {:.1} Mbit/s)",
                            run.delivered_bytes.iter().sum::<u64>() as f64 * 8.0
                                / run.seconds.max(1e-9)
                                / 1e6
                        ),
                        (None, None) => "failed".into(),
                    }
                ));
                report.runs.push(run);
            }
        }
    }
    let _ = std::fs::remove_file(&source);
    Ok(report)
}

/// Writes `size` bytes of BLAKE3 XOF output; returns the file's hash.
fn write_source(path: &Path, size: u64) -> Result<String> {
    use std::io::Write;
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    let mut xof = blake3::Hasher::new()
        .update(b"chunkstream bench")
        .finalize_xof();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        xof.fill(&mut buf[..n]);
        hasher.update(&buf[..n]);
        file.write_all(&buf[..n])?;
        left -= n as u64;
    }
    file.flush()?;
    Ok(hasher.finalize().to_hex().to_string())
}

/// A child process whose stdout lines are collected as they come.
struct Peer {
    child: Child,
    lines: tokio::sync::mpsc::UnboundedReceiver<String>,
}

impl Peer {
    /// Starts `cmd`. Its stderr is dropped, unless `CHUNKSTREAM_BENCH_STDERR`
    /// names a folder: then each peer's stderr goes to a numbered file there
    /// (with `RUST_LOG=chunkstream_engine=debug`, the FEC plane's rate rounds).
    fn spawn(mut cmd: Command) -> Result<Self> {
        let stderr = match std::env::var_os("CHUNKSTREAM_BENCH_STDERR") {
            Some(dir) => {
                static PEERS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
                let n = PEERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let path = Path::new(&dir).join(format!("peer-{n:04}.stderr"));
                Stdio::from(
                    std::fs::File::create(&path)
                        .with_context(|| format!("cannot create {}", path.display()))?,
                )
            }
            None => Stdio::null(),
        };
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
        let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(line)) = out.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self { child, lines })
    }

    /// The first JSON line, within `limit`.
    async fn first_json(&mut self, limit: Duration) -> Result<serde_json::Value> {
        let line = tokio::time::timeout(limit, self.lines.recv())
            .await
            .context("no output in time")?
            .context("exited before printing anything")?;
        serde_json::from_str(&line).with_context(|| format!("not JSON: {line}"))
    }

    /// Waits (bounded) for exit, then returns the last JSON line printed.
    async fn finish(mut self, limit: Duration) -> Option<serde_json::Value> {
        if tokio::time::timeout(limit, self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let mut last = None;
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_millis(200), self.lines.recv()).await
        {
            last = Some(line);
        }
        last.and_then(|l| serde_json::from_str(&l).ok())
    }
}

fn usage_of(v: &serde_json::Value) -> Option<ProcessUsage> {
    serde_json::from_value(v.get("usage")?.clone()).ok()
}

#[allow(clippy::too_many_arguments)]
async fn run_once(
    cfg: &RunnerConfig,
    contender: Contender,
    point: &Point,
    repetition: u32,
    source: &Path,
    source_hash: &str,
    scenario: &Scenario,
    seed: u64,
) -> Run {
    let mut run = Run::pending(contender, point.loss, repetition, scenario.file_size);
    run.series.interval = 0.25;
    if let Err(e) = attempt(
        cfg,
        contender,
        point,
        source,
        source_hash,
        scenario,
        seed,
        &mut run,
    )
    .await
    {
        run.error = Some(format!("{e:#}"));
        run.verified = false;
        run.goodput_bps = None;
    }
    run
}

/// The emulated link of one run: one relay per path used, or the TUN pair.
enum Link {
    Relays(Vec<Relay>),
    Tun(TunLink),
}

impl Link {
    fn stats(&self) -> Vec<crate::link::relay::RelayStats> {
        match self {
            Self::Relays(r) => r.iter().map(Relay::stats).collect(),
            Self::Tun(t) => t.stats(),
        }
    }

    async fn stop(self) -> Vec<crate::link::relay::RelayStats> {
        match self {
            Self::Relays(relays) => {
                let mut out = Vec::new();
                for r in relays {
                    out.push(r.stop().await);
                }
                out
            }
            Self::Tun(t) => t.stop_all().await,
        }
    }
}

/// A command for the `chunkstream-engine` executable, inside a TUN
/// namespace (side A sends, side B receives) or on the host.
fn exe_command(exe: &Path, tun: Option<&TunLink>, side_a: bool, args: &[String]) -> Command {
    let mut cmd = match tun {
        Some(t) => t.command(side_a, &exe.display().to_string()),
        None => Command::new(exe),
    };
    cmd.args(args);
    cmd
}

/// Receiver and sender arguments of a contender (the sender's are built
/// once the receiver has said where it listens).
fn receiver_args(
    contender: Contender,
    listen: &str,
    cfg: &RunnerConfig,
    out_dir: &Path,
) -> Vec<String> {
    let s = |v: &str| v.to_owned();
    match contender {
        Contender::Chunkstream
        | Contender::ChunkstreamFec
        | Contender::ChunkstreamFecFixed
        | Contender::ChunkstreamFecBbr
        | Contender::ChunkstreamFecMtuAuto
        | Contender::ChunkstreamFecOnePath => vec![
            s("recv"),
            s("--listen"),
            s(listen),
            s("--once"),
            s("--json"),
            s("--out"),
            out_dir.display().to_string(),
            s("--state-dir"),
            cfg.work_dir.join("state").display().to_string(),
        ],
        Contender::QuinnCubic
        | Contender::QuinnBbr
        | Contender::QuinnBbrDefault
        | Contender::QuinnBbr3Mib => vec![
            s("bench-peer"),
            s("quinn-recv"),
            s("--listen"),
            s(listen),
            s("--cc"),
            s(cc_name(contender)),
            s("--windows"),
            s(quinn_windows(contender)),
        ],
        Contender::TcpCubic | Contender::TcpBbr => {
            vec![s("bench-peer"), s("tcp-recv"), s("--listen"), s(listen)]
        }
        Contender::MptcpBbr => vec![
            s("bench-peer"),
            s("tcp-recv"),
            s("--listen"),
            s(listen),
            s("--mptcp"),
        ],
        Contender::Iperf3Cubic | Contender::Iperf3Bbr => {
            vec![s("bench-peer"), s("iperf3-recv"), s("--listen"), s(listen)]
        }
        Contender::RsyncSsh => vec![
            s("bench-peer"),
            s("rsync-recv"),
            s("--listen"),
            s(listen),
            s("--out"),
            out_dir.display().to_string(),
            s("--state-dir"),
            cfg.work_dir.join("ssh").display().to_string(),
        ],
    }
}

/// Where a contender's receiver listens: a fresh namespace has every port
/// free, so the tools that want a known port get their usual one.
fn listen_addr(contender: Contender, tun: bool) -> String {
    let host = if contender == Contender::MptcpBbr {
        // MPTCP's extra subflows arrive at the other paths' addresses: a
        // listener bound to one address refuses them.
        "0.0.0.0".to_owned()
    } else if tun {
        ADDR_B.to_string()
    } else {
        "127.0.0.1".to_owned()
    };
    let port = match contender {
        Contender::Iperf3Cubic | Contender::Iperf3Bbr if tun => 5201,
        Contender::RsyncSsh if tun => 22,
        _ => 0,
    };
    format!("{host}:{port}")
}

fn quinn_windows(contender: Contender) -> &'static str {
    match contender {
        Contender::QuinnBbrDefault => "quinn",
        Contender::QuinnBbr3Mib => "3mib",
        _ => "chunkstream",
    }
}

fn cc_name(contender: Contender) -> &'static str {
    match contender {
        Contender::QuinnBbr | Contender::QuinnBbrDefault | Contender::QuinnBbr3Mib => "bbr",
        Contender::QuinnCubic => "cubic",
        c if c.is_chunkstream() => "cubic",
        tcp => tcp.tcp_congestion().unwrap_or("bbr"),
    }
}

/// The relays stand for Internet paths, but run on loopback, whose route
/// MTU (65 536) tells `send --mtu auto` to pin 6550-byte datagrams. Unless
/// the scenario sets the emulated path's MTU (`max_packet`, so the sender
/// meets it as it would a real one), our FEC contenders are pinned at what
/// a 1500-byte Ethernet path carries, as on the TUN backend, whose devices
/// have a 1500-byte MTU. The discovery contender keeps its own `--mtu`.
fn relay_mtu_flags(contender: Contender, paths: &[LinkConfig]) -> Vec<String> {
    let pins_own = contender == Contender::ChunkstreamFecMtuAuto;
    let emulated = paths.iter().any(|p| p.max_packet.is_some());
    if contender.is_chunkstream() && !pins_own && !emulated {
        vec![
            "--mtu".into(),
            chunkstream_engine::transport::FEC_MTU.to_string(),
        ]
    } else {
        Vec::new()
    }
}

/// A contender's sender command. Ours start every run cold: a run that
/// started from what the run before it learned of the path would not
/// compare with the other contenders, nor with reports of earlier commits.
fn sender_args(
    contender: Contender,
    source: &Path,
    to: &str,
    listening: &serde_json::Value,
    out_dir: &Path,
    state_dir: &Path,
) -> Vec<String> {
    let s = |v: &str| v.to_owned();
    let source = source.display().to_string();
    let fingerprint = listening["fingerprint"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    match contender {
        c @ (Contender::Chunkstream
        | Contender::ChunkstreamFec
        | Contender::ChunkstreamFecFixed
        | Contender::ChunkstreamFecBbr
        | Contender::ChunkstreamFecMtuAuto
        | Contender::ChunkstreamFecOnePath) => [
            s("send"),
            source,
            s("--to"),
            s(to),
            s("--peer"),
            fingerprint,
            s("--token"),
            listening["token"].as_str().unwrap_or_default().to_owned(),
            s("--json"),
            s("--cold-start"),
            s("--state-dir"),
            state_dir.display().to_string(),
        ]
        .into_iter()
        .chain(c.send_flags().iter().map(|f| s(f)))
        .collect(),
        Contender::QuinnCubic
        | Contender::QuinnBbr
        | Contender::QuinnBbrDefault
        | Contender::QuinnBbr3Mib => vec![
            s("bench-peer"),
            s("quinn-send"),
            source,
            s("--to"),
            s(to),
            s("--peer"),
            fingerprint,
            s("--cc"),
            s(cc_name(contender)),
            s("--windows"),
            s(quinn_windows(contender)),
        ],
        Contender::TcpCubic | Contender::TcpBbr => {
            vec![
                s("bench-peer"),
                s("tcp-send"),
                source,
                s("--to"),
                s(to),
                s("--cc"),
                s(cc_name(contender)),
            ]
        }
        Contender::MptcpBbr => vec![
            s("bench-peer"),
            s("tcp-send"),
            source,
            s("--to"),
            s(to),
            s("--cc"),
            s(cc_name(contender)),
            s("--mptcp"),
        ],
        Contender::Iperf3Cubic | Contender::Iperf3Bbr => vec![
            s("bench-peer"),
            s("iperf3-send"),
            source,
            s("--to"),
            s(to),
            s("--cc"),
            s(cc_name(contender)),
        ],
        Contender::RsyncSsh => vec![
            s("bench-peer"),
            s("rsync-send"),
            source,
            s("--to"),
            s(to),
            s("--identity"),
            listening["identity"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            s("--dest"),
            out_dir.display().to_string(),
            s("--cc"),
            s(cc_name(contender)),
        ],
    }
}

#[allow(clippy::too_many_arguments)]
async fn attempt(
    cfg: &RunnerConfig,
    contender: Contender,
    point: &Point,
    source: &Path,
    source_hash: &str,
    scenario: &Scenario,
    seed: u64,
    run: &mut Run,
) -> Result<()> {
    let out_dir = cfg.work_dir.join("received");
    let _ = std::fs::remove_dir_all(&out_dir);
    // chunkstream's modes and MPTCP use every path of the scenario; every
    // other contender (and the one-path FEC mode) uses the first.
    let used = if contender.uses_every_path() {
        point.paths.len()
    } else {
        1
    };
    // The TUN link exists before the receiver, which listens inside it; the
    // relay is put in front of a receiver that already listens.
    let tun = match scenario.backend {
        Backend::Tun => {
            // Unique per run: a namespace being torn down never blocks the next.
            static RUNS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 10_000;
            let prefix = format!("c{:03}{n:04}", std::process::id() % 1000);
            let paths = point.paths[..used]
                .iter()
                .cloned()
                .zip(point.reverse.iter().cloned())
                .collect();
            let link = TunLink::start_paths(&prefix, paths, seed).await?;
            if contender == Contender::MptcpBbr {
                link.enable_mptcp()?;
            }
            Some(link)
        }
        Backend::Relay => None,
    };
    let listen = listen_addr(contender, tun.is_some());
    let mut recv_args = receiver_args(contender, &listen, cfg, &out_dir);
    if tun.is_some() && contender.is_chunkstream() {
        // One listening address per path: each path's packets arrive on
        // its own subnet.
        for i in 1..used {
            recv_args.extend(["--listen".to_owned(), format!("{}:0", path_addr(i, false))]);
        }
    }
    let mut receiver = Peer::spawn(exe_command(&cfg.exe, tun.as_ref(), false, &recv_args))?;
    let listening = receiver
        .first_json(Duration::from_secs(10))
        .await
        .context("receiver did not start")?;
    let addresses: Vec<std::net::SocketAddr> = listening["addresses"]
        .as_array()
        .context("no address")?
        .iter()
        .map(|a| a.as_str().unwrap_or_default().parse())
        .collect::<Result<_, _>>()?;
    let server = *addresses.first().context("no address")?;
    let (link, to, extra) = match tun {
        Some(t) => {
            // A wildcard listener (MPTCP) is reached at path 0's address.
            let to = if server.ip().is_unspecified() {
                std::net::SocketAddr::new(ADDR_B.into(), server.port())
            } else {
                server
            };
            let extra: Vec<String> = if contender.is_chunkstream() {
                addresses[1..]
                    .iter()
                    .enumerate()
                    .flat_map(|(i, a)| {
                        [
                            "--path".to_owned(),
                            format!("{}={a}", path_addr(i + 1, true)),
                        ]
                    })
                    .collect()
            } else {
                Vec::new()
            };
            (Link::Tun(t), to, extra)
        }
        None => {
            let mut relays = Vec::new();
            for (i, p) in point.paths.iter().take(used).enumerate() {
                relays.push(
                    Relay::start(RelayConfig {
                        listen: "127.0.0.1:0".parse()?,
                        to: server,
                        forward: p.clone(),
                        reverse: point.reverse[i].clone(),
                        seed: seed + 7919 * i as u64,
                    })
                    .await?,
                );
            }
            let to = relays[0].local_addr();
            let mut extra: Vec<String> = relays[1..]
                .iter()
                .flat_map(|r| ["--path".to_owned(), format!("127.0.0.1={}", r.local_addr())])
                .collect();
            extra.extend(relay_mtu_flags(contender, &point.paths[..used]));
            (Link::Relays(relays), to, extra)
        }
    };
    run.paths_used = used;
    let tun_ref = match &link {
        Link::Tun(t) => Some(t),
        Link::Relays(_) => None,
    };
    let started = Instant::now();
    let mut sender = Peer::spawn(exe_command(
        &cfg.exe,
        tun_ref,
        true,
        &[
            sender_args(
                contender,
                source,
                &to.to_string(),
                &listening,
                &out_dir,
                &cfg.work_dir.join("sender-state"),
            ),
            extra,
        ]
        .concat(),
    ))?;
    let mut ticker = tokio::time::interval(Duration::from_millis(250));
    ticker.tick().await;
    let mut last_bytes = vec![0u64; used];
    let finished = loop {
        tokio::select! {
            status = sender.child.wait() => break status.is_ok(),
            _ = ticker.tick() => {
                let now: Vec<u64> = link.stats().iter().map(|s| s.forward.forwarded_bytes).collect();
                run.series.samples.push(
                    now.iter().zip(&last_bytes).map(|(n, l)| (n - l) as f64 * 8.0 / 0.25).collect(),
                );
                last_bytes = now;
                if started.elapsed() > scenario.timeout {
                    break false;
                }
            }
        }
    };
    run.seconds = started.elapsed().as_secs_f64();
    let sender_result = sender.finish(Duration::from_secs(1)).await;
    // After a success the receiver waits up to 5 s for the sender's close,
    // then up to 2 s for its endpoint to go idle; after a timeout there is
    // nothing to wait for.
    let receiver_limit = if finished {
        Duration::from_secs(10)
    } else {
        Duration::ZERO
    };
    let receiver_result = receiver.finish(receiver_limit).await;
    let stats = link.stop().await;
    run.wire_bytes = stats.iter().map(|s| s.forward.offered_bytes).collect();
    run.delivered_bytes = stats.iter().map(|s| s.forward.forwarded_bytes).collect();
    run.dropped_random = stats.iter().map(|s| s.forward.dropped_random).collect();
    run.dropped_queue = stats.iter().map(|s| s.forward.dropped_queue).collect();
    run.sender = sender_result.as_ref().and_then(usage_of);
    run.block_latency_ms = sender_result
        .as_ref()
        .and_then(|v| serde_json::from_value(v.get("block_latency_ms")?.clone()).ok());
    run.receiver = receiver_result.as_ref().and_then(usage_of);
    run.tcp_congestion = sender_result
        .as_ref()
        .and_then(|v| v.get("congestion")?.as_str().map(str::to_owned));
    if !finished {
        anyhow::bail!("did not finish within {} s", scenario.timeout.as_secs());
    }
    let result = sender_result.context("sender printed no result")?;
    if result["event"] != "done" {
        anyhow::bail!("{}", result["error"].as_str().unwrap_or("sender failed"));
    }
    if !contender.verifiable() {
        // The tool's own rate over its own clock; nothing to hash.
        run.seconds = result["seconds"].as_f64().unwrap_or(run.seconds);
        run.goodput_bps = result["goodput_bps"].as_f64();
        return Ok(());
    }
    let reported = result["files"][0]["blake3"].as_str().unwrap_or_default();
    anyhow::ensure!(
        reported == source_hash,
        "sender reports BLAKE3 {reported}, source is {source_hash}"
    );
    if contender.writes_file() {
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(out_dir.join("payload.bin"))?)?;
        let got = h.finalize().to_hex().to_string();
        anyhow::ensure!(
            got == source_hash,
            "received file hashes to {got}, source to {source_hash}"
        );
        let _ = std::fs::remove_dir_all(&out_dir);
    }
    run.seconds = result["seconds"].as_f64().unwrap_or(run.seconds);
    run.goodput_bps = Some(scenario.file_size as f64 * 8.0 / run.seconds);
    run.verified = true;
    Ok(())
}
