//! Answers awaited by key: a bounded map of one-shot senders whose waiting
//! side unregisters itself when dropped (answered, timed out or cancelled).
//! Used for STUN transactions (keyed by transaction and server, so only the
//! server asked can answer) and punch rendezvous (keyed by nonce).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::lock;

/// Waits by key, at most `max` at once.
#[derive(Debug)]
pub struct Waiters<K, V> {
    map: Mutex<HashMap<K, oneshot::Sender<V>>>,
    max: usize,
}

/// A registered wait; dropping it forgets the key.
pub struct Wait<'a, K: Eq + Hash, V> {
    waiters: &'a Waiters<K, V>,
    key: K,
    /// Resolves with the answer.
    pub answer: oneshot::Receiver<V>,
}

impl<K: Eq + Hash, V> Drop for Wait<'_, K, V> {
    fn drop(&mut self) {
        lock(&self.waiters.map).remove(&self.key);
    }
}

impl<K: Eq + Hash + Clone, V> Waiters<K, V> {
    /// Room for `max` waits at once.
    pub fn new(max: usize) -> Self {
        Self {
            map: Mutex::default(),
            max,
        }
    }

    /// Waits for the answer to `key`; `None` when `max` wait already (or
    /// `key` is waited on).
    pub fn register(&self, key: K) -> Option<Wait<'_, K, V>> {
        let mut map = lock(&self.map);
        if map.len() >= self.max || map.contains_key(&key) {
            return None;
        }
        let (tx, answer) = oneshot::channel();
        map.insert(key.clone(), tx);
        Some(Wait {
            waiters: self,
            key,
            answer,
        })
    }

    /// Hands `value` to the wait on `key`; false if none waits (late,
    /// duplicate or forged answers).
    pub fn answer(&self, key: &K, value: V) -> bool {
        lock(&self.map)
            .remove(key)
            .is_some_and(|tx| tx.send(value).is_ok())
    }

    /// How many wait.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    /// Whether none waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_reaches_only_its_waiter_once_and_waits_are_bounded() {
        let w = Waiters::new(4);
        let mut wait = w.register(7u64).unwrap();
        assert!(w.register(7).is_none(), "one wait per key");
        assert!(!w.answer(&8, "x"), "no one waits on 8");
        assert!(w.answer(&7, "x"));
        assert!(!w.answer(&7, "x"), "answered already");
        assert_eq!(wait.answer.try_recv().unwrap(), "x");
        drop(wait);
        assert!(w.is_empty());
        let held: Vec<_> = (0..4u64).map(|n| w.register(n).unwrap()).collect();
        assert!(w.register(9).is_none());
        drop(held);
        assert!(w.register(1).is_some());
        assert!(w.is_empty(), "a dropped wait unregisters");
    }
}
