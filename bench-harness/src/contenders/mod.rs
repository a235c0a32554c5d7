//! Contenders that are not `chunkstream-engine send` itself.
//!
//! * [`plain_quinn`]: one quinn stream carrying the file, Cubic or BBR, the
//!   yardstick for "QUIC without our engine". Runs as the hidden
//!   `chunkstream-engine bench-peer quinn-recv|quinn-send` subcommands so that
//!   it is a separate process like every other contender.
//! * [`plain_tcp`]: a TCP file copy with the congestion controller named
//!   (`bench-peer tcp-recv|tcp-send`); it needs the TUN backend to cross the
//!   emulated link.

pub mod plain_quinn;
pub mod plain_tcp;
