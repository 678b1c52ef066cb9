//! The last good copy of each read, for when its upstream is down.
//!
//! Every `200` JSON answer to a `GET` is kept, by path and query, in a
//! bounded in-memory cache (moka): entries and bytes bounded together,
//! each entry weighing at least `max_bytes / max_entries` so neither bound
//! can be passed. Responses marked `Cache-Control: no-store` (or
//! `private`) and routes marked sensitive are never kept. When the
//! upstream is down, [`StaleCache::get`] hands the copy back with its age,
//! and the gateway answers with it marked stale.

use std::{fmt, sync::Arc, time::SystemTime};

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

/// The cache. Clones share it.
#[derive(Clone)]
pub struct StaleCache {
    cache: Cache<String, StaleEntry>,
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
        let weigh = move |key: &String, entry: &StaleEntry| -> u32 {
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
    pub fn put(&self, key: String, body: &[u8], stored_at: SystemTime) {
        self.cache.insert(
            key,
            StaleEntry {
                body: Arc::from(body),
                stored_at,
            },
        );
    }

    /// The last good answer for `key`, if kept.
    pub fn get(&self, key: &str) -> Option<StaleEntry> {
        self.cache.get(key)
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
pub fn mark_stale(
    body: &[u8],
    reason: &str,
    data_timestamp: &str,
    next_retry: &str,
) -> Option<Vec<u8>> {
    let mut value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let object = value.as_object_mut()?;
    object.insert(
        "meta".into(),
        serde_json::json!({
            "isStale": true,
            "staleReason": reason,
            "dataTimestamp": data_timestamp,
            "nextRetry": next_retry,
        }),
    );
    serde_json::to_vec(&value).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_by_entries_and_bytes() {
        let cache = StaleCache::new(StaleLimits {
            max_entries: 10,
            max_bytes: 1000,
        });
        for i in 0..50 {
            cache.put(format!("/api/stores/{i}"), b"{}", SystemTime::now());
        }
        let (entries, bytes) = cache.usage();
        assert!(entries <= 10, "{entries} entries");
        assert!(bytes <= 1000, "{bytes} bytes");
        let big = vec![b' '; 600];
        cache.put("/big-1".into(), &big, SystemTime::now());
        cache.put("/big-2".into(), &big, SystemTime::now());
        let (_, bytes) = cache.usage();
        assert!(bytes <= 1000, "{bytes} bytes");
    }

    #[test]
    fn cache_control_and_meta() {
        assert!(forbids_storing(Some("no-store")));
        assert!(forbids_storing(Some("max-age=0, No-Store")));
        assert!(forbids_storing(Some("private")));
        assert!(!forbids_storing(Some("max-age=60")));
        assert!(!forbids_storing(None));
        let marked = mark_stale(
            br#"{"store":{"id":"1"}}"#,
            "circuit_open",
            "2026-11-27T01:00:00Z",
            "2026-11-27T01:00:15Z",
        )
        .unwrap();
        let value: serde_json::Value = serde_json::from_slice(&marked).unwrap();
        assert_eq!(value["store"]["id"], "1");
        assert_eq!(value["meta"]["isStale"], true);
        assert_eq!(value["meta"]["staleReason"], "circuit_open");
        assert!(mark_stale(b"[1,2]", "timeout", "a", "b").is_none());
        assert!(mark_stale(b"not json", "timeout", "a", "b").is_none());
    }
}
