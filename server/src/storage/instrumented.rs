//! A storage wrapper that times every call into `spiral_storage_latency_ms{method,backend}`.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::{SharedStorage, Storage, StorageResult};
use crate::clock::SharedClock;
use crate::metrics::Metrics;

#[derive(Debug)]
pub struct Instrumented {
    inner: SharedStorage,
    metrics: Arc<Metrics>,
    clock: SharedClock,
}

impl Instrumented {
    pub fn new(inner: SharedStorage, metrics: Arc<Metrics>, clock: SharedClock) -> Self {
        Self {
            inner,
            metrics,
            clock,
        }
    }

    async fn timed<T>(
        &self,
        method: &'static str,
        call: impl std::future::Future<Output = StorageResult<T>>,
    ) -> StorageResult<T> {
        let started = self.clock.now();
        let out = call.await;
        let ms = self
            .clock
            .now()
            .saturating_duration_since(started)
            .as_secs_f64()
            * 1000.0;
        self.metrics
            .storage_latency_ms
            .observe(&[method, self.inner.backend()], ms);
        out
    }
}

#[async_trait]
impl Storage for Instrumented {
    fn backend(&self) -> &'static str {
        self.inner.backend()
    }
    async fn init(&self) -> StorageResult<()> {
        self.timed("init", self.inner.init()).await
    }
    async fn get(&self, key: &str) -> StorageResult<Option<Value>> {
        self.timed("get", self.inner.get(key)).await
    }
    async fn set(&self, key: &str, value: &Value) -> StorageResult<()> {
        self.timed("set", self.inner.set(key, value)).await
    }
    async fn del(&self, key: &str) -> StorageResult<()> {
        self.timed("del", self.inner.del(key)).await
    }
    async fn keys(&self, prefix: &str) -> StorageResult<Vec<String>> {
        self.timed("keys", self.inner.keys(prefix)).await
    }
    async fn atomic_incr(&self, key: &str, delta: i64) -> StorageResult<i64> {
        self.timed("atomic_incr", self.inner.atomic_incr(key, delta))
            .await
    }
    async fn visit_prefix(
        &self,
        prefix: &str,
        visit: &mut (dyn for<'k> FnMut(&'k str, &'k Value) + Send),
    ) -> StorageResult<u64> {
        self.timed("visit_prefix", self.inner.visit_prefix(prefix, visit))
            .await
    }
    async fn set_many(&self, entries: &[(String, Value)]) -> StorageResult<()> {
        self.timed("set_many", self.inner.set_many(entries)).await
    }
    async fn del_many(&self, keys: &[String]) -> StorageResult<()> {
        self.timed("del_many", self.inner.del_many(keys)).await
    }
    async fn scan_prefix(&self, prefix: &str) -> StorageResult<Vec<(String, Value)>> {
        self.timed("scan_prefix", self.inner.scan_prefix(prefix))
            .await
    }
}
