//! Values out of range are errors, each naming the key and the range allowed. A value the type
//! accepts can still be nonsense for the service (`max_attempts = 0` kills every flow at the first
//! code, a TTL of 0 expires a code before it is mailed); such a setting must stop the start, not
//! be clamped or discovered by the users.
//!
//! The bounds are the sane operating envelope, not hard limits of the code: the lower ones keep
//! the flow usable and the upper ones keep one setting from defeating a protection (a captcha of
//! 20 digits no person types, a pool of 10 000 connections no database accepts).

use super::Config;

struct Problems(Vec<String>);

impl Problems {
    fn rule(&mut self, broken: bool, message: impl FnOnce() -> String) {
        if broken {
            self.0.push(message());
        }
    }
}

/// One message per value out of range; empty when all are in range. Each number's own bounds
/// are the schema's (`#[schemars(range(..))]` on its field, checked by [`super::schema`]); what
/// is here relates two keys or checks a shape the schema cannot express.
pub(super) fn out_of_range(config: &Config) -> Vec<String> {
    let mut p = Problems(super::schema::out_of_range(config));
    let f = &config.flow;
    p.rule(f.code_ttl_secs > f.flow_ttl_secs, || {
        "`flow.code_ttl_secs` is longer than `flow.flow_ttl_secs`: the code would outlive its flow"
            .to_owned()
    });
    p.0.extend(config.webhooks.problems(config.production));
    p.0.extend(super::boundary::problems(config));
    if let Some(url) = &config.mail.report_url
        && let Some(problem) = crate::notify::report_link::check_report_url(url)
    {
        p.0.push(format!("`mail.report_url` {problem}"));
    }

    // `dns:<name>` or `uri:<uri>` (auth.rs matches them against the client certificate).
    for (index, text) in config
        .account_api
        .allowed_client_identities
        .iter()
        .enumerate()
    {
        if crate::net::ClientIdentity::parse(text).is_err() {
            p.0.push(format!(
                "`account_api.allowed_client_identities[{index}]` {}",
                crate::net::ClientIdentity::EXPECTED
            ));
        }
    }

    let policy = &config.password_policy;
    p.rule(policy.min_length > policy.max_length, || {
        "`password_policy.min_length` is more than `password_policy.max_length`".to_owned()
    });

    let h = &config.hashing;
    // argon2 needs at least 8 KiB per lane.
    p.rule(h.m_cost_kib < 8 * h.p_cost, || {
        "`hashing.m_cost_kib` is less than 8 KiB per lane of `hashing.p_cost`".to_owned()
    });

    let db = &config.database;
    p.rule(db.min_connections > db.max_connections, || {
        "`database.min_connections` is more than `database.max_connections`".to_owned()
    });

    let d = &config.delivery;
    p.rule(d.initial_backoff_ms > d.max_backoff_ms, || {
        "`delivery.initial_backoff_ms` is more than `delivery.max_backoff_ms`".to_owned()
    });

    p.rule(
        config.tls.cert_file.is_some() != config.tls.key_file.is_some(),
        || "`tls.cert_file` and `tls.key_file` must be set together".to_owned(),
    );
    p.rule(
        !matches!(config.log_format.as_str(), "text" | "json"),
        || "`log_format` is neither \"text\" nor \"json\"".to_owned(),
    );
    if let Some(admin) = config.admin.listen {
        // Metrics and probes must not share the port the public reaches through the gateway.
        p.rule(admin.port() != 0 && admin.port() == config.listen.port(), || {
            "`admin.listen` uses the gRPC port of `listen`; give the admin listener a port of its own"
                .to_owned()
        });
    }
    p.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_url_needs_https_and_the_code_placeholder() {
        let mut config = Config::default();
        config.mail.report_url = Some("http://id.example.com/report".into());
        let problems = out_of_range(&config);
        assert!(
            problems.iter().any(|p| p.contains("`mail.report_url`")),
            "{problems:?}"
        );
        config.mail.report_url = Some("https://id.example.com/report?code={code}".into());
        assert!(out_of_range(&config).is_empty());
    }

    #[test]
    fn the_defaults_are_in_range() {
        assert_eq!(out_of_range(&Config::default()), Vec::<String>::new());
    }

    #[test]
    fn zero_attempts_names_the_key_and_the_range() {
        let mut config = Config::default();
        config.flow.max_attempts = 0;
        assert_eq!(
            out_of_range(&config),
            ["`flow.max_attempts` is out of range: allowed 1..=20"]
        );
    }

    #[test]
    fn a_ttl_of_zero_is_refused() {
        let mut config = Config::default();
        config.flow.code_ttl_secs = 0;
        config.flow.token_ttl_secs = 0;
        let problems = out_of_range(&config);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("flow.code_ttl_secs"), "{problems:?}");
    }

    #[test]
    fn a_twenty_digit_captcha_is_refused() {
        let mut config = Config::default();
        config.flow.captcha_digits = 20;
        assert_eq!(
            out_of_range(&config),
            ["`flow.captcha_digits` is out of range: allowed 5..=8"]
        );
    }

    #[test]
    fn a_code_may_not_outlive_its_flow() {
        let mut config = Config::default();
        config.flow.flow_ttl_secs = 300;
        config.flow.code_ttl_secs = 600;
        assert!(out_of_range(&config)[0].contains("outlive"));
    }

    #[test]
    fn the_admin_listener_never_shares_the_grpc_port() {
        let mut config = Config::default();
        config.admin.listen = Some(config.listen);
        assert!(out_of_range(&config)[0].contains("admin.listen"));
    }

    #[test]
    fn a_disabled_rate_limit_still_needs_sane_numbers() {
        let mut config = Config::default();
        config.rate_limits.per_ip.window_secs = 0;
        assert!(out_of_range(&config)[0].contains("rate_limits.per_ip.window_secs"));
    }

    #[test]
    fn a_client_identity_must_say_dns_or_uri() {
        let mut config = Config::default();
        config.account_api.allowed_client_identities =
            vec!["dns:admin.internal".into(), "CN=admin".into()];
        let problems = out_of_range(&config);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("account_api.allowed_client_identities[1]"));
        config.account_api.allowed_client_identities = Vec::new();
        config.rate_limits.ipv6_prefix_len = 16;
        assert!(out_of_range(&config)[0].contains("rate_limits.ipv6_prefix_len"));
    }
}
