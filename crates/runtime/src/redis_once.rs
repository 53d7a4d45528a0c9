//! Exactly-once effects for state kept in Redis: one Lua script sets the event's marker and
//! applies the effects only if the marker was new, atomically.

use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::consumer::{Applied, HandlerError, Processor};
use crate::envelope::IncomingEvent;

/// Redis writes to apply together with the marker. Each op is `[name, key, a, b]`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    ops: Vec<[String; 4]>,
}

impl Effects {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
    fn push(mut self, op: &str, key: &str, a: String, b: String) -> Self {
        self.ops.push([op.into(), key.into(), a, b]);
        self
    }
    pub fn incr_by(self, key: &str, by: i64) -> Self {
        self.push("INCRBY", key, by.to_string(), String::new())
    }
    pub fn hincr_by(self, key: &str, field: &str, by: i64) -> Self {
        self.push("HINCRBY", key, field.into(), by.to_string())
    }
    pub fn zincr_by(self, key: &str, member: &str, by: f64) -> Self {
        self.push("ZINCRBY", key, by.to_string(), member.into())
    }
    pub fn hset(self, key: &str, field: &str, value: &str) -> Self {
        self.push("HSET", key, field.into(), value.into())
    }
    pub fn hdel(self, key: &str, field: &str) -> Self {
        self.push("HDEL", key, field.into(), String::new())
    }
    pub fn set(self, key: &str, value: &str) -> Self {
        self.push("SET", key, value.into(), String::new())
    }
    pub fn sadd(self, key: &str, member: &str) -> Self {
        self.push("SADD", key, member.into(), String::new())
    }
}

const SCRIPT: &str = r#"
if not redis.call('SET', KEYS[1], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
local i = 2
while i <= #ARGV do
  local op, key, a, b = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3]
  if op == 'INCRBY' then redis.call('INCRBY', key, a)
  elseif op == 'HINCRBY' then redis.call('HINCRBY', key, a, b)
  elseif op == 'ZINCRBY' then redis.call('ZINCRBY', key, a, b)
  elseif op == 'HSET' then redis.call('HSET', key, a, b)
  elseif op == 'HDEL' then redis.call('HDEL', key, a)
  elseif op == 'SET' then redis.call('SET', key, a)
  elseif op == 'SADD' then redis.call('SADD', key, a)
  else return redis.error_reply('unknown op ' .. op)
  end
  i = i + 4
end
return 1
"#;

/// Applies [`Effects`] once per marker key. Keys are passed as arguments, so this assumes a
/// single Redis node (not Redis Cluster), which is what jetmart runs.
#[derive(Clone)]
pub struct RedisOnce {
    conn: ConnectionManager,
    script: redis::Script,
    marker_ttl: Duration,
}

impl std::fmt::Debug for RedisOnce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisOnce")
            .field("marker_ttl", &self.marker_ttl)
            .finish_non_exhaustive()
    }
}

impl RedisOnce {
    /// `marker_ttl` must outlive any redelivery or replay of the same event (the streams' max age).
    pub fn new(conn: ConnectionManager, marker_ttl: Duration) -> Self {
        Self {
            conn,
            script: redis::Script::new(SCRIPT),
            marker_ttl,
        }
    }

    /// True when applied now, false when the marker existed (a duplicate).
    pub async fn apply(&self, marker: &str, effects: &Effects) -> Result<bool, redis::RedisError> {
        let mut inv = self.script.key(marker);
        inv.arg(self.marker_ttl.as_secs().max(1));
        for op in &effects.ops {
            inv.arg(&op[..]);
        }
        let mut conn = self.conn.clone();
        let applied: i64 = inv.invoke_async(&mut conn).await?;
        Ok(applied == 1)
    }
}

/// A handler whose effect is a set of Redis writes computed from the event alone.
pub trait RedisHandler: Send + Sync + 'static {
    fn handles(&self, event_type: &str) -> bool;
    /// The marker key namespace (a keyspace prefix, so a rebuild into a fresh prefix re-applies).
    fn marker(&self, consumer: &str, event: &IncomingEvent) -> String;
    fn effects(&self, event: &IncomingEvent) -> Result<Effects, HandlerError>;
}

/// Runs a [`RedisHandler`] with [`RedisOnce`].
#[derive(Debug)]
pub struct RedisProcessor<H> {
    once: RedisOnce,
    handler: H,
}

impl<H: RedisHandler> RedisProcessor<H> {
    pub fn new(once: RedisOnce, handler: H) -> Self {
        Self { once, handler }
    }
}

impl<H: RedisHandler> Processor for RedisProcessor<H> {
    fn handles(&self, event_type: &str) -> bool {
        self.handler.handles(event_type)
    }

    async fn process(
        &self,
        consumer: &str,
        event: &IncomingEvent,
    ) -> Result<Applied, HandlerError> {
        let effects = self.handler.effects(event)?;
        let marker = self.handler.marker(consumer, event);
        Ok(if self.once.apply(&marker, &effects).await? {
            Applied::Applied
        } else {
            Applied::Duplicate
        })
    }
}
