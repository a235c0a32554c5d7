//! The FEC plane's rate controller (sans-IO; the clock is passed in).
//!
//! Why our own: on a lossy link quinn's Cubic reads every random loss as
//! congestion and collapses, and quinn's BBR offers 2-2.6× the bottleneck
//! and floods the queue (see `results/README.md`). The FEC plane repairs
//! loss with coding, so its controller must tell random loss from
//! congestion and send at what the path delivers.
//!
//! The model, per *round* (one minimum RTT, at least 10 ms):
//!
//! * **Delivered rate** `d`: shard bytes the receiver reports delivered
//!   (FEC_STATUS), over the receiver's own clock, so report jitter on the
//!   way back does not distort it.
//! * **Random-loss level** `p₀`: the lesser of two moving averages of
//!   the round loss rate, one of quinn's count and one of the receiver's
//!   ([`crate::fec::path_loss`]: see `tick`), updated only in rounds
//!   without a standing queue, so congestive drops do not raise it (the
//!   first level, taken whole from one round, only from a round with no
//!   queue at all), and
//!   not around a steady-state probe, whose queue makes the receiver's
//!   count swing.
//!   Startup does not count a round with idle time, or one before anything
//!   was delivered, as a round that stopped growing.
//! * **Capacity** `c = d / (1 − p₀)`: the sending rate the path carries.
//!   The bottleneck estimate is the maximum `c` of the last 10 rounds.
//! * **Queueing delay** `q = srtt − min_rtt` (min over 10 s), against a
//!   threshold of `max(5 ms, min_rtt / 4)`.
//!
//! Phases: **startup** on a path of 20 ms RTT or more probes with trains
//! (see `train_tick`: the rate the path is known to carry, and a 30 ms
//! train at 4× that once a round trip, 8× from 250 ms RTT up; a train
//! delivered slower than it left found the bottleneck, and steady state
//! starts there). On a
//! shorter path it paces at 2.5 × the capacity the latest reports
//! show (delivered over the last half round of the receiver's clock),
//! updated at every tick rather than once a round, from 10 Mbit/s (or,
//! on a short path, 2.5 × an initial window per handshake RTT); it ends
//! as soon as the queueing delay passes half the threshold (checked at
//! every tick too), or at a round end when the bottleneck estimate stopped
//! growing by 25 % for three rounds or a round delivered less than 85 % of
//! the rate it was sent at while a queue builds. On either, a round that
//! loses far more than `p₀` (a bottleneck dropping without a queue) ends
//! it too. **Drain** paces at half
//! the estimate until the queue startup left is gone (checked at every
//! tick; at most four rounds); **steady** paces at the estimate
//! times a gain cycling through 1.25 (probe), 0.75 (drain the probe's
//! queue) and six rounds of 1.0 (see `GAINS`).
//! **A remembered path** ([`PathMemory`], Careful Resume in the manner of
//! draft-ietf-tsvwg-careful-resume): what the path carried at the end of
//! an earlier transfer, given by the caller. If the path's RTT is within a
//! factor of two of the remembered one, startup begins at half the
//! remembered rate instead of growing from 10 Mbit/s; with trains, the
//! first goes at the remembered rate, and if the path carries it steady
//! state starts there. A path that now carries less shows a queue, loss or
//! a train delivered short within a round trip and startup ends there, as
//! it does at any rate.
//! **Back-off**: a queue standing for two rounds outside a probe, or a
//! round loss well above `p₀` (more than `p₀ + max(2 %, p₀)`) with a queue
//! building, is congestion: the estimate restarts from 90 % of the current
//! capacity. So a competing flow that fills the queue makes us yield rather
//! than be starved or starve it, and random loss alone never slows us down.

#![deny(clippy::disallowed_methods)]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Bounds and starting point.
#[derive(Debug, Clone, Copy)]
pub struct RateConfig {
    /// First rate (bytes/s).
    pub initial_rate: f64,
    /// Never below (bytes/s).
    pub min_rate: f64,
    /// Never above (bytes/s); e.g. `--max-rate`.
    pub max_rate: f64,
}

impl Default for RateConfig {
    fn default() -> Self {
        Self {
            initial_rate: 1_250_000.0,
            min_rate: 8_000.0,
            max_rate: 12.5e9,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Startup,
    /// Emptying the queue startup's last rounds filled.
    Drain,
    Steady,
}

/// Pacing gain while draining, and the most rounds a drain lasts.
const DRAIN_GAIN: f64 = 0.5;
const DRAIN_ROUNDS: u32 = 4;

/// Steady state's pacing gains, one a round. The cruise rounds were at
/// 0.97 (the estimate is the largest of noisy samples, so it sits above
/// their mean) while each round's random-loss sample was the lesser of two
/// noisy counts, which read the loss low and the capacity `d / (1 − p₀)`
/// with it; since the level is the lesser of two levels (`tick`), cruising
/// at 1.0 is 1.1 % faster on the relayed 40 ms, 5 %-both-ways path (5 of 6
/// alternating pairs), leaves satellite and two-way loss as they were, and
/// neither TCP Cubic nor BBR starves (`fec_fairness`, 3 of 3).
const GAINS: [f64; 8] = [1.25, 0.75, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0];
/// A probe that raised the estimate by this much found room the estimate
/// had not seen: the next probe follows at once, not a cycle later.
const PROBE_AGAIN: f64 = 1.15;
/// How long startup's queue signal must stand before startup ends: one
/// RTT sample held back by the receiver or the relay (both share the
/// sender's cores) read as a queue and ended startup at a tenth of the
/// path's rate.
const QUEUE_HOLD: Duration = Duration::from_millis(4);
const FILTER_ROUNDS: usize = 10;
/// Startup paces at this multiple of the recently delivered rate.
const STARTUP_GAIN: f64 = 2.5;
/// An initial window (bytes): startup's first rate is at least
/// [`STARTUP_GAIN`] times this per the handshake's RTT, as BBR starts
/// (2.77 × its initial window per smoothed RTT); RFC 9002's initial window
/// for datagrams of up to 1 472 bytes. Only short paths go faster than
/// the configured 10 Mbit/s from it: 29 Mbit/s at 10 ms, 294 at 1 ms,
/// 1.5 Gbit/s over loopback. Before, a 1 MiB file over loopback took
/// 90 ms from process start to exit on this plane and 13 ms on the
/// reliable one: ten-millisecond rounds, growing from 10 Mbit/s.
const INITIAL_WINDOW: f64 = 14_720.0;
/// Receiver reports kept for startup's running estimate (the receiver
/// reports every 10 ms: over a second of them).
const MAX_REPORTS: usize = 128;
const MIN_RTT_WINDOW: Duration = Duration::from_secs(10);

/// Paths with a minimum RTT of at least this start with probe trains.
/// It was 80 ms: from 20 ms, a cold 64 MiB send over the relayed 200
/// Mbit/s, 40 ms path at 5 % both ways went from 165.5 to 170.7 Mbit/s
/// (median of five alternating pairs, five of five faster; 171.9 with a
/// full train known early, see `train_tick`), the simulated
/// path reaches 85 % of its rate in 95 ms instead of 230, with a queue of
/// 19 ms instead of 60. Below 20 ms the ramp is left as it was: at 10 ms
/// RTT it reaches 85 % of 200 Mbit/s in 65 ms (the rate tests).
/// What held it back before was the random-loss level: see
/// [`LEVEL_WARMUP`].
const TRAIN_MIN_RTT: Duration = Duration::from_millis(20);
/// How long a probe train lasts: long enough that its arrival spans two
/// of the receiver's 10 ms reports.
const TRAIN_LEN: Duration = Duration::from_millis(30);
/// A train's rate over the rate the path is known to carry. The queue a
/// train can leave is `(TRAIN_GAIN − 1) × TRAIN_LEN` of the bottleneck's
/// time (90 ms), whatever the RTT.
const TRAIN_GAIN: f64 = 4.0;
/// From this minimum RTT up, trains go at [`LONG_TRAIN_GAIN`] instead.
const LONG_TRAIN_RTT: Duration = Duration::from_millis(250);
/// The train's gain on the longest paths. A train a round trip costs most
/// there: at 1 s RTT, growing 20 → 80 → 320 Mbit/s took two seconds at a
/// fraction of a 200 Mbit/s path; at 8× it is 20 → 160 → found. The queue
/// a train can leave grows to 7 × [`TRAIN_LEN`] (210 ms), under a quarter
/// of such a path's round trip. Simulated 1 s RTT, 5 % both ways (the rate
/// tests): 85 % of the rate after 1 960 ms instead of 2 875, largest queue
/// 213 ms instead of 224; on the relay, 256 MiB at 1 s RTT and 5 % both
/// ways went from 139.4 to 144.5 Mbit/s (median of four alternating pairs,
/// four of four faster).
const LONG_TRAIN_GAIN: f64 = 8.0;
/// Packets over which a count's random-loss level is a plain mean of its
/// rounds before it moves by bounded steps (see `tick`). The first level
/// used to be taken whole from one round: with trains at 40 ms that round
/// carries ~200 packets, and the receiver's count swings with the trains'
/// queue. Over fourteen seeds of the simulated 40 ms, 5 % path one level
/// started at 9.2 %, read the capacity 4 % high, and steady state then
/// queued and never learned again (8.4 % at the end); weighted by packets
/// over the first 600, the ten of `sim_long_links` end at 3.7-5.4 % (4.0-5.4
/// % before the trains).
const LEVEL_WARMUP: f64 = 600.0;
/// The least span of the receiver's clock a peak delivery sample covers.
const PEAK_SPAN: Duration = Duration::from_millis(20);
/// A train delivered at under this share of its rate (after random loss)
/// found the bottleneck.
const TRAIN_FULL: f64 = 0.75;
/// The least queueing delay a train that found the bottleneck shows. It
/// went at least `1 / TRAIN_FULL` times the bottleneck's rate for
/// [`TRAIN_LEN`], so it left at least 10 ms of queue at its end, which the
/// smoothed RTT follows within a few acknowledgements.
const TRAIN_QUEUE: Duration = Duration::from_millis(2);
/// A train is judged one RTT, [`TRAIN_LEN`] and this long after it began:
/// by then the reports of its first [`PEAK_SPAN`] at the receiver (one
/// every 10 ms) are back.
const TRAIN_MARGIN: Duration = Duration::from_millis(15);

/// What a path carried at the end of an earlier transfer: kept between
/// transfers by the caller, given to [`RateController::remember`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PathMemory {
    /// The sending rate the path carried (bytes/s): the bottleneck
    /// estimate in steady state.
    pub rate: f64,
    /// The path's minimum RTT then.
    pub min_rtt: Duration,
}

/// A remembered path starts at this share of its remembered rate: the
/// estimate is the largest of noisy samples, and the path may be busier
/// now. Half, as Careful Resume's jump to half the saved window.
const RESUME_SHARE: f64 = 0.5;
/// A remembered rate is used only if the path's RTT now is within this
/// factor of the remembered one either way: a different RTT is likely a
/// different path.
const RESUME_RTT_FACTOR: u32 = 2;

/// A probe train of startup on a long path.
#[derive(Debug, Clone, Copy)]
struct Train {
    start: Instant,
    rate: f64,
    judge_at: Instant,
    /// Whether the sender ran out of data during the train.
    limited: bool,
    /// Whether it went at the remembered rate (the first after a jump).
    remembered: bool,
    /// The most queueing delay seen since it began.
    max_queue: Duration,
}

#[derive(Debug, Clone, Copy)]
struct Mark {
    at: Instant,
    micros: u64,
    delivered: u64,
    /// The transport's packet counts (sent, lost).
    packets: (u64, u64),
    /// The receiver's counts (could have had, had).
    sent: u64,
    received: u64,
}

/// What the controller concluded at the end of a round (for tests, logs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundSummary {
    /// Delivered rate (bytes/s).
    pub delivered_rate: f64,
    /// Round loss, if enough packets were sent to say.
    pub loss: Option<f64>,
    /// Queueing delay.
    pub queue_delay: Duration,
    /// New pacing rate (bytes/s).
    pub rate: f64,
    /// Whether the round was read as congestion.
    pub congested: bool,
}

/// The controller. Feed it [`on_rtt`](Self::on_rtt),
/// [`on_delivered`](Self::on_delivered) and [`on_packets`](Self::on_packets)
/// as they come, call [`tick`](Self::tick) often, and pace at
/// [`rate`](Self::rate).
#[derive(Debug, Clone)]
pub struct RateController {
    cfg: RateConfig,
    rate: f64,
    phase: Phase,
    srtt: Option<Duration>,
    min_rtt: Option<(Duration, Instant)>,
    micros: u64,
    delivered: u64,
    packets: (u64, u64),
    sent: u64,
    received: u64,
    mark: Option<Mark>,
    caps: VecDeque<f64>,
    loss_base: Option<f64>,
    /// The level each count alone has learned (quinn's, the receiver's):
    /// `loss_base` is the lesser.
    loss_levels: [Option<f64>; 2],
    /// Packets each count's level has been learned from.
    loss_weights: [f64; 2],
    full_bw: f64,
    /// The rates set at the end of the last two rounds, newest first.
    set_rates: [f64; 2],
    full_rounds: u32,
    cycle: usize,
    queue_rounds: u32,
    rounds: u64,
    app_limited: bool,
    /// Receiver reports (clock, delivered) kept while in startup.
    reports: VecDeque<(u64, u64)>,
    /// The train in flight, on a path of trains in startup.
    train: Option<Train>,
    /// The rate a long path in startup is known to carry: paced at between
    /// trains.
    base: f64,
    /// Whether the path has been seen to carry `base`; a remembered rate
    /// has not (see `resume_from_memory`).
    base_known: bool,
    /// The first train's rate at most, when the path is remembered.
    first_train_cap: Option<f64>,
    /// The highest delivery rate over [`PEAK_SPAN`] since the train began.
    peak: f64,
    /// Consecutive rounds that lost far more than the random level.
    overrun_rounds: u32,
    /// The bottleneck estimate when the latest steady-state probe began.
    probe_base: f64,
    /// Since when startup has seen a queue.
    queue_since: Option<Instant>,
    /// What the path carried last time, if the caller remembered it.
    memory: Option<PathMemory>,
    /// Whether startup began from `memory` (`None` until the first RTT
    /// sample decided it, or with no memory).
    resumed: Option<bool>,
}

impl RateController {
    /// A controller in startup at `cfg.initial_rate`.
    pub fn new(cfg: RateConfig) -> Self {
        Self {
            cfg,
            rate: cfg.initial_rate.clamp(cfg.min_rate, cfg.max_rate),
            phase: Phase::Startup,
            srtt: None,
            min_rtt: None,
            micros: 0,
            delivered: 0,
            packets: (0, 0),
            sent: 0,
            received: 0,
            mark: None,
            caps: VecDeque::new(),
            loss_base: None,
            loss_levels: [None; 2],
            loss_weights: [0.0; 2],
            full_bw: 0.0,
            set_rates: [0.0; 2],
            full_rounds: 0,
            cycle: 0,
            queue_rounds: 0,
            rounds: 0,
            app_limited: false,
            reports: VecDeque::new(),
            train: None,
            base: 0.0,
            base_known: true,
            first_train_cap: None,
            peak: 0.0,
            overrun_rounds: 0,
            probe_base: 0.0,
            queue_since: None,
            memory: None,
            resumed: None,
        }
    }

    /// What the path carried at the end of an earlier transfer: startup
    /// begins from half of it once the first RTT sample shows the path's
    /// round trip is about what it was (see [`PathMemory`]). Ignored once
    /// a memory was decided on or startup is over, and if the memory is
    /// not a rate and an RTT.
    pub fn remember(&mut self, memory: PathMemory) {
        let valid = memory.rate.is_finite() && memory.rate > 0.0 && !memory.min_rtt.is_zero();
        if valid && self.resumed.is_none() && self.phase == Phase::Startup {
            self.memory = Some(memory);
        }
    }

    /// The memory given to [`remember`](Self::remember), if one was taken.
    pub fn remembered(&self) -> Option<PathMemory> {
        self.memory
    }

    /// Whether startup began from a remembered rate: `Some(false)` if one
    /// was given but the path's RTT had changed too much to trust it.
    pub fn resumed(&self) -> Option<bool> {
        self.resumed
    }

    /// What to remember of this path for the next transfer: its bottleneck
    /// estimate and minimum RTT, once startup and drain are over (`None`
    /// before: what startup saw says little of the path).
    pub fn carried(&self) -> Option<PathMemory> {
        let (min_rtt, _) = self.min_rtt?;
        let rate = self.bottleneck();
        (self.phase == Phase::Steady && rate > 0.0).then_some(PathMemory { rate, min_rtt })
    }

    /// At the first RTT sample, startup jumps to half the remembered rate
    /// if the path's RTT is about the remembered one.
    fn resume_from_memory(&mut self) {
        let (Some(m), Some((rtt, _)), None) = (self.memory, self.min_rtt, self.resumed) else {
            return;
        };
        let same = rtt <= m.min_rtt * RESUME_RTT_FACTOR && rtt * RESUME_RTT_FACTOR >= m.min_rtt;
        self.resumed = Some(same && self.phase == Phase::Startup);
        if self.resumed == Some(true) {
            let jump = (m.rate * RESUME_SHARE).clamp(self.cfg.min_rate, self.cfg.max_rate);
            self.rate = self.rate.max(jump);
            // Trains start from it too (`train_tick`), though the path has
            // not yet been seen to carry it, and the first goes no higher
            // than the remembered rate: a path that carries less now must
            // not meet a train at four times the jump (a 50 Mbit/s path
            // remembered at 200 lost 1 271 shards to its queue that way).
            self.base = self.base.max(jump);
            self.base_known = false;
            self.first_train_cap = Some(m.rate.max(jump));
        }
    }

    /// The path's minimum RTT, once it has been sampled.
    pub fn min_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|m| m.0)
    }

    /// Pacing rate in bytes per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// The random-loss level measured so far (0 before any).
    pub fn random_loss(&self) -> f64 {
        self.loss_base.unwrap_or(0.0)
    }

    /// Whether a random-loss level has been measured yet.
    pub fn loss_measured(&self) -> bool {
        self.loss_base.is_some()
    }

    /// Whether startup is over.
    pub fn in_startup(&self) -> bool {
        self.phase == Phase::Startup
    }

    /// A window for quinn ([`crate::fec::cc`]): two RTTs at the rate, plus
    /// headroom for control frames.
    pub fn window(&self) -> u64 {
        let rtt = self
            .srtt
            .or(self.min_rtt.map(|m| m.0))
            .unwrap_or(Duration::from_millis(100));
        (self.rate * rtt.as_secs_f64() * 2.0) as u64 + 64 * 1024
    }

    /// The smoothed RTT now. The first sample (the handshake's) also sets
    /// startup's first rate to at least [`STARTUP_GAIN`] × an initial
    /// window per that RTT, as BBR paces its initial window
    /// ([`INITIAL_WINDOW`]).
    pub fn on_rtt(&mut self, now: Instant, srtt: Duration) {
        if self.srtt.is_none() && self.phase == Phase::Startup && self.delivered == 0 {
            let paced = STARTUP_GAIN * INITIAL_WINDOW / srtt.as_secs_f64().max(1e-4);
            self.rate = self
                .rate
                .max(paced)
                .clamp(self.cfg.min_rate, self.cfg.max_rate);
        }
        self.srtt = Some(srtt);
        match self.min_rtt {
            Some((m, at)) if srtt > m && now.duration_since(at) < MIN_RTT_WINDOW => {}
            _ => self.min_rtt = Some((srtt, now)),
        }
    }

    /// The receiver's cumulative delivered bytes at its clock `micros`.
    pub fn on_delivered(&mut self, micros: u64, delivered: u64) {
        if micros >= self.micros && delivered >= self.delivered {
            self.micros = micros;
            self.delivered = delivered;
            if self.phase == Phase::Startup {
                self.reports.push_back((micros, delivered));
                if self.reports.len() > MAX_REPORTS {
                    self.reports.pop_front();
                }
                if let Some(r) = self.recent_delivery_rate(PEAK_SPAN) {
                    self.peak = self.peak.max(r);
                }
            }
        }
    }

    /// Delivered rate over the last `window` of the receiver's clock, from
    /// the reports kept during startup.
    fn recent_delivery_rate(&self, window: Duration) -> Option<f64> {
        let &(m1, d1) = self.reports.back()?;
        let since = m1.checked_sub(window.as_micros() as u64)?;
        let &(m0, d0) = self.reports.iter().rev().find(|r| r.0 <= since)?;
        Some((d1 - d0) as f64 * 1e6 / (m1 - m0).max(1) as f64)
    }

    /// Whether the sender had nothing to send during this round: a low
    /// delivered rate then says nothing about the path, so such rounds
    /// never lower the bottleneck estimate (as in BBR).
    pub fn set_app_limited(&mut self, limited: bool) {
        self.app_limited |= limited;
        if let Some(t) = &mut self.train {
            t.limited |= limited;
        }
    }

    /// Whether startup probes with trains: a path of [`TRAIN_MIN_RTT`] or
    /// more (see [`Train`]).
    fn trains(&self) -> bool {
        self.phase == Phase::Startup && self.min_rtt.is_some_and(|m| m.0 >= TRAIN_MIN_RTT)
    }

    /// Startup on a long path: growing a round at a time takes a second a
    /// round at 1 s RTT (five of them to reach 200 Mbit/s from 10), and
    /// every round of overshoot is a round trip of queue. Instead the
    /// sender paces at the rate the path is known to carry (`base`) and,
    /// once a round trip, sends a short train at [`TRAIN_GAIN`] × that.
    /// The receiver's reports show the train arriving at the lesser of its
    /// rate and the bottleneck's (the highest rate over [`PEAK_SPAN`] of
    /// its clock): delivered at its rate, the train becomes the new base
    /// and the next train goes four times higher; delivered well under
    /// it, the bottleneck is found and startup ends there, with at most
    /// [`TRAIN_LEN`] × 3 of queue left behind.
    fn train_tick(&mut self, now: Instant) {
        let Some((min_rtt, _)) = self.min_rtt else {
            return;
        };
        if self.base == 0.0 {
            self.base = (self.cfg.initial_rate * 2.0).min(self.cfg.max_rate);
        }
        let queue = self.queue_delay();
        if let Some(t) = &mut self.train {
            t.max_queue = t.max_queue.max(queue);
        }
        // What the train in flight (if any) has been seen to deliver,
        // before random loss. A train delivered in full is known as soon
        // as a report shows it (a peak that high can only be the train's),
        // 20-25 ms before its judgement time at 40 ms RTT; one delivered
        // short waits for it.
        let carried = self.peak / (1.0 - self.judging_loss());
        match self.train {
            Some(t) if now >= t.judge_at || carried >= TRAIN_FULL * t.rate => {
                self.train = None;
                let short = carried < TRAIN_FULL * t.rate && !t.limited;
                // A train that found the bottleneck left a queue behind it
                // (`TRAIN_QUEUE`). One delivered short with none seen is a
                // measurement gone wrong, not a bottleneck: the reports of
                // its arrival were lost or came late (on a path losing
                // 30 % both ways, where some ride the control stream
                // behind a lost packet). It counts as delivered at what was
                // seen, and the next train tries again; judged as found,
                // steady state started at the 20 Mbit/s base of a 200
                // Mbit/s path in three TUN runs in four (96-110 Mbit/s for
                // 128 MiB where the others took 125).
                let evident = t.max_queue >= TRAIN_QUEUE;
                if t.remembered && !short {
                    // The path carries what it carried last time: steady
                    // state from there, whose probes look for more. A
                    // train at four times that would leave a queue of
                    // 90 ms at the path's rate (423 queue drops of a
                    // 64 MiB send at 40 ms, where none were).
                    self.steady_from_train(carried.min(t.rate));
                    return;
                } else if !short || !evident {
                    self.base = self.base.max(carried.min(t.rate));
                    self.base_known |= !short;
                } else {
                    // A base the path was seen to carry is a floor; a
                    // remembered one is not.
                    let btl = if self.base_known {
                        carried.max(self.base)
                    } else {
                        carried
                    };
                    self.steady_from_train(btl);
                    return;
                }
            }
            Some(t) if now < t.start + TRAIN_LEN => {
                self.rate = t.rate;
                return;
            }
            Some(_) => {}
            None => {}
        }
        if self.train.is_none() {
            let gain = if min_rtt >= LONG_TRAIN_RTT {
                LONG_TRAIN_GAIN
            } else {
                TRAIN_GAIN
            };
            let cap = self.first_train_cap.take();
            let rate = (self.base * gain)
                .min(cap.unwrap_or(f64::INFINITY))
                .min(self.cfg.max_rate);
            self.train = Some(Train {
                start: now,
                rate,
                judge_at: now + min_rtt + TRAIN_LEN + TRAIN_MARGIN,
                limited: false,
                remembered: cap.is_some(),
                max_queue: Duration::ZERO,
            });
            self.peak = 0.0;
            self.rate = rate;
        } else {
            self.rate = self.base;
        }
    }

    /// The loss a train's delivery is judged against: the random-loss
    /// level, or before the first is learned (a round ends a round trip
    /// after the first report, so on a long path after the first train
    /// is judged), the share lost of everything so far, the lesser of the
    /// two counts. Judged against none, a train on a path losing 30 %
    /// delivers 70 % of its rate, under [`TRAIN_FULL`], and reads as one
    /// that found the bottleneck.
    fn judging_loss(&self) -> f64 {
        if let Some(level) = self.loss_base {
            return level;
        }
        let quinn = (self.packets.0 >= 20).then(|| self.packets.1 as f64 / self.packets.0 as f64);
        let receiver =
            (self.sent >= 20).then(|| 1.0 - self.received.min(self.sent) as f64 / self.sent as f64);
        let lesser = match (quinn, receiver) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b).unwrap_or(0.0),
        };
        lesser.clamp(0.0, 0.5)
    }

    /// Cumulative packets sent on the path and, of them, declared lost by
    /// the transport (quinn's counts).
    pub fn on_packets(&mut self, sent: u64, lost: u64) {
        self.packets = (self.packets.0.max(sent), self.packets.1.max(lost));
    }

    /// Cumulative packets the receiver could have had (`out`) and those it
    /// counted (`received`), from its latest report. A round's loss is
    /// `1 − Δreceived / Δout`: what either count gets wrong by the same
    /// amount at both ends of the round (shards in flight) cancels.
    pub fn on_counts(&mut self, out: u64, received: u64) {
        if out >= self.sent {
            self.sent = out;
            self.received = received;
        }
    }

    fn queue_threshold(&self) -> Duration {
        let min = self.min_rtt.map_or(Duration::ZERO, |m| m.0);
        (min / 4).max(Duration::from_millis(5))
    }

    /// Queueing delay now: smoothed RTT above its minimum.
    fn queue_delay(&self) -> Duration {
        let min_rtt = self.min_rtt.map_or(Duration::ZERO, |m| m.0);
        self.srtt.unwrap_or(min_rtt).saturating_sub(min_rtt)
    }

    /// Whether the queue startup left is gone, which ends drain: under a
    /// quarter of the threshold, not merely under the threshold (startup
    /// leaves at half of it, so that would end drain at once).
    fn queue_gone(&self) -> bool {
        self.queue_delay() <= self.queue_threshold() / 4
    }

    /// The bottleneck estimate: the largest capacity of the last rounds.
    fn bottleneck(&self) -> f64 {
        self.caps.iter().copied().fold(0.0, f64::max)
    }

    fn enter_drain(&mut self, btl: f64) {
        self.phase = Phase::Drain;
        self.reports.clear();
        self.queue_rounds = 0;
        self.rate = btl * DRAIN_GAIN;
    }

    /// Ends startup on a train's judgement: steady state at `btl`, which
    /// becomes the estimate.
    fn steady_from_train(&mut self, btl: f64) {
        self.caps.push_back(btl);
        self.full_bw = btl;
        self.reports.clear();
        self.enter_steady(btl);
    }

    fn enter_steady(&mut self, btl: f64) {
        self.phase = Phase::Steady;
        self.queue_rounds = 0;
        self.cycle = 2;
        self.rate = btl * GAINS[2];
    }

    /// Startup and drain between round ends. Startup paces at
    /// [`STARTUP_GAIN`] × the capacity the latest reports show, as they
    /// arrive, and leaves for drain as soon as a queue shows; drain leaves as
    /// soon as the queue is gone. Deciding only at round ends added most of a
    /// round to the round trip these signals lag anyway: the ramp grew ~1.7×
    /// per round instead of ~2.5×, and overshot for longer (200 Mbit/s at
    /// 5 %: 438 -> 72 queue drops per 64 MiB, 159.4 -> 161.2 Mbit/s).
    fn between_rounds(&mut self, now: Instant, round: Duration) {
        let q = self.queue_delay();
        let window = round / 2;
        let cap = self
            .recent_delivery_rate(window)
            .map(|d| d / (1.0 - self.random_loss()));
        match self.phase {
            // Trains set the rate (see `train_tick`).
            Phase::Startup if self.trains() => {}
            Phase::Startup => {
                let held = if q > self.queue_threshold() / 2 {
                    let since = *self.queue_since.get_or_insert(now);
                    now.saturating_duration_since(since) >= QUEUE_HOLD.min(round / 4)
                } else {
                    self.queue_since = None;
                    false
                };
                if self.rounds >= 1 && held {
                    self.enter_drain(self.bottleneck().max(cap.unwrap_or(0.0)));
                } else if let Some(cap) = cap {
                    self.rate = self.rate.max((STARTUP_GAIN * cap).min(self.cfg.max_rate));
                }
            }
            Phase::Drain if self.queue_gone() && !self.caps.is_empty() => {
                self.enter_steady(self.bottleneck());
            }
            _ => {}
        }
        self.rate = self.rate.clamp(self.cfg.min_rate, self.cfg.max_rate);
    }

    /// Ends a round if one has passed; returns what it concluded.
    pub fn tick(&mut self, now: Instant) -> Option<RoundSummary> {
        self.resume_from_memory();
        if self.trains() {
            self.train_tick(now);
        }
        let here = Mark {
            at: now,
            micros: self.micros,
            delivered: self.delivered,
            packets: self.packets,
            sent: self.sent,
            received: self.received,
        };
        // Rounds are measured between two receiver reports: a mark taken
        // before the first one would count everything delivered before it
        // over however little of the receiver's clock had run (one run
        // measured 1.9 Gbit/s on a 200 Mbit/s link that way, and flooded it).
        let start = match self.mark {
            Some(start) if start.micros > 0 => start,
            _ => {
                self.mark = Some(here);
                return None;
            }
        };
        let round = self
            .min_rtt
            .map_or(Duration::from_millis(100), |m| m.0)
            .max(Duration::from_millis(10));
        // The receiver's clock must span at least half the round too, or a
        // burst of reports arriving together reads as a burst of rate.
        let span = Duration::from_micros(here.micros.saturating_sub(start.micros));
        self.between_rounds(now, round);
        if now.duration_since(start.at) < round || span < round / 2 {
            return None;
        }
        self.mark = Some(here);
        self.rounds += 1;
        let d =
            (here.delivered - start.delivered) as f64 * 1e6 / (here.micros - start.micros) as f64;
        // Two counts of the round's loss, each wrong in its own way, and
        // the lesser is taken (for the level, the lesser of their levels).
        // quinn's reads lost acknowledgements as lost packets (on a path
        // that also loses on the way back, 20-100 % of a round where 5 %
        // were); the receiver's (`fec::path_loss`) is blind to that but
        // dates its counts to within the queues it does
        // not see (a relay's, the receiver's own buffers), which read as
        // loss while they grow (on two relayed paths the level it learned
        // climbed to 9 %, and `d / (1 − p₀)` then drove a path into its
        // queue). Neither is ever too low for long.
        // Packets out in the round by each count (quinn's, the receiver's).
        let out = [here.packets.0 - start.packets.0, here.sent - start.sent];
        let quinn = {
            let sent = out[0];
            (sent >= 20).then(|| ((here.packets.1 - start.packets.1) as f64 / sent as f64).min(1.0))
        };
        let receiver = {
            let sent = out[1];
            let got = here.received as i128 - start.received as i128;
            // Below zero when the receiver counted more in the round than
            // was out in it: kept so for the average, which would
            // otherwise take every round's noise as loss.
            (sent >= 20).then(|| (1.0 - got as f64 / sent as f64).clamp(-1.0, 1.0))
        };
        let signed = match (quinn, receiver) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let loss = signed.map(|p| p.max(0.0));
        let q = self.queue_delay();
        let queued = q > self.queue_threshold();
        // The random-loss level learns from queue-free rounds, never while
        // draining startup's queue (its tail drops are reported a round
        // late, when the queue is already gone), and one round can at most
        // double it: a burst of tail drops moves it a little, a real rise
        // in random loss still gets through in a few rounds.
        let p0_before = self.random_loss();
        let had_level = self.loss_base.is_some();
        // Nor from a steady-state probe (gain 1.25) and the three rounds
        // after it: the receiver's count dates what it could have counted
        // by the smoothed RTT (`fec::path_loss`), which lags the probe's
        // queue as it builds and drains, so that count swings for four
        // rounds (-0.16, +0.36, -0.04, 0.0 around 0.05 in simulation), and
        // the lesser of the two counts took every low swing and none of the
        // high ones: at 5 % loss the level sat at 3-4 %, the capacity
        // `d / (1 − p₀)` ~2 % under the path's.
        let probed = self.phase == Phase::Steady && self.cycle <= 3;
        // The first level is taken whole from one round (later ones move
        // it a bounded step), so that round must show no queue at all,
        // not merely one under the threshold: a flow joining a link that
        // TCP Cubic already fills measures its minimum RTT with Cubic's
        // queue in it, and with a buffer shallower than a quarter of that
        // RTT the queue never reads as one. On the 100 Mbit/s, 40 ms TUN
        // link of `fec_fairness` the first round lost 16 % to Cubic's full
        // queue at 13 ms of queueing delay over a 95 ms minimum: that
        // became the level, the capacity read 19 % high and nothing short
        // of 32 % loss read as congestion; Cubic fell to 0-10 Mbit/s
        // (1 run in 8, the other 7 kept 40-54).
        let first_level_ok = self.loss_base.is_some() || self.queue_gone();
        if signed.is_some() && !queued && self.phase != Phase::Drain && !probed && first_level_ok {
            // Each count learns its own level and the lesser level is
            // taken, not the lesser count of each round: of two noisy
            // counts of the same few losses the lesser is biased low (on
            // three veth paths the 3 % one learned 1.1-2.2 %, the 1 % one
            // 0-0.4 %), while each count's own average keeps only its
            // steady error, and both of those read high.
            for (i, count) in [quinn, receiver].into_iter().enumerate() {
                let Some(p) = count else { continue };
                let p = p.min(0.5);
                // A count heard for the first time starts from the other's
                // level, not from its own first round: quinn declares a
                // loss a round trip late and its first round can read 0.
                let start = self.loss_levels[i].or(self.loss_levels[1 - i]);
                let (n, m) = (self.loss_weights[i], out[i] as f64);
                self.loss_levels[i] = Some(match start {
                    // Until a count has seen [`LEVEL_WARMUP`] packets its
                    // level is the plain mean of its rounds, weighted by
                    // their packets: a first round of a few hundred
                    // packets is too few to be taken whole (see
                    // `LEVEL_WARMUP`), and too few to let it stand behind
                    // the bound below for many rounds.
                    Some(b) if self.loss_levels[i].is_some() && n < LEVEL_WARMUP => {
                        let step = b.max(0.02);
                        ((b * n + p.clamp(b - step, b + step) * m) / (n + m)).max(0.0)
                    }
                    // Bounded both ways alike, so that noise around the
                    // level (a round's count is off by what moved across
                    // its edges) averages out instead of drifting it. The
                    // bound is also what keeps a flow that meets a
                    // competitor's queue from the start from learning its
                    // drops as random loss within a few rounds: a plain
                    // mean over the first eight rounds starved TCP Cubic
                    // in three of three `fec_fairness` runs.
                    Some(b) => {
                        let step = b.max(0.02);
                        (0.8 * b + 0.2 * p.clamp(b - step, b + step)).max(0.0)
                    }
                    None => p.max(0.0),
                });
                self.loss_weights[i] = n + m;
            }
            self.loss_base = self.loss_levels.iter().flatten().copied().reduce(f64::min);
        }
        let p0 = self.random_loss();
        let cap = d / (1.0 - p0);
        let app_limited = std::mem::take(&mut self.app_limited);
        let btl_before = self.bottleneck();
        if app_limited && cap < btl_before {
            // Idle time measures the sender, not the path.
            return Some(RoundSummary {
                delivered_rate: d,
                loss,
                queue_delay: q,
                rate: self.rate,
                congested: false,
            });
        }
        self.caps.push_back(cap);
        if self.caps.len() > FILTER_ROUNDS {
            self.caps.pop_front();
        }
        let btl = self.bottleneck();
        let congestive_loss =
            loss.is_some_and(|p| p > p0 + p0.max(0.02)) && q > self.queue_threshold() / 2;
        let mut congested = false;
        // Far more loss than the path's random level while startup grows:
        // a bottleneck that drops without queueing (a policer, or a
        // buffer too small to show a queue). Measured on a relay that
        // dropped above ~300 Mbit/s: startup ran on to 500 Mbit/s with
        // 60-98 % of rounds lost, as it read none of it as congestion.
        // Two rounds running: one round's count can be off by what a
        // burst of reports or of sending moved across its edges.
        let lossy = had_level
            && self.rounds > 2
            && loss.is_some_and(|p| p > p0_before + p0_before.max(0.1));
        self.overrun_rounds = if lossy { self.overrun_rounds + 1 } else { 0 };
        let overrun = self.overrun_rounds >= 2;
        match self.phase {
            Phase::Startup if self.trains() => {
                // A train leaves a queue that lasts under a round; two
                // rounds of queue, or heavy loss, mean the base overruns.
                self.queue_rounds = if queued { self.queue_rounds + 1 } else { 0 };
                if self.queue_rounds >= 2 || overrun {
                    self.train = None;
                    self.enter_drain(btl);
                }
            }
            Phase::Startup => {
                if btl > self.full_bw * 1.25 {
                    self.full_bw = btl;
                    self.full_rounds = 0;
                } else if btl > 0.0 && !app_limited {
                    // Rounds before anything was delivered, or with idle
                    // time, say nothing about growth: three of them while
                    // the first blocks were still being read ended startup
                    // at an estimate of zero, and the path sat at the
                    // minimum rate for the rest of a demo transfer.
                    self.full_rounds += 1;
                }
                // What this round delivered left two rounds ago (one to get
                // there, one for the report to come back): well below that
                // rate while a queue starts to build, the path is full and
                // the round in flight is already queueing. Without the
                // queue it is a burst of loss, not capacity (bursty links
                // left startup at 13 Mbit/s on this rule alone).
                let full = self.set_rates[1] > 0.0
                    && cap < 0.85 * self.set_rates[1]
                    && q > self.queue_threshold() / 4;
                if self.full_rounds >= 3
                    || (queued && self.rounds > 1)
                    || congestive_loss
                    || full
                    || overrun
                {
                    self.enter_drain(btl);
                } else {
                    self.rate = self.rate.max(STARTUP_GAIN * btl);
                }
            }
            Phase::Drain => {
                // Startup's rate ran up to 2.5× what the path carries for
                // the round trip the queue signal lags: that queue must go
                // before the queue signal means anything again (checked at
                // every tick in `between_rounds`, here at least once a
                // round, for at most DRAIN_ROUNDS).
                self.queue_rounds += 1;
                if self.queue_gone() || self.queue_rounds >= DRAIN_ROUNDS {
                    self.enter_steady(btl);
                } else {
                    self.rate = btl * DRAIN_GAIN;
                }
            }
            Phase::Steady => {
                let probing = self.cycle == 0;
                self.queue_rounds = if queued && !probing {
                    self.queue_rounds + 1
                } else {
                    0
                };
                if self.queue_rounds >= 2 || congestive_loss {
                    congested = true;
                    self.queue_rounds = 0;
                    self.caps.clear();
                    let fresh = (cap * 0.9).min(self.rate * 0.9);
                    self.caps.push_back(fresh);
                    self.cycle = 2;
                    self.rate = fresh;
                } else {
                    // The rounds after a probe show what it delivered (a
                    // round later, or two): far more than the estimate it
                    // started from is room the estimate has not seen (a
                    // startup that left early, a path that grew), so probe
                    // again now rather than eight rounds on. A startup
                    // ended at 20 Mbit/s on a 200 Mbit/s path took ~2 s to
                    // get there at one probe a cycle.
                    let after_probe = matches!(self.cycle, 1 | 2);
                    self.cycle = if after_probe && btl > PROBE_AGAIN * self.probe_base {
                        0
                    } else {
                        (self.cycle + 1) % GAINS.len()
                    };
                    if self.cycle == 0 {
                        self.probe_base = btl;
                    }
                    self.rate = btl * GAINS[self.cycle];
                }
            }
        }
        self.rate = self.rate.clamp(self.cfg.min_rate, self.cfg.max_rate);
        self.set_rates = [self.rate, self.set_rates[0]];
        Some(RoundSummary {
            delivered_rate: d,
            loss,
            queue_delay: q,
            rate: self.rate,
            congested,
        })
    }
}

#[cfg(test)]
mod tests;
