//! What the transport knows about the caller: client IP (from `x-forwarded-for` only when the
//! direct peer is a trusted proxy, since anyone can send that header; the entry
//! `server.trusted_hops` from the right, see `net::TrustedProxies::resolve`) and user agent.

use tonic::Request;

use crate::net::TrustedProxies;
use crate::recovery::RequestContext;

/// Who called the internal `AccountService`, as its authentication established it; set as a
/// request extension by `server::auth` for every call it let in. Never a secret:
/// - `uri:<uri>` / `dns:<name>`: the client certificate's SAN that is on the allow-list (the
///   first URI, else DNS SAN, else `subject:<DN>`, when the list is empty);
/// - `api-key:<first 12 hex digits of its configured SHA-256>`: which configured key;
/// - `loopback`: no authentication configured, a local caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity(pub String);

impl std::fmt::Display for CallerIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl CallerIdentity {
    /// The identity of a request, `unknown` if authentication set none.
    pub fn of<T>(request: &Request<T>) -> String {
        request
            .extensions()
            .get::<CallerIdentity>()
            .map_or_else(|| "unknown".to_owned(), |caller| caller.0.clone())
    }
}

#[derive(Debug, Clone, Default)]
pub struct ClientResolver {
    pub trusted_proxies: TrustedProxies,
}

impl ClientResolver {
    pub fn context<T>(&self, request: &Request<T>) -> RequestContext {
        let metadata = request.metadata();
        let client_ip = request.remote_addr().map(|addr| {
            let forwarded = metadata
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|value| value.to_str().ok());
            let client = self.trusted_proxies.resolve(addr.ip(), forwarded);
            if let Some(problem) = client.problem {
                // The proxy's header named no client: the call is counted against the proxy's
                // own address, and operators see how often (a misconfigured hop count shows
                // up here first).
                crate::telemetry::metrics::forwarded_for_rejected(problem.reason());
            }
            client.ip
        });
        let user_agent = metadata
            .get("x-user-agent")
            .or_else(|| metadata.get("user-agent"))
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.chars().take(256).collect());
        RequestContext {
            client_ip,
            user_agent,
        }
    }
}
