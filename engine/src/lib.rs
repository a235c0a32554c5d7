//! # chunkstream-engine
//!
//! Moves files between two hosts over QUIC, verified end to end with BLAKE3.
//! This crate holds everything that moves bytes; the `chunkstream-engine`
//! executable (crate `chunkstream-cli`) is argument parsing and output.
//!
//! ## Data flow (sender → receiver)
//!
//! ```text
//! files ─► source: reader thread (io_uring, QUEUE_DEPTH reads in flight; pread fallback)
//!            filling pooled buffers (bounded memory, LIFO reuse)
//!       ─► work: Rayon job per block: BLAKE3 block digest (+ Reed-Solomon recovery
//!            shards on the FEC plane)
//!       ─► session::sender: one QUIC uni stream per block, header + the pooled buffer
//!            itself (no copy before quinn packetizes it); FILE_HASH once a file is hashed
//!       ═══ quinn connection (TLS 1.3, pinned fingerprint, token) ═══
//!       ─► session::receiver: per-stream task reads the block, Rayon verifies its digest,
//!            the session's writer thread pwrites it into NAME.part
//!       ─► session::tracker: when every block and the FILE_HASH are in, merge digests,
//!            compare, (fsync), rename NAME.part → NAME, FILE_DONE to the sender
//! ```
//!
//! The sender is [`send`]: a sans-IO core ([`send::core::SenderCore`]) and
//! one driver around it, for both planes. On the FEC plane (the default)
//! shards go out as
//! QUIC datagrams over every path, each path paced by its own [`fec::rate`]
//! controller; the receiver files them in a [`fec::collector`] whichever
//! path they came on ([`session::fec_receive`]), decodes a block from any
//! `k` shards on Rayon, and reports per path what arrived and, for the
//! session, which blocks still need how many shards; [`fec::accounts`]
//! answers with fresh recovery shards (judging each report by when it was
//! written, [`fec::report_clock`]). On the reliable plane each block is a
//! stream of its own, on the path the path manager picks.
//!
//! ## Module map
//!
//! Sans-IO modules (pure, clock passed in where time matters) are marked *.
//!
//! | module | what it does |
//! |---|---|
//! | [`wire`] * | protocol v1: frames and block headers, the bounds-checked decoder |
//! | [`hash`] * | per-block BLAKE3 digests merged into the whole-file hash |
//! | [`journal`] * | the receiver's block journal beside `NAME.part`: format v1, parsing that stops at the first torn record |
//! | [`manifest`] * | files, sizes, block geometry; expanding `send PATH...` |
//! | [`names`] | which received names are safe; creating `.part` files inside `--out` |
//! | [`source`] | reader backends (io_uring, pread) and the buffer pool |
//! | [`work`] | the Rayon stage between reader and network |
//! | [`fec`] * | FEC plane: codec geometry, shard collector, block accounts, report clock, rate controller, quinn window adapter |
//! | [`multipath`] * | path manager (ECF, liveness, re-dial), the DRR priority scheduler, the `--path` list |
//! | [`send`] | the sender: `core` * (every decision, either plane, any number of paths), `streams` * (the reliable plane's dispatch) and the driver, with its `links` (the connections), `dialer` and `outbox` (blocks held, transmits made bytes) |
//! | [`transport`] | quinn endpoints, windows sized for high BDP, identity and pinning |
//! | [`metrics`] | block latency percentiles (hdrhistogram) |
//! | [`session`] | the handshake and choice of plane, the receiver; `receive_core` * (every decision of a receiving session); `tracker` *, `fec_receive` * and `pacer` * are sans-IO |
//!
//! ## Glossary
//!
//! * **block**: a power-of-two slice of a file (default 1 MiB), hashed and sent
//!   on its own; the unit of verification and acknowledgement.
//! * **block digest**: the block's BLAKE3 chaining value (or, for a one-block
//!   file, the file's hash), see [`hash`].
//! * **fingerprint**: BLAKE3 of the receiver's certificate; the sender pins it.
//! * **token**: the shared secret the sender proves it knows in HELLO.
//! * **reliable plane**: blocks on QUIC streams, QUIC retransmits.
//! * **FEC plane**: blocks as Reed-Solomon-coded shards in QUIC datagrams;
//!   loss is repaired with fresh recovery shards, pacing is ours.
//! * **shard**: one datagram's worth of a block: source (`index < k`) or
//!   recovery.

pub mod fec;
pub mod hash;
pub mod journal;
pub mod manifest;
pub mod metrics;
pub mod multipath;
pub mod names;
pub mod send;
pub mod session;
pub mod source;
pub mod ticket;
pub mod transport;
pub mod wire;
pub mod work;
