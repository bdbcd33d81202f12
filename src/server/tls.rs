//! TLS and mutual TLS on the gRPC port, with rustls on the ring provider (the only crypto
//! provider in the tree: `cargo tree -i aws-lc-rs` must stay empty).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tonic::transport::{Certificate, Identity, ServerTlsConfig};

use crate::config::TlsConfig;

fn read_pem(what: &str, path: &Path) -> anyhow::Result<Vec<u8>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("tls.{what}: reading {}", path.display()))?;
    // A file that is not PEM would only fail later, deep inside the handshake set-up, with a
    // message that does not name the setting.
    if !bytes
        .windows(b"-----BEGIN ".len())
        .any(|w| w == b"-----BEGIN ")
    {
        anyhow::bail!("tls.{what}: {} is not a PEM file", path.display());
    }
    Ok(bytes)
}

/// The rustls server configuration for `config`, or `None` when TLS is off.
pub fn server_tls(config: &TlsConfig) -> anyhow::Result<Option<ServerTlsConfig>> {
    let (cert_file, key_file) = match (&config.cert_file, &config.key_file) {
        (None, None) => {
            if config.client_ca_file.is_some() {
                anyhow::bail!("tls.client_ca_file is set but tls.cert_file is not");
            }
            return Ok(None);
        }
        (Some(cert), Some(key)) => (cert, key),
        (Some(_), None) => anyhow::bail!("tls.cert_file is set but tls.key_file is not"),
        (None, Some(_)) => anyhow::bail!("tls.key_file is set but tls.cert_file is not"),
    };
    let identity = Identity::from_pem(
        read_pem("cert_file", cert_file)?,
        read_pem("key_file", key_file)?,
    );
    let mut tls = ServerTlsConfig::new()
        .identity(identity)
        .timeout(Duration::from_millis(config.handshake_timeout_ms.max(1)));
    if let Some(ca_file) = &config.client_ca_file {
        tls = tls
            .client_ca_root(Certificate::from_pem(read_pem("client_ca_file", ca_file)?))
            .client_auth_optional(config.client_auth_optional);
    }
    Ok(Some(tls))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_off_without_files() {
        assert!(server_tls(&TlsConfig::default()).unwrap().is_none());
    }

    #[test]
    fn half_a_tls_configuration_is_refused() {
        let key_only = TlsConfig {
            key_file: Some("server.key".into()),
            ..TlsConfig::default()
        };
        assert!(server_tls(&key_only).is_err());
        let ca_only = TlsConfig {
            client_ca_file: Some("ca.pem".into()),
            ..TlsConfig::default()
        };
        assert!(server_tls(&ca_only).is_err());
    }

    #[test]
    fn a_file_that_is_not_pem_names_the_setting() {
        let dir = std::env::temp_dir().join(format!("tls-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let not_pem = dir.join("server.crt");
        std::fs::write(&not_pem, b"not a certificate").unwrap();
        let config = TlsConfig {
            cert_file: Some(not_pem.clone()),
            key_file: Some(not_pem),
            ..TlsConfig::default()
        };
        let error = server_tls(&config).unwrap_err().to_string();
        std::fs::remove_dir_all(&dir).ok();
        assert!(error.contains("tls.cert_file"), "{error}");
    }
}
