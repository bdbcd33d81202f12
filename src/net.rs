//! Client addresses: ranges of trusted proxies (`server.trusted_proxies`), the client entry of
//! `x-forwarded-for` (`server.trusted_hops` from the right), and the buckets a client address is
//! counted in by the per-IP and per-network rate limits; the hosts HTTP/1.1 requests may name
//! (`server.public_hosts`); and the identities (SANs) a client certificate is known by. Neutral
//! ground: used by `config`, `api`, `server` and `recovery`.

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

/// Who is believed about a client's address: the peers in `server.trusted_proxies` (our
/// proxies), and how many `x-forwarded-for` entries, counted from the right, our own proxies
/// wrote (`server.trusted_hops`).
#[derive(Clone, Debug)]
pub struct TrustedProxies {
    ranges: Vec<IpRange>,
    hops: usize,
}

impl Default for TrustedProxies {
    fn default() -> Self {
        Self::new(&[], 1)
    }
}

/// Why a trusted proxy's `x-forwarded-for` named no client, so the peer itself was taken; the
/// label of the `recovery.forwarded_for.rejected` metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ForwardedProblem {
    /// The entry `trusted_hops` from the right is not an address (`unknown`, garbage, a zone id).
    Unparseable,
    /// Fewer entries than `trusted_hops`: a proxy of ours did not append, or there are fewer
    /// proxies than configured.
    TooFewEntries,
}

impl ForwardedProblem {
    /// The metric attribute's value.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Unparseable => "unparseable",
            Self::TooFewEntries => "too_few_entries",
        }
    }
}

/// The client address of one call, and how it was found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientAddress {
    pub ip: IpAddr,
    /// `Some` when a trusted proxy sent `x-forwarded-for` but it named no usable client: `ip`
    /// is then the peer (the proxy), never anything the header says.
    pub problem: Option<ForwardedProblem>,
}

impl TrustedProxies {
    /// `hops` below 1 is taken as 1: a trusted proxy appends at least its own peer.
    pub fn new(ranges: &[IpRange], hops: u8) -> Self {
        Self {
            ranges: ranges.to_vec(),
            hops: usize::from(hops.max(1)),
        }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|range| range.contains(ip))
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The client behind `peer`, given the `x-forwarded-for` values in the order received.
    pub fn client<'a>(&self, peer: IpAddr, forwarded: impl IntoIterator<Item = &'a str>) -> IpAddr {
        self.resolve(peer, forwarded).ip
    }

    /// The client behind `peer`: the entry `trusted_hops` from the right of `x-forwarded-for`,
    /// read only when `peer` is a trusted proxy.
    ///
    /// Each proxy *appends* the address it accepted the connection from, so the list reads
    /// "whatever the client wrote, ..., what our proxies appended". Only the right-most
    /// `trusted_hops` entries are facts (each written by a proxy of ours, the last by the one
    /// that called us); the one they end on is the client, and nothing to its left is ever
    /// believed, whatever it looks like: a client that writes `203.0.113.9, 127.0.0.9` must
    /// not become `203.0.113.9` because its second entry happens to fall in a trusted range
    /// (the old "skip trusted hops" walk did exactly that). Envoy counts the same way
    /// (`xff_num_trusted_hops`).
    ///
    /// An untrusted peer's header is ignored altogether. No header: the peer (a call from
    /// inside the proxies' network). Fewer entries than hops, or an entry that is not an
    /// address: the peer, with the problem reported so it can be counted; never an error to
    /// the caller, and never a guess from the rest of the header.
    pub fn resolve<'a>(
        &self,
        peer: IpAddr,
        forwarded: impl IntoIterator<Item = &'a str>,
    ) -> ClientAddress {
        let peer = canonical(peer);
        let at_peer = |problem| ClientAddress { ip: peer, problem };
        if !self.contains(peer) {
            return at_peer(None);
        }
        let entries: Vec<&str> = forwarded
            .into_iter()
            .filter(|value| !value.trim().is_empty())
            .flat_map(|value| value.split(','))
            .collect();
        if entries.is_empty() {
            return at_peer(None);
        }
        let Some(index) = entries.len().checked_sub(self.hops) else {
            return at_peer(Some(ForwardedProblem::TooFewEntries));
        };
        match entries.get(index).and_then(|entry| parse_forwarded(entry)) {
            Some(ip) => ClientAddress { ip, problem: None },
            None => at_peer(Some(ForwardedProblem::Unparseable)),
        }
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

/// The per-network rate limit's bucket for `ip` (`rate_limits.per_network`): its IPv4 /24 or
/// IPv6 /48, the smallest block commonly routed on its own (and what one site or one rented
/// server range usually holds). An attacker who rotates through the addresses of one block
/// (a /24 of a cloud provider, a /48 delegated to one customer) meets this limit even though
/// each address stays under `per_ip`.
pub fn network_bucket(ip: IpAddr) -> String {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let network = std::net::Ipv4Addr::from(u32::from(v4) & 0xffff_ff00);
            format!("{network}/24")
        }
        IpAddr::V6(v6) => {
            let network = Ipv6Addr::from(u128::from(v6) & (u128::MAX << 80));
            format!("{network}/48")
        }
    }
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

// ---- public hosts ---------------------------------------------------------------------------

/// The hosts the service answers HTTP/1.1 for when `server.public_hosts` is unset (any port).
pub const DEFAULT_PUBLIC_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// A `host[:port]` split and normalised: the host lower-cased, without a trailing dot, an IPv6
/// address in brackets. `None` for anything else (a scheme, a path, user info, a wildcard, a
/// bare IPv6 address, a port that is not a number).
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let text = text.trim();
    if text.is_empty()
        || text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '/' | '\\' | '@' | '?' | '#' | '*' | '%'))
    {
        return None;
    }
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        inside.parse::<std::net::Ipv6Addr>().ok()?;
        (format!("[{}]", inside.to_ascii_lowercase()), after)
    } else {
        // The port keeps its colon, so `host:` (an empty port) is refused below.
        let (host, port) = match text.find(':') {
            Some(colon) => (&text[..colon], &text[colon..]),
            None => (text, ""),
        };
        let host = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
        let label_ok = |label: &str| {
            !label.is_empty()
                && label.len() <= 63
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        };
        if host.len() > 253 || !host.split('.').all(label_ok) {
            return None;
        }
        (host, port)
    };
    let port = match port {
        "" => None,
        port => Some(port.strip_prefix(':')?.parse::<u16>().ok()?),
    };
    Some((host, port))
}

/// One entry of `server.public_hosts`: a host name or address (`id.example.com`, `127.0.0.1`,
/// `[::1]`), matching any port, or with a port (`id.example.com:8443`), matching that port only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicHost {
    host: String,
    port: Option<u16>,
}

impl PublicHost {
    /// The error says what is wrong, never the value (a configuration error is logged).
    pub fn parse(text: &str) -> Result<Self, &'static str> {
        split_host_port(text)
            .map(|(host, port)| Self { host, port })
            .ok_or(
                "is not a host name or address with an optional port (`id.example.com`, \
                 `id.example.com:8443`, `127.0.0.1`, `[::1]`); no scheme, path or wildcard",
            )
    }

    fn admits(&self, host: &str, port: Option<u16>) -> bool {
        self.host == host && self.port.is_none_or(|own| Some(own) == port)
    }
}

/// The hosts an HTTP/1.1 request (the web page, grpc-web) may name in `Host`: a page served
/// under any other name is one an attacker's DNS pointed at us (DNS rebinding), and the
/// browser then treats our answers as the attacker's own origin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublicHosts(Vec<PublicHost>);

impl Default for PublicHosts {
    fn default() -> Self {
        Self(
            DEFAULT_PUBLIC_HOSTS
                .iter()
                .filter_map(|host| PublicHost::parse(host).ok())
                .collect(),
        )
    }
}

impl PublicHosts {
    /// `server.public_hosts`; `None`: the loopback names of [`DEFAULT_PUBLIC_HOSTS`]. The
    /// error names the entry by its index.
    pub fn from_config(entries: Option<&[String]>) -> Result<Self, String> {
        let Some(entries) = entries else {
            return Ok(Self::default());
        };
        entries
            .iter()
            .enumerate()
            .map(|(index, text)| {
                PublicHost::parse(text)
                    .map_err(|problem| format!("`server.public_hosts[{index}]` {problem}"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether a request naming `authority` (a `Host` header or the authority of an
    /// absolute-form target) is meant for this service.
    pub fn admits(&self, authority: &str) -> bool {
        split_host_port(authority)
            .is_some_and(|(host, port)| self.0.iter().any(|entry| entry.admits(&host, port)))
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
        TrustedProxies::new(&ranges, 1)
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
    fn the_client_is_the_entry_our_nearest_proxy_appended() {
        let trusted = proxies(&["127.0.0.0/8"]);
        // The reproduction: a client that writes a fresh address and then one inside the
        // trusted range is still the address our proxy saw, never the one it wrote.
        for n in 1..=20 {
            let claimed = format!("203.0.113.{n}, 127.0.0.9");
            assert_eq!(
                trusted.client(ip("127.0.0.1"), [claimed.as_str()]),
                ip("127.0.0.9")
            );
        }
        // Several values are one list, in the order received.
        assert_eq!(
            trusted.client(ip("127.0.0.1"), ["6.6.6.6", "203.0.113.9"]),
            ip("203.0.113.9")
        );
        // An untrusted peer's header is not read at all.
        assert_eq!(
            trusted.client(ip("198.51.100.1"), ["203.0.113.9"]),
            ip("198.51.100.1")
        );
        // No header (or an empty one): the proxy itself, nothing to report.
        for none in [&[][..], &[""][..], &["  "][..]] {
            assert_eq!(
                trusted.resolve(ip("127.0.0.2"), none.iter().copied()),
                ClientAddress {
                    ip: ip("127.0.0.2"),
                    problem: None
                }
            );
        }
        // Ports and mapped addresses.
        assert_eq!(
            trusted.client(ip("::ffff:127.0.0.2"), ["6.6.6.6, [2001:db8::5]:443"]),
            ip("2001:db8::5")
        );
        assert_eq!(
            trusted.client(ip("127.0.0.2"), ["::ffff:198.51.100.4:80"]),
            ip("127.0.0.2"),
            "an unbracketed IPv6 address with a port is not an address"
        );
        assert_eq!(
            trusted.client(ip("127.0.0.2"), ["198.51.100.4:80"]),
            ip("198.51.100.4")
        );
    }

    #[test]
    fn with_two_hops_the_second_entry_from_the_right_is_the_client() {
        let trusted = TrustedProxies::new(&["10.1.0.0/16".parse().unwrap()], 2);
        // client (forged prefix), the edge proxy appended the client, the inner proxy the edge.
        assert_eq!(
            trusted.client(ip("10.1.0.3"), ["1.1.1.1, 203.0.113.5, 10.1.2.3"]),
            ip("203.0.113.5")
        );
        // Nothing left of it counts, even when it is in a trusted range.
        assert_eq!(
            trusted.client(ip("10.1.0.3"), ["203.0.113.5, 10.1.9.9, 10.1.2.3"]),
            ip("10.1.9.9")
        );
    }

    #[test]
    fn a_short_or_unparseable_header_falls_back_to_the_peer_and_says_why() {
        let two = TrustedProxies::new(&["10.0.0.0/8".parse().unwrap()], 2);
        assert_eq!(
            two.resolve(ip("10.0.0.2"), ["203.0.113.5"]),
            ClientAddress {
                ip: ip("10.0.0.2"),
                problem: Some(ForwardedProblem::TooFewEntries)
            }
        );
        let one = proxies(&["10.0.0.0/8"]);
        for garbage in [
            "203.0.113.5, unknown",
            "203.0.113.5, ",
            "fe80::1%eth0",
            "203.0.113.5 10.0.0.8",
            "_hidden",
        ] {
            assert_eq!(
                one.resolve(ip("10.0.0.2"), [garbage]),
                ClientAddress {
                    ip: ip("10.0.0.2"),
                    problem: Some(ForwardedProblem::Unparseable)
                },
                "{garbage}"
            );
        }
        // Garbage left of the client entry is never looked at.
        assert_eq!(
            one.resolve(ip("10.0.0.2"), ["nonsense, 198.51.100.8"]),
            ClientAddress {
                ip: ip("198.51.100.8"),
                problem: None
            }
        );
        assert_eq!(ForwardedProblem::Unparseable.reason(), "unparseable");
        assert_eq!(ForwardedProblem::TooFewEntries.reason(), "too_few_entries");
    }

    #[test]
    fn networks_are_ipv4_24s_and_ipv6_48s() {
        assert_eq!(network_bucket(ip("203.0.113.77")), "203.0.113.0/24");
        assert_eq!(network_bucket(ip("::ffff:203.0.113.77")), "203.0.113.0/24");
        assert_ne!(
            network_bucket(ip("203.0.113.77")),
            network_bucket(ip("203.0.114.77"))
        );
        assert_eq!(network_bucket(ip("2001:db8:1:2:3::9")), "2001:db8:1::/48");
        assert_eq!(
            network_bucket(ip("2001:db8:1:ffff::1")),
            network_bucket(ip("2001:db8:1::1"))
        );
        assert_ne!(
            network_bucket(ip("2001:db8:1::1")),
            network_bucket(ip("2001:db8:2::1"))
        );
    }

    #[test]
    fn public_hosts_match_host_and_optional_port() {
        let default = PublicHosts::default();
        for admitted in [
            "localhost",
            "LOCALHOST:50051",
            "localhost.:8080",
            "127.0.0.1:1",
            "[::1]:50051",
            "[::1]",
        ] {
            assert!(default.admits(admitted), "{admitted}");
        }
        for refused in [
            "rebind.attacker.example:50051",
            "localhost.attacker.example",
            "127.0.0.2:50051",
            "",
            "localhost:port",
            "localhost:50051:1",
            "user@localhost",
            "::1",
            "[::2]:50051",
            "127.0.0.1/x",
        ] {
            assert!(!default.admits(refused), "{refused}");
        }
        let configured = PublicHosts::from_config(Some(&[
            "Id.Example.com".to_owned(),
            "admin.example.com:8443".to_owned(),
        ]))
        .unwrap();
        assert!(configured.admits("id.example.com"));
        assert!(configured.admits("id.example.com:443"));
        assert!(configured.admits("admin.example.com:8443"));
        assert!(!configured.admits("admin.example.com:443"));
        assert!(!configured.admits("admin.example.com"));
        assert!(
            !configured.admits("localhost:50051"),
            "the list replaces the default"
        );
        for bad in [
            "*.example.com",
            "https://id.example.com",
            "id.example.com/",
            "::1",
            "",
            "a b",
        ] {
            let error =
                PublicHosts::from_config(Some(&["ok.example.com".to_owned(), bad.to_owned()]))
                    .unwrap_err();
            assert!(error.starts_with("`server.public_hosts[1]`"), "{error}");
            if bad.len() > 3 {
                assert!(!error.contains(bad), "the value is in the error: {error}");
            }
        }
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
