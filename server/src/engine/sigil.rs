//! Sigils: a node's id. Derived from a seeded hash of the boot generation, the operation
//! number, the tenant and the content; kept inside the engine as an integer ([`Sigil`]) and
//! formatted back to fixed-width lowercase hex at the edge.

use sha2::{Digest, Sha256};

use super::core::Core;

/// A sigil as the engine keys it: its hex digits as an integer. Integer keys make the index,
/// the GC queue and rebuild cheap; ids are formatted back to fixed-width hex at the edge.
pub type Sigil = u64;

/// Sigils are at most 16 hex digits so they fit a `Sigil`.
pub const MAX_SIGIL_HEX: u32 = 16;

/// Parse an id of exactly `width` lowercase hex digits.
pub fn parse_sigil(id: &str, width: u32) -> Option<Sigil> {
    if id.len() != width as usize
        || !id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return None;
    }
    Sigil::from_str_radix(id, 16).ok()
}

pub fn format_sigil(key: Sigil, width: u32) -> String {
    format!("{key:0width$x}", width = width as usize)
}

impl Core {
    pub(super) fn key(&self, id: &str) -> Option<Sigil> {
        parse_sigil(id, self.cfg.sigil_hash_slice)
    }

    pub(super) fn id(&self, key: Sigil) -> String {
        format_sigil(key, self.cfg.sigil_hash_slice)
    }

    /// A fresh sigil for a node about to be reserved: never one the index already holds.
    pub(super) fn sigil(&mut self, tenant: &str, content_digest: &[u8; 32]) -> Sigil {
        let salt = self.rng.next_u64();
        let shift = 64 - 4 * self.cfg.sigil_hash_slice.min(MAX_SIGIL_HEX);
        for attempt in 0u32.. {
            let mut h = Sha256::new();
            h.update(salt.to_le_bytes());
            h.update(self.generation.to_le_bytes());
            h.update(self.op.to_le_bytes());
            h.update(attempt.to_le_bytes());
            h.update(tenant.as_bytes());
            h.update(content_digest);
            let digest = h.finalize();
            let mut first = [0u8; 8];
            first.copy_from_slice(&digest[..8]);
            // The first `sigil_hash_slice` hex digits of the hash.
            let key = u64::from_be_bytes(first).checked_shr(shift).unwrap_or(0);
            // Collision check: a sigil names one node for its whole life.
            if !self.nodes.contains_key(&key) {
                return key;
            }
        }
        unreachable!("an unbounded attempt counter always finds a free sigil")
    }
}

#[cfg(test)]
#[cfg(not(spiral_loom))]
mod tests {
    use std::collections::BTreeSet;

    use super::super::core::tests::{core, store};

    #[test]
    fn sigils_are_unique_hex_of_the_configured_length() {
        let mut c = core(10_000);
        let mut seen = BTreeSet::new();
        for i in 0..2000 {
            let id = store(&mut c, "t", 0.5, 0, i);
            assert_eq!(id.len(), 10);
            assert!(id.chars().all(|ch| ch.is_ascii_hexdigit()));
            assert!(seen.insert(id));
        }
        c.check().unwrap();
    }
}
