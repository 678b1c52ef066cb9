//! The last good copy of each read, for when its upstream is down.
//!
//! Every `200` JSON answer to a `GET` is kept, by path and query, in a
//! bounded in-memory cache (moka): entries and bytes bounded together,
//! each entry weighing at least `max_bytes / max_entries` so neither bound
//! can be passed. Responses marked `Cache-Control: no-store` (or
//! `private`) and routes marked sensitive are never kept. When the
//! upstream is down, [`StaleCache::get`] hands the copy back with its age,
//! and the gateway answers with it marked stale.
//!
//! A read whose body is the one already kept only moves the copy's time
//! forward, in place: no copy of the body, no new entry. Most reads of a
//! busy store are such; rewriting each one cost an allocation, a copy and a
//! cache write per request, and scattered the long-lived copies over the
//! heap as it went, so the allocator could give less back after a load.

use std::{
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, SystemTime},
};

use gateway_api::StaleMeta;
use moka::sync::Cache;

/// One kept answer.
#[derive(Clone)]
pub struct StaleEntry {
    /// The JSON body.
    pub body: Arc<[u8]>,
    /// When the upstream sent it.
    pub stored_at: SystemTime,
}

impl fmt::Debug for StaleEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleEntry")
            .field("body_len", &self.body.len())
            .field("stored_at", &self.stored_at)
            .finish()
    }
}

/// The bounds of the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleLimits {
    /// Entries at most.
    pub max_entries: u64,
    /// Bytes of bodies (and keys) at most.
    pub max_bytes: u64,
}

impl Default for StaleLimits {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// What the cache holds for one key: the body, and when it was last
/// confirmed (milliseconds since the Unix epoch, moved forward in place).
#[derive(Clone)]
struct Kept {
    body: Arc<[u8]>,
    confirmed_ms: Arc<AtomicU64>,
}

/// Milliseconds since the Unix epoch (0 before it).
fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The cache. Clones share it.
#[derive(Clone)]
pub struct StaleCache {
    cache: Cache<String, Kept>,
}

impl fmt::Debug for StaleCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StaleCache")
            .field("entries", &self.cache.entry_count())
            .finish_non_exhaustive()
    }
}

/// Whether a response's `Cache-Control` forbids keeping it.
pub fn forbids_storing(cache_control: Option<&str>) -> bool {
    cache_control.is_some_and(|value| {
        value.split(',').any(|directive| {
            let name = directive.trim().split('=').next().unwrap_or("").trim();
            name.eq_ignore_ascii_case("no-store") || name.eq_ignore_ascii_case("private")
        })
    })
}

impl StaleCache {
    /// An empty cache within `limits`.
    pub fn new(limits: StaleLimits) -> Self {
        let floor = (limits.max_bytes / limits.max_entries.max(1)).max(1);
        let weigh = move |key: &String, entry: &Kept| -> u32 {
            let bytes = (key.len() + entry.body.len()) as u64;
            u32::try_from(bytes.max(floor)).unwrap_or(u32::MAX)
        };
        Self {
            cache: Cache::builder()
                .max_capacity(limits.max_bytes)
                .weigher(weigh)
                .build(),
        }
    }

    /// Keeps `body` as the last good answer for `key` (path and query).
    /// When the same body is kept already, only its time moves forward.
    pub fn put(&self, key: &str, body: &[u8], stored_at: SystemTime) {
        let at = unix_ms(stored_at);
        if let Some(kept) = self.cache.get(key)
            && *kept.body == *body
        {
            kept.confirmed_ms.fetch_max(at, Ordering::Relaxed);
            return;
        }
        self.cache.insert(
            key.to_owned(),
            Kept {
                body: Arc::from(body),
                confirmed_ms: Arc::new(AtomicU64::new(at)),
            },
        );
    }

    /// The last good answer for `key`, if kept.
    pub fn get(&self, key: &str) -> Option<StaleEntry> {
        self.cache.get(key).map(|kept| StaleEntry {
            body: kept.body,
            stored_at: SystemTime::UNIX_EPOCH
                + Duration::from_millis(kept.confirmed_ms.load(Ordering::Relaxed)),
        })
    }

    /// Drops the answer for `key` (the upstream said it is gone).
    pub fn forget(&self, key: &str) {
        self.cache.invalidate(key);
    }

    /// Entries and weighted bytes now (after pending evictions).
    pub fn usage(&self) -> (u64, u64) {
        self.cache.run_pending_tasks();
        (self.cache.entry_count(), self.cache.weighted_size())
    }
}

/// The stale answer: the original JSON object with a `meta` member.
/// `None` when the kept body is not a JSON object.
pub fn mark_stale(body: &[u8], meta: StaleMeta) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    object.insert("meta".into(), serde_json::to_value(meta).ok()?);
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use gateway_api::StaleReason;

    use super::*;

    #[test]
    fn bounded_by_entries_and_bytes() {
        let cache = StaleCache::new(StaleLimits {
            max_entries: 10,
            max_bytes: 1000,
        });
        for i in 0..50 {
            cache.put(&format!("/api/stores/{i}"), b"{}", SystemTime::now());
        }
        let (entries, bytes) = cache.usage();
        assert!(entries <= 10, "{entries} entries");
        assert!(bytes <= 1000, "{bytes} bytes");
        let big = vec![b' '; 600];
        cache.put("/big-1", &big, SystemTime::now());
        cache.put("/big-2", &big, SystemTime::now());
        let (_, bytes) = cache.usage();
        assert!(bytes <= 1000, "{bytes} bytes");
    }

    #[test]
    fn the_same_body_moves_its_time_forward_in_place() {
        let cache = StaleCache::new(StaleLimits::default());
        let first = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000);
        cache.put("/a", b"{\"v\":1}", first);
        let kept = cache.get("/a").unwrap();
        cache.put("/a", b"{\"v\":1}", first + Duration::from_secs(5));
        let again = cache.get("/a").unwrap();
        assert!(
            Arc::ptr_eq(&kept.body, &again.body),
            "the body was copied again"
        );
        assert_eq!(again.stored_at, first + Duration::from_secs(5));
        // An older confirmation does not move it back.
        cache.put("/a", b"{\"v\":1}", first);
        assert_eq!(
            cache.get("/a").unwrap().stored_at,
            first + Duration::from_secs(5)
        );
        // A new body replaces the copy, with its own time.
        cache.put("/a", b"{\"v\":2}", first + Duration::from_secs(6));
        let replaced = cache.get("/a").unwrap();
        assert_eq!(&*replaced.body, b"{\"v\":2}");
        assert_eq!(replaced.stored_at, first + Duration::from_secs(6));
        // The old snapshot is unchanged.
        assert_eq!(&*kept.body, b"{\"v\":1}");
    }

    #[test]
    fn cache_control_and_meta() {
        assert!(forbids_storing(Some("no-store")));
        assert!(forbids_storing(Some("max-age=0, No-Store")));
        assert!(forbids_storing(Some("private")));
        assert!(!forbids_storing(Some("max-age=60")));
        assert!(!forbids_storing(None));
        let meta = StaleMeta::new(
            StaleReason::CircuitOpen,
            // 2026-11-27T01:00:00Z and 15 s later.
            time::OffsetDateTime::from_unix_timestamp(1_795_741_200).unwrap(),
            time::OffsetDateTime::from_unix_timestamp(1_795_741_215).unwrap(),
        );
        let marked = mark_stale(br#"{"store":{"id":"1"}}"#, meta).unwrap();
        let value: serde_json::Value = serde_json::from_slice(&marked).unwrap();
        assert_eq!(value["store"]["id"], "1");
        assert_eq!(value["meta"]["isStale"], true);
        assert_eq!(value["meta"]["staleReason"], "circuit_open");
        assert_eq!(value["meta"]["dataTimestamp"], "2026-11-27T01:00:00Z");
        assert_eq!(value["meta"]["nextRetry"], "2026-11-27T01:00:15Z");
        assert!(mark_stale(b"[1,2]", meta).is_none());
        assert!(mark_stale(b"not json", meta).is_none());
    }
}
