//! What the transport knows about the caller: client IP (from `x-forwarded-for` only when the
//! direct peer is a trusted proxy, since anyone can send that header; the right-most address
//! that is not a trusted proxy, see `net::TrustedProxies::client`) and user agent.

use tonic::Request;

use crate::net::TrustedProxies;
use crate::recovery::RequestContext;

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
            self.trusted_proxies.client(addr.ip(), forwarded)
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
