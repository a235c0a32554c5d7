//! The bench report: one JSON document per `bench` run.
//!
//! Versioned by [`SCHEMA`]; a reader refuses other versions rather than
//! guess. Everything needed to judge a number travels with it: the scenario
//! as run, the machine, the link-emulation backend, and per run the
//! contender, the link point, whether the transfer completed and was
//! verified, goodput, completion time, bytes on the wire per path, packets
//! the link dropped, CPU time and peak RSS of both ends, block-latency
//! percentiles (chunkstream), and a throughput time series per path.

use crate::scenario::{Contender, Scenario};
use crate::usage::ProcessUsage;

/// Schema of this report format.
pub const SCHEMA: &str = "chunkstream-bench/1";

/// A whole bench run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    /// The scenario, as run.
    pub scenario: serde_json::Value,
    /// Where it ran.
    pub machine: Machine,
    /// Which link emulation carried it (e.g. `udp-relay`).
    pub backend: String,
    /// The command line that produced this report.
    pub command: String,
    /// Seconds since the Unix epoch when the run started.
    pub started_unix: u64,
    /// Every run, in the order they ran.
    pub runs: Vec<Run>,
}

/// The machine a report comes from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Machine {
    /// `uname -r`.
    pub kernel: String,
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs available.
    pub cores: usize,
}

impl Machine {
    /// Reads this machine's description from `/proc`.
    pub fn current() -> Self {
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_owned();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
            })
            .unwrap_or_default();
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self { kernel, cpu, cores }
    }
}

/// One transfer by one contender at one link point.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Run {
    /// Who.
    pub contender: Contender,
    /// The swept loss of this point, if the scenario sweeps.
    pub loss: Option<f64>,
    /// 1-based repetition.
    pub repetition: u32,
    /// The transfer finished and the receiver's BLAKE3 equals the source's.
    pub verified: bool,
    /// False for contenders that move memory rather than the file (iperf3):
    /// their goodput is the tool's own figure and `verified` stays false.
    #[serde(default = "yes")]
    pub verifiable: bool,
    /// Why not, if it did not.
    pub error: Option<String>,
    /// File bytes.
    pub bytes: u64,
    /// Completion time (dial to verified), or the time it ran before failing.
    pub seconds: f64,
    /// File bytes per second over `seconds`, in bits; `None` if not verified.
    pub goodput_bps: Option<f64>,
    /// Paths the contender used (single-path contenders use the first).
    pub paths_used: usize,
    /// Per path, client → server: bytes the sender put on the wire.
    pub wire_bytes: Vec<u64>,
    /// Per path, client → server: bytes the link delivered.
    pub delivered_bytes: Vec<u64>,
    /// Per path, client → server: packets dropped at random.
    pub dropped_random: Vec<u64>,
    /// Per path, client → server: packets dropped because the queue was full.
    pub dropped_queue: Vec<u64>,
    /// Sender's CPU time and peak RSS.
    pub sender: Option<ProcessUsage>,
    /// Receiver's CPU time and peak RSS.
    pub receiver: Option<ProcessUsage>,
    /// The TCP congestion controller the kernel really used (TCP contenders).
    #[serde(default)]
    pub tcp_congestion: Option<String>,
    /// Block send-to-acknowledgement latency (chunkstream only).
    pub block_latency_ms: Option<chunkstream_engine::metrics::LatencySummary>,
    /// Every `interval` seconds, per path, bits per second delivered.
    pub series: Series,
}

impl Run {
    /// A run that has not produced anything yet: not verified, no goodput,
    /// one path with zero counts, no usage figures.
    pub fn pending(contender: Contender, loss: Option<f64>, repetition: u32, bytes: u64) -> Self {
        Self {
            contender,
            loss,
            repetition,
            verified: false,
            verifiable: contender.verifiable(),
            error: None,
            bytes,
            seconds: 0.0,
            goodput_bps: None,
            paths_used: 1,
            wire_bytes: vec![0],
            delivered_bytes: vec![0],
            dropped_random: vec![0],
            dropped_queue: vec![0],
            sender: None,
            receiver: None,
            tcp_congestion: None,
            block_latency_ms: None,
            series: Series::default(),
        }
    }
}

fn yes() -> bool {
    true
}

/// A throughput time series.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Series {
    /// Seconds between samples.
    pub interval: f64,
    /// `samples[i][p]`: bits per second on path `p` in interval `i`.
    pub samples: Vec<Vec<f64>>,
}

impl Report {
    /// An empty report for `scenario`.
    pub fn new(scenario: &Scenario, backend: &str, command: String) -> Self {
        Self {
            schema: SCHEMA.into(),
            scenario: serde_json::to_value(scenario).unwrap_or_default(),
            machine: Machine::current(),
            backend: backend.into(),
            command,
            started_unix: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            runs: Vec::new(),
        }
    }

    /// Reads a report, refusing other schema versions.
    pub fn load(path: &std::path::Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read report {}: {e}", path.display()))?;
        let v: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
        let schema = v["schema"].as_str().unwrap_or("(none)");
        if schema != SCHEMA {
            anyhow::bail!(
                "{}: report schema {schema:?}, this build reads {SCHEMA:?}",
                path.display()
            );
        }
        serde_json::from_value(v).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    /// The scenario's name.
    pub fn scenario_name(&self) -> &str {
        self.scenario["name"].as_str().unwrap_or("?")
    }
}
