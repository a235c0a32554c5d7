//! Simulation tests of the FEC plane on long and hostile links (issue 13):
//! a satellite round trip and heavy loss in both directions, where the
//! receiver's reports and acknowledgements are lost too. Cores only, on a
//! virtual clock (see `sim/mod.rs`: control frames ride ordered streams
//! that stall behind a lost packet; reports are datagrams).

mod sim;

use std::time::Duration;

use chunkstream_engine::multipath::priority::Class;
use sim::{PathSpec, Scenario};

const MIB: u64 = 1 << 20;

fn one_path(mbit: u64, rtt_ms: u64, loss: f64, size: u64, seed: u64) -> sim::Outcome {
    let scenario = Scenario {
        paths: vec![PathSpec {
            mbit,
            rtt_ms,
            loss,
            back_loss: loss,
        }],
        files: vec![(size, Class::Normal)],
        seed,
        cuts: vec![],
        max_rate: None,
        limit: Duration::from_secs(60),
        memory: vec![],
    };
    let out = sim::run(&scenario);
    assert!(out.finished.is_some(), "the transfer finishes");
    assert_eq!(out.files_verified, 1);
    assert_eq!(out.blocks_verified, size / MIB);
    out
}

/// What the path carries of file bytes: its rate less loss and the 40
/// bytes of QUIC, UDP and IP each shard datagram carries.
fn ceiling(mbit: u64, loss: f64) -> f64 {
    let per = sim::SHARD_BYTES as f64;
    mbit as f64 * 1e6 / 8.0 * (1.0 - loss) * per / (per + 15.0 + 40.0)
}

#[test]
fn a_satellite_link_losing_five_percent_both_ways_keeps_its_rate() {
    let out = one_path(200, 1000, 0.05, 256 * MIB, 21);
    let finished = out.finished.unwrap();
    // Steady state from the sixth second (start-up takes two round trips
    // after the first report, see `fec::rate`) to two seconds before the
    // end (acknowledgements lag the data by a round trip and more).
    let steady = out.goodput_between(Duration::from_secs(6), finished - Duration::from_secs(2));
    let whole = (256 * MIB) as f64 / finished.as_secs_f64();
    let cap = ceiling(200, 0.05);
    eprintln!(
        "1 s RTT, 5 % both ways: finished {finished:?}, steady {:.1} Mbit/s = {:.3} of {:.1}, whole {:.3}",
        steady * 8e-6,
        steady / cap,
        cap * 8e-6,
        whole / cap
    );
    assert!(
        steady >= 0.85 * cap,
        "steady {:.3} of the ceiling",
        steady / cap
    );
    // Start to finish: 0.750 before the blocks in flight at the end took
    // spare capacity as margin (`SendAccounts::spare`), 0.803 with it.
    assert!(
        whole >= 0.78 * cap,
        "whole {:.3} of the ceiling",
        whole / cap
    );
}

#[test]
fn thirty_percent_loss_both_ways_keeps_most_of_the_rate() {
    for (loss, bar, seed) in [(0.2, 0.8, 22), (0.3, 0.7, 23)] {
        let out = one_path(200, 40, loss, 128 * MIB, seed);
        let finished = out.finished.unwrap();
        let steady = out.goodput_between(
            Duration::from_secs(1),
            finished - Duration::from_millis(200),
        );
        let cap = ceiling(200, loss);
        eprintln!(
            "40 ms RTT, {loss} both ways: finished {finished:?}, steady {:.1} Mbit/s = {:.3} of {:.1}, repairs {}",
            steady * 8e-6,
            steady / cap,
            cap * 8e-6,
            out.repairs
        );
        assert!(
            steady >= bar * cap,
            "loss {loss}: {:.3} of the ceiling",
            steady / cap
        );
    }
}

#[test]
fn the_loss_level_learned_is_the_paths_loss() {
    // 200 Mbit/s, 40 ms, 5 % both ways. The steady state's probe moves
    // shards across the receiver's round edges, so its count swings low
    // and high around the truth for three rounds; learning from those
    // rounds left the level at 3-4 % (capacity read ~2 % low).
    // Startup's trains (from 20 ms RTT) swing the receiver's count more:
    // a first level taken whole from one round of ~200 packets was 9.5 %
    // for one seed in fourteen, and held the capacity high enough that
    // steady state queued and never learned again. Over ten seeds the
    // levels are 3.7-5.4 % (before the trains, 4.0-5.4 %).
    for seed in 31..=40 {
        let out = one_path(200, 40, 0.05, 64 * MIB, seed);
        let level = out.loss_per_path[0];
        eprintln!("seed {seed}: level {level:.4}, finished {:?}", out.finished);
        assert!(
            (0.035..=0.06).contains(&level),
            "seed {seed}: learned {level:.4} of 5 % loss"
        );
    }
}

#[test]
fn a_cold_64_mib_send_at_40_ms_and_5_percent_both_ways_meets_the_bar() {
    // Issue 13: 200 Mbit/s, 40 ms, 5 % both ways, 64 MiB at 0.9 × 190
    // Mbit/s or better, that is within 3.14 s of the first packet. Growing
    // from 10 Mbit/s at 2.5× the delivered rate took 3.19-3.26 s here;
    // probe trains find the rate in under three round trips (3.08-3.09 s).
    for seed in [51, 52, 53] {
        let out = one_path(200, 40, 0.05, 64 * MIB, seed);
        let finished = out.finished.unwrap();
        let mbit = (64 * MIB) as f64 * 8e-6 / finished.as_secs_f64();
        eprintln!("seed {seed}: finished {finished:?}, {mbit:.1} Mbit/s");
        assert!(
            finished <= Duration::from_millis(3_140),
            "seed {seed}: {finished:?} ({mbit:.1} Mbit/s)"
        );
    }
}

#[test]
fn a_short_transfer_over_a_long_lossy_path_needs_no_repair_round() {
    // 8 MiB over 200 Mbit/s, 1 s RTT, 5 % both ways: the blocks leave in
    // the first two round trips, before the loss is measured. Protected
    // for the prior, they need no repair, which would cost a round trip
    // (a second) more at the end.
    // With 1 % up front (before the prior): 4.03-4.04 s, 146-185 repairs.
    for seed in [41, 42, 43, 44] {
        let out = one_path(200, 1000, 0.05, 8 * MIB, seed);
        let finished = out.finished.unwrap();
        eprintln!(
            "seed {seed}: finished {finished:?}, repairs {}",
            out.repairs
        );
        assert!(
            finished <= Duration::from_millis(2_500),
            "seed {seed}: {finished:?}"
        );
        assert_eq!(out.repairs, 0, "seed {seed}");
    }
}
