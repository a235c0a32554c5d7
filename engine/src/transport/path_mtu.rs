//! The datagram size a session pins: taken from the route to the receiver.
//!
//! The FEC plane cuts every block into shards of one size for the whole
//! session, and one shard rides in one QUIC datagram, so the UDP payload is
//! chosen before the first packet and never changes (quinn's MTU discovery
//! is off: its black-hole detection once lowered a path below the shards'
//! size mid-transfer, see `results/README.md`, "fec-mtu").
//!
//! Per shard the plane pays a datagram, a copy and a system call's share,
//! so larger shards move more per CPU second: on loopback 256 MiB went at
//! 1.6-1.9 Gbit/s with 1452-byte datagrams and 2.7-2.9 with 6500-byte
//! ones, the reliable plane's 3.0 (`results/loopback-goodput.md`). The
//! choice, [`MtuChoice::Auto`] by default:
//!
//! 1. Ask the kernel for the MTU of the route each path takes
//!    ([`route_payload`]: `IP_MTU` on a UDP socket bound like the path and
//!    connected to the receiver; nothing is sent). Take the smallest over
//!    the paths, less the IP and UDP headers.
//! 2. Keep it within 1200 (QUIC's least) and [`AUTO_MTU_CAP`]: the largest
//!    datagram quinn can batch ten of into one GSO send (above it each
//!    datagram is a system call of its own; 8952-byte datagrams measured
//!    2.3-2.5 Gbit/s beside 6500-byte ones' 2.7-2.9).
//! 3. An interface's MTU says nothing of the hops behind it: a jumbo-frame
//!    LAN may reach the receiver through a 1500-byte link that drops larger
//!    packets without an ICMP message (a black hole). quinn pads the
//!    handshake's Initial packets to the pinned size in both directions, so
//!    a handshake that completes proves the size. Above [`FEC_MTU`] the
//!    sender dials twice at once, at the chosen size and at 1452
//!    (`session::dial`), and keeps the large one if it answers no later
//!    than [`LATE_ALLOWANCE`] and twice the small one's handshake time
//!    after the small one; otherwise it goes on at 1452 and says so.
//!
//! A size the user pins (`--mtu BYTES`) is raced the same way when it is
//! above 1452. `--mtu discover` leaves quinn's discovery on instead, with
//! shards cut to the size at the session's start.
//!
//! [`FEC_MTU`]: super::FEC_MTU

use std::net::SocketAddr;
use std::time::Duration;

use super::{FEC_MTU, MAX_PINNED_MTU, gso_fits};

/// How the session's datagram size is chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtuChoice {
    /// From the routes' MTU (see the module doc), black holes raced away.
    #[default]
    Auto,
    /// quinn's MTU discovery left on; shards cut to the size at the start.
    Discover,
    /// This UDP payload size, 1200 to [`MAX_PINNED_MTU`].
    Pinned(u16),
}

impl std::str::FromStr for MtuChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "discover" => Ok(Self::Discover),
            _ => match s.parse::<u16>() {
                Ok(v) if (1200..=MAX_PINNED_MTU).contains(&v) => Ok(Self::Pinned(v)),
                _ => Err(format!(
                    "{s:?}: expected auto, discover or a size from 1200 to {MAX_PINNED_MTU} bytes"
                )),
            },
        }
    }
}

impl std::fmt::Display for MtuChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Auto => f.write_str("auto"),
            Self::Discover => f.write_str("discover"),
            Self::Pinned(v) => write!(f, "{v}"),
        }
    }
}

/// The largest datagram [`MtuChoice::Auto`] takes: ten of them fit one
/// GSO send of at most 65 507 bytes (IPv4's bound, the tighter one).
pub const AUTO_MTU_CAP: u16 = 6550;

/// How much later than the 1452-byte dial the large one may answer and
/// still be kept (at least; twice the small handshake's time if longer).
pub const LATE_ALLOWANCE: Duration = Duration::from_millis(20);

/// The UDP payload to pin, given `choice` and the payload each path's route
/// carries (`None` where the kernel could not tell). `None` means: leave
/// quinn's discovery on.
pub fn session_mtu(choice: MtuChoice, routes: &[Option<u16>]) -> Option<u16> {
    match choice {
        MtuChoice::Discover => None,
        MtuChoice::Pinned(v) => Some(v),
        MtuChoice::Auto => {
            let least = routes
                .iter()
                .map(|r| r.unwrap_or(FEC_MTU))
                .min()
                .unwrap_or(FEC_MTU);
            debug_assert!(gso_fits(AUTO_MTU_CAP));
            Some(least.clamp(1200, AUTO_MTU_CAP))
        }
    }
}

/// Whether a session pinned at `mtu` races a 1452-byte dial beside its
/// first one (a black hole could hide behind the route's MTU).
pub fn needs_fallback(mtu: Option<u16>) -> bool {
    mtu.is_some_and(|m| m > FEC_MTU)
}

/// How long after the fallback dial answered the large one may still win.
pub fn late_allowance(small_handshake: Duration) -> Duration {
    (small_handshake * 2).max(LATE_ALLOWANCE)
}

/// The UDP payload the route from (`local`, `device`) to `remote` carries
/// by the kernel's account: its MTU less the IP and UDP headers. Sends
/// nothing.
pub fn route_payload(
    local: SocketAddr,
    device: Option<&str>,
    remote: SocketAddr,
) -> std::io::Result<u16> {
    let socket = super::bind_udp(local, device, 0).map_err(std::io::Error::other)?;
    socket.connect(remote)?;
    let (mtu, headers) = if remote.is_ipv4() {
        (rustix::net::sockopt::ip_mtu(&socket)?, 20 + 8)
    } else {
        (rustix::net::sockopt::ipv6_mtu(&socket)?, 40 + 8)
    };
    Ok(u16::try_from(mtu.saturating_sub(headers)).unwrap_or(u16::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_takes_the_least_route_within_bounds() {
        let auto = |r: &[Option<u16>]| session_mtu(MtuChoice::Auto, r);
        // Loopback's 65 536-byte MTU: capped where GSO still batches.
        assert_eq!(auto(&[Some(65_508)]), Some(AUTO_MTU_CAP));
        // An Ethernet path and a jumbo one: the Ethernet one decides.
        assert_eq!(auto(&[Some(8972), Some(1472)]), Some(1472));
        // A tunnel below QUIC's least: 1200 (the handshake will tell).
        assert_eq!(auto(&[Some(1000)]), Some(1200));
        // Unknown routes count as Ethernet.
        assert_eq!(auto(&[None]), Some(FEC_MTU));
        assert_eq!(auto(&[]), Some(FEC_MTU));
        assert_eq!(session_mtu(MtuChoice::Discover, &[Some(9000)]), None);
        assert_eq!(
            session_mtu(MtuChoice::Pinned(1300), &[Some(9000)]),
            Some(1300)
        );
    }

    #[test]
    fn only_sizes_above_ethernet_race_a_fallback() {
        assert!(gso_fits(AUTO_MTU_CAP) && !gso_fits(AUTO_MTU_CAP + 1));
        assert!(needs_fallback(Some(AUTO_MTU_CAP)));
        assert!(!needs_fallback(Some(FEC_MTU)));
        assert!(!needs_fallback(Some(1200)));
        assert!(!needs_fallback(None));
        assert_eq!(late_allowance(Duration::from_millis(1)), LATE_ALLOWANCE);
        assert_eq!(
            late_allowance(Duration::from_millis(300)),
            Duration::from_millis(600)
        );
    }

    #[test]
    fn choices_parse_and_print() {
        for s in ["auto", "discover", "1200", "6550", "16383"] {
            assert_eq!(s.parse::<MtuChoice>().unwrap().to_string(), s);
        }
        for bad in ["1199", "16384", "jumbo", ""] {
            let e = bad.parse::<MtuChoice>().unwrap_err();
            assert!(
                e.contains("expected auto, discover or a size from 1200 to 16383 bytes"),
                "{e}"
            );
        }
    }

    #[test]
    fn loopback_routes_carry_jumbo_datagrams() {
        let p = route_payload(
            "127.0.0.1:0".parse().unwrap(),
            None,
            "127.0.0.1:9".parse().unwrap(),
        )
        .unwrap();
        // lo's MTU is 65 536 on Linux; anything above Ethernet's shows the
        // route was read rather than assumed.
        assert!(p > FEC_MTU, "{p}");
    }
}
