//! The TUN backend: two network namespaces joined by the link model, so that
//! any IP traffic (TCP as well as UDP) crosses the same emulated link, with
//! real delay, on kernels without netem. Needs root.
//!
//! ```text
//! namespace PREFIX-a                                   namespace PREFIX-b
//!   10.250.0.1 on tun PREFIXa ──[forward model]──► tun PREFIXb 10.250.0.2
//!                             ◄─[reverse model]──
//! ```
//!
//! Both TUN devices are created by this process (its file descriptors carry
//! the packets), then moved into their namespaces and addressed there. Run
//! programs on either side with [`TunLink::command`] (`ip netns exec`).
//! Dropping the link stops the bridge and deletes both namespaces, which
//! removes the devices; [`TunLink::start`] first removes leftovers of the
//! same prefix, so a crashed run does not block the next one.

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};
use tun_rs::{AsyncDevice, DeviceBuilder};

use super::bridge::{Bridge, Port, RelayStats};
use super::model::LinkConfig;

/// Address of side A.
pub const ADDR_A: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 1);
/// Address of side B.
pub const ADDR_B: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 2);

/// Two namespaces joined through the link model.
#[derive(Debug)]
pub struct TunLink {
    prefix: String,
    bridge: Bridge,
}

struct TunPort(AsyncDevice);

impl Port for TunPort {
    async fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.recv(buf).await
    }

    fn send(&self, packet: &[u8]) {
        let _ = self.0.try_send(packet);
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
        let valid = !prefix.is_empty()
            && prefix.len() <= 8
            && prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !valid {
            bail!("TUN link prefix {prefix:?} must be 1-8 lowercase letters or digits");
        }
        forward.validate().map_err(anyhow::Error::msg)?;
        reverse.validate().map_err(anyhow::Error::msg)?;
        delete_namespaces(prefix);
        match Self::build(prefix, forward, reverse, seed) {
            Ok(link) => Ok(link),
            Err(e) => {
                delete_namespaces(prefix);
                Err(e.context(
                    "cannot build the TUN link (needs root: network namespaces and /dev/net/tun)",
                ))
            }
        }
    }

    fn build(prefix: &str, forward: LinkConfig, reverse: LinkConfig, seed: u64) -> Result<Self> {
        let mut devices = Vec::new();
        for (side, addr) in [("a", ADDR_A), ("b", ADDR_B)] {
            let ns = format!("{prefix}-{side}");
            let dev_name = format!("{prefix}{side}");
            ip(&["netns", "add", &ns])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            let dev = DeviceBuilder::new()
                .name(dev_name.clone())
                .mtu(1500)
                .packet_information(false)
                .build_async()
                .with_context(|| format!("cannot create TUN device {dev_name}"))?;
            ip(&["link", "set", "dev", &dev_name, "netns", &ns])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                &dev_name,
            ])?;
            ip(&["-n", &ns, "link", "set", &dev_name, "up"])?;
            devices.push(TunPort(dev));
        }
        let b = devices.pop().expect("two devices");
        let a = devices.pop().expect("two devices");
        Ok(Self {
            prefix: prefix.to_owned(),
            bridge: Bridge::spawn(a, b, forward, reverse, seed),
        })
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

    /// Counts so far (forward = A → B).
    pub fn stats(&self) -> RelayStats {
        self.bridge.stats()
    }

    /// Stops the bridge, removes the namespaces, returns the final counts.
    pub async fn stop(mut self) -> RelayStats {
        self.bridge.stop().await
    }
}

impl Drop for TunLink {
    fn drop(&mut self) {
        delete_namespaces(&self.prefix);
    }
}
