//! The trust boundary of the gRPC port, the outermost layer, before CORS, the web page and
//! tonic-web look at a request:
//!
//! - An HTTP/1.x request (the web page, grpc-web, a CORS preflight) is answered only when the
//!   host it names is one of `server.public_hosts`; anything else gets HTTP 421 Misdirected
//!   Request and nothing runs. A browser reaches this port under a foreign name only when
//!   someone's DNS sends it here (DNS rebinding: `rebind.attacker.example` first resolves to
//!   the attacker's server, which serves the page, then to 127.0.0.1), and the browser then
//!   treats our answers as that page's own origin, so neither CORS nor the same-origin policy
//!   stops the page from calling us.
//! - `AccountService` (internal: account creation, helpdesk recovery, export, erasure) is
//!   served over HTTP/2 gRPC only. Over grpc-web (any HTTP version) or HTTP/1.x it is refused
//!   with `PERMISSION_DENIED` before tonic-web translates the call, so nothing runs: a browser
//!   can speak only those (a page cannot open a cleartext HTTP/2 connection, and over TLS the
//!   certificate does not match a rebound name). The web page needs only `RecoveryService`.
//!
//! HTTP/2 requests are not checked against `public_hosts`: gRPC callers name whatever
//! authority their channel was built with (a service name, an address), and are authenticated
//! per service instead.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Version};
use tower::{Layer, Service};

use crate::net::PublicHosts;
use crate::recovery::RecoveryError;

/// The gRPC service that never leaves HTTP/2 (`package.Service`).
const INTERNAL_SERVICE: &str = "identity.recovery.v1.AccountService";

#[derive(Debug, Clone)]
pub struct BoundaryLayer {
    hosts: Arc<PublicHosts>,
}

impl BoundaryLayer {
    pub fn new(hosts: PublicHosts) -> Self {
        Self {
            hosts: Arc::new(hosts),
        }
    }
}

impl<S> Layer<S> for BoundaryLayer {
    type Service = Boundary<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Boundary {
            inner,
            hosts: self.hosts.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Boundary<S> {
    inner: S,
    hosts: Arc<PublicHosts>,
}

/// What the boundary does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    /// HTTP/1.x naming a host that is not ours: 421.
    Misdirected,
    /// The internal service over grpc-web or HTTP/1.x: `PERMISSION_DENIED`.
    InternalOverWeb,
}

fn is_http1(version: Version) -> bool {
    matches!(
        version,
        Version::HTTP_09 | Version::HTTP_10 | Version::HTTP_11
    )
}

fn is_grpc_web(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| {
            value
                .trim()
                .to_ascii_lowercase()
                .starts_with("application/grpc-web")
        })
}

/// The path names the internal service as the router reads it (`/<service>/<method>`); extra
/// leading slashes are counted as the same path, so no spelling slips past.
fn names_internal_service(path: &str) -> bool {
    path.trim_start_matches('/')
        .strip_prefix(INTERNAL_SERVICE)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// Every authority the request names (the target's, then each `Host`) must be admitted, and
/// it must name one.
fn names_a_public_host<B>(hosts: &PublicHosts, request: &Request<B>) -> bool {
    let from_target = request.uri().authority().map(|a| a.as_str());
    let mut named = from_target.into_iter().chain(
        request
            .headers()
            .get_all(header::HOST)
            .iter()
            .map(|value| value.to_str().unwrap_or_default()),
    );
    let mut any = false;
    let all_admitted = named.all(|authority| {
        any = true;
        hosts.admits(authority)
    });
    any && all_admitted
}

fn verdict<B>(hosts: &PublicHosts, request: &Request<B>) -> Verdict {
    let http1 = is_http1(request.version());
    if http1 && !names_a_public_host(hosts, request) {
        return Verdict::Misdirected;
    }
    if names_internal_service(request.uri().path()) && (http1 || is_grpc_web(request.headers())) {
        return Verdict::InternalOverWeb;
    }
    Verdict::Pass
}

/// A trailers-only gRPC answer (the status in the headers, no body), in the content type the
/// caller spoke, so a grpc-web client reads it as it would any other error.
fn refused<ResBody: Default, B>(request: &Request<B>) -> Response<ResBody> {
    // The message in the caller's language, as every other refusal.
    let mut languages = Request::new(());
    for value in request.headers().get_all(header::ACCEPT_LANGUAGE) {
        languages
            .headers_mut()
            .append(header::ACCEPT_LANGUAGE, value.clone());
    }
    let status = crate::api::localized::by_accept_language(
        crate::api::status::to_status(RecoveryError::PermissionDenied),
        &tonic::Request::from_http(languages),
    );
    let mut response = status.into_http::<ResBody>();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .map(str::to_ascii_lowercase)
        .unwrap_or_default();
    let answered = if content_type.starts_with("application/grpc-web-text") {
        "application/grpc-web-text+proto"
    } else if content_type.starts_with("application/grpc-web") {
        "application/grpc-web+proto"
    } else {
        "application/grpc"
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(answered));
    response
}

fn misdirected<ResBody: Default>() -> Response<ResBody> {
    let mut response = Response::new(ResBody::default());
    *response.status_mut() = StatusCode::MISDIRECTED_REQUEST;
    response
        .headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
    response
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B, ResBody> Service<Request<B>> for Boundary<S>
where
    S: Service<Request<B>, Response = Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Default + Send + 'static,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match verdict(&self.hosts, &request) {
            Verdict::Pass => Box::pin(self.inner.call(request)),
            Verdict::Misdirected => {
                tracing::debug!("HTTP/1.1 request for a host not in server.public_hosts: 421");
                Box::pin(async { Ok(misdirected()) })
            }
            Verdict::InternalOverWeb => {
                tracing::debug!("AccountService over grpc-web or HTTP/1.1: refused");
                let response = refused(&request);
                Box::pin(async { Ok(response) })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(version: Version, path: &str, host: Option<&str>, grpc_web: bool) -> Request<()> {
        let mut builder = Request::builder().method("POST").uri(path).version(version);
        if let Some(host) = host {
            builder = builder.header(header::HOST, host);
        }
        builder = builder.header(
            header::CONTENT_TYPE,
            if grpc_web {
                "application/grpc-web+proto"
            } else {
                "application/grpc"
            },
        );
        builder.body(()).unwrap()
    }

    const CREATE: &str = "/identity.recovery.v1.AccountService/CreateAccount";
    const CAPTCHA: &str = "/identity.recovery.v1.RecoveryService/CreateCaptcha";

    #[test]
    fn http1_is_answered_only_for_a_public_host() {
        let hosts = PublicHosts::default();
        let h1 = Version::HTTP_11;
        assert_eq!(
            verdict(&hosts, &request(h1, CAPTCHA, Some("127.0.0.1:50051"), true)),
            Verdict::Pass
        );
        assert_eq!(
            verdict(
                &hosts,
                &request(h1, CAPTCHA, Some("rebind.attacker.example:50051"), true)
            ),
            Verdict::Misdirected
        );
        // No host at all (HTTP/1.0), or two that disagree.
        assert_eq!(
            verdict(&hosts, &request(Version::HTTP_10, CAPTCHA, None, true)),
            Verdict::Misdirected
        );
        let mut two = request(h1, CAPTCHA, Some("localhost"), true);
        two.headers_mut()
            .append(header::HOST, HeaderValue::from_static("evil.example"));
        assert_eq!(verdict(&hosts, &two), Verdict::Misdirected);
        // An absolute-form target names its host too.
        let absolute = request(h1, "http://evil.example/", Some("localhost"), false);
        assert_eq!(verdict(&hosts, &absolute), Verdict::Misdirected);
        // HTTP/2 gRPC callers name whatever authority their channel has.
        assert_eq!(
            verdict(
                &hosts,
                &request(Version::HTTP_2, CAPTCHA, Some("recovery.svc:50051"), false)
            ),
            Verdict::Pass
        );
    }

    #[test]
    fn the_internal_service_is_http2_grpc_only() {
        let hosts = PublicHosts::default();
        for (version, grpc_web) in [
            (Version::HTTP_11, true),
            (Version::HTTP_11, false),
            (Version::HTTP_2, true),
        ] {
            for path in [
                CREATE,
                "//identity.recovery.v1.AccountService/CreateAccount",
                "/identity.recovery.v1.AccountService/ExportAccountData",
            ] {
                assert_eq!(
                    verdict(&hosts, &request(version, path, Some("localhost"), grpc_web)),
                    Verdict::InternalOverWeb,
                    "{version:?} {path} grpc-web={grpc_web}"
                );
            }
        }
        assert_eq!(
            verdict(&hosts, &request(Version::HTTP_2, CREATE, None, false)),
            Verdict::Pass
        );
        assert!(!names_internal_service(
            "/identity.recovery.v1.AccountServiceX/CreateAccount"
        ));
    }

    #[test]
    fn a_refusal_is_a_grpc_status_in_the_callers_content_type() {
        let response: Response<String> = refused(&request(Version::HTTP_11, CREATE, None, true));
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()["grpc-status"], "7");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/grpc-web+proto"
        );
        assert!(response.headers().contains_key("grpc-status-details-bin"));
        assert!(response.body().is_empty());
    }
}
