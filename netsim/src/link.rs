//! A sans-IO model of one direction of a network link.
//!
//! [`LinkModel::offer`] takes a packet's size and the current time and says
//! what the link does with it: drop it, or deliver it (once or twice) at a
//! given time. It never reads a clock and never touches a socket; drivers
//! (the UDP relay, the TUN bridge) pass the time in and act on the verdict.
//! Every random choice comes from one seeded generator, so the same seed and
//! the same offers give the same verdicts.
//!
//! The stages, in the order a packet meets them:
//!
//! 0. **Path MTU** (if `max_packet` is set): a larger packet is dropped
//!    without a word ([`Drop::TooBig`]), as a router behind a smaller link
//!    that sends no ICMP does: the black hole a pinned large MTU must
//!    survive.
//! 1. **Bottleneck** (if `rate_bps` is set): a FIFO serializer at `rate_bps`
//!    behind a tail-drop queue of `queue_bytes`. A packet that does not fit
//!    in the queue is dropped ([`Drop::Queue`]); otherwise it leaves the
//!    bottleneck when the packets ahead of it and itself have been
//!    serialized.
//! 2. **Random loss** after the bottleneck ([`LossModel`]): Bernoulli, or
//!    Gilbert-Elliott bursts ([`Drop::Random`]); the first `drop_first`
//!    packets are lost in any case (a lost handshake, reproducibly).
//! 3. **Propagation**: fixed `delay` plus uniform jitter in `±jitter`.
//!    Packets keep their order (a jittered packet never overtakes an earlier
//!    one) unless **reordering** picks it: then it skips half the delay.
//!    Keeping order means that when packets follow each other more closely
//!    than the jitter, late ones hold back the ones behind them and the mean
//!    delay rises towards `delay + jitter` (kernel netem behaves alike).
//! 4. **Duplication**: with probability `duplicate`, a second copy arrives
//!    with the first.

#![deny(clippy::disallowed_methods)]

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How random loss happens.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case")]
pub enum LossModel {
    /// Each packet is lost independently with probability `p`.
    Bernoulli {
        /// Loss probability, 0..=1.
        p: f64,
    },
    /// Two-state Markov chain: in the bad state every packet is lost, in
    /// the good state none is. `mean_burst` is the mean run of losses.
    GilbertElliott {
        /// Long-run loss probability, 0..1.
        p: f64,
        /// Mean number of consecutive losses, ≥ 1.
        mean_burst: f64,
    },
}

impl LossModel {
    /// No loss.
    pub const NONE: Self = Self::Bernoulli { p: 0.0 };

    /// The long-run loss rate.
    pub fn rate(&self) -> f64 {
        match *self {
            Self::Bernoulli { p } | Self::GilbertElliott { p, .. } => p,
        }
    }
}

/// Settings of one direction of a link.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LinkConfig {
    /// Bottleneck rate in bits per second; `None` for unlimited.
    pub rate_bps: Option<u64>,
    /// Bottleneck queue in bytes (tail drop when full).
    pub queue_bytes: u64,
    /// One-way propagation delay.
    pub delay: Duration,
    /// Uniform jitter added to the delay, in `±jitter`.
    pub jitter: Duration,
    /// Random loss after the bottleneck.
    pub loss: LossModel,
    /// Probability that a packet skips ahead of earlier ones.
    pub reorder: f64,
    /// Probability that a packet arrives twice.
    pub duplicate: f64,
    /// The first this many packets offered are lost, whatever else is set:
    /// a lost handshake, on purpose (counted as random loss).
    pub drop_first: u64,
    /// Largest packet (UDP payload bytes) the link carries; larger ones
    /// vanish. `None`: any size.
    pub max_packet: Option<usize>,
}

impl Default for LinkConfig {
    /// A perfect link: no rate limit, no delay, no loss.
    fn default() -> Self {
        Self {
            rate_bps: None,
            queue_bytes: 0,
            delay: Duration::ZERO,
            jitter: Duration::ZERO,
            loss: LossModel::NONE,
            reorder: 0.0,
            duplicate: 0.0,
            drop_first: 0,
            max_packet: None,
        }
    }
}

/// The most packet bytes one direction of an emulated link may hold (in
/// its queue and on its way): a bound on the emulator's memory, so a
/// scenario of 10 Gbit/s over a 10 s delay is refused up front instead of
/// swapping the machine.
pub const MAX_BYTES_HELD: u64 = 1 << 30;

impl LinkConfig {
    /// The most bytes this direction holds at once at full rate: the queue
    /// plus what the rate puts on the wire during the longest delay. An
    /// unlimited rate is counted at 10 Gbit/s (more than the emulators move).
    pub fn bytes_held(&self) -> u64 {
        let rate = self.rate_bps.unwrap_or(10_000_000_000) as f64 / 8.0;
        let longest = (self.delay + self.jitter).as_secs_f64();
        self.queue_bytes.saturating_add((rate * longest) as u64)
    }

    /// The queue a scenario gets when it names none: 1.5 × the bandwidth-delay
    /// product of a round trip over this direction's delay (both directions
    /// alike), and never less than 64 full-size packets.
    pub fn default_queue_bytes(rate_bps: u64, one_way_delay: Duration) -> u64 {
        let bdp = rate_bps as f64 / 8.0 * (2.0 * one_way_delay.as_secs_f64());
        (1.5 * bdp).max(64.0 * 1500.0) as u64
    }

    /// Checks the ranges; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        let prob = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!(
                    "{name} must be between 0% and 100%, got {}%",
                    v * 100.0
                ))
            }
        };
        prob("loss", self.loss.rate())?;
        prob("reorder", self.reorder)?;
        prob("duplicate", self.duplicate)?;
        if let LossModel::GilbertElliott { p, mean_burst } = self.loss {
            if mean_burst < 1.0 {
                return Err(format!(
                    "loss-burst must be at least 1 packet, got {mean_burst}"
                ));
            }
            if p >= 1.0 {
                return Err("bursty loss must be below 100%".into());
            }
        }
        if let Some(max) = self.max_packet {
            if !(1200..=65_527).contains(&max) {
                return Err(format!(
                    "max-packet must be 1200 to 65527 bytes (QUIC needs 1200), got {max}"
                ));
            }
        }
        if self.rate_bps == Some(0) {
            return Err("rate must be positive".into());
        }
        let held = self.bytes_held();
        if held > MAX_BYTES_HELD {
            return Err(format!(
                "rate × delay and queue would hold {:.1} GiB in the emulator, above the {} GiB \
                 it may hold per direction: lower the rate, the delay or the queue",
                held as f64 / (1u64 << 30) as f64,
                MAX_BYTES_HELD >> 30
            ));
        }
        if self.rate_bps.is_some() && self.queue_bytes < 1500 {
            return Err(format!(
                "queue must hold at least one 1500-byte packet, got {} bytes",
                self.queue_bytes
            ));
        }
        Ok(())
    }
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drop {
    /// The bottleneck queue was full.
    Queue,
    /// Random loss.
    Random,
    /// Larger than the link's `max_packet`.
    TooBig,
}

/// What the link does with one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Lost.
    Dropped(Drop),
    /// Arrives at `at`, `copies` times (1 or 2).
    Deliver {
        /// Arrival time.
        at: Instant,
        /// 2 when duplicated.
        copies: u8,
    },
}

/// Counters of what the link did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LinkStats {
    /// Packets offered.
    pub offered: u64,
    /// Bytes offered (what the sender put on the wire).
    pub offered_bytes: u64,
    /// Packets delivered (duplicates counted once).
    pub forwarded: u64,
    /// Bytes delivered (duplicates counted once).
    pub forwarded_bytes: u64,
    /// Dropped by random loss.
    pub dropped_random: u64,
    /// Dropped because the queue was full.
    pub dropped_queue: u64,
    /// Dropped for being larger than `max_packet`.
    pub dropped_too_big: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Packets that skipped ahead.
    pub reordered: u64,
}

/// One direction of an emulated link.
#[derive(Debug)]
pub struct LinkModel {
    config: LinkConfig,
    rng: StdRng,
    /// When the bottleneck finishes serializing everything queued so far.
    busy_until: Option<Instant>,
    /// Gilbert-Elliott state: true while in the bad (losing) state.
    in_bad_state: bool,
    /// Latest arrival handed out to an in-order packet.
    last_arrival: Option<Instant>,
    stats: LinkStats,
}

impl LinkModel {
    /// A link with `config`, randomized from `seed`.
    pub fn new(config: LinkConfig, seed: u64) -> Self {
        Self {
            config,
            rng: StdRng::seed_from_u64(seed),
            busy_until: None,
            in_bad_state: false,
            last_arrival: None,
            stats: LinkStats::default(),
        }
    }

    /// The settings.
    pub fn config(&self) -> &LinkConfig {
        &self.config
    }

    /// What happened so far.
    pub fn stats(&self) -> LinkStats {
        self.stats
    }

    /// Bytes waiting in the bottleneck queue at `now`.
    pub fn queued_bytes(&self, now: Instant) -> u64 {
        match (self.config.rate_bps, self.busy_until) {
            (Some(rate), Some(busy)) if busy > now => {
                ((busy - now).as_secs_f64() * rate as f64 / 8.0) as u64
            }
            _ => 0,
        }
    }

    /// Offers a packet of `len` bytes at `now`.
    pub fn offer(&mut self, now: Instant, len: usize) -> Verdict {
        self.stats.offered += 1;
        self.stats.offered_bytes += len as u64;
        if self.config.max_packet.is_some_and(|max| len > max) {
            self.stats.dropped_too_big += 1;
            return Verdict::Dropped(Drop::TooBig);
        }
        let departs = match self.config.rate_bps {
            None => now,
            Some(rate) => {
                if self.queued_bytes(now) + len as u64 > self.config.queue_bytes {
                    self.stats.dropped_queue += 1;
                    return Verdict::Dropped(Drop::Queue);
                }
                let start = self.busy_until.map_or(now, |b| b.max(now));
                let done = start + Duration::from_secs_f64(len as f64 * 8.0 / rate as f64);
                self.busy_until = Some(done);
                done
            }
        };
        if self.stats.offered <= self.config.drop_first || self.lose() {
            self.stats.dropped_random += 1;
            return Verdict::Dropped(Drop::Random);
        }
        let at = if self.config.reorder > 0.0 && self.rng.random_bool(self.config.reorder) {
            self.stats.reordered += 1;
            departs + self.config.delay / 2
        } else {
            let mut at = departs + self.config.delay;
            if !self.config.jitter.is_zero() {
                let j = self.config.jitter.as_secs_f64();
                let offset = self.rng.random_range(-j..=j);
                at = if offset >= 0.0 {
                    at + Duration::from_secs_f64(offset)
                } else {
                    at.checked_sub(Duration::from_secs_f64(-offset))
                        .unwrap_or(at)
                        .max(departs)
                };
            }
            // Jitter alone does not reorder: a packet never overtakes one
            // that entered the link before it.
            if let Some(last) = self.last_arrival {
                at = at.max(last);
            }
            self.last_arrival = Some(at);
            at
        };
        let copies = if self.config.duplicate > 0.0 && self.rng.random_bool(self.config.duplicate) {
            self.stats.duplicated += 1;
            2
        } else {
            1
        };
        self.stats.forwarded += 1;
        self.stats.forwarded_bytes += len as u64;
        Verdict::Deliver { at, copies }
    }

    fn lose(&mut self) -> bool {
        match self.config.loss {
            LossModel::Bernoulli { p } => p > 0.0 && self.rng.random_bool(p.min(1.0)),
            LossModel::GilbertElliott { p, mean_burst } => {
                if p <= 0.0 {
                    return false;
                }
                // Leave the bad state with 1/mean_burst per packet; enter it
                // at the rate that makes its long-run share equal to p.
                let leave = (1.0 / mean_burst).min(1.0);
                let enter = (p * leave / (1.0 - p)).min(1.0);
                self.in_bad_state = if self.in_bad_state {
                    !self.rng.random_bool(leave)
                } else {
                    self.rng.random_bool(enter)
                };
                self.in_bad_state
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests pick an arbitrary start
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn packets_above_the_path_mtu_vanish_and_smaller_ones_pass() {
        let mut link = LinkModel::new(
            LinkConfig {
                max_packet: Some(1472),
                ..LinkConfig::default()
            },
            1,
        );
        let t = Instant::now();
        assert_eq!(link.offer(t, 6550), Verdict::Dropped(Drop::TooBig));
        assert!(matches!(link.offer(t, 1472), Verdict::Deliver { .. }));
        assert_eq!(link.offer(t, 1473), Verdict::Dropped(Drop::TooBig));
        let s = link.stats();
        assert_eq!((s.offered, s.forwarded, s.dropped_too_big), (3, 1, 2));
    }

    #[test]
    fn drop_first_loses_exactly_the_first_packets() {
        let cfg = LinkConfig {
            drop_first: 2,
            ..Default::default()
        };
        let mut link = LinkModel::new(cfg, 1);
        let t = Instant::now();
        let verdicts: Vec<_> = (0..4).map(|_| link.offer(t, 1200)).collect();
        assert_eq!(verdicts[0], Verdict::Dropped(Drop::Random));
        assert_eq!(verdicts[1], Verdict::Dropped(Drop::Random));
        assert!(matches!(verdicts[2], Verdict::Deliver { .. }));
        assert!(matches!(verdicts[3], Verdict::Deliver { .. }));
        assert_eq!(link.stats().dropped_random, 2);
    }

    #[test]
    fn bernoulli_loss_matches_the_setting() {
        let cfg = LinkConfig {
            loss: LossModel::Bernoulli { p: 0.05 },
            ..Default::default()
        };
        let mut link = LinkModel::new(cfg, 1);
        let t = Instant::now();
        for _ in 0..200_000 {
            link.offer(t, 1200);
        }
        let s = link.stats();
        let loss = s.dropped_random as f64 / s.offered as f64;
        // 200k trials: standard error ≈ 0.05 %, tolerance 0.3 points.
        assert!((loss - 0.05).abs() < 0.003, "measured {loss}");
    }

    #[test]
    fn gilbert_elliott_loss_and_burst_length_match_the_setting() {
        let cfg = LinkConfig {
            loss: LossModel::GilbertElliott {
                p: 0.05,
                mean_burst: 5.0,
            },
            ..Default::default()
        };
        let mut link = LinkModel::new(cfg, 2);
        let t = Instant::now();
        let (mut bursts, mut lost, mut run) = (0u64, 0u64, 0u64);
        for _ in 0..1_000_000 {
            if matches!(link.offer(t, 1200), Verdict::Dropped(_)) {
                lost += 1;
                run += 1;
            } else if run > 0 {
                bursts += 1;
                run = 0;
            }
        }
        let loss = lost as f64 / 1e6;
        let mean_burst = lost as f64 / bursts as f64;
        // Bursty loss converges slower than Bernoulli: ±0.5 points, ±10 %.
        assert!((loss - 0.05).abs() < 0.005, "loss {loss}");
        assert!((mean_burst - 5.0).abs() < 0.5, "mean burst {mean_burst}");
    }

    #[test]
    fn delay_and_jitter_stay_in_bounds_and_keep_order() {
        let cfg = LinkConfig {
            delay: ms(20),
            jitter: ms(2),
            ..Default::default()
        };
        let t0 = Instant::now();
        // Dense traffic (100 µs apart): bounds and order hold.
        let mut link = LinkModel::new(cfg.clone(), 3);
        let mut last = t0;
        for i in 0..10_000u64 {
            let now = t0 + Duration::from_micros(i * 100);
            let Verdict::Deliver { at, copies: 1 } = link.offer(now, 1200) else {
                panic!()
            };
            let d = at - now;
            assert!(d >= ms(18) && d <= ms(22), "{d:?}");
            assert!(at >= last, "reordered without reorder set");
            last = at;
        }
        // Sparse traffic (5 ms apart, wider than the jitter): the mean is the delay.
        let mut link = LinkModel::new(cfg, 3);
        let mut total = Duration::ZERO;
        for i in 0..10_000u64 {
            let now = t0 + ms(5) * i as u32;
            let Verdict::Deliver { at, .. } = link.offer(now, 1200) else {
                panic!()
            };
            total += at - now;
        }
        let mean = total / 10_000;
        assert!(
            mean >= Duration::from_micros(19_950) && mean <= Duration::from_micros(20_050),
            "mean {mean:?}"
        );
    }

    #[test]
    fn the_bottleneck_delivers_its_rate_and_drops_the_excess() {
        // Offer 200 Mbit/s of 1500-byte packets to a 100 Mbit/s link for 2 s.
        let cfg = LinkConfig {
            rate_bps: Some(100_000_000),
            queue_bytes: 150_000,
            ..Default::default()
        };
        let mut link = LinkModel::new(cfg, 4);
        let t0 = Instant::now();
        let gap = Duration::from_secs_f64(1500.0 * 8.0 / 200e6);
        let mut last_at = t0;
        let mut max_wait = Duration::ZERO;
        for i in 0..(2.0 / gap.as_secs_f64()) as u32 {
            let now = t0 + gap * i;
            if let Verdict::Deliver { at, .. } = link.offer(now, 1500) {
                max_wait = max_wait.max(at - now);
                last_at = at;
            }
        }
        let s = link.stats();
        let rate = s.forwarded_bytes as f64 * 8.0 / (last_at - t0).as_secs_f64();
        assert!((rate / 100e6 - 1.0).abs() < 0.01, "delivered {rate} bit/s");
        let drop_share = s.dropped_queue as f64 / s.offered as f64;
        assert!((drop_share - 0.5).abs() < 0.02, "dropped {drop_share}");
        // Queueing delay never exceeds queue / rate (12 ms) plus one packet.
        assert!(
            max_wait <= ms(12) + Duration::from_micros(120),
            "{max_wait:?}"
        );
    }

    #[test]
    fn duplication_and_reordering_happen_at_their_rates() {
        let cfg = LinkConfig {
            delay: ms(10),
            reorder: 0.1,
            duplicate: 0.02,
            ..Default::default()
        };
        let mut link = LinkModel::new(cfg, 5);
        let t0 = Instant::now();
        for i in 0..100_000u64 {
            link.offer(t0 + Duration::from_micros(i * 10), 100);
        }
        let s = link.stats();
        assert!((s.reordered as f64 / 1e5 - 0.1).abs() < 0.005, "{s:?}");
        assert!((s.duplicated as f64 / 1e5 - 0.02).abs() < 0.002, "{s:?}");
    }

    #[test]
    fn validation_names_the_field() {
        let bad = |c: LinkConfig| c.validate().unwrap_err();
        assert!(
            bad(LinkConfig {
                loss: LossModel::Bernoulli { p: 1.5 },
                ..Default::default()
            })
            .contains("loss")
        );
        assert!(
            bad(LinkConfig {
                reorder: -0.1,
                ..Default::default()
            })
            .contains("reorder")
        );
        assert!(
            bad(LinkConfig {
                rate_bps: Some(0),
                ..Default::default()
            })
            .contains("rate")
        );
        assert!(
            bad(LinkConfig {
                rate_bps: Some(10_000_000_000),
                queue_bytes: 1 << 20,
                delay: Duration::from_secs(1),
                ..Default::default()
            })
            .contains("would hold 1.2 GiB in the emulator, above the 1 GiB")
        );
        assert!(
            bad(LinkConfig {
                max_packet: Some(1000),
                ..Default::default()
            })
            .contains("max-packet must be 1200 to 65527 bytes")
        );
        assert!(
            bad(LinkConfig {
                loss: LossModel::GilbertElliott {
                    p: 0.1,
                    mean_burst: 0.5
                },
                ..Default::default()
            })
            .contains("loss-burst")
        );
        assert!(
            bad(LinkConfig {
                rate_bps: Some(1000),
                queue_bytes: 10,
                ..Default::default()
            })
            .contains("queue")
        );
    }

    proptest! {
        #[test]
        fn same_seed_same_verdicts(seed: u64, sizes in proptest::collection::vec(1usize..1500, 1..200)) {
            let cfg = LinkConfig {
                rate_bps: Some(10_000_000), queue_bytes: 20_000, delay: ms(5), jitter: ms(1),
                loss: LossModel::GilbertElliott { p: 0.1, mean_burst: 3.0 }, reorder: 0.05, duplicate: 0.05, drop_first: 1, max_packet: Some(1400),
            };
            let t0 = Instant::now();
            let mut a = LinkModel::new(cfg.clone(), seed);
            let mut b = LinkModel::new(cfg, seed);
            for (i, &len) in sizes.iter().enumerate() {
                let now = t0 + Duration::from_micros(i as u64 * 300);
                let va = a.offer(now, len);
                prop_assert_eq!(va, b.offer(now, len));
                if let Verdict::Deliver { at, .. } = va {
                    prop_assert!(at >= now, "arrives before it was sent");
                }
            }
        }
    }
}
