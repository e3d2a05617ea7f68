//! What goes in and out of the engine: the stored node record and the storage keys, a store's
//! arguments and answer, the views and reports it hands out, and the events it publishes.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::rebuild::Correction;
use super::spiral::SpiralStats;

/// Storage key prefix of memory nodes.
pub const NODE_PREFIX: &str = "node:";
pub const META_LATEST: &str = "meta:latest";
/// Counter bumped at every open; see `Core::set_generation`.
pub const META_GENERATION: &str = "meta:generation";
pub const META_SNAPSHOT_PREFIX: &str = "meta:snapshot:";

pub fn node_key(id: &str) -> String {
    format!("{NODE_PREFIX}{id}")
}

/// A memory node as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: String,
    pub tenant: String,
    pub spiral_id: String,
    pub content: Value,
    pub depth: f64,
    pub priority: i64,
    #[serde(default)]
    pub tags: Vec<String>,
    pub created_ms: u64,
}

/// Arguments of `store` (REST `POST /v1/memories`, WebSocket `memory.store`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreRequest {
    pub content: Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// What an acknowledged store answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    pub id: String,
    pub spiral_id: String,
    pub depth: f64,
    pub priority: i64,
    pub created_ms: u64,
}

/// `GET /v1/spirals`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpiralsView {
    pub total_memories: u64,
    pub spirals: Vec<SpiralStats>,
}

/// One GC pass.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GcReport {
    pub reason: &'static str,
    pub excess: u64,
    pub selected: usize,
    pub collected: usize,
    pub skipped: u32,
    pub pause_ms: f64,
    pub budget_ms: u64,
    /// The pass stopped because its time budget ran out.
    pub out_of_time: bool,
    pub backlog: u64,
    /// Each tenant's fair share of the capacity when the pass selected.
    #[serde(skip)]
    pub share: u64,
    /// What each tenant held and gave up at the selection. Never published: tenants do not see
    /// each other.
    #[serde(skip)]
    pub tenants: Vec<super::gc::TenantShare>,
}

/// One rebuild-stats run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RebuildReport {
    pub scanned: u64,
    pub elapsed_ms: f64,
    pub nodes_per_s: f64,
    pub total_before: u64,
    pub total_after: u64,
    pub corrections: Vec<Correction>,
}

/// What the engine publishes on its event channel (the event stream relays these).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum EngineEvent {
    /// `content` is the stored JSON, carried only while somebody subscribes (the event stream
    /// relays it, sanitized, to the node's own tenant).
    Stored {
        id: String,
        tenant: String,
        spiral_id: String,
        content: Value,
    },
    Collected {
        id: String,
        tenant: String,
        by_gc: bool,
    },
    Gc(GcReport),
    Rebuild(RebuildReport),
}

/// Cumulative GC figures for `/status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GcTotals {
    pub passes: u64,
    pub collected: u64,
    pub skipped: u64,
    pub out_of_time: u64,
    pub last_pause_ms: f64,
    pub max_pause_ms: f64,
}
