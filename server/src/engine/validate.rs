//! Argument checks at the engine's edge: a store's tenant, depth and tags, and whether an id can
//! name a node at all. A rejected request changes nothing.

use super::records::StoreRequest;
use crate::error::EngineError;

/// Validation limits for store arguments.
const MAX_TAGS: usize = 64;
const MAX_TAG_LEN: usize = 128;

/// Check a store's arguments (tenant, then depth, then tags) and return the depth to store.
pub(super) fn store_args(tenant: &str, req: &StoreRequest) -> Result<f64, EngineError> {
    validate_tenant(tenant)?;
    let depth = req.depth.unwrap_or(0.5);
    if !depth.is_finite() || !(0.0..=1.0).contains(&depth) {
        return Err(EngineError::BadRequest(
            "depth must be a number between 0.0 and 1.0".into(),
        ));
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

#[cfg(all(test, not(spiral_loom)))]
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
        assert!(matches!(
            e.store("", req(json!(1))).await,
            Err(EngineError::BadRequest(_))
        ));
        assert_eq!(e.get("t", "../../etc").await, Err(EngineError::NotFound));
        assert_eq!(storage.len(), before);
        assert_eq!(e.total().unwrap(), 0);
    }
}
