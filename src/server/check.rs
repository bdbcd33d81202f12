//! `config check --connect`: opens every dependency the configuration names and reports each as
//! ok or failed with the reason, so a deploy pipeline or an init container learns of a wrong
//! password, an unreachable relay or an unreadable key file before the first caller does.
//! Nothing is written: no migration, no key, no message.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use crate::config::{Config, NotifierKind};
use crate::db::Database;
use crate::notify::webhooks;
use crate::store::{EphemeralStore, RedisStore};

/// Longest any one check may take, on top of its own connect timeouts, so a black-holed address
/// cannot hang a pipeline.
const CHECK_DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug)]
pub enum Outcome {
    Ok(String),
    /// Not configured, so nothing to open (not a failure).
    Skipped(String),
    Failed(String),
}

#[derive(Debug)]
pub struct Check {
    pub name: &'static str,
    pub outcome: Outcome,
}

impl Check {
    pub fn failed(&self) -> bool {
        matches!(self.outcome, Outcome::Failed(_))
    }
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (word, detail) = match &self.outcome {
            Outcome::Ok(detail) => ("ok", detail),
            Outcome::Skipped(detail) => ("skipped", detail),
            Outcome::Failed(detail) => ("FAILED", detail),
        };
        write!(f, "{:<10} {word:<8} {detail}", self.name)
    }
}

async fn bounded(
    name: &'static str,
    ok: String,
    work: impl Future<Output = anyhow::Result<()>>,
) -> Check {
    let outcome = match tokio::time::timeout(CHECK_DEADLINE, work).await {
        Ok(Ok(())) => Outcome::Ok(ok),
        Ok(Err(error)) => Outcome::Failed(reasons(&error)),
        Err(_) => Outcome::Failed(format!("no answer within {}s", CHECK_DEADLINE.as_secs())),
    };
    Check { name, outcome }
}

/// The error and its causes, each once: several of our errors already quote their source, so
/// the alternate (`{:#}`) form would repeat it.
fn reasons(error: &anyhow::Error) -> String {
    let mut shown = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if !shown.contains(&text) {
            if !shown.is_empty() {
                shown.push_str(": ");
            }
            shown.push_str(&text);
        }
    }
    shown
}

async fn redis(name: &'static str, url: &str, config: &Config) -> Check {
    let shown = url
        .split(',')
        .map(crate::config::redact_url)
        .collect::<Vec<_>>()
        .join(",");
    bounded(name, shown, async {
        let store = RedisStore::connect(url, &config.redis).await?;
        store.ping().await?;
        Ok(())
    })
    .await
}

/// One check per webhook endpoint, all at once (each is bounded by its own `timeout_ms`).
async fn webhooks(config: &Config) -> Vec<Check> {
    let endpoints = &config.webhooks.endpoints;
    if endpoints.is_empty() {
        return vec![Check {
            name: "webhook",
            outcome: Outcome::Skipped("no endpoint configured".to_owned()),
        }];
    }
    let client = match crate::notify::webhooks::http_client() {
        Ok(client) => client,
        Err(error) => {
            return vec![Check {
                name: "webhook",
                outcome: Outcome::Failed(reasons(&error)),
            }];
        }
    };
    let probes = endpoints.iter().map(|endpoint| {
        let client = &client;
        async move {
            // The origin only: a webhook URL's path or query may hold a token.
            let origin = reqwest::Url::parse(&endpoint.url).map_or_else(
                |_| "invalid URL".to_owned(),
                |url| url.origin().ascii_serialization(),
            );
            let shown = format!("{} ({origin})", endpoint.id());
            let outcome =
                match tokio::time::timeout(CHECK_DEADLINE, webhooks::probe(client, endpoint)).await
                {
                    Ok(Ok(answer)) => Outcome::Ok(format!("{shown}: {answer}")),
                    Ok(Err(error)) => Outcome::Failed(format!("{shown}: {}", reasons(&error))),
                    Err(_) => Outcome::Failed(format!(
                        "{shown}: no answer within {}s",
                        CHECK_DEADLINE.as_secs()
                    )),
                };
            Check {
                name: "webhook",
                outcome,
            }
        }
    });
    futures_util::future::join_all(probes).await
}

/// Every check, in a fixed order. Secrets never appear: URLs are shown redacted.
pub async fn connect_all(config: &Config) -> Vec<Check> {
    let mut checks = Vec::new();
    checks.push(Check {
        name: "secret",
        outcome: match (&config.secret, config.production) {
            (Some(secret), _) => {
                match crate::secrets::KeyRing::parse(secrecy::ExposeSecret::expose_secret(secret)) {
                    Ok(_) => Outcome::Ok("RECOVERY_SECRET is usable".to_owned()),
                    Err(error) => Outcome::Failed(format!("RECOVERY_SECRET: {error}")),
                }
            }
            (None, true) => {
                Outcome::Failed("RECOVERY_SECRET is required in production mode".to_owned())
            }
            (None, false) => Outcome::Skipped("not set: a random key per start".to_owned()),
        },
    });
    checks.push(
        bounded(
            "database",
            crate::config::redact_url(&config.database_url),
            async {
                let db = Database::connect(&config.database_url, &config.database).await?;
                let pinged = db.ping().await;
                db.close().await.ok();
                Ok(pinged?)
            },
        )
        .await,
    );
    checks.push(match &config.redis_url {
        Some(url) => redis("redis", url, config).await,
        None => Check {
            name: "redis",
            outcome: Outcome::Skipped("not set: in-process store".to_owned()),
        },
    });
    if let Some(url) = &config.events.redis_url {
        checks.push(redis("events", url, config).await);
    }
    checks.push(match config.notifier {
        NotifierKind::Smtp => {
            let notifier = crate::notify::smtp::SmtpNotifier::from_settings(
                config.smtp_url.as_ref(),
                &config.mail_from,
                &config.smtp,
            );
            let shown = notifier
                .as_ref()
                .map(|n| n.endpoint().to_string())
                .unwrap_or_default();
            bounded("smtp", shown, async { notifier?.check_connection().await }).await
        }
        NotifierKind::Log => Check {
            name: "smtp",
            outcome: Outcome::Skipped("notifier is log".to_owned()),
        },
    });
    checks.extend(webhooks(config).await);
    checks.push(Check {
        name: "tls",
        outcome: match super::tls::server_tls(&config.tls) {
            Ok(Some(_)) => Outcome::Ok(format!(
                "certificate and key read{}",
                if config.tls.mutual() {
                    ", client CA read (mutual TLS)"
                } else {
                    ""
                }
            )),
            Ok(None) => Outcome::Skipped("TLS is off".to_owned()),
            Err(error) => Outcome::Failed(reasons(&error)),
        },
    });
    checks
}
