//! The reference web front end (`web/`), served on the gRPC port: `GET /` (also at `/report`,
//! the page behind `[mail] report_url`) and its assets.
//! The bundle is built by esbuild and committed in `web/dist/`, and compiled into the binary,
//! so a release build serves it with no Node and no files beside it. Its grpc-web calls go to
//! the same origin, so no CORS is needed.
//!
//! This sits outside tonic-web, which answers every non-gRPC HTTP/1.1 request with 400; only
//! GET and HEAD are looked at (every gRPC and grpc-web call is a POST), anything else passes
//! through untouched.

use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use sha2::{Digest, Sha256};
use tower::{Layer, Service};

struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../web/dist/index.html"),
    },
    Asset {
        path: "/assets/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/assets/app.js"),
    },
    Asset {
        path: "/assets/pow-worker.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../web/dist/assets/pow-worker.js"),
    },
    Asset {
        path: "/assets/app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../web/dist/assets/app.css"),
    },
    Asset {
        path: "/assets/icon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../web/dist/assets/icon.svg"),
    },
];

/// Nothing but this origin's own script and style; the captcha picture is a `blob:` URL made
/// from the CreateCaptcha bytes; the proof-of-work worker is this origin's own script (never a
/// `blob:`); calls go back to this origin only. No inline script or style,
/// so an injected `<script>` or `style=` does nothing; no framing (clickjacking the "Confirm
/// new password" button); no form posts anywhere.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     worker-src 'self'; style-src 'self'; img-src 'self' blob:; connect-src 'self'; \
     base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Revalidate every time: assets are small, answered 304 by ETag when unchanged, and a new
/// binary must never be paired with a cached page of the old one.
const CACHE_CONTROL: &str = "no-cache";

/// The report page's address carries a report code (`?code=`): never stored by the browser or
/// a proxy. The page also takes the code out of the address (`history.replaceState`), and
/// `Referrer-Policy: no-referrer` (on every page) keeps it out of any later request.
const REPORT_CACHE_CONTROL: &str = "no-store";

/// Strong ETags, one per asset (same order as `ASSETS`): the first 96 bits of the SHA-256 of
/// the embedded bytes, computed once.
fn etags() -> &'static [HeaderValue] {
    static TAGS: OnceLock<Vec<HeaderValue>> = OnceLock::new();
    TAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|asset| {
                let digest = Sha256::digest(asset.body);
                HeaderValue::from_str(&format!("\"{}\"", hex::encode(&digest[..12])))
                    .unwrap_or(HeaderValue::from_static("\"\""))
            })
            .collect()
    })
}

/// The answer for `GET`/`HEAD` of a UI path, or `None` for anything else.
pub fn respond<B>(request: &Request<B>) -> Option<Response<Full<Bytes>>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return None;
    }
    let report = request.uri().path() == "/report";
    let path = match request.uri().path() {
        // The "it wasn't me" page behind `[mail] report_url` is the same page: the script
        // shows the report screen at /report (its ?code= is read by the script, never here).
        "/index.html" | "/report" => "/",
        path => path,
    };
    let index = ASSETS.iter().position(|asset| asset.path == path)?;
    let asset = &ASSETS[index];
    let tag = etags().get(index)?;
    let not_modified = request
        .headers()
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .any(|candidate| candidate.trim() == tag.to_str().unwrap_or_default());
    let (status, body) = if not_modified {
        (StatusCode::NOT_MODIFIED, Bytes::new())
    } else if request.method() == Method::HEAD {
        (StatusCode::OK, Bytes::new())
    } else {
        (StatusCode::OK, Bytes::from_static(asset.body))
    };
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    if request.method() == Method::HEAD && !not_modified {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(asset.body.len()));
    }
    headers.insert(header::ETAG, tag.clone());
    headers.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static(if report {
            REPORT_CACHE_CONTROL
        } else {
            CACHE_CONTROL
        }),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    headers.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    Some(response)
}

/// `Some` when the UI is enabled: a layer answering the UI paths before tonic-web.
pub fn layer(enabled: bool) -> Option<UiLayer> {
    enabled.then_some(UiLayer)
}

#[derive(Debug, Clone, Copy)]
pub struct UiLayer;

impl<S> Layer<S> for UiLayer {
    type Service = Ui<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Ui { inner }
    }
}

#[derive(Debug, Clone)]
pub struct Ui<S> {
    inner: S,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S, B> Service<Request<B>> for Ui<S>
where
    S: Service<Request<B>, Response = Response<tonic::body::Body>>,
    S::Future: Send + 'static,
{
    type Response = Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        match respond(&request) {
            Some(response) => {
                let response = response.map(tonic::body::Body::new);
                Box::pin(async move { Ok(response) })
            }
            None => Box::pin(self.inner.call(request)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request<()> {
        Request::builder()
            .method(Method::GET)
            .uri(path)
            .body(())
            .unwrap_or_default()
    }

    #[test]
    fn the_page_is_served_with_a_strict_policy() {
        let response = respond(&get("/")).expect("the page");
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(
            headers[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert!(!CONTENT_SECURITY_POLICY.contains("unsafe"));
        assert_eq!(headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(headers[header::CACHE_CONTROL], "no-cache");
    }

    #[test]
    fn the_report_page_is_the_page_with_the_same_policy() {
        let response = respond(&get("/report?code=0123456789abcdef0123456789abcdef"))
            .expect("the report page");
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            response.headers()[header::CONTENT_SECURITY_POLICY],
            CONTENT_SECURITY_POLICY
        );
        assert_eq!(response.headers()[header::ETAG], etags()[0]);
        // The code in its address is a credential: not stored, not sent on as a referrer.
        assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
        assert_eq!(response.headers()[header::REFERRER_POLICY], "no-referrer");
        assert!(respond(&get("/report/x")).is_none());
    }

    #[test]
    fn the_page_names_assets_that_are_served() {
        let page = std::str::from_utf8(ASSETS[0].body).expect("utf-8");
        // The proof-of-work worker is named by the page's script, which starts it.
        let script = ASSETS
            .iter()
            .find(|asset| asset.path == "/assets/app.js")
            .map(|asset| String::from_utf8_lossy(asset.body))
            .expect("the page's script");
        for asset in &ASSETS[1..] {
            assert!(
                page.contains(asset.path) || script.contains(asset.path),
                "{} is named by neither the page nor its script",
                asset.path
            );
            let response = respond(&get(asset.path)).expect("the asset");
            assert_eq!(response.status(), StatusCode::OK);
            assert_eq!(response.headers()[header::CONTENT_TYPE], asset.content_type);
        }
    }

    #[test]
    fn an_unchanged_asset_is_answered_not_modified() {
        let first = respond(&get("/assets/app.js")).expect("the asset");
        let tag = first.headers()[header::ETAG].clone();
        let mut again = get("/assets/app.js");
        again.headers_mut().insert(header::IF_NONE_MATCH, tag);
        let second = respond(&again).expect("the asset");
        assert_eq!(second.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn grpc_calls_and_other_paths_pass_through() {
        let mut post = get("/");
        *post.method_mut() = Method::POST;
        assert!(respond(&post).is_none());
        assert!(respond(&get("/identity.recovery.v1.RecoveryService/CreateCaptcha")).is_none());
        assert!(respond(&get("/assets/../Cargo.toml")).is_none());
    }
}
