//! The generation pointer (which keyspace is the read model now) and the rebuild lease (which
//! keyspace a rebuild is filling, and who holds it).
//!
//! Redis can lose everything at any moment (FLUSHALL, a restart without persistence), even in
//! the middle of a rebuild. Three rules keep the read model from ever showing a generation that
//! lacks history:
//! - only a rebuild that finished its replay sets the pointer (or [`create_empty`] when there is
//!   no history at all); nothing creates an empty current generation on demand;
//! - the swap checks, in the same script, that the rebuild still holds its lease: a flush
//!   deletes the lease, so a rebuild that lost part of its keyspace can never swap it in;
//! - generation numbers never repeat, even after a flush reset the counter (they are at least
//!   Redis's clock in microseconds), so a rebuild that outlived a flush cannot write into,
//!   delete or sweep the generation of the rebuild that replaced it.

use redis::aio::ConnectionManager;

use crate::keys::{self, Keyspace};

/// A generation number never used before: one more than the last one, and at least the
/// server's clock in microseconds (the counter itself is lost with everything else in a flush).
const ALLOCATE: &str = r#"
local now = redis.call('TIME')
-- As a string: Lua would print a number this large in exponent notation.
local floor = now[1] .. string.format('%06d', tonumber(now[2]))
local n = redis.call('INCR', KEYS[1])
if n < tonumber(floor) then
  redis.call('SET', KEYS[1], floor)
  n = tonumber(floor)
end
return n
"#;

/// Creates the pointer to ARGV[1] if there is no read model and no rebuild is filling one.
const CREATE_EMPTY: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1])
return 1
"#;

/// Points the read model at ARGV[2] if the lease KEYS[2] still holds ARGV[3] and the pointer
/// still names ARGV[1] ('' for none). 1: swapped; 0: pointer moved; -1: lease lost.
const SWAP: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[3] then
  return -1
end
local current = redis.call('GET', KEYS[1])
if (ARGV[1] == '' and not current) or current == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Where live consumers write an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// The read model.
    Current(Keyspace),
    /// No read model, but a rebuild holds the lease and fills this generation: writing into it
    /// (exactly once, by its markers) saves the event a wait; the rebuild's replay covers every
    /// event stored before it took the lease.
    Building(Keyspace),
    /// No read model and no rebuild: nothing can count the event yet.
    Nothing,
}

/// The lease value: `<generation> <token>`.
pub fn lease_value(generation: Keyspace, token: &str) -> String {
    format!("{} {token}", generation.generation())
}

/// The generation a lease value names.
pub fn leased_generation(value: &str) -> Option<Keyspace> {
    let (number, token) = value.split_once(' ')?;
    if token.is_empty() {
        return None;
    }
    number.parse().ok().map(Keyspace::new)
}

/// The current keyspace, or None when there is no read model at all.
pub async fn peek(conn: &ConnectionManager) -> redis::RedisResult<Option<Keyspace>> {
    let mut conn = conn.clone();
    let current: Option<u64> = redis::cmd("GET")
        .arg(keys::CURRENT)
        .query_async(&mut conn)
        .await?;
    Ok(current.map(Keyspace::new))
}

/// The pointer and the lease, read together (one round trip).
pub async fn target(conn: &ConnectionManager) -> redis::RedisResult<Target> {
    let mut conn = conn.clone();
    let (current, lease): (Option<u64>, Option<String>) = redis::cmd("MGET")
        .arg(keys::CURRENT)
        .arg(keys::REBUILD_LOCK)
        .query_async(&mut conn)
        .await?;
    Ok(
        match (current, lease.as_deref().and_then(leased_generation)) {
            (Some(g), _) => Target::Current(Keyspace::new(g)),
            (None, Some(building)) => Target::Building(building),
            (None, None) => Target::Nothing,
        },
    )
}

/// A generation number never used before, even across a flush.
pub async fn allocate(conn: &ConnectionManager) -> redis::RedisResult<Keyspace> {
    let mut conn = conn.clone();
    let n: u64 = redis::Script::new(ALLOCATE)
        .key(keys::GENERATIONS)
        .invoke_async(&mut conn)
        .await?;
    Ok(Keyspace::new(n))
}

/// Makes a fresh, empty generation the read model, unless there is one already or a rebuild
/// is filling one. Only correct when no stream holds an event (the caller checks).
pub async fn create_empty(conn: &ConnectionManager) -> redis::RedisResult<Option<Keyspace>> {
    let keys = allocate(conn).await?;
    let mut conn = conn.clone();
    let created: i64 = redis::Script::new(CREATE_EMPTY)
        .key(keys::CURRENT)
        .key(keys::REBUILD_LOCK)
        .arg(keys.generation().to_string())
        .invoke_async(&mut conn)
        .await?;
    Ok((created == 1).then_some(keys))
}

/// How a swap ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    Swapped,
    /// The pointer no longer names `from` (another rebuild swapped, or the data was lost).
    Moved,
    /// The lease is gone or someone else's (a flush, or it expired): the new generation may
    /// lack what was replayed into it before.
    LeaseLost,
}

/// Compare-and-set of the pointer from `from` (None: no read model) to `to`, only while
/// `lease` is still the rebuild lock's value.
pub async fn swap(
    conn: &ConnectionManager,
    from: Option<Keyspace>,
    to: Keyspace,
    lease: &str,
) -> redis::RedisResult<Swap> {
    let mut conn = conn.clone();
    let swapped: i64 = redis::Script::new(SWAP)
        .key(keys::CURRENT)
        .key(keys::REBUILD_LOCK)
        .arg(from.map_or(String::new(), |k| k.generation().to_string()))
        .arg(to.generation().to_string())
        .arg(lease)
        .invoke_async(&mut conn)
        .await?;
    Ok(match swapped {
        1 => Swap::Swapped,
        -1 => Swap::LeaseLost,
        _ => Swap::Moved,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_values_name_their_generation() {
        let v = lease_value(Keyspace::new(1_764_000_000_000_123), "tok");
        assert_eq!(v, "1764000000000123 tok");
        assert_eq!(
            leased_generation(&v),
            Some(Keyspace::new(1_764_000_000_000_123))
        );
        for bad in ["", "12", "12 ", "x tok", "someone-else"] {
            assert_eq!(leased_generation(bad), None, "{bad:?}");
        }
    }
}
