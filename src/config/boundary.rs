//! Rules for the trust boundary of the gRPC port: who may call `AccountService` in production
//! mode, and which hosts HTTP/1.1 requests (the web page, grpc-web) may name. Checked by the
//! loader (so `config check` fails) and again by `App::build` (so a configuration made in code
//! cannot start either). Each message names the key and the problem, never a value.

use super::Config;

/// One message per broken rule; empty when the boundary is sound.
pub(super) fn problems(config: &Config) -> Vec<String> {
    let mut problems = Vec::new();
    let account = &config.account_api;
    // "No keys: loopback only" admits whatever a mesh sidecar or a proxy on the same host
    // forwards, which in production is everyone the proxy lets in.
    if config.production
        && account.api_key_sha256.is_empty()
        && !config.tls.mutual()
        && !account.trust_loopback
    {
        problems.push(
            "`account_api`: production mode needs AccountService callers to authenticate: set \
             `account_api.api_key_sha256` or mutual TLS (`tls.client_ca_file`); \
             `account_api.trust_loopback = true` admits every loopback caller instead (a mesh \
             sidecar is one)"
                .to_owned(),
        );
    }
    let browser_facing = config.ui_enabled() || !config.server.cors_allowed_origins.is_empty();
    if config.production && browser_facing && config.server.public_hosts.is_none() {
        problems.push(
            "`server.public_hosts` must be set in production mode while the web UI (`ui.enabled`) \
             or grpc-web from other origins (`server.cors_allowed_origins`) is on: list the host \
             names browsers reach the service by"
                .to_owned(),
        );
    }
    if let Err(problem) =
        crate::net::PublicHosts::from_config(config.server.public_hosts.as_deref())
    {
        problems.push(problem);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production() -> Config {
        Config {
            production: true,
            ..Config::default()
        }
    }

    #[test]
    fn production_without_account_authentication_names_account_api() {
        let found = problems(&production());
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("`account_api`"), "{found:?}");

        let mut keyed = production();
        keyed.account_api.api_key_sha256 = vec!["00".repeat(32)];
        assert!(problems(&keyed).is_empty());

        let mut loopback = production();
        loopback.account_api.trust_loopback = true;
        assert!(problems(&loopback).is_empty());

        let mut mutual = production();
        mutual.tls.cert_file = Some("server.crt".into());
        mutual.tls.key_file = Some("server.key".into());
        mutual.tls.client_ca_file = Some("ca.crt".into());
        assert!(problems(&mutual).is_empty());

        // Outside production, loopback trust is the embedded default.
        assert!(problems(&Config::default()).is_empty());
    }

    #[test]
    fn production_with_a_browser_front_end_needs_public_hosts() {
        let mut config = production();
        config.account_api.trust_loopback = true;
        config.ui.enabled = Some(true);
        let found = problems(&config);
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].starts_with("`server.public_hosts`"), "{found:?}");

        config.ui.enabled = None;
        config.server.cors_allowed_origins = vec!["https://id.example.com".into()];
        assert!(problems(&config)[0].starts_with("`server.public_hosts`"));

        config.server.public_hosts = Some(vec!["id.example.com".into()]);
        assert!(problems(&config).is_empty());

        config.server.public_hosts = Some(vec!["https://id.example.com/".into()]);
        let found = problems(&config);
        assert!(
            found[0].starts_with("`server.public_hosts[0]`"),
            "{found:?}"
        );
        assert!(!found[0].contains("https://id.example.com/"), "{found:?}");
    }
}
