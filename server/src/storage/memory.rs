//! In-process adapter: a sorted map behind the `sync` facade.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::Value;

use super::{Storage, StorageResult, as_counter};
use crate::sync::{Mutex, lock};

#[derive(Debug, Default)]
pub struct MemoryStorage {
    map: Mutex<BTreeMap<String, Value>>,
}

impl MemoryStorage {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys held; for tests.
    pub fn len(&self) -> usize {
        lock(&self.map).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[async_trait]
impl Storage for MemoryStorage {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn init(&self) -> StorageResult<()> {
        Ok(())
    }

    async fn get(&self, key: &str) -> StorageResult<Option<Value>> {
        Ok(lock(&self.map).get(key).cloned())
    }

    async fn set(&self, key: &str, value: &Value) -> StorageResult<()> {
        lock(&self.map).insert(key.to_owned(), value.clone());
        Ok(())
    }

    async fn del(&self, key: &str) -> StorageResult<()> {
        lock(&self.map).remove(key);
        Ok(())
    }

    async fn keys(&self, prefix: &str) -> StorageResult<Vec<String>> {
        if crate::planted!(KeysPrefix) {
            // Planted: compares one byte too few, so `keys("ab")` also lists "ac…".
            let mut cut = prefix.len().saturating_sub(1);
            while !prefix.is_char_boundary(cut) {
                cut -= 1;
            }
            let short = &prefix[..cut];
            return Ok(lock(&self.map)
                .range(short.to_owned()..)
                .take_while(|(k, _)| k.starts_with(short))
                .map(|(k, _)| k.clone())
                .collect());
        }
        Ok(lock(&self.map)
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, _)| k.clone())
            .collect())
    }

    async fn atomic_incr(&self, key: &str, delta: i64) -> StorageResult<i64> {
        let mut map = lock(&self.map);
        let current = match map.get(key) {
            Some(v) => as_counter(key, v)?,
            None => 0,
        };
        let next = current.wrapping_add(delta);
        map.insert(key.to_owned(), Value::from(next));
        Ok(next)
    }

    async fn set_many(&self, entries: &[(String, Value)]) -> StorageResult<()> {
        let mut map = lock(&self.map);
        for (k, v) in entries {
            map.insert(k.clone(), v.clone());
        }
        Ok(())
    }

    async fn del_many(&self, keys: &[String]) -> StorageResult<()> {
        let mut map = lock(&self.map);
        for k in keys {
            map.remove(k);
        }
        Ok(())
    }

    async fn visit_prefix(
        &self,
        prefix: &str,
        visit: &mut (dyn for<'k> FnMut(&'k str, &'k Value) + Send),
    ) -> StorageResult<u64> {
        let map = lock(&self.map);
        let mut n = 0;
        for (k, v) in map
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
        {
            visit(k, v);
            n += 1;
        }
        Ok(n)
    }

    async fn scan_prefix(&self, prefix: &str) -> StorageResult<Vec<(String, Value)>> {
        Ok(lock(&self.map)
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}
