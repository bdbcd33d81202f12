//! Values out of range are errors, each naming the key and the range allowed. A value the type
//! accepts can still be nonsense for the service (`max_attempts = 0` kills every flow at the first
//! code, a TTL of 0 expires a code before it is mailed); such a setting must stop the start, not
//! be clamped or discovered by the users.
//!
//! The bounds are the sane operating envelope, not hard limits of the code: the lower ones keep
//! the flow usable and the upper ones keep one setting from defeating a protection (a captcha of
//! 20 digits no person types, a pool of 10 000 connections no database accepts).

use std::ops::RangeInclusive;

use super::Config;

const DAY_SECS: u64 = 24 * 3600;
/// Ten minutes: the longest any single wait (connect, statement, send) is allowed to be.
const MAX_WAIT_MS: u64 = 600_000;

struct Problems(Vec<String>);

impl Problems {
    fn range<T>(&mut self, key: &str, value: T, allowed: RangeInclusive<T>)
    where
        T: PartialOrd + std::fmt::Display + Copy,
    {
        if !allowed.contains(&value) {
            self.0.push(format!(
                "`{key}` = {value} is out of range: allowed {}..={}",
                allowed.start(),
                allowed.end()
            ));
        }
    }

    fn rule(&mut self, broken: bool, message: impl FnOnce() -> String) {
        if broken {
            self.0.push(message());
        }
    }
}

/// One message per value out of range; empty when all are in range.
pub(super) fn out_of_range(config: &Config) -> Vec<String> {
    let mut p = Problems(Vec::new());
    let f = &config.flow;
    p.range("flow.flow_ttl_secs", f.flow_ttl_secs, 60..=DAY_SECS);
    p.range("flow.code_ttl_secs", f.code_ttl_secs, 30..=DAY_SECS);
    p.range("flow.token_ttl_secs", f.token_ttl_secs, 30..=DAY_SECS);
    p.rule(f.code_ttl_secs > f.flow_ttl_secs, || {
        format!(
            "`flow.code_ttl_secs` = {} is longer than `flow.flow_ttl_secs` = {}: the code would outlive its flow",
            f.code_ttl_secs, f.flow_ttl_secs
        )
    });
    p.range("flow.max_attempts", f.max_attempts, 1..=20);
    p.range(
        "flow.resend_cooldown_secs",
        f.resend_cooldown_secs,
        0..=3600,
    );
    p.range("flow.max_sends", f.max_sends, 1..=50);
    p.range("flow.captcha_ttl_secs", f.captcha_ttl_secs, 30..=3600);
    // The picture is drawn for 5 to 8 digits; fewer is guessable, more is not typeable.
    p.range("flow.captcha_digits", f.captcha_digits, 5..=8);
    // Below 1000 the work is free; above 10^8 a phone would need minutes.
    p.range("flow.pow_max_number", f.pow_max_number, 1_000..=100_000_000);
    p.range(
        "flow.pow_alternative_max_number",
        f.pow_alternative_max_number,
        1_000..=100_000_000,
    );
    // Six digits is the floor the yearly guessing bound in SECURITY.md is computed for.
    p.range("flow.code_digits", f.code_digits, 6..=10);
    // A freeze under a minute protects nothing; over 30 days it locks the owner out for good.
    p.range(
        "flow.report_freeze_secs",
        f.report_freeze_secs,
        60..=30 * DAY_SECS,
    );
    p.0.extend(config.webhooks.problems(config.production));
    let breach = &config.breach_check;
    p.range("breach_check.timeout_ms", breach.timeout_ms, 50..=30_000);
    p.range("breach_check.min_count", breach.min_count, 1..=u64::MAX);
    if let Some(url) = &config.mail.report_url
        && let Some(problem) = crate::notify::report_link::check_report_url(url)
    {
        p.0.push(format!("`mail.report_url` {problem}"));
    }

    let limits = &config.rate_limits;
    for (name, limit) in [
        ("per_login", &limits.per_login),
        ("per_ip", &limits.per_ip),
        ("global", &limits.global),
        (
            "verify_password_per_login",
            &limits.verify_password_per_login,
        ),
        ("verify_code_per_account", &limits.verify_code_per_account),
        ("send_code_per_account", &limits.send_code_per_account),
    ] {
        p.range(
            &format!("rate_limits.{name}.limit"),
            limit.limit,
            1..=u32::MAX,
        );
        p.range(
            &format!("rate_limits.{name}.window_secs"),
            limit.window_secs,
            1..=7 * DAY_SECS,
        );
    }

    // Shorter than /32 would lump whole providers into one bucket; /128 is single addresses.
    p.range(
        "rate_limits.ipv6_prefix_len",
        limits.ipv6_prefix_len,
        32..=128,
    );

    // `dns:<name>` or `uri:<uri>` (auth.rs matches them against the client certificate).
    for (index, text) in config
        .account_api
        .allowed_client_identities
        .iter()
        .enumerate()
    {
        if let Err(error) = crate::net::ClientIdentity::parse(text) {
            p.0.push(format!(
                "`account_api.allowed_client_identities[{index}]`: {error}"
            ));
        }
    }

    let policy = &config.password_policy;
    p.range("password_policy.max_length", policy.max_length, 8..=4096);
    p.range(
        "password_policy.min_length",
        policy.min_length,
        1..=policy.max_length.max(1),
    );
    p.range("password_policy.min_strength", policy.min_strength, 0..=4);
    p.range(
        "password_policy.history_depth",
        policy.history_depth,
        0..=24,
    );

    let h = &config.hashing;
    // argon2 needs at least 8 KiB per lane; 4 GiB per hash is beyond any sane deployment.
    p.range(
        "hashing.m_cost_kib",
        h.m_cost_kib,
        8 * h.p_cost.max(1)..=4 * 1024 * 1024,
    );
    p.range("hashing.t_cost", h.t_cost, 1..=100);
    p.range("hashing.p_cost", h.p_cost, 1..=16);
    p.range("hashing.max_in_flight", h.max_in_flight, 1..=1024);
    p.range(
        "hashing.queue_timeout_ms",
        h.queue_timeout_ms,
        1..=MAX_WAIT_MS,
    );

    let db = &config.database;
    p.range("database.max_connections", db.max_connections, 1..=1000);
    p.range(
        "database.min_connections",
        db.min_connections,
        0..=db.max_connections,
    );
    p.range(
        "database.connect_timeout_ms",
        db.connect_timeout_ms,
        1..=MAX_WAIT_MS,
    );
    p.range(
        "database.acquire_timeout_ms",
        db.acquire_timeout_ms,
        1..=MAX_WAIT_MS,
    );
    p.range(
        "database.audit_flush_interval_ms",
        db.audit_flush_interval_ms,
        0..=1_000,
    );
    p.range("database.audit_batch_rows", db.audit_batch_rows, 1..=1_000);
    p.range(
        "database.audit_queue_rows",
        db.audit_queue_rows,
        1..=1_000_000,
    );

    let redis = &config.redis;
    p.range(
        "redis.connect_timeout_ms",
        redis.connect_timeout_ms,
        1..=MAX_WAIT_MS,
    );
    p.range(
        "redis.command_timeout_ms",
        redis.command_timeout_ms,
        1..=MAX_WAIT_MS,
    );

    let d = &config.delivery;
    p.range(
        "delivery.poll_interval_ms",
        d.poll_interval_ms,
        10..=3_600_000,
    );
    p.range("delivery.batch_size", d.batch_size, 1..=10_000);
    p.range("delivery.concurrency", d.concurrency, 1..=256);
    p.range(
        "delivery.max_backoff_ms",
        d.max_backoff_ms,
        1..=DAY_SECS * 1000,
    );
    p.range(
        "delivery.initial_backoff_ms",
        d.initial_backoff_ms,
        1..=d.max_backoff_ms.max(1),
    );
    p.range("delivery.lease_ms", d.lease_ms, 1_000..=DAY_SECS * 1000);
    p.range(
        "delivery.notice_lifetime_secs",
        d.notice_lifetime_secs,
        60..=30 * DAY_SECS,
    );

    let e = &config.events;
    p.range(
        "events.poll_interval_ms",
        e.poll_interval_ms,
        10..=3_600_000,
    );
    p.range("events.batch_size", e.batch_size, 1..=10_000);
    p.range(
        "events.max_stream_length",
        e.max_stream_length,
        1..=u64::MAX,
    );
    p.range(
        "events.dedupe_ttl_secs",
        e.dedupe_ttl_secs,
        1..=365 * DAY_SECS,
    );

    let s = &config.server;
    p.range(
        "server.max_message_bytes",
        s.max_message_bytes,
        1024..=64 * 1024 * 1024,
    );
    p.range(
        "server.request_timeout_ms",
        s.request_timeout_ms,
        1..=MAX_WAIT_MS,
    );
    p.range("server.concurrency_limit", s.concurrency_limit, 1..=100_000);
    p.range(
        "server.shutdown_grace_secs",
        s.shutdown_grace_secs,
        0..=3600,
    );

    let smtp = &config.smtp;
    p.range(
        "smtp.connect_timeout_ms",
        smtp.connect_timeout_ms,
        1..=MAX_WAIT_MS,
    );
    p.range(
        "smtp.send_timeout_ms",
        smtp.send_timeout_ms,
        1..=MAX_WAIT_MS,
    );
    p.range("smtp.pool_max_size", smtp.pool_max_size, 1..=100);

    p.range(
        "tls.handshake_timeout_ms",
        config.tls.handshake_timeout_ms,
        1..=MAX_WAIT_MS,
    );
    p.rule(
        config.tls.cert_file.is_some() != config.tls.key_file.is_some(),
        || "`tls.cert_file` and `tls.key_file` must be set together".to_owned(),
    );
    p.rule(
        !matches!(config.log_format.as_str(), "text" | "json"),
        || {
            format!(
                "`log_format` = {:?}: allowed \"text\" or \"json\"",
                config.log_format
            )
        },
    );
    if let Some(admin) = config.admin.listen {
        // Metrics and probes must not share the port the public reaches through the gateway.
        p.rule(admin.port() != 0 && admin.port() == config.listen.port(), || {
            format!(
                "`admin.listen` = {admin} uses the gRPC port of `listen` = {}; give the admin listener a port of its own",
                config.listen
            )
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
            ["`flow.max_attempts` = 0 is out of range: allowed 1..=20"]
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
            ["`flow.captcha_digits` = 20 is out of range: allowed 5..=8"]
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
