//! What the transport knows about the caller: client IP (from `x-forwarded-for` only when the
//! direct peer is a trusted proxy, since anyone can send that header) and user agent.

use std::net::IpAddr;

use tonic::Request;

use crate::recovery::RequestContext;

/// Who called the internal `AccountService`, as its authentication established it (set as a
/// request extension by `server::auth`): the API key (by its digest prefix, which names the
/// configured entry), the client certificate, or `loopback`. Never a secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerIdentity(pub String);

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
    pub trusted_proxies: Vec<IpAddr>,
}

impl ClientResolver {
    pub fn context<T>(&self, request: &Request<T>) -> RequestContext {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let metadata = request.metadata();
        let forwarded = || {
            let header = metadata.get("x-forwarded-for")?.to_str().ok()?;
            // The right-most address is the one our trusted proxy saw; left of it is whatever
            // the client claimed.
            header.rsplit(',').next()?.trim().parse::<IpAddr>().ok()
        };
        let client_ip = match peer {
            Some(peer) if self.trusted_proxies.contains(&peer) => forwarded().or(Some(peer)),
            other => other,
        };
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
