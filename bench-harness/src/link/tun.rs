//! The TUN backend: two network namespaces joined by the link model, so that
//! any IP traffic (TCP as well as UDP) crosses the same emulated link, with
//! real delay, on kernels without netem. Needs root.
//!
//! ```text
//! namespace PREFIX-a                                    namespace PREFIX-b
//!   10.250.0.1 on tun PREFIXa0 ──[forward model]──► tun PREFIXb0 10.250.0.2
//!                              ◄─[reverse model]──
//!   10.250.1.1 on tun PREFIXa1 ──[path 2's models]── tun PREFIXb1 10.250.1.2
//!   ...
//! ```
//!
//! One pair of TUN devices per path, each path its own subnet
//! (10.250.i.0/24), so the kernel routes traffic for 10.250.i.2 over path
//! i: a multi-path sender (ours, or kernel MPTCP, see
//! [`TunLink::enable_mptcp`]) finds one interface per path, as on a host
//! with several uplinks. The devices are created by this process (its file
//! descriptors carry the packets), then moved into their namespaces and
//! addressed there. Run programs on either side with [`TunLink::command`]
//! (`ip netns exec`).
//! Dropping the link stops the bridge and deletes both namespaces, which
//! removes the devices; [`TunLink::start`] first removes leftovers of the
//! same prefix, so a crashed run does not block the next one.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};
use tun_rs::{AsyncDevice, DeviceBuilder};

use super::bridge::{Bridge, Packet, Port, RelayStats};
use super::model::LinkConfig;

/// Address of side A on the first path.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// Address of side B on the first path.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);
/// Most paths one link carries.
pub const MAX_PATHS: usize = 9;

/// Side A's (`true`) or side B's address on path `i`.
pub fn path_addr(i: usize, side_a: bool) -> Ipv4Addr {
    Ipv4Addr::new(10, 250, i as u8, if side_a { 1 } else { 2 })
}

/// Two namespaces joined through the link model, over one path or several.
#[derive(Debug)]
pub struct TunLink {
    prefix: String,
    bridges: Vec<Bridge>,
}

struct TunPort(AsyncDevice);

/// Packets a TUN port takes per wake-up: after the first (awaited), those
/// already queued in the device, without waiting. A TUN device reads one
/// packet per system call, but a wake-up of the bridge's task per packet
/// is what cost most: `tun_throughput` forwarded 1.29 Gbit/s with one
/// packet per wake-up.
const TUN_BATCH: usize = 64;

impl Port for TunPort {
    async fn recv(&self, out: &mut Vec<Packet>) -> std::io::Result<()> {
        let mut buf = [0u8; 65536];
        let packet = |n: usize, buf: &[u8]| Packet {
            flow: 0,
            bytes: buf[..n].to_vec(),
        };
        let n = self.0.recv(&mut buf).await?;
        out.push(packet(n, &buf));
        for _ in 1..TUN_BATCH {
            match self.0.try_recv(&mut buf) {
                Ok(n) => out.push(packet(n, &buf)),
                Err(_) => break,
            }
        }
        Ok(())
    }

    fn send(&self, packets: &[Packet]) {
        for p in packets {
            let _ = self.0.try_send(&p.bytes);
        }
    }
}

fn ip(args: &[&str]) -> Result<()> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("cannot run `ip` (install iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Kills whatever still runs in the namespaces (a server a contender left
/// behind, or one whose parent was killed), then deletes them: a namespace
/// outlives `ip netns del` while a process is in it.
fn delete_namespaces(prefix: &str) {
    for side in ["a", "b"] {
        let ns = format!("{prefix}-{side}");
        if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
            let pids: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter(|p| p.parse::<u32>().is_ok_and(|p| p != std::process::id()))
                .map(str::to_owned)
                .collect();
            if !pids.is_empty() {
                let _ = Command::new("kill").arg("-KILL").args(&pids).output();
            }
        }
        let _ = Command::new("ip").args(["netns", "del", &ns]).output();
    }
}

impl TunLink {
    /// Builds the namespaces `PREFIX-a` and `PREFIX-b` (prefix: 1-8 lowercase
    /// letters or digits) and starts the bridge. On any failure, whatever was
    /// built is removed before the error is returned.
    pub async fn start(
        prefix: &str,
        forward: LinkConfig,
        reverse: LinkConfig,
        seed: u64,
    ) -> Result<Self> {
        Self::start_paths(prefix, vec![(forward, reverse)], seed).await
    }

    /// As [`Self::start`], with one path per (forward, reverse) pair (at
    /// most [`MAX_PATHS`]).
    pub async fn start_paths(
        prefix: &str,
        paths: Vec<(LinkConfig, LinkConfig)>,
        seed: u64,
    ) -> Result<Self> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 8
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !valid {
            bail!("TUN link prefix {prefix:?} must be 1-8 lowercase letters or digits");
        }
        if paths.is_empty() || paths.len() > MAX_PATHS {
            bail!(
                "a TUN link carries 1 to {MAX_PATHS} paths, not {}",
                paths.len()
            );
        }
        for (forward, reverse) in &paths {
            forward.validate().map_err(anyhow::Error::msg)?;
            reverse.validate().map_err(anyhow::Error::msg)?;
        }
        delete_namespaces(prefix);
        match Self::build(prefix, paths, seed) {
            Ok(link) => Ok(link),
            Err(e) => {
                delete_namespaces(prefix);
                Err(e.context(
                    "cannot build the TUN link (needs root: network namespaces and /dev/net/tun)",
                ))
            }
        }
    }

    fn build(prefix: &str, paths: Vec<(LinkConfig, LinkConfig)>, seed: u64) -> Result<Self> {
        for side in ["a", "b"] {
            let ns = format!("{prefix}-{side}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
        }
        let mut bridges = Vec::new();
        for (i, (forward, reverse)) in paths.into_iter().enumerate() {
            let mut devices = Vec::new();
            for side_a in [true, false] {
                let side = if side_a { "a" } else { "b" };
                let ns = format!("{prefix}-{side}");
                let dev_name = Self::device_of(prefix, i, side_a);
                let dev = DeviceBuilder::new()
                    .name(dev_name.clone())
                    .mtu(1500)
                    .packet_information(false)
                    .build_async()
                    .with_context(|| format!("cannot create TUN device {dev_name}"))?;
                ip(&["link", "set", "dev", &dev_name, "netns", &ns])?;
                let addr = format!("{}/24", path_addr(i, side_a));
                ip(&["-n", &ns, "addr", "add", &addr, "dev", &dev_name])?;
                ip(&["-n", &ns, "link", "set", &dev_name, "up"])?;
                devices.push(TunPort(dev));
            }
            let b = devices.pop().expect("two devices");
            let a = devices.pop().expect("two devices");
            // Each path draws its own losses.
            let seed = seed.wrapping_add(7919 * i as u64);
            bridges.push(Bridge::spawn(a, b, forward, reverse, seed));
        }
        Ok(Self {
            prefix: prefix.to_owned(),
            bridges,
        })
    }

    fn device_of(prefix: &str, i: usize, side_a: bool) -> String {
        format!("{prefix}{}{i}", if side_a { "a" } else { "b" })
    }

    /// The TUN device of path `i` on side A (`true`) or B.
    pub fn device(&self, i: usize, side_a: bool) -> String {
        Self::device_of(&self.prefix, i, side_a)
    }

    /// Number of paths.
    pub fn paths(&self) -> usize {
        self.bridges.len()
    }

    /// Sets up kernel MPTCP over every path: side B announces its address
    /// on each path after the first (`ip mptcp endpoint ... signal`), and
    /// both sides accept that many extra subflows, so an MPTCP connection
    /// to side B's first address opens one subflow per path.
    pub fn enable_mptcp(&self) -> Result<()> {
        let extra = (self.paths() - 1).to_string();
        for side_a in [true, false] {
            let ns = self.namespace(side_a);
            ip(&[
                "-n",
                &ns,
                "mptcp",
                "limits",
                "set",
                "subflow",
                &extra,
                "add_addr_accepted",
                &extra,
            ])
            .context("cannot configure MPTCP (is net.mptcp.enabled set?)")?;
        }
        let ns = self.namespace(false);
        for i in 1..self.paths() {
            let addr = path_addr(i, false).to_string();
            let dev = self.device(i, false);
            ip(&[
                "-n", &ns, "mptcp", "endpoint", "add", &addr, "dev", &dev, "signal",
            ])?;
        }
        Ok(())
    }

    /// The namespace of side `a` (`true`) or `b` (`false`).
    pub fn namespace(&self, side_a: bool) -> String {
        format!("{}-{}", self.prefix, if side_a { "a" } else { "b" })
    }

    /// A command that runs `program` inside side A's or side B's namespace.
    pub fn command(&self, side_a: bool, program: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new("ip");
        cmd.args(["netns", "exec", &self.namespace(side_a), program]);
        cmd
    }

    /// Counts so far per path (forward = A → B).
    pub fn stats(&self) -> Vec<RelayStats> {
        self.bridges.iter().map(Bridge::stats).collect()
    }

    /// Stops the bridges, removes the namespaces, returns the final counts
    /// of the first path.
    pub async fn stop(self) -> RelayStats {
        self.stop_all().await.swap_remove(0)
    }

    /// Stops the bridges, removes the namespaces, returns every path's
    /// final counts.
    pub async fn stop_all(mut self) -> Vec<RelayStats> {
        let mut out = Vec::new();
        for b in &mut self.bridges {
            out.push(b.stop().await);
        }
        out
    }
}

impl Drop for TunLink {
    fn drop(&mut self) {
        delete_namespaces(&self.prefix);
    }
}
