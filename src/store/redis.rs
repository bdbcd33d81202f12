//! The production store: Redis, single node (`redis://`, `rediss://`), Cluster (a
//! comma-separated list of node URLs) or a master found through Sentinel
//! (`redis+sentinel://…`, see `sentinel.rs`).
//!
//! Atomicity: every state change is exactly one Lua script, run with EVALSHA (`redis::Script`
//! sends the SHA and loads the body only after a NOSCRIPT reply). A script runs alone on its
//! node, so a compare-and-swap, a take-once or a counter bump cannot interleave with another
//! replica's, and the TTL is set inside the same script: no key can ever be left without an
//! expiry by a crash between two commands. Reads are single commands (HMGET, GET, SMEMBERS).
//!
//! Key layout (`P` is the configured prefix, `recovery:` by default):
//!
//! | key                   | type   | value                                   |
//! |-----------------------|--------|-----------------------------------------|
//! | `P captcha:{<id>}`    | string | captcha record, JSON                    |
//! | `P flow:{<id>}`       | hash   | `v` = version, `d` = flow JSON          |
//! | `P acct:{<owner>}`    | set    | ids of the owner's open flows           |
//! | `P token:{<mac>}`     | string | flow id the reset token belongs to      |
//! | `P rl:{<key>}`        | string | fixed-window hit counter                |
//! | `P once:{<key>}`      | string | `1`: a single-use thing was used        |
//! | `P cache:{<key>}`     | string | shared cache entry (breach ranges)      |
//! | `P live:{<owner>}`    | string | flow id holding the owner's live code   |
//! | `P report:{<mac>}`    | string | owner a mailed report code belongs to   |
//! | `P frozen:{<owner>}`  | string | `1`: recovery reported and frozen       |
//!
//! The braces are Redis Cluster hash tags: only the part inside them picks the slot, so every
//! key that belongs to one flow (or captcha, account, …) lands in one slot. Each script here
//! touches one key, and any future multi-key script must keep its keys under one tag, otherwise
//! Cluster answers CROSSSLOT. The one exception, `INSERT_INDEXED_FLOW` (a new flow and its
//! owner's set), is never sent to a Cluster: there its two one-key scripts go out together.
//!
//! Secrets: keys carry ids and keyed hashes (MACs), never a secret; values are never logged
//! nor put in an error message (a decoding error reports only its position).

use std::time::Duration;

use anyhow::anyhow;
use async_trait::async_trait;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{ErrorKind, FromRedisValue, RedisError, Script, ScriptInvocation, ServerErrorKind};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::sentinel::{SentinelConnection, SentinelSettings};
use crate::clock::MAX_WAIT_MS;
use crate::recovery::captcha::CaptchaRecord;
use crate::recovery::flow::Flow;
use crate::recovery::ports::{
    EphemeralStore, EventSink, OutboxEvent, RateDecision, StoreError, StreamRetention, Versioned,
};

/// Connection settings of the Redis store (`[redis]` in the configuration).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct RedisConfig {
    /// Prefix of every key, so several deployments (or test runs) can share one Redis.
    pub key_prefix: String,
    /// Milliseconds to connect (and, with Sentinel, to find the master).
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    pub connect_timeout_ms: u64,
    /// Milliseconds one command or script may take before the call is answered `UNAVAILABLE`.
    #[schemars(range(min = 1, max = MAX_WAIT_MS))]
    pub command_timeout_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            key_prefix: "recovery:".to_owned(),
            connect_timeout_ms: 2_000,
            command_timeout_ms: 2_000,
        }
    }
}

/// `SET key value PX ttl`. A script rather than a bare SET only so that every write goes through
/// the same audited path (one script per state change).
const PUT_VALUE: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Read and delete in one step (GETDEL, written out so it also runs on Redis < 6.2): of two
/// concurrent answers to one captcha, exactly one sees the record.
const TAKE_VALUE: &str = r"
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('DEL', KEYS[1])
end
return value
";

/// A new flow starts at version 1; both fields and the TTL are written together.
const INSERT_FLOW: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', '1', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
";

/// Compare-and-swap on the version. Versions are compared as the decimal strings Rust wrote,
/// not as Lua numbers (doubles), so no precision is lost. ARGV: expected, next, JSON, ttl.
const REPLACE_FLOW: &str = r"
local current = redis.call('HGET', KEYS[1], 'v')
if current ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'd', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
";

/// `INSERT_FLOW` and `ADD_TO_SET` in one script (KEYS: flow, owner's set; ARGV: JSON, ttl,
/// flow id), for a new flow. Its two keys have different hash tags, so it runs only where there
/// are no slots (single node, Sentinel); on Cluster the two one-key scripts are sent at once.
const INSERT_INDEXED_FLOW: &str = r"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'v', '1', 'd', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], ARGV[3])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[2]) < ttl then
  redis.call('PEXPIRE', KEYS[2], ttl)
end
return 1
";

/// `SET key 1 NX PX ttl`: of two concurrent claims exactly one gets 1.
const CLAIM_ONCE: &str = r"
if redis.call('SET', KEYS[1], '1', 'NX', 'PX', ARGV[1]) then
  return 1
end
return 0
";

const DELETE_KEY: &str = r"
return redis.call('DEL', KEYS[1])
";

/// Adds a flow to its owner's set and extends the set's TTL, never shortens it (a new flow must
/// not cut short the index of an older, longer-lived one). PTTL is -1 for a set that was just
/// created, so it always gets a TTL. (PEXPIRE … GT would do, but needs Redis 7.)
const ADD_TO_SET: &str = r"
redis.call('SADD', KEYS[1], ARGV[1])
local ttl = tonumber(ARGV[2])
if redis.call('PTTL', KEYS[1]) < ttl then
  redis.call('PEXPIRE', KEYS[1], ttl)
end
return 1
";

/// Fixed-window counter: the first hit opens the window. A counter found without a TTL (which
/// would otherwise limit forever) gets a fresh window. Returns {count, remaining window in ms}.
const HIT: &str = r"
local count = redis.call('INCR', KEYS[1])
local window = tonumber(ARGV[1])
if count == 1 then
  redis.call('PEXPIRE', KEYS[1], window)
end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], window)
  ttl = window
end
return {count, ttl}
";

/// Appends an event to a stream unless its id was appended before (the relay publishes at least
/// once; this drops the repeats it can see). KEYS: stream, dedupe marker (same hash tag as the
/// stream, so Cluster keeps both in one slot). ARGV: marker TTL ms, MAXLEN, then field/value
/// pairs.
const APPEND_EVENT: &str = r"
if not redis.call('SET', KEYS[2], '1', 'NX', 'PX', ARGV[1]) then
  return 0
end
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], '*', unpack(ARGV, 3))
return 1
";

/// Longest TTL sent to Redis (~34 years): Redis rejects an expiry that overflows once added to
/// its clock, and no short-lived record needs more.
const MAX_TTL_MS: u64 = 1 << 40;

/// Redis refuses `PX 0`; a zero TTL means "expires at once", which 1 ms is for every reader.
fn ttl_ms(ttl: Duration) -> u64 {
    u64::try_from(ttl.as_millis())
        .unwrap_or(MAX_TTL_MS)
        .clamp(1, MAX_TTL_MS)
}

/// Both connection kinds multiplex every caller over their sockets and are cheap to clone.
#[derive(Clone)]
enum Connection {
    /// Reconnects by itself after a dropped connection.
    Single(ConnectionManager),
    /// Follows MOVED/ASK and refreshes the slot map by itself.
    Cluster(ClusterConnection),
    /// Looks the master up again after an error that can mean a fail-over.
    Sentinel(SentinelConnection),
}

impl Connection {
    fn mode(&self) -> &'static str {
        match self {
            Connection::Single(_) => "single",
            Connection::Cluster(_) => "cluster",
            Connection::Sentinel(_) => "sentinel",
        }
    }

    async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        match self.clone() {
            Connection::Single(mut connection) => invocation.invoke_async(&mut connection).await,
            Connection::Cluster(mut connection) => invocation.invoke_async(&mut connection).await,
            Connection::Sentinel(connection) => connection.invoke(invocation).await,
        }
    }

    async fn query<T: FromRedisValue>(&self, command: &redis::Cmd) -> Result<T, RedisError> {
        match self.clone() {
            Connection::Single(mut connection) => command.query_async(&mut connection).await,
            Connection::Cluster(mut connection) => command.query_async(&mut connection).await,
            Connection::Sentinel(connection) => connection.query(command).await,
        }
    }
}

struct Scripts {
    put_value: Script,
    take_value: Script,
    insert_flow: Script,
    insert_indexed_flow: Script,
    replace_flow: Script,
    delete_key: Script,
    add_to_set: Script,
    hit: Script,
    claim_once: Script,
    append_event: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            put_value: Script::new(PUT_VALUE),
            take_value: Script::new(TAKE_VALUE),
            insert_flow: Script::new(INSERT_FLOW),
            insert_indexed_flow: Script::new(INSERT_INDEXED_FLOW),
            replace_flow: Script::new(REPLACE_FLOW),
            delete_key: Script::new(DELETE_KEY),
            add_to_set: Script::new(ADD_TO_SET),
            hit: Script::new(HIT),
            claim_once: Script::new(CLAIM_ONCE),
            append_event: Script::new(APPEND_EVENT),
        }
    }
}

pub struct RedisStore {
    connection: Connection,
    scripts: Scripts,
    prefix: String,
    command_timeout: Duration,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("mode", &self.connection.mode())
            .field("prefix", &self.prefix)
            .field("command_timeout", &self.command_timeout)
            .finish_non_exhaustive()
    }
}

impl RedisStore {
    /// Connects and checks the server answers. `url` is one `redis://` / `rediss://` URL (single
    /// node), or several separated by commas (Cluster; a single node followed by a comma also
    /// means Cluster), or a `redis+sentinel://` / `rediss+sentinel://` URL (Sentinel). URLs may
    /// carry a password, so they never appear in an error or a log.
    pub async fn connect(url: &str, config: &RedisConfig) -> Result<Self, StoreError> {
        let connect_timeout = Duration::from_millis(config.connect_timeout_ms.max(1));
        let command_timeout = Duration::from_millis(config.command_timeout_ms.max(1));
        let connecting = async {
            if SentinelSettings::is_sentinel_url(url) {
                let settings = SentinelSettings::parse(url)?;
                let connection =
                    SentinelConnection::connect(&settings, connect_timeout, command_timeout)
                        .await
                        .map_err(|e| connect_error("master through Sentinel", e))?;
                Ok(Connection::Sentinel(connection))
            } else if url.contains(',') {
                let nodes: Vec<&str> = url
                    .split(',')
                    .map(str::trim)
                    .filter(|node| !node.is_empty())
                    .collect();
                let client = ClusterClient::builder(nodes)
                    .connection_timeout(connect_timeout)
                    .response_timeout(command_timeout)
                    // Retries (after MOVED, TRYAGAIN, a failover) must all fit in one command's
                    // budget; past it the caller gets UNAVAILABLE and can retry.
                    .overall_response_timeout(Some(command_timeout))
                    .build()
                    .map_err(|e| connect_error("cluster URLs", e))?;
                let connection = client
                    .get_async_connection()
                    .await
                    .map_err(|e| connect_error("cluster", e))?;
                Ok(Connection::Cluster(connection))
            } else {
                let client =
                    redis::Client::open(url.trim()).map_err(|e| connect_error("URL", e))?;
                let manager_config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(connect_timeout))
                    .set_response_timeout(Some(command_timeout))
                    // Reconnection runs in the background; a request meanwhile fails fast with
                    // UNAVAILABLE rather than waiting out a long backoff.
                    .set_number_of_retries(3)
                    .set_max_delay(Duration::from_secs(1));
                let manager = ConnectionManager::new_with_config(client, manager_config)
                    .await
                    .map_err(|e| connect_error("server", e))?;
                Ok(Connection::Single(manager))
            }
        };
        let connection = match tokio::time::timeout(connect_timeout, connecting).await {
            Ok(connection) => connection?,
            Err(_) => {
                return Err(StoreError::Unavailable(anyhow!(
                    "connecting to Redis timed out after {} ms",
                    connect_timeout.as_millis()
                )));
            }
        };
        let store = Self {
            connection,
            scripts: Scripts::new(),
            prefix: config.key_prefix.clone(),
            command_timeout,
        };
        store.ping().await?;
        tracing::info!(mode = store.connection.mode(), prefix = %store.prefix, "connected to Redis");
        Ok(store)
    }

    fn key(&self, kind: &str, id: &str) -> String {
        format!("{}{kind}:{{{id}}}", self.prefix)
    }

    /// Bounds one operation by the command timeout, whatever the client's own timeouts cover
    /// (EVALSHA may take two round trips after a NOSCRIPT; Cluster may retry).
    async fn bounded<T>(
        &self,
        operation: &'static str,
        future: impl Future<Output = Result<T, RedisError>>,
    ) -> Result<T, StoreError> {
        match tokio::time::timeout(self.command_timeout, future).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(classify(operation, error)),
            Err(_) => Err(StoreError::Unavailable(anyhow!(
                "redis {operation} timed out after {} ms",
                self.command_timeout.as_millis()
            ))),
        }
    }

    async fn run_script<T: FromRedisValue>(
        &self,
        operation: &'static str,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, StoreError> {
        self.bounded(operation, self.connection.invoke(invocation))
            .await
    }

    async fn run_command<T: FromRedisValue>(
        &self,
        operation: &'static str,
        command: &redis::Cmd,
    ) -> Result<T, StoreError> {
        self.bounded(operation, self.connection.query(command))
            .await
    }
}

/// Retryable (the server is unreachable, restarting or failing over) versus everything else.
pub(super) fn is_unavailable(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_cluster_error()
        || matches!(
            error.kind(),
            ErrorKind::ClusterConnectionNotFound
                // The sentinels know the master but flag it down: a fail-over is under way.
                | ErrorKind::MasterNameNotFoundBySentinel
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::MasterDown
                        | ServerErrorKind::TryAgain
                        | ServerErrorKind::ClusterDown
                        | ServerErrorKind::ReadOnly
                )
        )
}

/// The error's text is the client's or the server's, which names the failure, never the
/// arguments (our values), so it is safe to keep in the chain.
fn classify(operation: &'static str, error: RedisError) -> StoreError {
    let unavailable = is_unavailable(&error);
    let error = anyhow::Error::new(error).context(format!("redis {operation}"));
    if unavailable {
        StoreError::Unavailable(error)
    } else {
        StoreError::Internal(error)
    }
}

fn connect_error(what: &'static str, error: RedisError) -> StoreError {
    let unavailable = is_unavailable(&error);
    let error = if error.kind() == ErrorKind::InvalidClientConfig {
        // Category only: the detail of a configuration error may quote part of the URL, which
        // can carry the password.
        anyhow!("invalid Redis {what}: {}", error.category())
    } else {
        anyhow::Error::new(error).context(format!("connecting to the Redis {what}"))
    };
    if unavailable {
        StoreError::Unavailable(error)
    } else {
        StoreError::Internal(error)
    }
}

fn encode(what: &'static str, value: &impl Serialize) -> Result<String, StoreError> {
    serde_json::to_string(value)
        .map_err(|e| StoreError::Internal(anyhow!("encoding a {what}: {:?} error", e.classify())))
}

/// serde_json's message can quote the offending input, so only its kind and position are kept.
fn decode<T: DeserializeOwned>(what: &'static str, json: &str) -> Result<T, StoreError> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Internal(anyhow!(
            "stored {what} does not decode: {:?} error at line {}, column {}",
            e.classify(),
            e.line(),
            e.column()
        ))
    })
}

#[async_trait]
impl EphemeralStore for RedisStore {
    async fn put_captcha(&self, captcha: &CaptchaRecord, ttl: Duration) -> Result<(), StoreError> {
        let json = encode("captcha", captcha)?;
        let key = self.key("captcha", &captcha.id);
        let mut invocation = self.scripts.put_value.prepare_invoke();
        invocation.key(key).arg(json).arg(ttl_ms(ttl));
        self.run_script::<()>("put_captcha", &invocation).await
    }

    async fn take_captcha(&self, id: &str) -> Result<Option<CaptchaRecord>, StoreError> {
        let mut invocation = self.scripts.take_value.prepare_invoke();
        invocation.key(self.key("captcha", id));
        let json: Option<String> = self.run_script("take_captcha", &invocation).await?;
        json.map(|json| decode("captcha", &json)).transpose()
    }

    async fn insert_flow(&self, flow: &Flow, ttl: Duration) -> Result<(), StoreError> {
        let json = encode("flow", flow)?;
        let mut invocation = self.scripts.insert_flow.prepare_invoke();
        invocation
            .key(self.key("flow", &flow.id))
            .arg(json)
            .arg(ttl_ms(ttl));
        self.run_script::<()>("insert_flow", &invocation).await
    }

    async fn add_account_flow(
        &self,
        owner: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.add_to_set.prepare_invoke();
        invocation
            .key(self.key("acct", owner))
            .arg(flow_id)
            .arg(ttl_ms(ttl));
        self.run_script::<()>("add_account_flow", &invocation).await
    }

    async fn insert_indexed_flow(&self, flow: &Flow, ttl: Duration) -> Result<(), StoreError> {
        let owner = flow.owner();
        if matches!(self.connection, Connection::Cluster(_)) {
            // Two slots: the two one-key scripts, sent together (one round trip of waiting).
            tokio::try_join!(
                self.insert_flow(flow, ttl),
                self.add_account_flow(&owner, &flow.id, ttl)
            )?;
            return Ok(());
        }
        let json = encode("flow", flow)?;
        let mut invocation = self.scripts.insert_indexed_flow.prepare_invoke();
        invocation
            .key(self.key("flow", &flow.id))
            .key(self.key("acct", &owner))
            .arg(json)
            .arg(ttl_ms(ttl))
            .arg(flow.id.as_str());
        self.run_script::<()>("insert_indexed_flow", &invocation)
            .await
    }

    async fn load_flow(&self, id: &str) -> Result<Option<Versioned<Flow>>, StoreError> {
        let mut command = redis::cmd("HMGET");
        command.arg(self.key("flow", id)).arg("v").arg("d");
        let (version, json): (Option<String>, Option<String>) =
            self.run_command("load_flow", &command).await?;
        match (version, json) {
            (Some(version), Some(json)) => {
                let version = version.parse::<u64>().map_err(|_| {
                    StoreError::Internal(anyhow!("stored flow version is not a number"))
                })?;
                Ok(Some(Versioned {
                    value: decode("flow", &json)?,
                    version,
                }))
            }
            (None, None) => Ok(None),
            _ => Err(StoreError::Internal(anyhow!(
                "stored flow lacks its version or its data"
            ))),
        }
    }

    async fn replace_flow(
        &self,
        flow: &Flow,
        expected_version: u64,
        ttl: Duration,
    ) -> Result<bool, StoreError> {
        let next_version = expected_version
            .checked_add(1)
            .ok_or_else(|| StoreError::Internal(anyhow!("flow version overflow")))?;
        let json = encode("flow", flow)?;
        let mut invocation = self.scripts.replace_flow.prepare_invoke();
        invocation
            .key(self.key("flow", &flow.id))
            .arg(expected_version.to_string())
            .arg(next_version.to_string())
            .arg(json)
            .arg(ttl_ms(ttl));
        let swapped: i64 = self.run_script("replace_flow", &invocation).await?;
        Ok(swapped == 1)
    }

    async fn delete_flow(&self, id: &str) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.delete_key.prepare_invoke();
        invocation.key(self.key("flow", id));
        let deleted: i64 = self.run_script("delete_flow", &invocation).await?;
        Ok(deleted == 1)
    }

    async fn account_flows(&self, account_id: &str) -> Result<Vec<String>, StoreError> {
        let mut command = redis::cmd("SMEMBERS");
        command.arg(self.key("acct", account_id));
        self.run_command("account_flows", &command).await
    }

    async fn put_token(
        &self,
        token_mac: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.put_value.prepare_invoke();
        invocation
            .key(self.key("token", token_mac))
            .arg(flow_id)
            .arg(ttl_ms(ttl));
        self.run_script::<()>("put_token", &invocation).await
    }

    async fn token_flow(&self, token_mac: &str) -> Result<Option<String>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(self.key("token", token_mac));
        self.run_command("token_flow", &command).await
    }

    async fn claim_once(&self, key: &str, ttl: Duration) -> Result<bool, StoreError> {
        let mut invocation = self.scripts.claim_once.prepare_invoke();
        invocation.key(self.key("once", key)).arg(ttl_ms(ttl));
        let claimed: i64 = self.run_script("claim_once", &invocation).await?;
        Ok(claimed == 1)
    }

    async fn put_cached(&self, key: &str, value: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut invocation = self.scripts.put_value.prepare_invoke();
        invocation
            .key(self.key("cache", key))
            .arg(value)
            .arg(ttl_ms(ttl));
        self.run_script::<()>("put_cached", &invocation).await
    }

    async fn cached(&self, key: &str) -> Result<Option<String>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(self.key("cache", key));
        self.run_command("cached", &command).await
    }

    async fn hit(
        &self,
        key: &str,
        limit: u32,
        window: Duration,
    ) -> Result<RateDecision, StoreError> {
        let mut invocation = self.scripts.hit.prepare_invoke();
        invocation.key(self.key("rl", key)).arg(ttl_ms(window));
        let (count, remaining_ms): (u64, i64) = self.run_script("hit", &invocation).await?;
        if count <= u64::from(limit) {
            return Ok(RateDecision::Allowed);
        }
        let remaining = Duration::from_millis(u64::try_from(remaining_ms).unwrap_or(0));
        Ok(RateDecision::Limited {
            // Never tell a client to retry at once: the window may close a few ms from now.
            retry_after: remaining.max(Duration::from_secs(1)),
        })
    }

    async fn hits(&self, key: &str) -> Result<u64, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(self.key("rl", key));
        let count: Option<u64> = self.run_command("hits", &command).await?;
        Ok(count.unwrap_or(0))
    }

    async fn clear_limit(&self, key: &str) -> Result<(), StoreError> {
        let mut invocation = self.scripts.delete_key.prepare_invoke();
        invocation.key(self.key("rl", key));
        self.run_script::<()>("clear_limit", &invocation).await
    }

    async fn set_live_code(
        &self,
        owner: &str,
        flow_id: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.put_value.prepare_invoke();
        invocation
            .key(self.key("live", owner))
            .arg(flow_id)
            .arg(ttl_ms(ttl));
        self.run_script::<()>("set_live_code", &invocation).await
    }

    async fn live_code(&self, owner: &str) -> Result<Option<String>, StoreError> {
        let mut command = redis::cmd("GET");
        command.arg(self.key("live", owner));
        self.run_command("live_code", &command).await
    }

    async fn put_report_code(
        &self,
        report_mac: &str,
        owner: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut invocation = self.scripts.put_value.prepare_invoke();
        invocation
            .key(self.key("report", report_mac))
            .arg(owner)
            .arg(ttl_ms(ttl));
        self.run_script::<()>("put_report_code", &invocation).await
    }

    async fn take_report_code(&self, report_mac: &str) -> Result<Option<String>, StoreError> {
        let mut invocation = self.scripts.take_value.prepare_invoke();
        invocation.key(self.key("report", report_mac));
        self.run_script("take_report_code", &invocation).await
    }

    async fn freeze_recovery(&self, owner: &str, ttl: Duration) -> Result<(), StoreError> {
        let mut invocation = self.scripts.put_value.prepare_invoke();
        invocation
            .key(self.key("frozen", owner))
            .arg("1")
            .arg(ttl_ms(ttl));
        self.run_script::<()>("freeze_recovery", &invocation).await
    }

    async fn recovery_frozen(&self, owner: &str) -> Result<bool, StoreError> {
        let mut command = redis::cmd("EXISTS");
        command.arg(self.key("frozen", owner));
        let found: i64 = self.run_command("recovery_frozen", &command).await?;
        Ok(found > 0)
    }

    async fn unfreeze_recovery(&self, owner: &str) -> Result<(), StoreError> {
        let mut invocation = self.scripts.delete_key.prepare_invoke();
        invocation.key(self.key("frozen", owner));
        self.run_script::<()>("unfreeze_recovery", &invocation)
            .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.run_command::<()>("ping", &redis::cmd("PING")).await
    }
}

#[async_trait]
impl EventSink for RedisStore {
    async fn publish(
        &self,
        stream: &str,
        event: &OutboxEvent,
        retention: &StreamRetention,
    ) -> Result<bool, StoreError> {
        // The stream name is used verbatim (consumers know it); the marker borrows the whole
        // stream name as its hash tag, which puts it in the stream's slot.
        let marker = format!("{{{stream}}}:published:{}", event.event_id);
        let occurred_at = event.created_at.to_rfc3339();
        let mut invocation = self.scripts.append_event.key(stream);
        invocation
            .key(marker)
            .arg(
                u64::try_from(retention.dedupe_ttl.as_millis())
                    .unwrap_or(MAX_TTL_MS)
                    .min(MAX_TTL_MS),
            )
            .arg(retention.max_length.max(1))
            .arg("event_id")
            .arg(&event.event_id)
            .arg("type")
            .arg(&event.event_type)
            .arg("account_id")
            .arg(&event.aggregate_id)
            .arg("occurred_at")
            .arg(occurred_at)
            .arg("payload")
            .arg(&event.payload);
        let appended: i64 = self.run_script("append event", &invocation).await?;
        Ok(appended == 1)
    }
}
