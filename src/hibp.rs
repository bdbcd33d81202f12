//! The breached-password range adapter: `GET {url}{prefix}` in the Have I Been Pwned range API
//! format, with `Add-Padding: true` so an observer of the (encrypted) response size cannot tell
//! which prefix, and so which password family, was asked for.
//!
//! reqwest over rustls on ring, with the webpki roots: one crypto provider in the tree and no
//! dependency on the system CA bundle.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::recovery::ports::{BreachError, BreachRanges};

/// A reqwest client builder over rustls on ring with the webpki roots; also used for webhooks.
pub fn client_builder() -> Result<reqwest::ClientBuilder, anyhow::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(reqwest::Client::builder().tls_backend_preconfigured(tls))
}

pub struct HibpClient {
    client: reqwest::Client,
    url: String,
}

impl HibpClient {
    pub fn new(url: &str, timeout: Duration) -> Result<Self, anyhow::Error> {
        let client = client_builder()?
            .timeout(timeout)
            .connect_timeout(timeout)
            // The range endpoint is fixed; a redirect elsewhere is not followed.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("recovery-service/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            client,
            url: url.to_owned(),
        })
    }
}

#[async_trait]
impl BreachRanges for HibpClient {
    async fn range(&self, prefix: &str) -> Result<String, BreachError> {
        let fail = |error: reqwest::Error| BreachError(anyhow::anyhow!(error.without_url()));
        let response = self
            .client
            .get(format!("{}{prefix}", self.url))
            .header("Add-Padding", "true")
            .send()
            .await
            .map_err(fail)?;
        let status = response.status();
        if !status.is_success() {
            return Err(BreachError(anyhow::anyhow!(
                "breach range answered HTTP {status}"
            )));
        }
        response.text().await.map_err(fail)
    }
}
