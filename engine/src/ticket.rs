//! A ticket: everything a sender needs to reach one receiver, in one string
//! to copy and paste (as sendme's tickets do): the receiver's addresses,
//! its certificate fingerprint and the token.
//!
//! # Format
//!
//! `cst1` followed by the lowercase RFC 4648 base32 (no padding) of:
//!
//! ```text
//! version      u8 = 1
//! fingerprint  32 bytes (BLAKE3 of the receiver's certificate)
//! token_len    u8 (1..=255)      token  token_len bytes (UTF-8)
//! addr_count   u8 (1..=16)
//! per address: family u8 (4 or 6), IP (4 or 16 bytes), port u16 big-endian
//! checksum     4 bytes: the first 4 bytes of BLAKE3 of everything above
//! ```
//!
//! Base32 rather than base64 so a double-click selects the whole ticket
//! and case does not matter; the checksum turns a mistyped or truncated
//! ticket into a clear error instead of a dial to a wrong address. A
//! ticket holds the token, so it is as secret as the token.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use crate::transport::identity::Fingerprint;

/// What a ticket starts with (it names the format's version, 1).
pub const PREFIX: &str = "cst1";

/// Most addresses one ticket holds.
pub const MAX_ADDRESSES: usize = 16;

const VERSION: u8 = 1;
const CHECKSUM_LEN: usize = 4;

/// A receiver's addresses, fingerprint and token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    /// Where the receiver listens, in order of preference (the sender dials
    /// the first).
    pub addresses: Vec<SocketAddr>,
    /// The receiver's certificate fingerprint.
    pub fingerprint: Fingerprint,
    /// The token the receiver takes.
    pub token: String,
}

/// Why a string is not a ticket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TicketError {
    /// Not starting with [`PREFIX`].
    #[error("not a chunkstream ticket (it starts with {PREFIX})")]
    Prefix,
    /// Not base32, or cut short, or with bytes left over.
    #[error("the ticket is damaged ({0}); copy it again in full")]
    Damaged(&'static str),
    /// The checksum does not match: a character changed.
    #[error("the ticket's checksum does not match (a character changed?); copy it again in full")]
    Checksum,
    /// A later format.
    #[error("ticket version {0} is newer than this chunkstream-engine understands (1)")]
    Version(u8),
    /// Fields that cannot go into a ticket.
    #[error("{0}")]
    Invalid(&'static str),
}

impl Ticket {
    /// Encodes the ticket; fails if the token is empty or longer than 255
    /// bytes, or if there are no addresses or more than [`MAX_ADDRESSES`].
    pub fn encode(&self) -> Result<String, TicketError> {
        if self.token.is_empty() || self.token.len() > 255 {
            return Err(TicketError::Invalid("a ticket's token is 1 to 255 bytes"));
        }
        if self.addresses.is_empty() || self.addresses.len() > MAX_ADDRESSES {
            return Err(TicketError::Invalid("a ticket holds 1 to 16 addresses"));
        }
        let mut b = vec![VERSION];
        b.extend_from_slice(&self.fingerprint.0);
        b.push(self.token.len() as u8);
        b.extend_from_slice(self.token.as_bytes());
        b.push(self.addresses.len() as u8);
        for a in &self.addresses {
            match a.ip() {
                IpAddr::V4(ip) => {
                    b.push(4);
                    b.extend_from_slice(&ip.octets());
                }
                IpAddr::V6(ip) => {
                    b.push(6);
                    b.extend_from_slice(&ip.octets());
                }
            }
            b.extend_from_slice(&a.port().to_be_bytes());
        }
        let sum = blake3::hash(&b);
        b.extend_from_slice(&sum.as_bytes()[..CHECKSUM_LEN]);
        Ok(format!(
            "{PREFIX}{}",
            data_encoding::BASE32_NOPAD.encode(&b).to_ascii_lowercase()
        ))
    }
}

impl std::fmt::Display for Ticket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.encode() {
            Ok(s) => f.write_str(&s),
            Err(e) => write!(f, "<no ticket: {e}>"),
        }
    }
}

/// Reads fields off the front of a byte slice.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], TicketError> {
        if self.0.len() < n {
            return Err(TicketError::Damaged("cut short"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, TicketError> {
        Ok(self.take(1)?[0])
    }
}

impl FromStr for Ticket {
    type Err = TicketError;

    fn from_str(s: &str) -> Result<Self, TicketError> {
        let s = s.trim();
        let body = s
            .get(..PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(PREFIX))
            .map(|_| &s[PREFIX.len()..])
            .ok_or(TicketError::Prefix)?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| TicketError::Damaged("not base32"))?;
        if bytes.len() < 1 + CHECKSUM_LEN {
            return Err(TicketError::Damaged("cut short"));
        }
        let (payload, sum) = bytes.split_at(bytes.len() - CHECKSUM_LEN);
        if blake3::hash(payload).as_bytes()[..CHECKSUM_LEN] != *sum {
            return Err(TicketError::Checksum);
        }
        let mut r = Reader(payload);
        let version = r.u8()?;
        if version != VERSION {
            return Err(TicketError::Version(version));
        }
        let fingerprint = Fingerprint(r.take(32)?.try_into().expect("32 bytes taken"));
        let token_len = usize::from(r.u8()?);
        let token = std::str::from_utf8(r.take(token_len)?)
            .map_err(|_| TicketError::Damaged("token is not UTF-8"))?
            .to_owned();
        if token.is_empty() {
            return Err(TicketError::Invalid("the ticket's token is empty"));
        }
        let count = usize::from(r.u8()?);
        if count == 0 || count > MAX_ADDRESSES {
            return Err(TicketError::Invalid("a ticket holds 1 to 16 addresses"));
        }
        let mut addresses = Vec::with_capacity(count);
        for _ in 0..count {
            let ip = match r.u8()? {
                4 => IpAddr::V4(Ipv4Addr::from(
                    <[u8; 4]>::try_from(r.take(4)?).expect("4 bytes taken"),
                )),
                6 => IpAddr::V6(Ipv6Addr::from(
                    <[u8; 16]>::try_from(r.take(16)?).expect("16 bytes taken"),
                )),
                _ => return Err(TicketError::Damaged("unknown address family")),
            };
            let port = u16::from_be_bytes(r.take(2)?.try_into().expect("2 bytes taken"));
            addresses.push(SocketAddr::new(ip, port));
        }
        if !r.0.is_empty() {
            return Err(TicketError::Damaged("bytes left over"));
        }
        Ok(Self {
            addresses,
            fingerprint,
            token,
        })
    }
}

/// The address to put in a ticket for a listen address: itself, unless it
/// is unspecified (`0.0.0.0`, `::`), which no sender can dial; then the
/// local address the kernel would use towards the outside (the default
/// route's source address, found by connecting a UDP socket, which sends
/// nothing), or loopback if there is no route.
pub fn advertised(listen: SocketAddr) -> SocketAddr {
    if !listen.ip().is_unspecified() {
        return listen;
    }
    let (bind, probe): (SocketAddr, SocketAddr) = if listen.is_ipv4() {
        (
            (Ipv4Addr::UNSPECIFIED, 0).into(),
            // TEST-NET-1 (RFC 5737): routed like any outside address,
            // never reached (connecting a UDP socket sends nothing).
            (Ipv4Addr::new(192, 0, 2, 1), 9).into(),
        )
    } else {
        (
            (Ipv6Addr::UNSPECIFIED, 0).into(),
            // The documentation prefix (RFC 3849).
            (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9).into(),
        )
    };
    let local = std::net::UdpSocket::bind(bind)
        .and_then(|s| s.connect(probe).map(|()| s))
        .and_then(|s| s.local_addr());
    let ip = match local {
        Ok(a) if !a.ip().is_unspecified() => a.ip(),
        _ if listen.is_ipv4() => Ipv4Addr::LOCALHOST.into(),
        _ => Ipv6Addr::LOCALHOST.into(),
    };
    SocketAddr::new(ip, listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Ticket {
        Ticket {
            addresses: vec![
                "192.168.1.20:4433".parse().unwrap(),
                "[2001:db8::7]:5000".parse().unwrap(),
            ],
            fingerprint: Fingerprint([0xab; 32]),
            token: "9b2e0c".into(),
        }
    }

    #[test]
    fn a_ticket_round_trips_and_is_one_lowercase_word() {
        let t = sample();
        let s = t.encode().unwrap();
        assert!(s.starts_with("cst1"));
        assert!(
            s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        );
        assert_eq!(s.parse::<Ticket>().unwrap(), t);
        // Case and surrounding blanks do not matter.
        assert_eq!(
            format!("  {}\n", s.to_ascii_uppercase())
                .parse::<Ticket>()
                .unwrap(),
            t
        );
    }

    #[test]
    fn damaged_tickets_are_refused_with_a_reason() {
        let s = sample().encode().unwrap();
        assert_eq!("hello".parse::<Ticket>(), Err(TicketError::Prefix));
        // One character changed: the checksum catches it.
        let mut changed = s.clone().into_bytes();
        let i = changed.len() / 2;
        changed[i] = if changed[i] == b'a' { b'b' } else { b'a' };
        let changed = String::from_utf8(changed).unwrap();
        assert_eq!(changed.parse::<Ticket>(), Err(TicketError::Checksum));
        // Cut short.
        assert!(matches!(
            s[..s.len() - 9].parse::<Ticket>(),
            Err(TicketError::Checksum | TicketError::Damaged(_))
        ));
        assert!(matches!(
            "cst1!!!".parse::<Ticket>(),
            Err(TicketError::Damaged(_))
        ));
        assert!(matches!(
            "cst1".parse::<Ticket>(),
            Err(TicketError::Damaged(_))
        ));
    }

    #[test]
    fn a_later_version_is_named() {
        let mut b = vec![2u8, 1, 2, 3];
        let sum = blake3::hash(&b);
        b.extend_from_slice(&sum.as_bytes()[..CHECKSUM_LEN]);
        let s = format!(
            "cst1{}",
            data_encoding::BASE32_NOPAD.encode(&b).to_ascii_lowercase()
        );
        assert_eq!(s.parse::<Ticket>(), Err(TicketError::Version(2)));
    }

    #[test]
    fn fields_that_do_not_fit_are_refused_on_encode() {
        let mut t = sample();
        t.token = "x".repeat(256);
        assert!(t.encode().is_err());
        t.token = String::new();
        assert!(t.encode().is_err());
        let mut t = sample();
        t.addresses.clear();
        assert!(t.encode().is_err());
    }

    #[test]
    fn an_unspecified_listen_address_is_advertised_as_a_dialable_one() {
        let a = advertised("0.0.0.0:4433".parse().unwrap());
        assert!(!a.ip().is_unspecified());
        assert_eq!(a.port(), 4433);
        let given: SocketAddr = "127.0.0.1:7".parse().unwrap();
        assert_eq!(advertised(given), given);
    }
}
