//! Client addresses: ranges of trusted proxies (`server.trusted_proxies`), the right-most
//! untrusted address of `x-forwarded-for`, and the bucket a client address is counted in by the
//! per-IP rate limit; and the identities (SANs) a client certificate is known by. Neutral ground: used by `config`, `api`, `server` and `recovery`.

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The address as the rest of the service sees it: an IPv4-mapped IPv6 address
/// (`::ffff:192.0.2.1`, what a dual-stack socket reports for an IPv4 peer) is that IPv4 address,
/// so it matches IPv4 ranges and is counted as one IPv4 client.
pub fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

/// One entry of `server.trusted_proxies`: a CIDR range (`10.0.0.0/8`, `fd00::/8`) or a bare
/// address (`192.0.2.7` = `/32`, `2001:db8::1` = `/128`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IpRange(IpNet);

impl IpRange {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(&canonical(ip))
    }
}

impl schemars::JsonSchema for IpRange {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "IpRange".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A CIDR range (`10.0.0.0/8`, `fd00::/8`) or a bare address (`192.0.2.7` = /32).",
            "examples": ["10.0.0.0/8", "fd00::/8", "192.0.2.7"]
        })
    }
}

impl FromStr for IpRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if let Ok(net) = text.parse::<IpNet>() {
            // `::ffff:10.0.0.0/104` is the IPv4 range it maps; peers are compared canonically.
            let net = match net {
                IpNet::V6(v6) if v6.prefix_len() >= 96 => match v6.addr().to_ipv4_mapped() {
                    Some(v4) => ipnet::Ipv4Net::new(v4, v6.prefix_len() - 96)
                        .map(IpNet::V4)
                        .unwrap_or(net),
                    None => net,
                },
                other => other,
            };
            return Ok(Self(net.trunc()));
        }
        match text.parse::<IpAddr>() {
            Ok(ip) => Ok(Self(IpNet::from(canonical(ip)))),
            Err(_) => {
                Err("neither an IP address nor a CIDR range (e.g. 10.0.0.0/8, fd00::/8)".to_owned())
            }
        }
    }
}

impl From<IpAddr> for IpRange {
    fn from(ip: IpAddr) -> Self {
        Self(IpNet::from(canonical(ip)))
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for IpRange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpRange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// The peers whose `x-forwarded-for` is believed.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Vec<IpRange>);

impl TrustedProxies {
    pub fn new(ranges: &[IpRange]) -> Self {
        Self(ranges.to_vec())
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|range| range.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client behind `peer`, given the `x-forwarded-for` values in the order received.
    ///
    /// The right-most untrusted rule: each proxy *appends* the address it received the call
    /// from, so the list reads client, proxy 1, proxy 2, ... and only the entries appended by
    /// our own proxies are facts; anything left of them is whatever the client wrote. Walking
    /// from the right, every address that is itself a trusted proxy is a hop of ours and is
    /// skipped; the first one that is not is the client (an attacker can prepend anything, but
    /// cannot change what our proxies appended). The left-most entry is never taken on its own
    /// (that is the one a client forges). When the direct peer is not trusted the header is
    /// ignored altogether; when every entry is trusted (a call from inside the proxies'
    /// network) the left-most of them is the caller; an entry that is not an address stops the
    /// walk at the last address known good.
    pub fn client<'a>(&self, peer: IpAddr, forwarded: impl IntoIterator<Item = &'a str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let entries: Vec<&str> = forwarded
            .into_iter()
            .flat_map(|value| value.split(','))
            .collect();
        let mut client = peer;
        for entry in entries.into_iter().rev() {
            let Some(ip) = parse_forwarded(entry) else {
                break;
            };
            client = ip;
            if !self.contains(ip) {
                break;
            }
        }
        client
    }
}

/// One `x-forwarded-for` entry: an address, possibly with a port (`192.0.2.1:443`,
/// `[2001:db8::1]:443`) as some proxies write it.
fn parse_forwarded(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    entry
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|addr| canonical(addr.ip()))
}

/// The per-IP rate limit's bucket for `ip`: an IPv4 address is one client; an IPv6 client is
/// counted per `/ipv6_prefix_len` network (default /64, what one subscriber or host is given;
/// counting single IPv6 addresses would give each client 2^64 fresh buckets).
pub fn rate_limit_bucket(ip: IpAddr, ipv6_prefix_len: u8) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let prefix = ipv6_prefix_len.min(128);
            let mask = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
            };
            let network = Ipv6Addr::from(u128::from(v6) & mask);
            format!("{network}/{prefix}")
        }
    }
}

// ---- client-certificate identities ----------------------------------------------------------

/// One entry of `account_api.allowed_client_identities`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientIdentity {
    /// A DNS SAN, lower-cased (DNS names compare case-insensitively).
    Dns(String),
    /// A URI SAN (SPIFFE ids among them), compared byte for byte.
    Uri(String),
}

impl ClientIdentity {
    /// What [`ClientIdentity::parse`] accepts, for its error (which never quotes the input).
    pub const EXPECTED: &'static str = "is not `dns:<name>` or `uri:<uri>` (e.g. dns:admin.internal, \
         spiffe://cluster.local/ns/id/sa/helpdesk); wildcards are not accepted";

    /// `dns:<name>`, `uri:<uri>`, or a bare `spiffe://...` (a URI SAN).
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (kind, value) = if text.starts_with("spiffe://") {
            ("uri", text)
        } else {
            text.split_once(':').unwrap_or(("", text))
        };
        let value = value.trim();
        match kind.to_ascii_lowercase().as_str() {
            "dns" if !value.is_empty() && !value.contains(['*', ' ']) => {
                Ok(Self::Dns(value.to_ascii_lowercase()))
            }
            "uri" if value.contains(':') && !value.contains(' ') => Ok(Self::Uri(value.to_owned())),
            _ => Err(Self::EXPECTED.to_owned()),
        }
    }

    /// As configured and audited: `dns:<name>` or `uri:<uri>`.
    pub fn shown(&self) -> String {
        match self {
            Self::Dns(name) => format!("dns:{name}"),
            Self::Uri(uri) => format!("uri:{uri}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn proxies(ranges: &[&str]) -> TrustedProxies {
        let ranges: Vec<IpRange> = ranges.iter().map(|r| r.parse().unwrap()).collect();
        TrustedProxies::new(&ranges)
    }

    #[test]
    fn ranges_take_cidr_and_bare_addresses_of_both_families() {
        let trusted = proxies(&["10.0.0.0/8", "192.0.2.7", "fd00::/8", "2001:db8::1"]);
        assert!(trusted.contains(ip("10.200.3.4")));
        assert!(trusted.contains(ip("192.0.2.7")));
        assert!(!trusted.contains(ip("192.0.2.8")));
        assert!(trusted.contains(ip("fd12:3456::9")));
        assert!(trusted.contains(ip("2001:db8::1")));
        assert!(!trusted.contains(ip("2001:db8::2")));
        // A dual-stack socket reports an IPv4 peer as IPv4-mapped IPv6.
        assert!(trusted.contains(ip("::ffff:10.1.2.3")));
        assert!(proxies(&["::ffff:10.0.0.0/104"]).contains(ip("10.9.9.9")));
        assert_eq!(
            "10.1.2.3/8".parse::<IpRange>().unwrap().to_string(),
            "10.0.0.0/8"
        );
        let error = "10.0.0.0/33".parse::<IpRange>().unwrap_err();
        assert!(error.contains("CIDR"), "{error}");
        assert!("gateway".parse::<IpRange>().is_err());
    }

    #[test]
    fn the_client_is_the_right_most_address_that_is_not_a_trusted_proxy() {
        let trusted = proxies(&["10.0.0.0/8"]);
        // client, then two hops of ours; whatever the client prepended is ignored.
        assert_eq!(
            trusted.client(
                ip("10.0.0.2"),
                ["6.6.6.6, 203.0.113.9, 10.0.0.5", "10.0.0.3"]
            ),
            ip("203.0.113.9")
        );
        // An untrusted peer's header is not read at all.
        assert_eq!(
            trusted.client(ip("198.51.100.1"), ["203.0.113.9"]),
            ip("198.51.100.1")
        );
        // No header: the proxy itself.
        assert_eq!(trusted.client(ip("10.0.0.2"), []), ip("10.0.0.2"));
        // Every hop trusted: the farthest one.
        assert_eq!(
            trusted.client(ip("10.0.0.2"), ["10.0.0.9, 10.0.0.8"]),
            ip("10.0.0.9")
        );
        // Garbage stops the walk at the last good address.
        assert_eq!(
            trusted.client(ip("10.0.0.2"), ["nonsense, 10.0.0.8"]),
            ip("10.0.0.8")
        );
        // Ports and mapped addresses.
        assert_eq!(
            trusted.client(ip("::ffff:10.0.0.2"), ["[2001:db8::5]:443, 10.0.0.8:80"]),
            ip("2001:db8::5")
        );
    }

    #[test]
    fn ipv6_clients_are_bucketed_per_prefix_and_ipv4_per_address() {
        assert_eq!(rate_limit_bucket(ip("192.0.2.1"), 64), "192.0.2.1");
        assert_eq!(rate_limit_bucket(ip("::ffff:192.0.2.1"), 64), "192.0.2.1");
        assert_eq!(
            rate_limit_bucket(ip("2001:db8:1:2:aaaa::1"), 64),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            rate_limit_bucket(ip("2001:db8:1:2:aaaa::1"), 64),
            rate_limit_bucket(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"), 64)
        );
        assert_ne!(
            rate_limit_bucket(ip("2001:db8:1:2::1"), 64),
            rate_limit_bucket(ip("2001:db8:1:3::1"), 64)
        );
        assert_eq!(rate_limit_bucket(ip("2001:db8::1"), 128), "2001:db8::1/128");
        assert_eq!(
            rate_limit_bucket(ip("2001:db8:1:ff00::1"), 56),
            "2001:db8:1:ff00::/56"
        );
    }
}
