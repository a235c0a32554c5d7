//! Scenarios: what to measure, as TOML files in `bench-harness/scenarios/`.
//!
//! ```toml
//! name = "loss-sweep"
//! description = "One 200 Mbit/s path, 40 ms RTT, rising random loss"
//! file_size = "64MiB"
//! repetitions = 2
//! timeout = "90s"                 # per run; a run that exceeds it is reported, not fatal
//! contenders = ["chunkstream", "quinn-cubic", "quinn-bbr"]
//!
//! [[path]]
//! rate = "200mbit"
//! delay = "20ms"                  # one way; the round trip is twice this
//! jitter = "0ms"
//! loss = "0%"
//! loss_model = "bernoulli"        # or "gilbert-elliott" with loss_burst
//! loss_burst = 1
//! drop_first = 0                  # lose the first N client→server packets (a lost handshake)
//! max_packet = 1472               # path MTU: larger UDP payloads vanish (a black hole)
//!
//! [sweep]
//! loss = ["0%", "0.5%", "1%", "2%", "5%", "10%"]   # every path takes each value in turn
//! ```
//!
//! Parsing is strict: an unknown key, a negative or zero rate, a loss over
//! 100 %, an unknown contender or an empty path list is an error whose
//! message names the field. [`Scenario::points`] expands the sweep into the
//! list of link settings to run.

use std::path::Path;
use std::time::Duration;

use crate::link::{LinkConfig, LossModel};
use crate::units;

/// A contender: one way of moving the file across the same links.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "kebab-case")]
pub enum Contender {
    /// `chunkstream-engine send`, reliable plane.
    Chunkstream,
    /// `send --plane fec --fec adaptive` with our rate control.
    ChunkstreamFec,
    /// `send --plane fec --fec 10+3` with our rate control.
    #[serde(rename = "chunkstream-fec-10+3")]
    ChunkstreamFecFixed,
    /// `send --plane fec --fec adaptive --cc bbr`: the FEC plane under
    /// quinn's BBR instead of our controller.
    ChunkstreamFecBbr,
    /// `send --plane fec --mtu discover`: quinn's MTU discovery left on, to
    /// measure what pinning the MTU is worth (named before `--mtu auto`
    /// meant the route's MTU; the name stays for the committed reports).
    ChunkstreamFecMtuAuto,
    /// `send --plane fec` over the scenario's first path only (the best
    /// one, by convention): what one interface gets, beside the FEC plane
    /// over all of them.
    ChunkstreamFecOnePath,
    /// Plain quinn, one stream, Cubic.
    QuinnCubic,
    /// Plain quinn, one stream, BBR (quinn's experimental controller),
    /// with chunkstream's windows (16 MiB per stream).
    QuinnBbr,
    /// Plain quinn, one stream, BBR, with quinn's own default windows
    /// (1.25 MB per stream): quinn as an application that does not tune it
    /// gets it.
    QuinnBbrDefault,
    /// Plain quinn, one stream, BBR, 3 MiB stream window: the
    /// configuration `shared/BASELINES.md` measured.
    #[serde(rename = "quinn-bbr-3mib")]
    QuinnBbr3Mib,
    /// A plain TCP file copy with Cubic (TUN backend only).
    TcpCubic,
    /// A plain TCP file copy with BBR, this kernel's default (TUN backend only).
    TcpBbr,
    /// iperf3's TCP test with Cubic: memory, not the file (TUN backend only).
    Iperf3Cubic,
    /// iperf3's TCP test with BBR: memory, not the file (TUN backend only).
    Iperf3Bbr,
    /// rsync over SSH to a private sshd, TCP BBR (TUN backend only).
    RsyncSsh,
    /// A file copy over kernel Multipath TCP, BBR on each subflow, one
    /// subflow per path of the scenario (TUN backend only).
    MptcpBbr,
}

/// Which link emulation carries a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The UDP relay on loopback (no root; UDP contenders only).
    #[default]
    Relay,
    /// Two namespaces joined through TUN devices (root; carries TCP too).
    Tun,
}

impl Backend {
    /// The name reports give it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Relay => "udp-relay",
            Self::Tun => "tun",
        }
    }
}

impl Contender {
    /// The name used in scenarios and reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Chunkstream => "chunkstream",
            Self::ChunkstreamFec => "chunkstream-fec",
            Self::ChunkstreamFecFixed => "chunkstream-fec-10+3",
            Self::ChunkstreamFecBbr => "chunkstream-fec-bbr",
            Self::ChunkstreamFecMtuAuto => "chunkstream-fec-mtu-auto",
            Self::ChunkstreamFecOnePath => "chunkstream-fec-one-path",
            Self::QuinnCubic => "quinn-cubic",
            Self::QuinnBbr => "quinn-bbr",
            Self::QuinnBbrDefault => "quinn-bbr-default",
            Self::QuinnBbr3Mib => "quinn-bbr-3mib",
            Self::TcpCubic => "tcp-cubic",
            Self::TcpBbr => "tcp-bbr",
            Self::Iperf3Cubic => "iperf3-cubic",
            Self::Iperf3Bbr => "iperf3-bbr",
            Self::RsyncSsh => "rsync-ssh",
            Self::MptcpBbr => "mptcp-bbr",
        }
    }

    /// TCP contenders cannot cross the UDP relay.
    pub fn is_tcp(self) -> bool {
        matches!(
            self,
            Self::TcpCubic
                | Self::TcpBbr
                | Self::Iperf3Cubic
                | Self::Iperf3Bbr
                | Self::RsyncSsh
                | Self::MptcpBbr
        )
    }

    /// Whether the contender moves the file itself, so that what arrived
    /// can be hashed. iperf3 moves memory; its rate is reported as its own.
    pub fn verifiable(self) -> bool {
        !matches!(self, Self::Iperf3Cubic | Self::Iperf3Bbr)
    }

    /// Whether the contender writes the received file into the run's
    /// output folder (the runner then hashes it).
    pub fn writes_file(self) -> bool {
        self.is_chunkstream() || self == Self::RsyncSsh
    }

    /// One of `chunkstream-engine send`'s modes.
    pub fn is_chunkstream(self) -> bool {
        matches!(
            self,
            Self::Chunkstream
                | Self::ChunkstreamFec
                | Self::ChunkstreamFecFixed
                | Self::ChunkstreamFecBbr
                | Self::ChunkstreamFecMtuAuto
                | Self::ChunkstreamFecOnePath
        )
    }

    /// Whether the contender uses every path of a multi-path scenario
    /// (chunkstream's modes and MPTCP); the others use the first.
    pub fn uses_every_path(self) -> bool {
        (self.is_chunkstream() && self != Self::ChunkstreamFecOnePath) || self == Self::MptcpBbr
    }

    /// Extra `send` arguments of a chunkstream mode.
    pub fn send_flags(self) -> &'static [&'static str] {
        match self {
            Self::Chunkstream => &["--plane", "reliable"],
            Self::ChunkstreamFec => &["--plane", "fec", "--fec", "adaptive"],
            Self::ChunkstreamFecFixed => &["--plane", "fec", "--fec", "10+3"],
            Self::ChunkstreamFecBbr => &["--plane", "fec", "--fec", "adaptive", "--cc", "bbr"],
            Self::ChunkstreamFecMtuAuto => &["--plane", "fec", "--mtu", "discover"],
            Self::ChunkstreamFecOnePath => &["--plane", "fec", "--fec", "adaptive"],
            _ => &[],
        }
    }

    /// The TCP congestion controller a TCP contender asks for.
    pub fn tcp_congestion(self) -> Option<&'static str> {
        match self {
            Self::TcpCubic | Self::Iperf3Cubic => Some("cubic"),
            Self::TcpBbr | Self::Iperf3Bbr | Self::RsyncSsh | Self::MptcpBbr => Some("bbr"),
            _ => None,
        }
    }
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: String,
    #[serde(default)]
    description: String,
    file_size: String,
    #[serde(default = "one")]
    repetitions: u32,
    #[serde(default = "default_timeout")]
    timeout: String,
    contenders: Vec<Contender>,
    #[serde(default)]
    backend: Backend,
    path: Vec<RawPath>,
    #[serde(default)]
    sweep: Option<RawSweep>,
}

fn one() -> u32 {
    1
}

fn default_timeout() -> String {
    "120s".into()
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPath {
    rate: String,
    #[serde(default = "zero_ms")]
    delay: String,
    #[serde(default = "zero_ms")]
    jitter: String,
    #[serde(default = "zero_percent")]
    loss: String,
    #[serde(default)]
    loss_model: LossModelName,
    #[serde(default = "one_f")]
    loss_burst: f64,
    #[serde(default)]
    queue: Option<String>,
    #[serde(default)]
    drop_first: u64,
    /// Path MTU in UDP payload bytes, both directions (none by default).
    #[serde(default)]
    max_packet: Option<usize>,
    /// The return direction (receiver to sender): by default the same
    /// rate, delay and queue as the data direction and no random loss.
    #[serde(default)]
    reverse_rate: Option<String>,
    #[serde(default)]
    reverse_delay: Option<String>,
    #[serde(default)]
    reverse_loss: Option<String>,
}

fn zero_ms() -> String {
    "0ms".into()
}
fn zero_percent() -> String {
    "0%".into()
}
fn one_f() -> f64 {
    1.0
}

#[derive(Debug, Clone, Copy, Default, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
enum LossModelName {
    #[default]
    Bernoulli,
    GilbertElliott,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSweep {
    loss: Vec<String>,
    /// Sweep the loss of the return direction too (each direction draws
    /// its own losses).
    #[serde(default)]
    both_directions: bool,
}

/// A validated scenario.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Scenario {
    /// Short name (`loss-sweep`).
    pub name: String,
    /// What it shows.
    pub description: String,
    /// Bytes of the generated file each contender moves.
    pub file_size: u64,
    /// Runs per contender and point.
    pub repetitions: u32,
    /// Longest a run may take.
    #[serde(with = "duration_secs")]
    pub timeout: Duration,
    /// Who runs, in this order.
    pub contenders: Vec<Contender>,
    /// Which link emulation carries the runs.
    pub backend: Backend,
    /// Link settings per path (before the sweep is applied), data
    /// direction (sender to receiver).
    pub paths: Vec<LinkConfig>,
    /// The same for the return direction.
    pub reverse: Vec<LinkConfig>,
    /// Loss values to sweep, if any.
    pub sweep_loss: Vec<f64>,
    /// Whether the sweep sets the return direction's loss too.
    pub sweep_both_directions: bool,
}

/// One setting of all paths: what a sweep point runs on.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Point {
    /// The loss this point sets (if sweeping), for tables and plots.
    pub loss: Option<f64>,
    /// Per-path link settings, data direction.
    pub paths: Vec<LinkConfig>,
    /// Per-path link settings, return direction.
    pub reverse: Vec<LinkConfig>,
}

mod duration_secs {
    pub fn serialize<S: serde::Serializer>(
        d: &std::time::Duration,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

impl Scenario {
    /// Reads and validates a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read scenario {}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| anyhow::anyhow!("scenario {}: {e}", path.display()))
    }

    /// Parses and validates scenario text.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawScenario =
            toml::from_str(text).map_err(|e| e.to_string().trim().replace('\n', " "))?;
        if raw.name.trim().is_empty() {
            return Err("name must not be empty".into());
        }
        if raw.path.is_empty() {
            return Err("at least one [[path]] is required".into());
        }
        if raw.contenders.is_empty() {
            return Err("contenders must name at least one contender".into());
        }
        if raw.backend == Backend::Relay
            && let Some(c) = raw.contenders.iter().find(|c| c.is_tcp())
        {
            return Err(format!(
                "contender {} needs backend = \"tun\" (the UDP relay cannot carry TCP)",
                c.name()
            ));
        }
        if raw.backend == Backend::Tun && raw.path.len() > crate::link::tun::MAX_PATHS {
            return Err(format!(
                "backend = \"tun\" carries at most {} paths; this scenario has {}",
                crate::link::tun::MAX_PATHS,
                raw.path.len()
            ));
        }
        if raw.repetitions == 0 {
            return Err("repetitions must be at least 1".into());
        }
        let file_size = units::size(&raw.file_size).map_err(|e| format!("file_size: {e}"))?;
        if file_size == 0 {
            return Err("file_size must be positive".into());
        }
        let timeout = units::duration(&raw.timeout).map_err(|e| format!("timeout: {e}"))?;
        let paths = raw
            .path
            .iter()
            .enumerate()
            .map(|(i, p)| path_config(p).map_err(|e| format!("path {}: {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let reverse = raw
            .path
            .iter()
            .zip(&paths)
            .enumerate()
            .map(|(i, (p, fwd))| reverse_config(p, fwd).map_err(|e| format!("path {}: {e}", i + 1)))
            .collect::<Result<Vec<_>, _>>()?;
        let sweep_both_directions = raw.sweep.as_ref().is_some_and(|s| s.both_directions);
        let sweep_loss = match raw.sweep {
            None => Vec::new(),
            Some(s) => {
                if s.loss.is_empty() {
                    return Err("sweep.loss must list at least one value".into());
                }
                s.loss
                    .iter()
                    .map(|l| units::percent(l).map_err(|e| format!("sweep.loss: {e}")))
                    .collect::<Result<_, _>>()?
            }
        };
        Ok(Self {
            name: raw.name,
            description: raw.description,
            file_size,
            repetitions: raw.repetitions,
            timeout,
            contenders: raw.contenders,
            backend: raw.backend,
            paths,
            reverse,
            sweep_loss,
            sweep_both_directions,
        })
    }

    /// The link settings to run: one point per sweep value (every path takes
    /// that loss), or a single point without a sweep.
    pub fn points(&self) -> Vec<Point> {
        if self.sweep_loss.is_empty() {
            return vec![Point {
                loss: None,
                paths: self.paths.clone(),
                reverse: self.reverse.clone(),
            }];
        }
        let with_loss = |c: &LinkConfig, p: f64| LinkConfig {
            loss: match c.loss {
                LossModel::Bernoulli { .. } => LossModel::Bernoulli { p },
                LossModel::GilbertElliott { mean_burst, .. } => {
                    LossModel::GilbertElliott { p, mean_burst }
                }
            },
            ..c.clone()
        };
        self.sweep_loss
            .iter()
            .map(|&p| Point {
                loss: Some(p),
                paths: self.paths.iter().map(|c| with_loss(c, p)).collect(),
                reverse: if self.sweep_both_directions {
                    self.reverse.iter().map(|c| with_loss(c, p)).collect()
                } else {
                    self.reverse.clone()
                },
            })
            .collect()
    }
}

/// The return direction of a path: the data direction's settings without
/// its random loss, reordering and duplication, unless `reverse_*` says
/// otherwise (its loss follows the data direction's loss model).
fn reverse_config(p: &RawPath, fwd: &LinkConfig) -> Result<LinkConfig, String> {
    let rate_bps = match &p.reverse_rate {
        Some(r) => Some(units::rate_bits(r).map_err(|e| format!("reverse_rate: {e}"))?),
        None => fwd.rate_bps,
    };
    let delay = match &p.reverse_delay {
        Some(d) => units::duration(d).map_err(|e| format!("reverse_delay: {e}"))?,
        None => fwd.delay,
    };
    let loss = match &p.reverse_loss {
        None => LossModel::NONE,
        Some(l) => {
            let p_loss = units::percent(l).map_err(|e| format!("reverse_loss: {e}"))?;
            match fwd.loss {
                LossModel::Bernoulli { .. } => LossModel::Bernoulli { p: p_loss },
                LossModel::GilbertElliott { mean_burst, .. } => LossModel::GilbertElliott {
                    p: p_loss,
                    mean_burst,
                },
            }
        }
    };
    let queue_bytes = if p.reverse_rate.is_some() || p.reverse_delay.is_some() {
        LinkConfig::default_queue_bytes(rate_bps.unwrap_or(0), delay)
    } else {
        fwd.queue_bytes
    };
    let cfg = LinkConfig {
        rate_bps,
        queue_bytes,
        delay,
        loss,
        reorder: 0.0,
        duplicate: 0.0,
        drop_first: 0,
        ..fwd.clone()
    };
    cfg.validate()?;
    Ok(cfg)
}

fn path_config(p: &RawPath) -> Result<LinkConfig, String> {
    let rate_bps = units::rate_bits(&p.rate).map_err(|e| format!("rate: {e}"))?;
    let delay = units::duration(&p.delay).map_err(|e| format!("delay: {e}"))?;
    let jitter = units::duration(&p.jitter).map_err(|e| format!("jitter: {e}"))?;
    let loss = units::percent(&p.loss).map_err(|e| format!("loss: {e}"))?;
    let queue_bytes = match &p.queue {
        Some(q) => units::size(q).map_err(|e| format!("queue: {e}"))?,
        None => LinkConfig::default_queue_bytes(rate_bps, delay),
    };
    let loss = match p.loss_model {
        LossModelName::Bernoulli => LossModel::Bernoulli { p: loss },
        LossModelName::GilbertElliott => LossModel::GilbertElliott {
            p: loss,
            mean_burst: p.loss_burst,
        },
    };
    let cfg = LinkConfig {
        rate_bps: Some(rate_bps),
        queue_bytes,
        delay,
        jitter,
        loss,
        reorder: 0.0,
        duplicate: 0.0,
        drop_first: p.drop_first,
        max_packet: p.max_packet,
    };
    cfg.validate()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        name = "t"
        file_size = "8MiB"
        contenders = ["chunkstream", "quinn-cubic"]
        [[path]]
        rate = "200mbit"
        delay = "20ms"
        loss = "1%"
        [sweep]
        loss = ["0%", "5%"]
    "#;

    #[test]
    fn a_good_scenario_expands_its_sweep() {
        let s = Scenario::parse(GOOD).unwrap();
        assert_eq!(s.file_size, 8 << 20);
        assert_eq!(
            s.contenders,
            vec![Contender::Chunkstream, Contender::QuinnCubic]
        );
        let points = s.points();
        assert_eq!(points.len(), 2);
        assert_eq!(points[1].loss, Some(0.05));
        assert_eq!(points[1].paths[0].loss, LossModel::Bernoulli { p: 0.05 });
        assert_eq!(points[1].paths[0].delay, Duration::from_millis(20));
        // 1.5 × 200 Mbit/s × 40 ms = 1.5 MB.
        assert_eq!(points[0].paths[0].queue_bytes, 1_500_000);
        assert_eq!(points[0].paths[0].drop_first, 0);
    }

    #[test]
    fn max_packet_applies_to_both_directions() {
        let s = Scenario::parse(&GOOD.replace("loss = \"1%\"", "loss = \"1%\"\nmax_packet = 1472"))
            .unwrap();
        for p in s.points() {
            assert_eq!(p.paths[0].max_packet, Some(1472));
            assert_eq!(p.reverse[0].max_packet, Some(1472));
        }
    }

    #[test]
    fn drop_first_reaches_every_point_of_the_sweep() {
        let s = Scenario::parse(&GOOD.replace("loss = \"1%\"", "loss = \"1%\"\ndrop_first = 2"))
            .unwrap();
        for p in s.points() {
            assert_eq!(p.paths[0].drop_first, 2);
        }
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                GOOD.replace("file_size", "filesize"),
                "unknown field `filesize`",
            ),
            (GOOD.replace("\"200mbit\"", "\"-5mbit\""), "path 1: rate"),
            (
                GOOD.replace("loss = \"1%\"", "loss = \"150%\""),
                "path 1: loss",
            ),
            (GOOD.replace("\"5%\"]", "\"101%\"]"), "sweep.loss"),
            (
                GOOD.replace("\"quinn-cubic\"", "\"carrier-pigeon\""),
                "carrier-pigeon",
            ),
            (
                GOOD.replace("delay = \"20ms\"", "delay = \"soon\""),
                "path 1: delay",
            ),
            (
                GOOD.replace("\"quinn-cubic\"", "\"tcp-bbr\""),
                "tcp-bbr needs backend = \"tun\"",
            ),
            (
                GOOD.replace("delay = \"20ms\"", "delay = \"20ms\"\nmax_packet = 900"),
                "path 1: max-packet must be 1200 to 65527 bytes",
            ),
            // 10 Gbit/s for 2 s of delay: 2.5 GB in flight in the emulator.
            (
                GOOD.replace("\"200mbit\"", "\"10gbit\"")
                    .replace("delay = \"20ms\"", "delay = \"2s\""),
                "above the 1 GiB it may hold per direction",
            ),
            (
                GOOD.replace("delay = \"20ms\"", "delay = \"20ms\"\ncolour = \"red\""),
                "unknown field `colour`",
            ),
            (
                format!("{GOOD}{}", "\n[[path]]\nrate = \"10mbit\"\n".repeat(9))
                    .replace("name = ", "backend = \"tun\"\nname = "),
                "carries at most 9 paths; this scenario has 10",
            ),
        ];
        for (text, want) in cases {
            let err = Scenario::parse(&text).unwrap_err();
            assert!(err.contains(want), "want {want:?} in {err:?}");
        }
        let no_paths = GOOD.split("[[path]]").next().unwrap();
        assert!(Scenario::parse(no_paths).unwrap_err().contains("path"));
    }

    #[test]
    fn the_return_direction_is_set_per_path_and_swept_when_asked() {
        let text = GOOD.replace(
            "delay = \"20ms\"",
            "delay = \"20ms\"\nreverse_rate = \"10mbit\"\nreverse_loss = \"1%\"",
        );
        let s = Scenario::parse(&text).unwrap();
        assert_eq!(s.reverse[0].rate_bps, Some(10_000_000));
        assert_eq!(s.reverse[0].delay, Duration::from_millis(20));
        assert_eq!(s.reverse[0].loss, LossModel::Bernoulli { p: 0.01 });
        // Without reverse_*: the data direction's rate and delay, no loss.
        let plain = Scenario::parse(GOOD).unwrap();
        assert_eq!(plain.reverse[0].rate_bps, plain.paths[0].rate_bps);
        assert_eq!(plain.reverse[0].loss, LossModel::NONE);
        // A sweep moves the return direction's loss only when asked.
        let last = |s: &Scenario| s.points().last().unwrap().reverse[0].loss;
        assert_eq!(last(&plain), LossModel::NONE);
        let both = Scenario::parse(&GOOD.replace(
            "loss = [\"0%\", \"5%\"]",
            "loss = [\"0%\", \"5%\"]\nboth_directions = true",
        ))
        .unwrap();
        assert!(both.sweep_both_directions, "{GOOD}");
        assert_eq!(last(&both), both.points().last().unwrap().paths[0].loss);
        let bad = GOOD.replace(
            "delay = \"20ms\"",
            "delay = \"20ms\"\nreverse_loss = \"120%\"",
        );
        assert!(Scenario::parse(&bad).unwrap_err().contains("reverse_loss"));
    }

    #[test]
    fn shipped_scenarios_parse() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            names.push(s.name);
        }
        names.sort();
        assert_eq!(
            names,
            [
                "bursty-loss",
                "fec-check",
                "fec-mtu",
                "fec-vs-tcp-tun",
                "handshake-loss",
                "loss-5",
                "loss-5-long",
                "loss-sweep",
                "loss-sweep-fec",
                "loss-sweep-tcp",
                "loss-sweep-tun",
                "multipath",
                "multipath-lossy",
                "multipath-lossy-tun",
                "multipath-tun",
                "quick",
                "satellite",
                "satellite-fec",
                "two-way-loss",
                "two-way-loss-fec"
            ]
        );
    }
}
