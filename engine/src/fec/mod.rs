//! The FEC data plane: blocks as Reed-Solomon-coded shards in QUIC
//! DATAGRAM frames, with rate control of our own.
//!
//! Sans-IO parts, each its own module, driven by the session drivers
//! ([`crate::session`]):
//!
//! * [`codec`]: a block's [`codec::Geometry`], its recovery shards, and
//!   reconstruction from any `k` shards.
//! * [`collector`]: the receiver's shards per block, what each incomplete
//!   block still needs, when one is complete.
//! * [`accounts`]: the sender's shards per block, and the repair decision
//!   when the receiver reports a deficit.
//! * [`report_clock`]: when a receiver's report was written, on the
//!   sender's clock, so that a report read late is judged by its age.
//! * [`path_loss`]: the shards a receiver's report could count, for a
//!   forward loss blind to loss on the way back.
//! * [`rate`]: the rate controller: delivered rate, queueing delay, random
//!   versus congestive loss.
//! * [`shard_pacer`]: how many shards may leave now at the controlled
//!   rate.
//! * [`cc`]: the adapter that puts [`rate`]'s window into quinn's congestion
//!   control.
//!
//! The wire format of shards and of the FEC control frames is written down
//! in [`crate::wire`].

pub mod accounts;
pub mod cc;
pub mod codec;
pub mod collector;
pub mod path_loss;
pub mod rate;
pub mod report_clock;
pub mod shard_pacer;
