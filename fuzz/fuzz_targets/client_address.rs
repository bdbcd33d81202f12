//! Who the caller is: `server.trusted_proxies` entries (`IpRange`), the client behind a peer
//! and its `x-forwarded-for` values (`TrustedProxies::client`), and the per-IP limit's bucket
//! (`rate_limit_bucket`). The header is caller input: it may only ever name an address that is
//! in it, and only when the peer is a trusted proxy.
//!
//! Input: lines. The first holds the trusted ranges (comma-separated), the second the peer
//! address, the rest are `x-forwarded-for` values; the last byte is an IPv6 prefix length.
#![no_main]

use std::net::IpAddr;

use libfuzzer_sys::fuzz_target;
use recovery_service::net::{self, IpRange, TrustedProxies};

fuzz_target!(|data: &[u8]| {
    let Some((&prefix, body)) = data.split_last() else {
        return;
    };
    let text = String::from_utf8_lossy(body);
    let mut lines = text.split('\n');
    let ranges: Vec<IpRange> = lines
        .next()
        .unwrap_or_default()
        .split(',')
        .filter_map(|r| r.parse().ok())
        .collect();
    for range in &ranges {
        // A range prints as something that parses back to itself.
        assert_eq!(range.to_string().parse::<IpRange>().ok(), Some(*range));
    }
    let Ok(peer) = lines.next().unwrap_or_default().trim().parse::<IpAddr>() else {
        return;
    };
    let forwarded: Vec<&str> = lines.collect();
    let proxies = TrustedProxies::new(&ranges);
    let client = proxies.client(peer, forwarded.iter().copied());
    let peer = net::canonical(peer);
    if !proxies.contains(peer) {
        assert_eq!(client, peer, "an untrusted peer's header was believed");
    } else if client != peer {
        // Whatever the walk picked is written in the header.
        let named = forwarded.iter().flat_map(|v| v.split(',')).any(|entry| {
            let entry = entry.trim();
            entry.parse::<IpAddr>().ok().map(net::canonical) == Some(client)
                || entry
                    .parse::<std::net::SocketAddr>()
                    .ok()
                    .map(|a| net::canonical(a.ip()))
                    == Some(client)
        });
        assert!(named, "client {client} is in no x-forwarded-for entry");
    }
    assert_eq!(net::canonical(client), client);
    let bucket = net::rate_limit_bucket(client, prefix);
    assert!(!bucket.is_empty() && bucket.len() <= 64);
    assert_eq!(bucket, net::rate_limit_bucket(client, prefix), "not stable");
});
