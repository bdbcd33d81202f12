//! Caller authentication.
//!
//! `AccountService` (internal) accepts a bearer API key whose SHA-256 is listed in the
//! configuration, or a client certificate verified by mutual TLS; with neither configured it
//! answers loopback callers only. `RecoveryService` can require a gateway key, so only the
//! gateways in front of it can reach it. Keys are configured as SHA-256 digests: the config file
//! (and `config check`) never holds a usable key.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

pub use crate::api::context::CallerIdentity;
use crate::api::status::to_status;
use crate::config::{AccountApiConfig, RecoveryApiConfig};
use crate::recovery::RecoveryError;

/// The SHA-256 digests of the accepted keys.
#[derive(Clone, Debug, Default)]
struct KeyHashes(Vec<[u8; 32]>);

impl KeyHashes {
    fn parse(setting: &str, hex_hashes: &[String]) -> anyhow::Result<Self> {
        let mut hashes = Vec::with_capacity(hex_hashes.len());
        for (index, hex_hash) in hex_hashes.iter().enumerate() {
            let bytes = hex::decode(hex_hash.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| anyhow::anyhow!("{setting}[{index}] is not a SHA-256 in hex"))?;
            hashes.push(bytes);
        }
        Ok(Self(hashes))
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every configured digest is compared, in constant time, so the answer time says nothing
    /// about which key (or how much of one) matched.
    fn accepts(&self, presented: Option<&str>) -> bool {
        self.matching(presented).is_some()
    }

    /// The digest of the presented key, if it is one of the configured ones.
    fn matching(&self, presented: Option<&str>) -> Option<[u8; 32]> {
        let presented = presented?;
        let digest: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
        let mut matched = subtle::Choice::from(0);
        for known in &self.0 {
            matched |= known.as_slice().ct_eq(digest.as_slice());
        }
        bool::from(matched).then_some(digest)
    }
}

fn bearer<T>(request: &Request<T>) -> Option<&str> {
    request
        .metadata()
        .get("authorization")
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
}

fn denied<T>(request: &Request<T>) -> Status {
    crate::api::localized::by_accept_language(to_status(RecoveryError::PermissionDenied), request)
}

#[derive(Clone, Debug)]
pub struct AccountAuth {
    keys: KeyHashes,
    /// The port runs mutual TLS: a presented client certificate has been verified against
    /// `tls.client_ca_file` by the handshake before any request arrives.
    client_certificates: bool,
}

impl AccountAuth {
    pub fn from_config(config: &AccountApiConfig, mutual_tls: bool) -> anyhow::Result<Self> {
        Ok(Self {
            keys: KeyHashes::parse("account_api.api_key_sha256", &config.api_key_sha256)?,
            client_certificates: mutual_tls,
        })
    }

    pub fn is_loopback_only(&self) -> bool {
        self.keys.is_empty() && !self.client_certificates
    }
}

impl Interceptor for AccountAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if self.is_loopback_only() {
            let loopback = request
                .remote_addr()
                .is_some_and(|addr| addr.ip().is_loopback());
            if !loopback {
                return Err(denied(&request));
            }
            request
                .extensions_mut()
                .insert(CallerIdentity("loopback".to_owned()));
            return Ok(request);
        }
        // rustls only completes a handshake with a certificate that chains to the configured
        // client CA, so a certificate seen here is a verified one.
        let certificate = if self.client_certificates {
            request
                .peer_certs()
                .and_then(|certificates| certificates.first().cloned())
        } else {
            None
        };
        // The key wins when both are presented: it names the caller more precisely than a
        // certificate digest.
        let identity = match (self.keys.matching(bearer(&request)), certificate) {
            // The first 8 bytes of the configured SHA-256 name the key's entry in
            // `account_api.api_key_sha256`; the key itself never appears.
            (Some(digest), _) => format!("api-key:{}", hex::encode(&digest[..8])),
            (None, Some(certificate)) => format!(
                "client-certificate:{}",
                hex::encode(&Sha256::digest(certificate.as_ref())[..8])
            ),
            (None, None) => return Err(denied(&request)),
        };
        request.extensions_mut().insert(CallerIdentity(identity));
        Ok(request)
    }
}

#[derive(Clone, Debug)]
pub struct GatewayAuth {
    keys: KeyHashes,
}

impl GatewayAuth {
    pub fn from_config(config: &RecoveryApiConfig) -> anyhow::Result<Self> {
        Ok(Self {
            keys: KeyHashes::parse(
                "recovery_api.gateway_key_sha256",
                &config.gateway_key_sha256,
            )?,
        })
    }

    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }
}

impl Interceptor for GatewayAuth {
    fn call(&mut self, request: Request<()>) -> Result<Request<()>, Status> {
        if self.is_open() {
            return Ok(request);
        }
        let presented = request
            .metadata()
            .get("x-gateway-key")
            .and_then(|value| value.to_str().ok())
            .or_else(|| bearer(&request));
        if self.keys.accepts(presented) {
            Ok(request)
        } else {
            Err(denied(&request))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(key: &str) -> String {
        hex::encode(Sha256::digest(key.as_bytes()))
    }

    #[test]
    fn a_key_that_is_not_a_sha256_is_refused_at_start() {
        let config = RecoveryApiConfig {
            gateway_key_sha256: vec!["abc".into()],
        };
        let error = GatewayAuth::from_config(&config).unwrap_err().to_string();
        assert!(
            error.contains("recovery_api.gateway_key_sha256[0]"),
            "{error}"
        );
    }

    #[test]
    fn the_gateway_key_is_read_from_its_header_or_a_bearer() {
        let mut auth = GatewayAuth::from_config(&RecoveryApiConfig {
            gateway_key_sha256: vec![digest("gw-key")],
        })
        .unwrap();
        let with = |name: &'static str, value: &str| {
            let mut request = Request::new(());
            request.metadata_mut().insert(name, value.parse().unwrap());
            request
        };
        assert!(auth.call(with("x-gateway-key", "gw-key")).is_ok());
        assert!(auth.call(with("authorization", "Bearer gw-key")).is_ok());
        assert!(auth.call(with("x-gateway-key", "other")).is_err());
        assert!(auth.call(Request::new(())).is_err());
    }

    #[test]
    fn with_mutual_tls_loopback_is_no_longer_enough() {
        let auth = AccountAuth::from_config(&AccountApiConfig::default(), true).unwrap();
        assert!(!auth.is_loopback_only());
        let auth = AccountAuth::from_config(&AccountApiConfig::default(), false).unwrap();
        assert!(auth.is_loopback_only());
    }
}
