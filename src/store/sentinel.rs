//! Redis behind Sentinel: `redis+sentinel://[[user]:password@]host:port[,host:port…]/<service>[/db]`
//! (`rediss+sentinel://` for TLS to the sentinels and to the master alike).
//!
//! The sentinels are asked which node is the master of `<service>`; the answer is checked with
//! ROLE on the node itself (the redis crate does both), and one multiplexed connection to it is
//! kept. The connection is dropped and the master looked up again after any error that can mean
//! "this is no longer the master": the connection broke or was refused (the master died, or
//! Sentinel demoted it: a demoted master closes its clients' connections), READONLY (we reached
//! a replica), MASTERDOWN, a timeout. The call that met the error gets `Unavailable` and is not
//! retried here: a script that may have run on the old master must not run twice (the caller
//! retries, and every write is a compare-and-swap or an idempotent SET).
//!
//! Asynchronous replication means a write acknowledged by the old master just before it died
//! may be lost in a fail-over; Sentinel cannot prevent that (see the README's production notes:
//! the effect is at worst a flow or captcha the caller has to start again, never a password
//! change, which lives in the database).
//!
//! The password applies to the data nodes (master); the sentinels are reached without one, as
//! most deployments run them (they hold no data).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use redis::aio::MultiplexedConnection;
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    AsyncConnectionConfig, ConnectionAddr, FromRedisValue, RedisError, ScriptInvocation, TlsMode,
};

use crate::recovery::ports::StoreError;

/// Longest wait for a replica's acknowledgement of a write (see `invoke`).
const MAX_REPLICA_ACK_WAIT: Duration = Duration::from_millis(100);

/// How long writes skip the acknowledgement wait after one went unacknowledged.
const NO_REPLICA_BACKOFF: Duration = Duration::from_secs(1);

/// Sentinel's customary port, used when a host in the URL names none.
const DEFAULT_SENTINEL_PORT: u16 = 26379;

/// What a `redis+sentinel://` URL names. `Debug` leaves the password out.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelSettings {
    pub sentinels: Vec<(String, u16)>,
    pub service: String,
    pub db: i64,
    pub username: Option<String>,
    pub password: Option<String>,
    pub tls: bool,
}

impl std::fmt::Debug for SentinelSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentinelSettings")
            .field("sentinels", &self.sentinels)
            .field("service", &self.service)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .finish()
    }
}

impl SentinelSettings {
    /// Whether `url` asks for Sentinel (the scheme alone decides).
    pub fn is_sentinel_url(url: &str) -> bool {
        let url = url.trim_start();
        url.starts_with("redis+sentinel://") || url.starts_with("rediss+sentinel://")
    }

    /// Parses the URL. Errors never quote it: it may carry a password.
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        let invalid =
            |what: &str| StoreError::Internal(anyhow!("invalid Redis Sentinel URL: {what}"));
        let url = url.trim();
        let (tls, rest) = if let Some(rest) = url.strip_prefix("redis+sentinel://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("rediss+sentinel://") {
            (true, rest)
        } else {
            return Err(invalid(
                "the scheme must be redis+sentinel or rediss+sentinel",
            ));
        };
        let (authority, path) = rest
            .split_once('/')
            .ok_or_else(|| invalid("the service name is missing (…/<service name>)"))?;
        let (userinfo, hosts) = match authority.rsplit_once('@') {
            Some((userinfo, hosts)) => (Some(userinfo), hosts),
            None => (None, authority),
        };
        let decode = |part: &str| {
            percent_encoding::percent_decode_str(part)
                .decode_utf8()
                .map(|decoded| decoded.into_owned())
                .map_err(|_| invalid("the credentials are not UTF-8 once percent-decoded"))
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(userinfo) => {
                let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
                let user = (!user.is_empty()).then(|| decode(user)).transpose()?;
                let password = (!password.is_empty())
                    .then(|| decode(password))
                    .transpose()?;
                (user, password)
            }
        };
        let sentinels = hosts
            .split(',')
            .map(str::trim)
            .filter(|host| !host.is_empty())
            .map(|host| {
                // Bracketed IPv6 (`[::1]:26379`) or `host[:port]`.
                let (name, port) = match host.strip_prefix('[') {
                    Some(v6) => {
                        let (name, after) = v6
                            .split_once(']')
                            .ok_or_else(|| invalid("an IPv6 host lacks its closing bracket"))?;
                        (name, after.strip_prefix(':'))
                    }
                    None => match host.rsplit_once(':') {
                        Some((name, port)) => (name, Some(port)),
                        None => (host, None),
                    },
                };
                let port = match port {
                    Some(port) => port
                        .parse::<u16>()
                        .map_err(|_| invalid("a sentinel port is not a number"))?,
                    None => DEFAULT_SENTINEL_PORT,
                };
                if name.is_empty() {
                    return Err(invalid("a sentinel host is empty"));
                }
                Ok((name.to_owned(), port))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sentinels.is_empty() {
            return Err(invalid("no sentinel host"));
        }
        let mut segments = path.split('/').filter(|segment| !segment.is_empty());
        let service = segments
            .next()
            .ok_or_else(|| invalid("the service name is missing (…/<service name>)"))?;
        let service = decode(service)?;
        let db = match segments.next() {
            Some(db) => db
                .parse::<i64>()
                .ok()
                .filter(|db| *db >= 0)
                .ok_or_else(|| invalid("the database is not a number"))?,
            None => 0,
        };
        if segments.next().is_some() {
            return Err(invalid("too many path segments (…/<service name>[/db])"));
        }
        Ok(Self {
            sentinels,
            service,
            db,
            username,
            password,
            tls,
        })
    }

    fn client(&self) -> Result<SentinelClient, RedisError> {
        let sentinels = self.sentinels.iter().map(|(host, port)| {
            if self.tls {
                ConnectionAddr::TcpTls {
                    host: host.clone(),
                    port: *port,
                    insecure: false,
                    tls_params: None,
                }
            } else {
                ConnectionAddr::Tcp(host.clone(), *port)
            }
        });
        let mut builder =
            SentinelClientBuilder::new(sentinels, &self.service, SentinelServerType::Master)?
                .set_client_to_redis_db(self.db);
        if self.tls {
            builder = builder
                .set_client_to_redis_tls_mode(TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(TlsMode::Secure);
        }
        if let Some(username) = &self.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password);
        }
        builder.build()
    }
}

/// A connection to whichever node the sentinels currently name master. Cheap to clone.
#[derive(Clone)]
pub(super) struct SentinelConnection {
    inner: Arc<Inner>,
}

struct Inner {
    /// Held while the master is looked up, so a fail-over seen by a thousand callers at once
    /// costs one lookup, not a thousand.
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection in use and its generation; `None` after an error, until the next lookup.
    current: std::sync::Mutex<Option<(u64, MultiplexedConnection)>>,
    generation: AtomicU64,
    config: AsyncConnectionConfig,
    /// How long a write waits for a replica's acknowledgement (see `invoke`).
    replica_ack_timeout: Duration,
    /// Set after a write no replica acknowledged: until then, writes do not wait.
    no_replica_until: std::sync::Mutex<Option<Instant>>,
}

impl SentinelConnection {
    /// Looks the master up once, so a wrong service name or unreachable sentinels fail start-up.
    pub(super) async fn connect(
        settings: &SentinelSettings,
        connect_timeout: Duration,
        command_timeout: Duration,
    ) -> Result<Self, RedisError> {
        let connection = Self {
            inner: Arc::new(Inner {
                client: tokio::sync::Mutex::new(settings.client()?),
                current: std::sync::Mutex::new(None),
                generation: AtomicU64::new(0),
                config: AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(command_timeout)),
                // A replica on the same network acknowledges in about a round trip; the cap
                // keeps the script, the wait and a master lookup inside one command budget.
                replica_ack_timeout: (command_timeout / 4).min(MAX_REPLICA_ACK_WAIT),
                no_replica_until: std::sync::Mutex::new(None),
            }),
        };
        connection.current().await?;
        Ok(connection)
    }

    fn cached(&self) -> Option<(u64, MultiplexedConnection)> {
        // A poisoned lock only means another caller panicked while swapping the cache; the
        // value inside is still a whole `Option`.
        self.inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn current(&self) -> Result<(u64, MultiplexedConnection), RedisError> {
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let mut client = self.inner.client.lock().await;
        // Another caller may have looked the master up while this one waited for the lock.
        if let Some(current) = self.cached() {
            return Ok(current);
        }
        let connection = client
            .get_async_connection_with_config(&self.inner.config)
            .await?;
        let generation = self.inner.generation.fetch_add(1, Ordering::SeqCst) + 1;
        *self
            .inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((generation, connection.clone()));
        tracing::info!(generation, "Redis master found through Sentinel");
        Ok((generation, connection))
    }

    /// Forgets the connection of `generation` (not a newer one another caller already made).
    fn forget(&self, generation: u64) {
        let mut current = self
            .inner
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if current
            .as_ref()
            .is_some_and(|(held, _)| *held == generation)
        {
            *current = None;
            tracing::warn!(
                generation,
                "Redis master connection failed; looking it up again"
            );
        }
    }

    async fn run<T>(
        &self,
        call: impl AsyncFnOnce(&mut MultiplexedConnection) -> Result<T, RedisError>,
    ) -> Result<T, RedisError> {
        let (generation, mut connection) = self.current().await?;
        let result = call(&mut connection).await;
        if let Err(error) = &result
            && super::redis::is_unavailable(error)
        {
            self.forget(generation);
        }
        result
    }

    /// Runs a script (every write is one), then waits for a replica to acknowledge it.
    ///
    /// Why: Sentinel promotes a replica, and replication is asynchronous, so a write the old
    /// master acknowledged but had not yet sent on would vanish in a fail-over. For a flow
    /// that means a used code or reset token coming back to life on the new master. `WAIT`
    /// (on the same connection, so it covers this write) closes that window whenever a replica
    /// is attached. When none acknowledges in time (the replica is down or far behind) the
    /// write still counts: with no replica in sync there is also none Sentinel would promote
    /// with less data, and refusing every write while a replica is down would turn a lost
    /// replica into an outage. Nor does every write then pay the full wait: after a miss, writes
    /// skip `WAIT` for `NO_REPLICA_BACKOFF` (the soak found that paying it on every write right
    /// after a fail-over, next to the master lookup, pushed calls past the command timeout,
    /// so they answered UNAVAILABLE for writes that had happened).
    pub(super) async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        let wait_ms = self.inner.replica_ack_timeout.as_millis().max(1);
        let skip_wait = self
            .inner
            .no_replica_until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|until| Instant::now() < until);
        self.run(async |connection| {
            let value = invocation.invoke_async(connection).await?;
            if skip_wait {
                return Ok(value);
            }
            let acked: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(u64::try_from(wait_ms).unwrap_or(u64::MAX))
                .query_async(connection)
                .await?;
            let mut no_replica_until = self
                .inner
                .no_replica_until
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if acked < 1 {
                if no_replica_until.is_none() {
                    tracing::warn!("Redis writes are not acknowledged by a replica");
                }
                *no_replica_until = Some(Instant::now() + NO_REPLICA_BACKOFF);
            } else if no_replica_until.take().is_some() {
                tracing::info!("Redis writes are acknowledged by a replica again");
            }
            Ok(value)
        })
        .await
    }

    pub(super) async fn query<T: FromRedisValue>(
        &self,
        command: &redis::Cmd,
    ) -> Result<T, RedisError> {
        self.run(async |connection| command.query_async(connection).await)
            .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_full_url_is_parsed() {
        let settings = SentinelSettings::parse(
            "redis+sentinel://:p%40ss@s1:26379,s2:26380,[::1]:26381,s4/mymaster/2",
        )
        .unwrap();
        assert_eq!(
            settings.sentinels,
            vec![
                ("s1".to_owned(), 26379),
                ("s2".to_owned(), 26380),
                ("::1".to_owned(), 26381),
                ("s4".to_owned(), DEFAULT_SENTINEL_PORT),
            ]
        );
        assert_eq!(settings.service, "mymaster");
        assert_eq!(settings.db, 2);
        assert_eq!(settings.username, None);
        assert_eq!(settings.password.as_deref(), Some("p@ss"));
        assert!(!settings.tls);
        assert!(!format!("{settings:?}").contains("p@ss"));
    }

    #[test]
    fn tls_user_and_default_db() {
        let settings = SentinelSettings::parse("rediss+sentinel://app:pw@h:1/svc").unwrap();
        assert!(settings.tls);
        assert_eq!(settings.username.as_deref(), Some("app"));
        assert_eq!(settings.db, 0);
    }

    #[test]
    fn bad_urls_are_refused_without_quoting_them() {
        for url in [
            "redis+sentinel://:hunter2@h:1",
            "redis+sentinel://:hunter2@h:1/",
            "redis+sentinel://:hunter2@h:x/svc",
            "redis+sentinel://:hunter2@/svc",
            "redis+sentinel://:hunter2@h:1/svc/-1",
            "redis+sentinel://:hunter2@h:1/svc/1/2",
            "redis://:hunter2@h:1/svc",
        ] {
            match SentinelSettings::parse(url) {
                Err(StoreError::Internal(error)) => {
                    assert!(!format!("{error:#}").contains("hunter2"), "{error:#}");
                }
                other => panic!("{url}: expected Internal, got {other:?}"),
            }
        }
    }
}
