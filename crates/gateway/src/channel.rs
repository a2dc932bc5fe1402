//! A small bounded channel for the messages of one request (what the upstream says about it,
//! then its response) and for a session's unsolicited messages.
//!
//! Tokio's `mpsc` is built for many messages between busy tasks: each channel allocates a
//! cache-padded state and a first block of 32 slots, and every send goes through a semaphore.
//! A request mostly carries one message to a task that is waiting for it, so here the state is
//! a queue behind a mutex in one small allocation, and the queue allocates when the first
//! message comes. Senders wait for room only when the queue is full (a slow SSE client).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::Notify;

/// A channel holding at most `capacity` messages (see [`Sender::send_last`] for the one
/// exception).
pub fn channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State {
            queue: VecDeque::new(),
            receiver: None,
            senders: 1,
            receiver_alive: true,
            senders_waiting: false,
        }),
        capacity,
        changed: Notify::new(),
    });
    (
        Sender {
            shared: shared.clone(),
        },
        Receiver { shared },
    )
}

struct Shared<T> {
    state: Mutex<State<T>>,
    capacity: usize,
    /// Wakes senders waiting for room or for the receiver to go away.
    changed: Notify,
}

struct State<T> {
    queue: VecDeque<T>,
    receiver: Option<Waker>,
    senders: usize,
    receiver_alive: bool,
    /// A sender may be waiting on `changed` (for room, or for the receiver to go away).
    senders_waiting: bool,
}

impl<T> Shared<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while the lock is held cannot leave the queue inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Why [`Sender::try_send`] gave the message back.
#[derive(Debug)]
pub enum TrySendError<T> {
    /// The queue holds `capacity` messages.
    Full(T),
    /// The receiver is gone.
    Closed(T),
}

/// The sending half; clones share the channel, which ends for the receiver when the last
/// sender is dropped.
pub struct Sender<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Sender<T> {
    /// Queues `value` if there is room.
    pub fn try_send(&self, value: T) -> Result<(), TrySendError<T>> {
        self.push(value, false)
    }

    /// Queues `value` even past the capacity: for the last message of a request (its
    /// response), which must not wait behind a slow reader nor be lost.
    pub fn send_last(&self, value: T) -> Result<(), T> {
        self.push(value, true).map_err(|e| match e {
            TrySendError::Full(v) | TrySendError::Closed(v) => v,
        })
    }

    /// Queues `value`, waiting for room; gives it back if the receiver is gone.
    pub async fn send(&self, value: T) -> Result<(), T> {
        let mut value = match self.push(value, false) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Closed(v)) => return Err(v),
            Err(TrySendError::Full(v)) => v,
        };
        loop {
            // Registered before the second look, so that room made in between is not missed.
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            value = match self.push(value, false) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(v)) => return Err(v),
                Err(TrySendError::Full(v)) => v,
            };
            changed.await;
        }
    }

    /// Resolves once the receiver is gone.
    pub async fn closed(&self) {
        loop {
            let changed = self.shared.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            {
                let mut state = self.shared.lock();
                if !state.receiver_alive {
                    return;
                }
                state.senders_waiting = true;
            }
            changed.await;
        }
    }

    fn push(&self, value: T, past_capacity: bool) -> Result<(), TrySendError<T>> {
        let waker = {
            let mut state = self.shared.lock();
            if !state.receiver_alive {
                return Err(TrySendError::Closed(value));
            }
            if !past_capacity && state.queue.len() >= self.shared.capacity {
                state.senders_waiting = true;
                return Err(TrySendError::Full(value));
            }
            if state.queue.capacity() == 0 {
                // Most requests carry one or two messages.
                state.queue.reserve_exact(2);
            }
            state.queue.push_back(value);
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Sender<T> {
        self.shared.lock().senders += 1;
        Sender {
            shared: self.shared.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let waker = {
            let mut state = self.shared.lock();
            state.senders -= 1;
            if state.senders > 0 {
                return;
            }
            state.receiver.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The receiving half.
pub struct Receiver<T> {
    shared: Arc<Shared<T>>,
}

impl<T> Receiver<T> {
    /// The next message; `None` once every sender is gone and the queue is empty.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// [`Receiver::recv`] for hand-written futures and streams.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = self.shared.lock();
        if let Some(value) = self.pop(&mut state) {
            return Poll::Ready(Some(value));
        }
        if state.senders == 0 {
            return Poll::Ready(None);
        }
        match &state.receiver {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => state.receiver = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// The next message if one is queued.
    pub fn try_recv(&mut self) -> Option<T> {
        let mut state = self.shared.lock();
        self.pop(&mut state)
    }

    fn pop(&self, state: &mut MutexGuard<'_, State<T>>) -> Option<T> {
        let value = state.queue.pop_front()?;
        if std::mem::take(&mut state.senders_waiting) {
            self.shared.changed.notify_waiters();
        }
        Some(value)
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let (queued, waiting) = {
            let mut state = self.shared.lock();
            state.receiver_alive = false;
            state.receiver = None;
            (std::mem::take(&mut state.queue), state.senders_waiting)
        };
        // Messages are dropped outside the lock (a message's drop may send elsewhere).
        drop(queued);
        if waiting {
            self.shared.changed.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn messages_arrive_in_order_and_the_channel_ends_with_its_last_sender() {
        let (tx, mut rx) = channel(4);
        let second = tx.clone();
        tx.try_send(1).unwrap();
        second.send(2).await.unwrap();
        drop(second);
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send_last(3).unwrap();
        });
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        // Waits for the message sent later, then for the end.
        assert_eq!(rx.recv().await, Some(3));
        assert_eq!(rx.recv().await, None);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_full_queue_makes_senders_wait_until_the_receiver_reads() {
        let (tx, mut rx) = channel(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Full(3))));
        // The last message of a request is never refused for room.
        tx.send_last(4).unwrap();
        let sender = tokio::spawn(async move {
            tx.send(5).await.unwrap();
            tx
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!sender.is_finished(), "the sender waits for room");
        assert_eq!(rx.recv().await, Some(1));
        assert_eq!(rx.recv().await, Some(2));
        assert_eq!(rx.recv().await, Some(4));
        let tx = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect("room wakes the sender")
            .unwrap();
        assert_eq!(rx.try_recv(), Some(5));
        assert_eq!(rx.try_recv(), None);
        drop(tx);
        assert_eq!(rx.recv().await, None);
    }

    #[tokio::test]
    async fn senders_learn_that_the_receiver_is_gone() {
        let (tx, rx) = channel(1);
        tx.try_send("queued").unwrap();
        let waiting = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.send("waits for room").await })
        };
        let watching = {
            let tx = tx.clone();
            tokio::spawn(async move { tx.closed().await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished() && !watching.is_finished());
        drop(rx);
        let given_back = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting sender is woken")
            .unwrap();
        assert_eq!(given_back, Err("waits for room"));
        tokio::time::timeout(Duration::from_secs(5), watching)
            .await
            .expect("closed() resolves")
            .unwrap();
        assert!(matches!(
            tx.try_send("late"),
            Err(TrySendError::Closed("late"))
        ));
        assert_eq!(tx.send_last("late"), Err("late"));
    }
}
