//! Redis: rate-limit counters shared by many gateway instances, and approval wake-ups.
//!
//! Every counter of a call is checked and taken by one Lua script, so Redis runs the whole
//! reservation atomically: clients spread over instances never get more than `max`.
//! Fixed windows are one integer key per window (expiring with it); sliding windows are a
//! sorted set of `reservation:amount` members scored by time. Decisions on approvals are
//! published on a channel so that a call held on one instance is released at once when it
//! is approved on another.

mod resp;

use std::sync::Arc;
use std::time::Duration;

use resp::{Client, Cmd, Value};
pub use resp::{RedisUrl, RespError};

use crate::counters::{
    BoxFuture, CounterSpec, CounterStore, Reservation, Reserve, StoreError, Usage,
    new_reservation_id,
};

/// Checks every counter, then (in `take` mode) takes them all; or reports the first one that
/// is full. KEYS: one per counter. ARGV: mode, now, reservation id, then five per counter:
/// max, amount, window_ms, sliding (0/1), window start.
/// Returns `{0}` when taken, `{index, used, reset}` (1-based) when full, and in `peek` mode
/// `{used1, reset1, used2, reset2, ...}`.
const RESERVE: &str = r#"
local mode, now, id = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local usage = {}
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 5
  local max, amount, window = tonumber(ARGV[b + 1]), tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  local sliding, start = ARGV[b + 4] == '1', tonumber(ARGV[b + 5])
  local used, reset = 0, start + window
  if sliding then
    redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
    local items = redis.call('ZRANGE', KEYS[i], 0, -1, 'WITHSCORES')
    for j = 1, #items, 2 do
      used = used + tonumber(string.match(items[j], ':(%d+)$'))
    end
    reset = now
    if #items > 0 then reset = tonumber(items[2]) + window end
  else
    used = tonumber(redis.call('GET', KEYS[i]) or '0')
  end
  if mode == 'take' and used + amount > max then
    return {i, used, reset}
  end
  usage[#usage + 1] = used
  usage[#usage + 1] = reset
end
if mode == 'peek' then return usage end
for i = 1, #KEYS do
  local b = 3 + (i - 1) * 5
  local amount, window = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
  if ARGV[b + 4] == '1' then
    redis.call('ZADD', KEYS[i], now, id .. ':' .. amount)
    redis.call('PEXPIRE', KEYS[i], window)
  else
    -- A new key gets its expiry, relative to the caller's clock so that clock skew with
    -- Redis cannot end it early; later calls in the window need not set it again.
    if redis.call('INCRBY', KEYS[i], amount) == tonumber(amount) then
      redis.call('PEXPIRE', KEYS[i], math.max(tonumber(ARGV[b + 5]) + window - now, 0) + 1000)
    end
  end
end
return {0}
"#;

/// Gives back what a reservation took. KEYS: the counters. ARGV: reservation id, then two
/// per counter: amount, sliding (0/1).
const ROLLBACK: &str = r#"
local id = ARGV[1]
for i = 1, #KEYS do
  local amount, sliding = ARGV[2 * i], ARGV[2 * i + 1] == '1'
  if sliding then
    redis.call('ZREM', KEYS[i], id .. ':' .. amount)
  elseif redis.call('EXISTS', KEYS[i]) == 1 then
    if redis.call('DECRBY', KEYS[i], amount) < 0 then redis.call('SET', KEYS[i], 0, 'KEEPTTL') end
  end
end
return 0
"#;

/// A Lua script, sent by its SHA-1 and, when Redis does not know it (first use, a restarted
/// Redis, `SCRIPT FLUSH`), by its text.
struct Script {
    text: &'static str,
    sha1: String,
}

impl Script {
    fn new(text: &'static str) -> Script {
        Script {
            text,
            sha1: sha1_smol::Sha1::from(text).digest().to_string(),
        }
    }
}

/// Counters (and approval wake-ups) in Redis.
#[derive(Clone)]
pub struct RedisState {
    client: Arc<Client>,
    prefix: String,
    reserve: Arc<Script>,
    rollback: Arc<Script>,
}

impl std::fmt::Debug for RedisState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisState")
            .field("url", self.client.url())
            .field("prefix", &self.prefix)
            .finish_non_exhaustive()
    }
}

fn unavailable(e: RespError) -> StoreError {
    StoreError::Unavailable(format!("redis: {e}"))
}

impl RedisState {
    /// Connects to `url` (`redis://[[user]:password@]host:port/db`). Keys are prefixed with
    /// `prefix` so that several deployments can share one Redis. Each command waits at most
    /// `timeout`; a lost connection is made again by the next command, and until Redis is
    /// back commands fail (the gateway denies calls that need counters: fail closed). With
    /// `check`, Redis must answer now (a gateway starting); without, it is first reached when
    /// used.
    pub async fn connect(
        url: &str,
        prefix: &str,
        timeout: Duration,
        check: bool,
    ) -> Result<RedisState, StoreError> {
        let url = RedisUrl::parse(url).map_err(unavailable)?;
        let state = RedisState {
            client: Arc::new(Client::new(url, timeout)),
            prefix: prefix.to_owned(),
            reserve: Arc::new(Script::new(RESERVE)),
            rollback: Arc::new(Script::new(ROLLBACK)),
        };
        if check {
            // Fail at start-up on a wrong address, rather than at the first call.
            state
                .client
                .query(&Cmd::new("PING"))
                .await
                .and_then(Value::ok)
                .map_err(unavailable)?;
        }
        Ok(state)
    }

    /// The Redis key of a counter in its current window.
    fn key(&self, spec: &CounterSpec) -> String {
        if spec.sliding {
            format!("{}s:{}:{}", self.prefix, spec.window_ms, spec.key)
        } else {
            format!(
                "{}c:{}:{}:{}",
                self.prefix, spec.window_ms, spec.window_start_ms, spec.key
            )
        }
    }

    /// Runs `script` with `keys` and `args` (`EVALSHA`, then `EVAL` if Redis lost it).
    async fn eval(
        &self,
        script: &Script,
        keys: &[&str],
        args: impl Fn(&mut Cmd),
    ) -> Result<Value, StoreError> {
        let invoke = |name: &str, body: &str| {
            let mut cmd = Cmd::new(name);
            cmd.arg(body).arg(keys.len());
            for &key in keys {
                cmd.arg(key);
            }
            args(&mut cmd);
            cmd
        };
        let mut answer = self
            .client
            .query(&invoke("EVALSHA", &script.sha1))
            .await
            .map_err(unavailable)?;
        if matches!(&answer, Value::Error(e) if e.starts_with("NOSCRIPT")) {
            answer = self
                .client
                .query(&invoke("EVAL", script.text))
                .await
                .map_err(unavailable)?;
        }
        answer.ok().map_err(unavailable)
    }

    /// Runs the counter script on `specs`, whose Redis keys are `keys`.
    async fn run(
        &self,
        mode: &str,
        specs: &[CounterSpec],
        keys: &[String],
        now_ms: u64,
        id: i64,
    ) -> Result<Vec<i64>, StoreError> {
        let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
        self.eval(&self.reserve, &keys, |cmd| {
            cmd.arg(mode).arg(now_ms).arg(id);
            for spec in specs {
                cmd.arg(spec.max)
                    .arg(spec.amount)
                    .arg(spec.window_ms)
                    .arg(u8::from(spec.sliding))
                    .arg(spec.window_start_ms);
            }
        })
        .await?
        .into_ints()
        .map_err(unavailable)
    }

    fn channel(&self) -> String {
        format!("{}approvals", self.prefix)
    }

    /// Tells every instance that approval `id` was decided.
    pub async fn publish_decision(&self, id: &str) -> Result<(), StoreError> {
        let mut cmd = Cmd::new("PUBLISH");
        cmd.arg(&self.channel()).arg(id);
        self.client
            .query(&cmd)
            .await
            .and_then(Value::ok)
            .map_err(unavailable)?;
        Ok(())
    }

    /// Calls `on_decision` with the id of every approval decided anywhere, until the process
    /// ends. The subscription is made again after Redis goes away (meanwhile, held calls still
    /// see decisions by polling).
    pub fn watch_decisions(&self, on_decision: impl Fn(&str) + Send + Sync + 'static) {
        let client = self.client.clone();
        let channel = self.channel();
        tokio::spawn(async move {
            loop {
                match subscribe(&client, &channel, &on_decision).await {
                    Ok(()) => {
                        tracing::warn!("the approvals channel on redis closed; subscribing again")
                    }
                    Err(e) => tracing::debug!(error = %e, "no approval wake-ups from redis"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
    }
}

/// Subscribes to `channel` on a connection of its own and calls `on_message` with every
/// message's payload, until the connection ends.
async fn subscribe(
    client: &Client,
    channel: &str,
    on_message: &impl Fn(&str),
) -> Result<(), RespError> {
    use tokio::io::AsyncWriteExt;
    let mut stream = client.dedicated_connection().await?;
    let mut cmd = Cmd::new("SUBSCRIBE");
    cmd.arg(channel);
    stream
        .write_all(&cmd.encode())
        .await
        .map_err(|e| RespError::Io(format!("writing to redis: {e}")))?;
    let mut buf = Vec::new();
    loop {
        let Value::Array(items) = resp::read_value(&mut stream, &mut buf).await?.ok()? else {
            continue;
        };
        if let [Value::Bytes(kind), _, Value::Bytes(payload)] = &items[..]
            && kind == b"message"
        {
            on_message(&String::from_utf8_lossy(payload));
        }
    }
}

impl CounterStore for RedisState {
    fn reserve<'a>(
        &'a self,
        specs: &'a [CounterSpec],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Reserve, StoreError>> {
        Box::pin(async move {
            let id = new_reservation_id();
            let keys: Vec<String> = specs.iter().map(|s| self.key(s)).collect();
            let answer = self.run("take", specs, &keys, now_ms, id).await?;
            match answer[..] {
                [0] => Ok(Reserve::Granted(Reservation {
                    id,
                    taken: specs
                        .iter()
                        .zip(keys)
                        .map(|(s, key)| {
                            let at = if s.sliding { now_ms } else { s.window_start_ms };
                            (key, at, s.amount, s.sliding)
                        })
                        .collect(),
                })),
                [index, used, reset] if index >= 1 && (index as usize) <= specs.len() => {
                    Ok(Reserve::Exceeded {
                        index: index as usize - 1,
                        usage: Usage {
                            used: used.max(0) as u64,
                            reset_at_ms: reset.max(0) as u64,
                        },
                    })
                }
                _ => Err(StoreError::Unavailable(format!(
                    "redis: unexpected answer from the counter script: {answer:?}"
                ))),
            }
        })
    }

    fn commit(&self, _reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>> {
        // Reserving already wrote the counts.
        Box::pin(std::future::ready(Ok(())))
    }

    fn rollback(&self, reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let keys: Vec<&str> = reservation.taken.iter().map(|t| t.0.as_str()).collect();
            self.eval(&self.rollback, &keys, |cmd| {
                cmd.arg(reservation.id);
                for (_, _, amount, sliding) in &reservation.taken {
                    cmd.arg(*amount).arg(u8::from(*sliding));
                }
            })
            .await?;
            Ok(())
        })
    }

    fn usage<'a>(
        &'a self,
        specs: &'a [CounterSpec],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Usage>, StoreError>> {
        Box::pin(async move {
            let keys: Vec<String> = specs.iter().map(|s| self.key(s)).collect();
            let answer = self.run("peek", specs, &keys, now_ms, 0).await?;
            if answer.len() != specs.len() * 2 {
                return Err(StoreError::Unavailable(format!(
                    "redis: unexpected answer from the counter script: {answer:?}"
                )));
            }
            Ok(answer
                .chunks(2)
                .map(|p| Usage {
                    used: p[0].max(0) as u64,
                    reset_at_ms: p[1].max(0) as u64,
                })
                .collect())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::counters::tests::{contract, spec};
    use crate::testing::services;

    async fn store() -> RedisState {
        let prefix = format!("test{}:", new_reservation_id());
        RedisState::connect(&services().redis, &prefix, Duration::from_secs(2), true)
            .await
            .unwrap()
    }

    #[tokio::test]
    async fn redis_counters_keep_the_contract() {
        contract(&store().await).await;
    }

    #[tokio::test]
    async fn redis_counters_are_exact_under_concurrent_instances() {
        // Two "instances" (separate connections, same prefix) race for a limit of 10.
        let a = store().await;
        let b = RedisState::connect(&services().redis, &a.prefix, Duration::from_secs(2), true)
            .await
            .unwrap();
        let now = 1_795_631_502_500;
        let fixed = spec("calls|global|", 10, 60_000, false, now);
        let sliding = spec("burst|global|", 10, 60_000, true, now);
        let mut tasks = Vec::new();
        for i in 0..40 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let specs = vec![fixed.clone(), sliding.clone()];
            tasks.push(tokio::spawn(async move {
                matches!(
                    store.reserve(&specs, now + i).await.unwrap(),
                    Reserve::Granted(_)
                )
            }));
        }
        let mut granted = 0;
        for t in tasks {
            granted += usize::from(t.await.unwrap());
        }
        assert_eq!(granted, 10);
        let usage = a.usage(&[fixed, sliding], now + 40).await.unwrap();
        assert_eq!((usage[0].used, usage[1].used), (10, 10));
    }

    /// What a restarted Redis (or `SCRIPT FLUSH`) does: forget every script.
    async fn flush_scripts(store: &RedisState) {
        let mut flush = Cmd::new("SCRIPT");
        flush.arg("FLUSH");
        store.client.query(&flush).await.unwrap().ok().unwrap();
    }

    #[tokio::test]
    async fn the_scripts_are_sent_again_when_redis_lost_them() {
        let store = store().await;
        let now = 1_795_631_502_500;
        let specs = [spec("flush|global|", 5, 60_000, false, now)];
        assert!(matches!(
            store.reserve(&specs, now).await.unwrap(),
            Reserve::Granted(_)
        ));
        // A restarted Redis (or SCRIPT FLUSH) forgets the scripts: the next call loads them.
        flush_scripts(&store).await;
        let Reserve::Granted(r) = store.reserve(&specs, now).await.unwrap() else {
            panic!("not granted")
        };
        flush_scripts(&store).await;
        store.rollback(r).await.unwrap();
        assert_eq!(store.usage(&specs, now).await.unwrap()[0].used, 1);
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_an_error_not_a_grant() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("redis://127.0.0.1:{port}/");
        let err = RedisState::connect(&url, "x:", Duration::from_millis(300), true)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("redis"), "{err}");
    }

    #[tokio::test]
    async fn decisions_reach_every_subscriber() {
        let a = store().await;
        let b = store().await;
        let b = RedisState {
            prefix: a.prefix.clone(),
            ..b
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        b.watch_decisions(move |id| {
            let _ = tx.send(id.to_owned());
        });
        // The subscription is made in the background: publish until it is heard.
        let heard = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                a.publish_decision("abc123").await.unwrap();
                if let Ok(Some(id)) =
                    tokio::time::timeout(Duration::from_millis(200), rx.recv()).await
                {
                    return id;
                }
            }
        })
        .await
        .unwrap();
        assert_eq!(heard, "abc123");
    }
}
