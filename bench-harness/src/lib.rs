//! # chunkstream-bench-harness
//!
//! Measures chunkstream-engine on bad links, honestly: link emulation
//! ([`link`]), and (as the bench grows) scenarios, contenders, reports and
//! comparisons behind the `bench` and `compare` subcommands.

pub mod link;
pub mod scenario;
