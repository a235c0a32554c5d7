//! Contenders that are not `chunkstream-engine send` itself.
//!
//! * [`plain_quinn`]: one quinn stream carrying the file, Cubic or BBR, the
//!   yardstick for "QUIC without our engine". Runs as the hidden
//!   `chunkstream-engine bench-peer quinn-recv|quinn-send` subcommands so that
//!   it is a separate process like every other contender.

pub mod plain_quinn;
