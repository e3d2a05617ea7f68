//! Argument checks at the engine's edge: a store's tenant, depth and tags, and whether an id can
//! name a node at all. A rejected request changes nothing.

use super::records::StoreRequest;
use crate::error::EngineError;

/// Validation limits for store arguments.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 128;
/// `priority` bounds (SPEC §1.9): a store outside them is a `bad_request`, so no tenant can
/// outrank every other with an extreme value.
pub const PRIORITY_RANGE: std::ops::RangeInclusive<i64> = -1000..=1000;

/// Check a store's arguments (tenant, then depth, priority and tags) and return the depth to
/// store.
pub(super) fn store_args(tenant: &str, req: &StoreRequest) -> Result<f64, EngineError> {
    validate_tenant(tenant)?;
    let depth = req.depth.unwrap_or(0.5);
    if !depth.is_finite() || !(0.0..=1.0).contains(&depth) {
        return Err(EngineError::BadRequest(
            "depth must be a number between 0.0 and 1.0".into(),
        ));
    }
    if let Some(p) = req.priority
        && !PRIORITY_RANGE.contains(&p)
        && !crate::planted!(GcUnfair)
    {
        crate::reached!("store.priority_refused");
        return Err(EngineError::BadRequest(format!(
            "priority must be an integer from {} to {}",
            PRIORITY_RANGE.start(),
            PRIORITY_RANGE.end()
        )));
    }
    if req.tags.len() > MAX_TAGS || req.tags.iter().any(|t| t.len() > MAX_TAG_LEN) {
        return Err(EngineError::BadRequest(format!(
            "at most {MAX_TAGS} tags of at most {MAX_TAG_LEN} bytes"
        )));
    }
    Ok(depth)
}

fn validate_tenant(tenant: &str) -> Result<(), EngineError> {
    if tenant.is_empty() || tenant.len() > 256 {
        return Err(EngineError::BadRequest(
            "tenant must be 1 to 256 bytes".into(),
        ));
    }
    Ok(())
}

/// Sigils are short lowercase hex; anything else cannot name a node.
pub(super) fn valid_sigil(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use serde_json::json;

    use super::super::tests::{engine, req};
    use super::*;
    use crate::engine::EngineConfig;

    #[tokio::test]
    async fn bad_arguments_are_rejected_without_side_effects() {
        let (e, storage, _) = engine(EngineConfig::default()).await;
        let before = storage.len();
        for depth in [-0.1, 1.5, f64::NAN] {
            let r = e
                .store(
                    "t",
                    StoreRequest {
                        depth: Some(depth),
                        ..req(json!(1))
                    },
                )
                .await;
            assert!(matches!(r, Err(EngineError::BadRequest(_))), "{depth}");
        }
        for priority in [-1001, 1001, i64::MIN, i64::MAX] {
            let r = e
                .store(
                    "t",
                    StoreRequest {
                        priority: Some(priority),
                        ..req(json!(1))
                    },
                )
                .await;
            assert!(matches!(r, Err(EngineError::BadRequest(_))), "{priority}");
        }
        for priority in [-1000, 0, 1000] {
            let r = e.store(
                "t",
                StoreRequest {
                    priority: Some(priority),
                    ..req(json!(1))
                },
            );
            let id = r.await.unwrap().id;
            e.collect("t", &id).await.unwrap();
        }
        assert!(matches!(
            e.store("", req(json!(1))).await,
            Err(EngineError::BadRequest(_))
        ));
        assert_eq!(e.get("t", "../../etc").await, Err(EngineError::NotFound));
        assert_eq!(storage.len(), before);
        assert_eq!(e.total().unwrap(), 0);
    }
}
