//! Rate-limit counters: every counter a call needs is reserved at once or not at all,
//! committed when the call went through, rolled back when the upstream failed.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;

/// A boxed future, so that stores can sit behind `dyn CounterStore`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Why a store could not answer. The gateway denies the call (fail closed) unless told
/// otherwise.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backing database failed or timed out.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
}

/// One counter a call takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CounterSpec {
    /// Counter name and scope value; the same key in every policy version.
    pub key: String,
    /// At most this much per window.
    pub max: u64,
    /// How much this call takes.
    pub amount: u64,
    /// The window's length.
    pub window_ms: u64,
    /// The last `window_ms` before now, rather than a fixed window aligned on multiples of
    /// `window_ms` since the epoch (UTC).
    pub sliding: bool,
    /// Where fixed windows start: the policy aligns them (e.g. weeks on Monday).
    pub window_start_ms: u64,
}

/// What one counter holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// Taken in the current window (pending reservations included).
    pub used: u64,
    /// When enough frees up for the next call (end of the fixed window, or when the oldest
    /// sliding entry leaves the window).
    pub reset_at_ms: u64,
}

/// Counters taken by one call, to commit or roll back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    /// Unique per reservation (random, so that processes sharing a store never collide).
    pub id: i64,
    /// `(key, fixed window start or sliding timestamp, amount, sliding)` per counter.
    pub taken: Vec<(String, u64, u64, bool)>,
}

/// The answer to a reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reserve {
    /// Every counter was taken.
    Granted(Reservation),
    /// Nothing was taken: the counter at `index` is at its maximum.
    Exceeded {
        /// Which spec failed.
        index: usize,
        /// Its usage.
        usage: Usage,
    },
}

/// A store of rate-limit counters.
pub trait CounterStore: Send + Sync {
    /// Takes every counter, or none when one would go over its maximum.
    fn reserve<'a>(
        &'a self,
        specs: &'a [CounterSpec],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Reserve, StoreError>>;
    /// Keeps what a reservation took (the call reached the upstream).
    fn commit(&self, reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>>;
    /// Gives back what a reservation took (the upstream failed).
    fn rollback(&self, reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>>;
    /// What each counter holds now, without taking anything (for `explain`).
    fn usage<'a>(
        &'a self,
        specs: &'a [CounterSpec],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Usage>, StoreError>>;
}

pub(crate) fn new_reservation_id() -> i64 {
    rand::random::<i64>()
}

/// Counters in this process's memory: the fastest, but they start from zero on restart.
#[derive(Debug, Default)]
pub struct MemoryCounters {
    slots: Mutex<Slots>,
}

#[derive(Debug, Default)]
struct Slots {
    map: HashMap<String, Slot>,
    /// Sweep expired slots when the map has grown past this.
    sweep_at: usize,
}

#[derive(Debug)]
enum Slot {
    Fixed {
        start: u64,
        window: u64,
        used: u64,
    },
    Sliding {
        window: u64,
        events: VecDeque<(u64, u64, i64)>,
        used: u64,
    },
}

impl Slot {
    fn usage(&mut self, spec: &CounterSpec, now: u64) -> Usage {
        match self {
            Slot::Fixed {
                start,
                window,
                used,
            } if !spec.sliding && *start == spec.window_start_ms && *window == spec.window_ms => {
                Usage {
                    used: *used,
                    reset_at_ms: *start + *window,
                }
            }
            Slot::Sliding {
                window,
                events,
                used,
            } if spec.sliding && *window == spec.window_ms => {
                while let Some(&(at, amount, _)) = events.front() {
                    if at + *window > now {
                        break;
                    }
                    events.pop_front();
                    *used -= amount;
                }
                Usage {
                    used: *used,
                    reset_at_ms: events.front().map_or(now, |(at, _, _)| at + *window),
                }
            }
            // A new window, or the policy changed the counter's shape: start afresh.
            _ => {
                *self = Slot::fresh(spec);
                self.usage(spec, now)
            }
        }
    }

    fn fresh(spec: &CounterSpec) -> Slot {
        if spec.sliding {
            Slot::Sliding {
                window: spec.window_ms,
                events: VecDeque::new(),
                used: 0,
            }
        } else {
            Slot::Fixed {
                start: spec.window_start_ms,
                window: spec.window_ms,
                used: 0,
            }
        }
    }

    fn expired(&self, now: u64) -> bool {
        match self {
            Slot::Fixed { start, window, .. } => start + window <= now,
            Slot::Sliding { window, events, .. } => {
                events.back().is_none_or(|(at, _, _)| at + window <= now)
            }
        }
    }
}

impl MemoryCounters {
    /// An empty store.
    pub fn new() -> MemoryCounters {
        MemoryCounters::default()
    }

    fn reserve_now(&self, specs: &[CounterSpec], now: u64) -> Reserve {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.map.len() >= slots.sweep_at {
            slots.map.retain(|_, s| !s.expired(now));
            slots.sweep_at = (slots.map.len() * 2).max(1024);
        }
        for (index, spec) in specs.iter().enumerate() {
            let usage = slots
                .map
                .entry(spec.key.clone())
                .or_insert_with(|| Slot::fresh(spec))
                .usage(spec, now);
            if usage.used.saturating_add(spec.amount) > spec.max {
                return Reserve::Exceeded { index, usage };
            }
        }
        let id = new_reservation_id();
        let mut taken = Vec::with_capacity(specs.len());
        for spec in specs {
            let slot = slots.map.get_mut(&spec.key).expect("checked above");
            match slot {
                Slot::Fixed { start, used, .. } => {
                    *used += spec.amount;
                    taken.push((spec.key.clone(), *start, spec.amount, false));
                }
                Slot::Sliding { events, used, .. } => {
                    *used += spec.amount;
                    events.push_back((now, spec.amount, id));
                    taken.push((spec.key.clone(), now, spec.amount, true));
                }
            }
        }
        Reserve::Granted(Reservation { id, taken })
    }

    fn rollback_now(&self, reservation: &Reservation) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for (key, at, amount, _) in &reservation.taken {
            match slots.map.get_mut(key) {
                Some(Slot::Fixed { start, used, .. }) if start == at => {
                    *used = used.saturating_sub(*amount);
                }
                Some(Slot::Sliding { events, used, .. }) => {
                    if let Some(i) = events.iter().position(|e| e.2 == reservation.id) {
                        events.remove(i);
                        *used = used.saturating_sub(*amount);
                    }
                }
                _ => {}
            }
        }
    }
}

impl CounterStore for MemoryCounters {
    fn reserve<'a>(
        &'a self,
        specs: &'a [CounterSpec],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Reserve, StoreError>> {
        let result = self.reserve_now(specs, now_ms);
        Box::pin(std::future::ready(Ok(result)))
    }

    fn commit(&self, _reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn rollback(&self, reservation: Reservation) -> BoxFuture<'_, Result<(), StoreError>> {
        self.rollback_now(&reservation);
        Box::pin(std::future::ready(Ok(())))
    }

    fn usage<'a>(
        &'a self,
        specs: &'a [CounterSpec],
        now_ms: u64,
    ) -> BoxFuture<'a, Result<Vec<Usage>, StoreError>> {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let usage = specs
            .iter()
            .map(|spec| match slots.map.get_mut(&spec.key) {
                Some(slot) => slot.usage(spec, now_ms),
                None => Usage {
                    used: 0,
                    reset_at_ms: if spec.sliding {
                        now_ms
                    } else {
                        spec.window_start_ms + spec.window_ms
                    },
                },
            })
            .collect();
        Box::pin(std::future::ready(Ok(usage)))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn spec(key: &str, max: u64, window_ms: u64, sliding: bool, now: u64) -> CounterSpec {
        CounterSpec {
            key: key.into(),
            max,
            amount: 1,
            window_ms,
            sliding,
            window_start_ms: now - now % window_ms,
        }
    }

    /// The behaviour every backend must show.
    pub async fn contract(store: &dyn CounterStore) {
        let now = 1_795_631_502_500;
        let a = spec("a|grant|alice", 2, 60_000, false, now);
        let b = spec("b|grant|alice", 1, 60_000, false, now);
        // All or none: b is full after one call, so the second call takes nothing from a.
        let r1 = store.reserve(&[a.clone(), b.clone()], now).await.unwrap();
        let Reserve::Granted(r1) = r1 else {
            panic!("{r1:?}")
        };
        let r2 = store.reserve(&[a.clone(), b.clone()], now).await.unwrap();
        assert_eq!(
            r2,
            Reserve::Exceeded {
                index: 1,
                usage: Usage {
                    used: 1,
                    reset_at_ms: 1_795_631_520_000
                }
            }
        );
        let usage = store.usage(std::slice::from_ref(&a), now).await.unwrap();
        assert_eq!(usage[0].used, 1);
        // Rollback gives back.
        store.rollback(r1).await.unwrap();
        assert_eq!(
            store.usage(&[a.clone(), b.clone()], now).await.unwrap()[1].used,
            0
        );
        let Reserve::Granted(r3) = store.reserve(std::slice::from_ref(&a), now).await.unwrap()
        else {
            panic!()
        };
        store.commit(r3).await.unwrap();
        let Reserve::Granted(_) = store.reserve(std::slice::from_ref(&a), now).await.unwrap()
        else {
            panic!()
        };
        assert!(matches!(
            store.reserve(std::slice::from_ref(&a), now).await.unwrap(),
            Reserve::Exceeded { index: 0, .. }
        ));
        // A new window starts from zero.
        let later = now + 60_000;
        let a2 = spec("a|grant|alice", 2, 60_000, false, later);
        assert!(matches!(
            store.reserve(&[a2], later).await.unwrap(),
            Reserve::Granted(_)
        ));
        // Sliding windows count the last window_ms, whatever the calendar says.
        let s = spec("s|global|", 2, 10_000, true, now);
        for t in [now, now + 4_000] {
            assert!(matches!(
                store.reserve(std::slice::from_ref(&s), t).await.unwrap(),
                Reserve::Granted(_)
            ));
        }
        let refused = store
            .reserve(std::slice::from_ref(&s), now + 9_999)
            .await
            .unwrap();
        assert_eq!(
            refused,
            Reserve::Exceeded {
                index: 0,
                usage: Usage {
                    used: 2,
                    reset_at_ms: now + 10_000
                }
            }
        );
        assert!(matches!(
            store
                .reserve(std::slice::from_ref(&s), now + 10_000)
                .await
                .unwrap(),
            Reserve::Granted(_)
        ));
        // Amounts: a big increment can exceed alone.
        let mut big = spec("spend|grant|alice", 100, 60_000, false, now);
        big.amount = 101;
        assert!(matches!(
            store.reserve(&[big], now).await.unwrap(),
            Reserve::Exceeded { .. }
        ));
    }

    #[tokio::test]
    async fn memory_store_keeps_the_contract() {
        contract(&MemoryCounters::new()).await;
    }
}
