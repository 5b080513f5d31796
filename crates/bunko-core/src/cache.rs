//! The `Cache` port: bytes under a key for a time, bounded, shared by whatever serves the same
//! keys. In-process here (least recently used goes first when full); a Redis adapter shares it
//! across replicas. The gateway's exact-match answer cache stands on it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[async_trait::async_trait]
pub trait Cache: Send + Sync {
    /// The value under `key`, if present and not expired.
    async fn get(&self, key: &str) -> Option<Vec<u8>>;
    /// Stores `value` under `key` for `ttl` (replacing any earlier value).
    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration);
}

struct Entry {
    value: Vec<u8>,
    expires: Instant,
    /// Position in the recency order.
    used: u64,
}

#[derive(Default)]
struct Inner {
    map: HashMap<String, Entry>,
    /// used → key, oldest first.
    order: BTreeMap<u64, String>,
    clock: u64,
}

/// At most `capacity` entries; a full cache drops expired entries, then the least recently
/// used one. Every operation is O(log n).
pub struct MemoryCache {
    capacity: usize,
    inner: Mutex<Inner>,
}

impl MemoryCache {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn touch(&mut self, key: &str) -> u64 {
        self.clock += 1;
        let now = self.clock;
        if let Some(e) = self.map.get_mut(key) {
            self.order.remove(&e.used);
            e.used = now;
            self.order.insert(now, key.to_owned());
        }
        now
    }

    fn remove(&mut self, key: &str) {
        if let Some(e) = self.map.remove(key) {
            self.order.remove(&e.used);
        }
    }
}

impl MemoryCache {
    pub fn get_now(&self, key: &str) -> Option<Vec<u8>> {
        let mut g = self.lock();
        let expired = g.map.get(key)?.expires <= Instant::now();
        if expired {
            g.remove(key);
            return None;
        }
        g.touch(key);
        g.map.get(key).map(|e| e.value.clone())
    }

    pub fn put_now(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        if self.capacity == 0 || ttl.is_zero() {
            return;
        }
        let now = Instant::now();
        let mut g = self.lock();
        g.remove(key);
        while g.map.len() >= self.capacity {
            // The least recently used entry (expired ones are as good as gone anyway).
            let Some((_, oldest)) = g.order.pop_first() else {
                break;
            };
            g.map.remove(&oldest);
        }
        let used = g.touch(key);
        g.order.insert(used, key.to_owned());
        g.map.insert(
            key.to_owned(),
            Entry {
                value,
                expires: now + ttl,
                used,
            },
        );
    }
}

#[async_trait::async_trait]
impl Cache for MemoryCache {
    async fn get(&self, key: &str) -> Option<Vec<u8>> {
        self.get_now(key)
    }

    async fn put(&self, key: &str, value: Vec<u8>, ttl: Duration) {
        self.put_now(key, value, ttl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_least_recently_used_and_expiring() {
        let c = MemoryCache::new(2);
        let hour = Duration::from_secs(3600);
        c.put_now("a", b"1".to_vec(), hour);
        c.put_now("b", b"2".to_vec(), hour);
        assert_eq!(c.get_now("a"), Some(b"1".to_vec())); // a is now the most recent
        c.put_now("c", b"3".to_vec(), hour); // b goes
        assert_eq!(c.get_now("b"), None);
        assert_eq!(c.get_now("a"), Some(b"1".to_vec()));
        assert_eq!(c.get_now("c"), Some(b"3".to_vec()));
        assert_eq!(c.len(), 2);
        // Replacing keeps one entry per key.
        c.put_now("c", b"4".to_vec(), hour);
        assert_eq!((c.get_now("c"), c.len()), (Some(b"4".to_vec()), 2));
        // Expiry.
        c.put_now("d", b"5".to_vec(), Duration::from_millis(20));
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.get_now("d"), None);
        assert_eq!(c.len(), 1);
        // Off: capacity 0 or no time to live.
        let off = MemoryCache::new(0);
        off.put_now("a", b"1".to_vec(), hour);
        assert!(off.is_empty());
        c.put_now("e", b"1".to_vec(), Duration::ZERO);
        assert_eq!(c.get_now("e"), None);
    }
}
