//! The paths of a send, as the user gave them: `--path LOCAL=REMOTE[@RATE]`.
//!
//! [`PathSpec::parse`] reads one; [`PathList::new`] checks a whole list
//! once (no path twice, caps above zero) so that every driver gets a list
//! it can trust. The local side is an interface name (bound with
//! `SO_BINDTODEVICE`), a local address, or nothing (the routing table
//! decides). The optional `@RATE` caps that path alone (`@50mbit`,
//! `@10MB`: see [`parse_rate`]); `--max-rate` caps the sum.
//!
//! The figures a driver reports per path ([`PathChange`], [`PathRate`],
//! [`PathReport`]) live here too.

use std::net::{IpAddr, SocketAddr};

use quinn::Endpoint;

use super::manager::PathState;
use crate::session::SessionError;
use crate::transport::identity::{Fingerprint, PinnedCertVerifier};
use crate::transport::{Tuning, client_endpoint};

/// Which local interface a path leaves from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalBind {
    /// Whatever the routing table picks.
    Any,
    /// A local address.
    Addr(IpAddr),
    /// An interface name, bound with `SO_BINDTODEVICE`.
    Device(String),
}

impl std::str::FromStr for LocalBind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty local side".into());
        }
        if let Ok(ip) = s.parse() {
            return Ok(Self::Addr(ip));
        }
        if s.len() > 15 || s.contains(['/', ' ']) {
            return Err(format!(
                "{s:?} is neither an IP address nor an interface name"
            ));
        }
        Ok(Self::Device(s.to_owned()))
    }
}

/// One path: where it leaves from, the receiver's address on it, and its
/// own rate cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathSpec {
    /// Local side.
    pub local: LocalBind,
    /// The receiver's address on this network.
    pub remote: SocketAddr,
    /// Cap on this path alone, bytes per second (`@RATE`).
    pub cap: Option<u64>,
}

impl PathSpec {
    /// A name for displays: `LOCAL=REMOTE`.
    pub fn name(&self) -> String {
        match &self.local {
            LocalBind::Any => self.remote.to_string(),
            LocalBind::Addr(ip) => format!("{ip}={}", self.remote),
            LocalBind::Device(d) => format!("{d}={}", self.remote),
        }
    }

    /// A path from anywhere to `remote`, uncapped.
    pub fn to(remote: SocketAddr) -> Self {
        Self {
            local: LocalBind::Any,
            remote,
            cap: None,
        }
    }

    /// Parses `LOCAL=REMOTE[@RATE]` (`REMOTE` alone leaves from anywhere).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (body, cap) = match s.rsplit_once('@') {
            Some((b, rate)) => {
                let cap = parse_rate(rate).map_err(|e| format!("--path {s:?}: {e}"))?;
                (b, Some(cap))
            }
            None => (s, None),
        };
        let (local, remote) = match body.split_once('=') {
            Some((l, r)) => (l.parse()?, r),
            None => (LocalBind::Any, body),
        };
        let remote = std::net::ToSocketAddrs::to_socket_addrs(remote)
            .map_err(|e| format!("--path {s:?}: cannot resolve {remote:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("--path {s:?}: {remote:?} resolves to nothing"))?;
        Ok(Self { local, remote, cap })
    }

    /// The local address and device a socket of this path binds to.
    fn bind(&self) -> (SocketAddr, Option<&str>) {
        let any: IpAddr = if self.remote.is_ipv4() {
            std::net::Ipv4Addr::UNSPECIFIED.into()
        } else {
            std::net::Ipv6Addr::UNSPECIFIED.into()
        };
        let (addr, device) = match &self.local {
            LocalBind::Any => (any, None),
            LocalBind::Addr(ip) => (*ip, None),
            LocalBind::Device(d) => (any, Some(d.as_str())),
        };
        (SocketAddr::new(addr, 0), device)
    }

    /// The UDP payload this path's route carries by the kernel's account
    /// (`None` if it cannot tell; the dial will report a bad bind).
    pub fn route_payload(&self) -> Option<u16> {
        let (local, device) = self.bind();
        crate::transport::path_mtu::route_payload(local, device, self.remote)
            .inspect_err(|e| tracing::debug!(path = %self.name(), "route MTU unknown: {e}"))
            .ok()
    }

    /// The endpoint for this path.
    pub fn endpoint(
        &self,
        peer: Fingerprint,
        tuning: &Tuning,
    ) -> Result<(Endpoint, std::sync::Arc<PinnedCertVerifier>), SessionError> {
        let (local, device) = self.bind();
        client_endpoint(local, device, peer, tuning).map_err(|e| {
            // Name the path: with several, "No such device" alone says
            // nothing about which --path is wrong.
            SessionError::Usage(format!("--path {}: {e}", self.name()))
        })
    }
}

/// A path's state changed (for progress and `--json`).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathChange {
    /// Path index (order of `--path`).
    pub path: usize,
    /// `LOCAL=REMOTE`.
    pub name: String,
    /// New state.
    pub state: PathState,
    /// Seconds since the transfer started.
    pub at: f64,
    /// Why, when it went down.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// Per-path totals of a finished transfer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathReport {
    /// `LOCAL=REMOTE`.
    pub name: String,
    /// File bytes acknowledged on this path.
    pub bytes: u64,
    /// Bytes quinn put on the wire on this path (all its connections).
    pub wire_bytes: u64,
    /// Last smoothed RTT seen (ms).
    pub rtt_ms: f64,
    /// Final state.
    pub state: PathState,
    /// Share of the shards sent on it that did not arrive (FEC plane).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
    /// Whether its startup began from what an earlier transfer remembered
    /// of it (FEC plane; absent when nothing was remembered, `false` when
    /// its round trip had changed too much to trust the memory).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<bool>,
    /// What it carried at the end, for the next transfer to start from
    /// (FEC plane, once past startup).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carried: Option<PathCarried>,
}

/// What a path carried at the end of a transfer.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PathCarried {
    /// The sending rate it carried (bits/s).
    pub rate_bps: f64,
    /// Its minimum RTT (ms).
    pub min_rtt_ms: f64,
}

impl PathCarried {
    /// As the rate controller takes it.
    pub fn memory(&self) -> crate::fec::rate::PathMemory {
        crate::fec::rate::PathMemory {
            rate: self.rate_bps / 8.0,
            min_rtt: std::time::Duration::from_secs_f64((self.min_rtt_ms / 1e3).clamp(0.0, 3600.0)),
        }
    }
}

impl From<crate::fec::rate::PathMemory> for PathCarried {
    fn from(m: crate::fec::rate::PathMemory) -> Self {
        Self {
            rate_bps: m.rate * 8.0,
            min_rtt_ms: m.min_rtt.as_secs_f64() * 1e3,
        }
    }
}

/// One path's measured delivery rate, state, RTT and loss, for progress
/// displays.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PathRate {
    /// `LOCAL=REMOTE`.
    pub name: String,
    /// Delivery rate measured from acknowledgements (bits/s; 0 before any).
    pub rate_bps: f64,
    /// Current state.
    pub state: PathState,
    /// Smoothed round-trip time, milliseconds.
    pub rtt_ms: f64,
    /// FEC plane: the share of shards sent on this path that did not
    /// arrive, so far (`None` on the reliable plane, where QUIC resends).
    pub loss: Option<f64>,
}

/// Parses a rate: a number with an optional unit, `kbit`, `mbit`, `gbit`
/// (bits per second, decimal) or `KB`, `MB`, `GB` (bytes per second,
/// decimal), or bare bytes per second. Returns bytes per second; zero is
/// refused.
pub fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let v: f64 = num
        .parse()
        .map_err(|_| format!("rate {s:?}: expected a number and a unit like 200mbit"))?;
    let bytes = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => v,
        "kbit" => v * 1e3 / 8.0,
        "mbit" => v * 1e6 / 8.0,
        "gbit" => v * 1e9 / 8.0,
        "kb" => v * 1e3,
        "mb" => v * 1e6,
        "gb" => v * 1e9,
        other => {
            return Err(format!(
                "rate {s:?}: unknown unit {other:?} (kbit, mbit, gbit, KB, MB, GB)"
            ));
        }
    };
    if bytes.is_nan() || bytes < 1.0 || !bytes.is_finite() {
        return Err(format!("rate {s:?} must be above zero"));
    }
    Ok(bytes as u64)
}

/// A checked list of paths: at least one, none given twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathList(Vec<PathSpec>);

impl PathList {
    /// Checks `paths`. A per-path cap above `max_rate` is allowed (the sum
    /// is capped anyway) but returned as a warning naming the path.
    pub fn new(paths: Vec<PathSpec>, max_rate: Option<u64>) -> Result<(Self, Vec<String>), String> {
        if paths.is_empty() {
            return Err("no path to the receiver".into());
        }
        for (i, p) in paths.iter().enumerate() {
            if paths[..i]
                .iter()
                .any(|q| q.local == p.local && q.remote == p.remote)
            {
                return Err(format!("--path {} is given twice", p.name()));
            }
        }
        let warnings = match max_rate {
            Some(total) => paths
                .iter()
                .filter(|p| p.cap.is_some_and(|c| c > total))
                .map(|p| {
                    format!(
                        "--path {}: its cap is above --max-rate, which caps the sum of all paths",
                        p.name()
                    )
                })
                .collect(),
            None => Vec::new(),
        };
        Ok((Self(paths), warnings))
    }

    /// The paths, the first one being the one that opens the session.
    pub fn paths(&self) -> &[PathSpec] {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_parse_with_and_without_caps() {
        let p = PathSpec::parse("eth0=127.0.0.1:4433@50mbit").unwrap();
        assert_eq!(p.local, LocalBind::Device("eth0".into()));
        assert_eq!(p.cap, Some(6_250_000));
        let p = PathSpec::parse("127.0.0.1:4433").unwrap();
        assert_eq!((p.local, p.cap), (LocalBind::Any, None));
        let p = PathSpec::parse("10.0.0.1=[::1]:4433@2MB").unwrap();
        assert_eq!(p.cap, Some(2_000_000));
        assert!(p.remote.is_ipv6());
        let e = PathSpec::parse("eth0=127.0.0.1:4433@0mbit").unwrap_err();
        assert!(e.contains("above zero"), "{e}");
        let e = PathSpec::parse("eth0=127.0.0.1:4433@fast").unwrap_err();
        assert!(e.contains("eth0=127.0.0.1:4433@fast"), "{e}");
    }

    #[test]
    fn a_path_given_twice_is_refused_and_a_cap_above_the_total_is_a_warning() {
        let a = PathSpec::parse("lo=127.0.0.1:1").unwrap();
        let b = PathSpec::parse("127.0.0.1:2@300mbit").unwrap();
        let e = PathList::new(vec![a.clone(), b.clone(), a.clone()], None).unwrap_err();
        assert!(e.contains("lo=127.0.0.1:1 is given twice"), "{e}");
        let (list, warnings) =
            PathList::new(vec![a, b], Some(parse_rate("100mbit").unwrap())).unwrap();
        assert_eq!(list.paths().len(), 2);
        assert_eq!(warnings.len(), 1);
        assert!(warnings[0].contains("127.0.0.1:2"), "{warnings:?}");
        assert!(PathList::new(vec![], None).is_err());
    }
}
