//! Who the caller is: `server.trusted_proxies` entries (`IpRange`), the client behind a peer
//! and its `x-forwarded-for` values (`TrustedProxies::resolve`, `server.trusted_hops` from the
//! right), the per-IP and per-network limits' buckets (`rate_limit_bucket`, `network_bucket`),
//! and the hosts HTTP/1.1 requests may name (`PublicHosts`). The header is caller input: it may
//! only ever name the entry our proxies appended, and only when the peer is a trusted proxy;
//! `Host` is caller input too.
//!
//! Input: lines. The first holds the trusted ranges (comma-separated; also tried as
//! `server.public_hosts`), the second the peer address, the rest are `x-forwarded-for` values
//! (each also tried as a `Host`); the last byte is an IPv6 prefix length, the one before it the
//! number of trusted hops.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use recovery_service::net::{self, ForwardedProblem, IpRange, PublicHosts, TrustedProxies};

/// The entry as the service reads it, written again here so the target does not share the
/// parser's reading: an address, or an address with a port.
fn address(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
        .map(net::canonical)
}

fuzz_target!(|data: &[u8]| {
    let Some((&prefix, rest)) = data.split_last() else {
        return;
    };
    let Some((&hops, body)) = rest.split_last() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    let mut lines = text.split('\n');
    let first = lines.next().unwrap_or_default();
    let ranges: Vec<IpRange> = first.split(',').filter_map(|r| r.parse().ok()).collect();
    for range in &ranges {
        // A range prints as something that parses back to itself.
        assert_eq!(range.to_string().parse::<IpRange>().ok(), Some(*range));
    }
    let entries: Vec<String> = first.split(',').map(str::to_owned).collect();
    if let Ok(hosts) = PublicHosts::from_config(Some(&entries)) {
        for entry in &entries {
            assert!(hosts.admits(entry), "{entry:?} is listed but not admitted");
        }
    }
    let Ok(peer) = lines.next().unwrap_or_default().trim().parse::<IpAddr>() else {
        return;
    };
    let forwarded: Vec<&str> = lines.collect();
    let loopback_names = PublicHosts::default();
    for authority in &forwarded {
        if loopback_names.admits(authority) {
            let host = authority.trim().to_ascii_lowercase();
            assert!(
                ["localhost", "127.0.0.1", "[::1]"]
                    .iter()
                    .any(|name| host.starts_with(name)),
                "{authority:?} passed as a loopback name"
            );
        }
    }

    let proxies = TrustedProxies::new(&ranges, hops);
    let resolved = proxies.resolve(peer, forwarded.iter().copied());
    let peer = net::canonical(peer);
    assert_eq!(proxies.client(peer, forwarded.iter().copied()), resolved.ip);
    let hops = usize::from(hops.max(1));
    let listed: Vec<&str> = forwarded
        .iter()
        .filter(|value| !value.trim().is_empty())
        .flat_map(|value| value.split(','))
        .collect();
    if !proxies.contains(peer) || listed.is_empty() {
        assert_eq!(resolved.ip, peer, "an untrusted peer's header was believed");
        assert_eq!(resolved.problem, None);
    } else if listed.len() < hops {
        assert_eq!(resolved.ip, peer);
        assert_eq!(resolved.problem, Some(ForwardedProblem::TooFewEntries));
    } else {
        // Exactly the entry `hops` from the right, or the peer when that one is no address:
        // nothing else in the header can become the client.
        match address(listed[listed.len() - hops]) {
            Some(client) => {
                assert_eq!(resolved.ip, client);
                assert_eq!(resolved.problem, None);
            }
            None => {
                assert_eq!(resolved.ip, peer);
                assert_eq!(resolved.problem, Some(ForwardedProblem::Unparseable));
            }
        }
    }
    let client = resolved.ip;
    assert_eq!(net::canonical(client), client);
    let bucket = net::rate_limit_bucket(client, prefix);
    assert!(!bucket.is_empty() && bucket.len() <= 64);
    assert_eq!(bucket, net::rate_limit_bucket(client, prefix), "not stable");
    let network = net::network_bucket(client);
    assert!(network.ends_with("/24") || network.ends_with("/48"), "{network}");
    assert_eq!(network, net::network_bucket(client), "not stable");
});
