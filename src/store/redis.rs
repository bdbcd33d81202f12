//! Redis store. Placeholder until the Redis work lands in this session.

use crate::config::RedisConfig;

pub struct RedisStore;

impl RedisStore {
    pub async fn connect(
        _url: &str,
        _config: &RedisConfig,
    ) -> anyhow::Result<crate::store::MemoryStore> {
        anyhow::bail!("the redis store is not built yet")
    }
}
