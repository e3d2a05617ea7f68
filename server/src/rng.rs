//! The one seam for randomness: a seeded SplitMix64. Every random choice the server makes (sigil
//! salts, quantum-link draws) comes from here, so one seed replays one run.

use crate::sync::Mutex;

/// SplitMix64: tiny, fast, and good enough for non-cryptographic choices.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
    /// The seed this generator started from: [`SplitMix64::fork`] derives from it, not from the
    /// current state, so a child's stream does not depend on what was drawn before.
    seed: u64,
}

/// The sub-seed of component `label` under `seed`: a hash of the pair, so it depends on nothing
/// else — not on the order in which components derive theirs, nor on draws made in between.
pub fn sub_seed(seed: u64, label: &str) -> u64 {
    // FNV-1a over the label, started from the mixed seed, then mixed again: two labels differing
    // in one byte, or one label under neighbouring seeds, give unrelated sub-seeds.
    let mut h = mix(seed ^ 0xCBF2_9CE4_8422_2325);
    for b in label.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
    }
    mix(h ^ label.len() as u64)
}

/// SplitMix64's output function (a bijection of u64).
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed, seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        mix(self.state)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The generator of component `label`: seeded with [`sub_seed`]`(seed, label)` of this
    /// generator's own seed, so forks are independent of each other's order and of this stream.
    pub fn fork(&self, label: &str) -> SplitMix64 {
        SplitMix64::new(sub_seed(self.seed, label))
    }
}

/// A seeded RNG shared by tasks.
#[derive(Debug)]
pub struct SharedRng(Mutex<SplitMix64>);

impl SharedRng {
    pub fn new(seed: u64) -> Self {
        Self(Mutex::new(SplitMix64::new(seed)))
    }

    pub fn next_u64(&self) -> u64 {
        crate::sync::lock(&self.0).next_u64()
    }

    pub fn next_f64(&self) -> f64 {
        crate::sync::lock(&self.0).next_f64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_different_seed_different_stream() {
        let a: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let b: Vec<u64> = (0..4)
            .scan(SplitMix64::new(7), |r, _| Some(r.next_u64()))
            .collect();
        let c: Vec<u64> = (0..4)
            .scan(SplitMix64::new(8), |r, _| Some(r.next_u64()))
            .collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn forks_depend_on_seed_and_label_only() {
        let a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        let (x, y) = (a.fork("x").next_u64(), a.fork("y").next_u64());
        // Another order, with draws in between: the same children.
        b.next_u64();
        let y2 = b.fork("y").next_u64();
        b.next_u64();
        assert_eq!((b.fork("x").next_u64(), y2), (x, y));
        assert_ne!(x, y);
        assert_ne!(SplitMix64::new(8).fork("x").next_u64(), x);
        assert_eq!(sub_seed(7, "x"), sub_seed(7, "x"));
        assert_ne!(sub_seed(7, "client-1"), sub_seed(7, "client-2"));
        assert_ne!(sub_seed(7, "ab"), sub_seed(7, "ba"));
    }

    #[test]
    fn next_f64_stays_in_unit_interval() {
        let mut r = SplitMix64::new(1);
        for _ in 0..10_000 {
            let x = r.next_f64();
            assert!((0.0..1.0).contains(&x), "{x}");
        }
    }
}
