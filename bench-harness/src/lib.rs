//! # chunkstream-bench-harness
//!
//! Measures chunkstream-engine on bad links, honestly. The `bench` and
//! `compare` subcommands of `chunkstream-engine` are thin wrappers around
//! this crate.
//!
//! | module | what it does |
//! |---|---|
//! | [`link`] | sans-IO link model (rate, queue, loss, delay, jitter) and the UDP relay that drives it |
//! | [`scenario`] | TOML scenarios with strict validation; sweeps expand into points |
//! | [`contenders`] | baselines that are not chunkstream (plain quinn, Cubic or BBR) |
//! | [`runner`] | runs every contender over the same emulated links, verifies every transfer |
//! | [`report`] | the versioned JSON report |
//! | [`compare`] | reports side by side, with ratios |
//! | [`plot`] | goodput against loss as SVG |
//! | [`units`] | sizes, rates, durations and percentages, for scenarios and flags |
//! | [`usage`] | CPU time and peak RSS of a process |

pub mod compare;
pub mod contenders;
pub mod link;
pub mod plot;
pub mod report;
pub mod runner;
pub mod scenario;
pub mod units;
pub mod usage;
