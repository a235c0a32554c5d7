//! Contenders that are not `chunkstream-engine send` itself.
//!
//! * [`plain_quinn`]: one quinn stream carrying the file, Cubic or BBR, the
//!   yardstick for "QUIC without our engine". Runs as the hidden
//!   `chunkstream-engine bench-peer quinn-recv|quinn-send` subcommands so that
//!   it is a separate process like every other contender.
//! * [`plain_tcp`]: a TCP file copy with the congestion controller named
//!   (`bench-peer tcp-recv|tcp-send`); it needs the TUN backend to cross the
//!   emulated link.
//! * [`iperf3`]: iperf3's TCP test with the controller named; it moves
//!   memory, so its runs are reported as unverifiable.
//! * [`rsync_ssh`]: rsync over SSH to a private sshd on the far side.
//!
//! [`external`] runs such third-party programs and measures their cost.

pub mod external;
pub mod iperf3;
pub mod plain_quinn;
pub mod plain_tcp;
pub mod rsync_ssh;
