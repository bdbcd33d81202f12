//! Caller authentication.
//!
//! `AccountService` (internal) accepts a bearer API key whose SHA-256 is listed in the
//! configuration, or a client certificate verified by mutual TLS whose identity (a DNS or URI
//! SAN) is in `account_api.allowed_client_identities` (any certificate of the client CA when the
//! list is empty); with neither configured it answers loopback callers only, outside production
//! mode (in production, loopback callers only with `account_api.trust_loopback = true`: a mesh
//! sidecar is a loopback caller). Only over HTTP/2 gRPC: `server::boundary` refuses it over
//! grpc-web and HTTP/1.1 before this runs. The identity that
//! got a call in is put in the request's extensions as a [`CallerIdentity`], for the audit.
//! `RecoveryService` can require a gateway key, so only the gateways in front of it can reach it. Keys are configured as SHA-256 digests: the config file
//! (and `config check`) never holds a usable key.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tonic::service::Interceptor;
use tonic::{Request, Status};

pub use crate::api::context::CallerIdentity;
use crate::api::status::to_status;
use crate::config::{AccountApiConfig, RecoveryApiConfig};
use crate::net::ClientIdentity;
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

    /// The configured digest the presented key hashes to, found in constant time (every
    /// digest is compared whatever matched).
    fn matching(&self, presented: Option<&str>) -> Option<&[u8; 32]> {
        let presented = presented?;
        let digest = Sha256::digest(presented.trim().as_bytes());
        let mut found = None;
        for known in &self.0 {
            let equal: bool = known.as_slice().ct_eq(digest.as_slice()).into();
            if equal {
                found = Some(known);
            }
        }
        found
    }
}

/// The identities a DER certificate carries: its DNS and URI SANs, and its subject (for the
/// audit of a certificate without SANs; never matched against the allow-list).
fn certificate_identities(der: &[u8]) -> Option<(Vec<ClientIdentity>, String)> {
    let (_, certificate) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut names = Vec::new();
    if let Ok(Some(san)) = certificate.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    names.push(ClientIdentity::Dns(dns.to_ascii_lowercase()));
                }
                x509_parser::extensions::GeneralName::URI(uri) => {
                    names.push(ClientIdentity::Uri((*uri).to_owned()));
                }
                _ => {}
            }
        }
    }
    Some((names, certificate.subject().to_string()))
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
    /// `account_api.allowed_client_identities`; empty: any verified certificate.
    allowed: Vec<ClientIdentity>,
    /// Loopback peers are admitted without a key or certificate.
    loopback: bool,
}

impl AccountAuth {
    /// `production`: loopback callers are admitted only with `trust_loopback`, never implied.
    pub fn from_config(
        config: &AccountApiConfig,
        mutual_tls: bool,
        production: bool,
    ) -> anyhow::Result<Self> {
        let mut allowed = Vec::with_capacity(config.allowed_client_identities.len());
        for (index, text) in config.allowed_client_identities.iter().enumerate() {
            allowed.push(ClientIdentity::parse(text).map_err(|error| {
                anyhow::anyhow!("account_api.allowed_client_identities[{index}]: {error}")
            })?);
        }
        let keys = KeyHashes::parse("account_api.api_key_sha256", &config.api_key_sha256)?;
        let loopback = config.trust_loopback || (!production && keys.is_empty() && !mutual_tls);
        Ok(Self {
            keys,
            client_certificates: mutual_tls,
            allowed,
            loopback,
        })
    }

    pub fn is_loopback_only(&self) -> bool {
        self.keys.is_empty() && !self.client_certificates
    }

    /// Loopback peers get in without a key or certificate.
    pub fn admits_loopback(&self) -> bool {
        self.loopback
    }

    /// Mutual TLS admits any certificate the client CA signed (no allow-list).
    pub fn admits_any_certificate(&self) -> bool {
        self.client_certificates && self.allowed.is_empty()
    }

    /// The identity of the verified leaf certificate, if it may call: with an allow-list, the
    /// first of its SANs on the list; without one, its first URI SAN, else DNS SAN, else its
    /// subject. `None`: no certificate, or none of its SANs is listed.
    fn certificate_caller<T>(&self, request: &Request<T>) -> Option<CallerIdentity> {
        if !self.client_certificates {
            return None;
        }
        // rustls only completes a handshake with a certificate that chains to the configured
        // client CA, so a certificate seen here is a verified one; the leaf comes first.
        let certificates = request.peer_certs()?;
        let leaf = certificates.first()?;
        let (names, subject) = certificate_identities(leaf.as_ref())?;
        if self.allowed.is_empty() {
            let shown = names
                .iter()
                .find(|name| matches!(name, ClientIdentity::Uri(_)))
                .or_else(|| names.first())
                .map_or_else(|| format!("subject:{subject}"), ClientIdentity::shown);
            return Some(CallerIdentity(shown));
        }
        names
            .iter()
            .find(|name| self.allowed.contains(name))
            .map(|name| CallerIdentity(name.shown()))
    }
}

impl Interceptor for AccountAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        let caller = self
            .certificate_caller(&request)
            .or_else(|| {
                self.keys
                    .matching(bearer(&request))
                    .map(|digest| CallerIdentity(format!("api-key:{}", &hex::encode(digest)[..12])))
            })
            .or_else(|| {
                (self.loopback
                    && request
                        .remote_addr()
                        .is_some_and(|addr| crate::net::canonical(addr.ip()).is_loopback()))
                .then(|| CallerIdentity("loopback".to_owned()))
            });
        match caller {
            Some(caller) => {
                request.extensions_mut().insert(caller);
                Ok(request)
            }
            None => Err(denied(&request)),
        }
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
    fn client_identities_are_dns_or_uri_sans() {
        assert_eq!(
            ClientIdentity::parse("dns:Admin.Internal"),
            Ok(ClientIdentity::Dns("admin.internal".into()))
        );
        assert_eq!(
            ClientIdentity::parse("spiffe://cluster.local/ns/id/sa/helpdesk"),
            Ok(ClientIdentity::Uri(
                "spiffe://cluster.local/ns/id/sa/helpdesk".into()
            ))
        );
        assert_eq!(
            ClientIdentity::parse("uri:https://ops.example.com/caller"),
            Ok(ClientIdentity::Uri("https://ops.example.com/caller".into()))
        );
        for bad in [
            "admin.internal",
            "dns:*.internal",
            "ip:10.0.0.1",
            "uri:nocolon",
            "dns:",
        ] {
            assert!(ClientIdentity::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn an_api_key_caller_is_named_by_its_configured_digest() {
        let mut auth = AccountAuth::from_config(
            &AccountApiConfig {
                api_key_sha256: vec![digest("other"), digest("helpdesk-key")],
                ..AccountApiConfig::default()
            },
            false,
            false,
        )
        .unwrap();
        let mut request = Request::new(());
        request
            .metadata_mut()
            .insert("authorization", "Bearer helpdesk-key".parse().unwrap());
        let request = auth.call(request).unwrap();
        assert_eq!(
            request.extensions().get::<CallerIdentity>(),
            Some(&CallerIdentity(format!(
                "api-key:{}",
                &digest("helpdesk-key")[..12]
            )))
        );
    }

    #[test]
    fn with_mutual_tls_loopback_is_no_longer_enough() {
        let auth = AccountAuth::from_config(&AccountApiConfig::default(), true, false).unwrap();
        assert!(!auth.is_loopback_only());
        assert!(!auth.admits_loopback());
        let auth = AccountAuth::from_config(&AccountApiConfig::default(), false, false).unwrap();
        assert!(auth.is_loopback_only());
        assert!(auth.admits_loopback());
    }

    #[test]
    fn production_trusts_loopback_only_when_told_to() {
        let auth = AccountAuth::from_config(&AccountApiConfig::default(), false, true).unwrap();
        assert!(!auth.admits_loopback());
        let told = AccountApiConfig {
            trust_loopback: true,
            ..AccountApiConfig::default()
        };
        assert!(
            AccountAuth::from_config(&told, false, true)
                .unwrap()
                .admits_loopback()
        );
        // With a key configured, loopback is no longer implied, but can still be asked for.
        let keyed = AccountApiConfig {
            api_key_sha256: vec![digest("k")],
            ..AccountApiConfig::default()
        };
        assert!(
            !AccountAuth::from_config(&keyed, false, false)
                .unwrap()
                .admits_loopback()
        );
        let keyed_and_told = AccountApiConfig {
            trust_loopback: true,
            ..keyed
        };
        assert!(
            AccountAuth::from_config(&keyed_and_told, false, false)
                .unwrap()
                .admits_loopback()
        );
    }
}
