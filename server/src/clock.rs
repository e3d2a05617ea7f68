//! The one seam for time. Monotonic time is tokio's (paused, simulated or real, whichever runtime
//! runs us); wall-clock time is injected, because JWT expiry and unix timestamps must follow the
//! simulator's clock, not the host's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Monotonic instant. Under turmoil or `tokio::time::pause` it is simulated time.
pub type Instant = tokio::time::Instant;

/// Source of time for everything the server decides.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Monotonic now, for budgets and timeouts.
    fn now(&self) -> Instant;
    /// Wall-clock milliseconds since the unix epoch, for timestamps and token expiry.
    fn unix_ms(&self) -> u64;
}

pub type SharedClock = Arc<dyn Clock>;

/// The production clock: tokio's monotonic time and the host's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)] // this is the seam
    fn now(&self) -> Instant {
        tokio::time::Instant::now()
    }

    #[allow(clippy::disallowed_methods)] // this is the seam
    fn unix_ms(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// A clock that moves only when told to: for unit tests, loom models and benchmarks that need
/// exact control. `now()` is a fixed origin plus the manual offset, so it never reads the host.
#[derive(Debug, Clone)]
pub struct ManualClock {
    origin: Instant,
    offset_ms: Arc<AtomicU64>,
    epoch_ms: u64,
}

impl ManualClock {
    /// `origin` is taken from tokio's clock once, at construction.
    #[allow(clippy::disallowed_methods)] // a fixed origin; all movement is manual
    pub fn new(epoch_ms: u64) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            offset_ms: Arc::new(AtomicU64::new(0)),
            epoch_ms,
        }
    }

    pub fn advance(&self, by: Duration) {
        self.offset_ms
            .fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }

    pub fn elapsed_ms(&self) -> u64 {
        self.offset_ms.load(Ordering::SeqCst)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.origin + Duration::from_millis(self.elapsed_ms())
    }

    fn unix_ms(&self) -> u64 {
        self.epoch_ms + self.elapsed_ms()
    }
}

/// Wall clock = a fixed epoch plus tokio's elapsed monotonic time. Under the simulator (or a
/// paused runtime) this makes wall time as deterministic as monotonic time.
#[derive(Debug, Clone, Copy)]
pub struct EpochClock {
    origin: Instant,
    epoch_ms: u64,
}

impl EpochClock {
    #[allow(clippy::disallowed_methods)] // origin only; later readings go through `now`
    pub fn new(epoch_ms: u64) -> Self {
        Self {
            origin: tokio::time::Instant::now(),
            epoch_ms,
        }
    }
}

impl Clock for EpochClock {
    #[allow(clippy::disallowed_methods)] // tokio time is simulated wherever determinism matters
    fn now(&self) -> Instant {
        tokio::time::Instant::now()
    }

    fn unix_ms(&self) -> u64 {
        self.epoch_ms
            + self
                .now()
                .saturating_duration_since(self.origin)
                .as_millis() as u64
    }
}
