//! Simulation tests of the FEC plane over several paths: the sender core
//! against the receiver's sans-IO pieces on seeded, simulated links with a
//! virtual clock (see `sim/mod.rs`).

mod sim;

use std::time::Duration;

use chunkstream_engine::multipath::priority::Class;
use sim::{Cut, PathSpec, Scenario};

const MIB: u64 = 1 << 20;

fn three_paths(loss: [f64; 3]) -> Vec<PathSpec> {
    vec![
        PathSpec::new(60, 20, loss[0]),
        PathSpec::new(100, 30, loss[1]),
        PathSpec::new(140, 40, loss[2]),
    ]
}

/// Σ rate × (1 − loss), in bytes per second.
fn capacity(paths: &[PathSpec]) -> f64 {
    paths
        .iter()
        .map(|p| p.mbit as f64 * 1e6 / 8.0 * (1.0 - p.loss))
        .sum()
}

fn check_aggregate(loss: [f64; 3], seed: u64) {
    let paths = three_paths(loss);
    let cap = capacity(&paths);
    let scenario = Scenario {
        paths: paths.clone(),
        files: vec![(256 * MIB, Class::Normal)],
        seed,
        cuts: vec![],
        max_rate: None,
        limit: Duration::from_secs(30),
        memory: vec![],
    };
    let out = sim::run(&scenario);
    let finished = out.finished.expect("the transfer finishes");
    assert_eq!(out.files_verified, 1);
    assert_eq!(out.blocks_verified, 256);
    let goodput = out.goodput_after(Duration::from_secs(2));
    eprintln!(
        "loss {loss:?}: {finished:?}, goodput after 2 s {:.1} Mbit/s = {:.3} of {:.1}; shards per path {:?}, repairs {}",
        goodput * 8e-6,
        goodput / cap,
        cap * 8e-6,
        out.shards_per_path,
        out.repairs
    );
    assert!(
        goodput >= 0.9 * cap,
        "goodput {:.1} Mbit/s is under 0.9 × {:.1}",
        goodput * 8e-6,
        cap * 8e-6
    );
    // Every path carried its part.
    let total: u64 = out.shards_per_path.iter().sum();
    for (i, s) in out.shards_per_path.iter().enumerate() {
        let share = *s as f64 / total as f64;
        let want = paths[i].mbit as f64 / 300.0;
        assert!(
            (share - want).abs() < 0.1,
            "path {i} carried {share:.2}, its rate is {want:.2} of the sum"
        );
    }
}

#[test]
fn three_clean_to_lossy_paths_add_up() {
    check_aggregate([0.0, 0.01, 0.02], 1);
}

#[test]
fn three_paths_at_five_percent_add_up() {
    check_aggregate([0.05, 0.05, 0.05], 2);
}

#[test]
fn three_paths_with_mixed_loss_add_up() {
    check_aggregate([0.05, 0.0, 0.01], 3);
}

#[test]
fn a_path_that_dies_costs_under_a_second_and_its_shards_are_made_up() {
    let paths = three_paths([0.01, 0.01, 0.01]);
    let scenario = Scenario {
        paths: paths.clone(),
        files: vec![(192 * MIB, Class::Normal)],
        seed: 4,
        // The fastest path goes at 3 s and comes back at 5 s.
        cuts: vec![Cut {
            path: 2,
            at: Duration::from_secs(3),
            until: Some(Duration::from_secs(5)),
        }],
        max_rate: None,
        limit: Duration::from_secs(40),
        memory: vec![],
    };
    let out = sim::run(&scenario);
    let finished = out
        .finished
        .expect("the transfer finishes on the other paths");
    assert_eq!(out.files_verified, 1);
    assert_eq!(out.blocks_verified, 192);
    let stall = out.longest_stall_after(Duration::from_secs(1));
    eprintln!(
        "path 2 cut 3-5 s: finished {finished:?}, longest stall {stall:?}, shards per path {:?}",
        out.shards_per_path
    );
    assert!(stall <= Duration::from_secs(1), "no goodput for {stall:?}");
    // The two others carry on at their rates while it is gone.
    let during = out.goodput_between(Duration::from_millis(3500), Duration::from_secs(5));
    let others = capacity(&paths[..2]);
    eprintln!(
        "while cut: {:.1} of {:.1} Mbit/s",
        during * 8e-6,
        others * 8e-6
    );
    assert!(during >= 0.85 * others, "{during}");
}

#[test]
fn priority_classes_share_fec_paths_fifty_thirty_twenty() {
    let paths = three_paths([0.02, 0.02, 0.02]);
    let scenario = Scenario {
        paths,
        files: vec![
            (160 * MIB, Class::Critical),
            (160 * MIB, Class::High),
            (160 * MIB, Class::Normal),
        ],
        seed: 5,
        cuts: vec![],
        max_rate: None,
        limit: Duration::from_secs(40),
        memory: vec![],
    };
    let out = sim::run(&scenario);
    assert!(out.finished.is_some());
    assert_eq!(out.files_verified, 3);
    // While all three classes have data (Critical's 160 MiB lasts ~9 s).
    let shares = out.class_shares(Duration::from_secs(2), Duration::from_secs(7));
    eprintln!("shares {shares:?}");
    for (got, want) in shares.iter().zip([0.5, 0.3, 0.2]) {
        assert!((got - want).abs() <= 0.05, "shares {shares:?}");
    }
}

#[test]
fn max_rate_caps_the_sum_of_the_paths() {
    let paths = three_paths([0.0, 0.01, 0.0]);
    let cap = 100e6 / 8.0;
    let scenario = Scenario {
        paths,
        files: vec![(64 * MIB, Class::Normal)],
        seed: 6,
        cuts: vec![],
        max_rate: Some(cap),
        limit: Duration::from_secs(30),
        memory: vec![],
    };
    let out = sim::run(&scenario);
    assert!(out.finished.is_some());
    let goodput = out.goodput_after(Duration::from_secs(1));
    eprintln!("capped at 100 Mbit/s: {:.1} Mbit/s", goodput * 8e-6);
    assert!(goodput <= 1.02 * cap, "{goodput}");
    assert!(goodput >= 0.85 * cap, "{goodput}");
}
