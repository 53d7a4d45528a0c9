//! The generation pointer: which keyspace is the read model now.

use redis::AsyncCommands;
use redis::aio::ConnectionManager;

use crate::keys::{self, Keyspace};

/// Returns the current generation, creating generation 1 (or the next free number) atomically
/// when there is none yet: a fresh Redis, or one that lost its data.
const ENSURE: &str = r#"
local current = redis.call('GET', KEYS[1])
if current then return tonumber(current) end
local g = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], g)
return g
"#;

/// Points the read model at ARGV[2] if it still points at ARGV[1].
const SWAP: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// The current keyspace (created if missing).
pub async fn current(conn: &ConnectionManager) -> redis::RedisResult<Keyspace> {
    if let Some(keys) = peek(conn).await? {
        return Ok(keys);
    }
    let mut conn = conn.clone();
    let generation: u64 = redis::Script::new(ENSURE)
        .key(keys::CURRENT)
        .key(keys::GENERATIONS)
        .invoke_async(&mut conn)
        .await?;
    Ok(Keyspace::new(generation))
}

/// The current keyspace, or None when there is no read model at all.
pub async fn peek(conn: &ConnectionManager) -> redis::RedisResult<Option<Keyspace>> {
    let mut conn = conn.clone();
    let current: Option<u64> = conn.get(keys::CURRENT).await?;
    Ok(current.map(Keyspace::new))
}

/// A generation number never used before.
pub async fn allocate(conn: &ConnectionManager) -> redis::RedisResult<Keyspace> {
    let mut conn = conn.clone();
    // Make sure the counter is past the current generation, whoever created it.
    let current = current(&conn).await?;
    let mut next: u64 = conn.incr(keys::GENERATIONS, 1).await?;
    if next <= current.generation() {
        next = conn
            .incr(keys::GENERATIONS, current.generation() + 1 - next)
            .await?;
    }
    Ok(Keyspace::new(next))
}

/// Compare-and-set of the pointer; false when it no longer points at `from`.
pub async fn swap(
    conn: &ConnectionManager,
    from: Keyspace,
    to: Keyspace,
) -> redis::RedisResult<bool> {
    let mut conn = conn.clone();
    let swapped: i64 = redis::Script::new(SWAP)
        .key(keys::CURRENT)
        .arg(from.generation().to_string())
        .arg(to.generation().to_string())
        .invoke_async(&mut conn)
        .await?;
    Ok(swapped == 1)
}
