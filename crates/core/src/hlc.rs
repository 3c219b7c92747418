//! Hybrid logical clock (Kulkarni et al., "Logical Physical Clocks and
//! Consistent Snapshots in Globally Distributed Databases", 2014).
//!
//! An [`Hlc`] packs the physical part (ms since the Unix epoch, 48 bits) and a
//! logical counter (16 bits) into one `u64`, so stamps compare as integers.
//! [`HlcClock::now`] is monotonic even if the wall clock steps back, and
//! [`HlcClock::observe`] merges a remote stamp so causally later events always
//! get larger stamps. Last-writer-wins conflict resolution compares these,
//! never raw wall clocks.

use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

/// A hybrid logical clock timestamp: `(physical_ms << 16) | logical`.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Builds a stamp from its physical part (ms since epoch) and logical counter.
    pub fn new(physical_ms: u64, logical: u16) -> Self {
        Hlc((physical_ms << 16) | u64::from(logical))
    }
    /// Physical part, ms since the Unix epoch.
    pub fn physical_ms(self) -> u64 {
        self.0 >> 16
    }
    /// Logical counter.
    pub fn logical(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl std::fmt::Display for Hlc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.physical_ms(), self.logical())
    }
}

/// A thread-safe hybrid logical clock.
#[derive(Debug, Default)]
pub struct HlcClock {
    last: Mutex<Hlc>,
    /// Added to the wall clock, ms: a simulated skew for tests
    /// ([`HlcClock::with_skew`]); 0 otherwise.
    skew_ms: i64,
}

/// Wall-clock milliseconds since the Unix epoch (0 if the clock is before
/// 1970). The one wall-clock reading of the code base.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl HlcClock {
    /// A clock that will never issue a stamp at or below `floor` (e.g. the last
    /// stamp persisted before a restart).
    pub fn with_floor(floor: Hlc) -> Self {
        HlcClock {
            last: Mutex::new(floor),
            skew_ms: 0,
        }
    }

    /// This clock with its wall-clock reading moved by `skew_ms` (a DC
    /// whose clock runs ahead or behind): for tests of conflict rules,
    /// which must hold whatever the DCs' clocks say.
    pub fn with_skew(self, skew_ms: i64) -> Self {
        HlcClock { skew_ms, ..self }
    }

    /// The (possibly skewed) wall clock, ms since the Unix epoch.
    fn wall(&self) -> u64 {
        (now_ms() as i64).saturating_add(self.skew_ms).max(0) as u64
    }

    /// A new stamp for a local event, strictly greater than every stamp issued
    /// or observed before.
    pub fn now(&self) -> Hlc {
        self.tick(self.wall(), None)
    }

    /// Merges a stamp received from another DC and returns a local stamp
    /// greater than both.
    pub fn observe(&self, remote: Hlc) -> Hlc {
        self.tick(self.wall(), Some(remote))
    }

    /// The stamp of a change its source committed at `source_ms` (ms since
    /// the Unix epoch; 0 = the source does not tell), in a stream whose
    /// previous stamp was `prev`: `max(Hlc::new(source_ms, 0), prev + 1)`,
    /// so stamps rise along the stream even when the source's resolution is
    /// coarse (a binlog event time is whole seconds). A change read late —
    /// a source catching up after downtime — keeps its commit time instead
    /// of looking newer than it is. The stamp is merged into the clock, so
    /// every later local event is stamped after it. With `source_ms == 0`
    /// this is [`HlcClock::now`] (still above `prev`).
    pub fn stamp_source(&self, source_ms: u64, prev: Hlc) -> Hlc {
        if source_ms == 0 {
            return self.tick(self.wall(), Some(prev));
        }
        let floor = if prev.logical() == u16::MAX {
            Hlc::new(prev.physical_ms() + 1, 0)
        } else {
            Hlc(prev.0 + 1)
        };
        let stamp = Hlc::new(source_ms, 0).max(floor);
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        if stamp > *last {
            *last = stamp;
        }
        stamp
    }

    fn tick(&self, wall: u64, remote: Option<Hlc>) -> Hlc {
        let mut last = match self.last.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut max = *last;
        if let Some(r) = remote {
            max = max.max(r);
        }
        let next = if wall > max.physical_ms() {
            Hlc::new(wall, 0)
        } else if max.logical() == u16::MAX {
            Hlc::new(max.physical_ms() + 1, 0)
        } else {
            Hlc(max.0 + 1)
        };
        *last = next;
        next
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_when_wall_clock_steps_back() {
        let c = HlcClock::default();
        let a = c.tick(1000, None);
        let b = c.tick(900, None);
        let d = c.tick(900, None);
        assert!(a < b && b < d);
        assert_eq!(b.physical_ms(), 1000);
        assert_eq!(d.logical(), 2);
    }

    #[test]
    fn observe_moves_past_remote() {
        let c = HlcClock::default();
        let r = Hlc::new(5000, 7);
        let s = c.tick(10, Some(r));
        assert!(s > r);
        assert_eq!(s, Hlc::new(5000, 8));
    }

    #[test]
    fn source_stamps_keep_commit_time_and_rise_along_the_stream() {
        let c = HlcClock::with_floor(Hlc::new(9_000, 0));
        // Read late: an old commit keeps its old time, not the clock's.
        let a = c.stamp_source(5_000, Hlc(0));
        assert_eq!(a, Hlc::new(5_000, 0));
        // Same second again: the logical part orders it after.
        let b = c.stamp_source(5_000, a);
        assert_eq!(b, Hlc::new(5_000, 1));
        // A source stamp ahead of the clock is merged: later local stamps follow it.
        let d = c.stamp_source(20_000, b);
        assert!(c.tick(10, None) > d);
        // Unknown source time: a fresh stamp above the stream's last.
        assert!(c.stamp_source(0, Hlc::new(30_000, 0)) > Hlc::new(30_000, 0));
    }

    #[test]
    fn logical_overflow_carries_into_physical() {
        let c = HlcClock::with_floor(Hlc::new(100, u16::MAX));
        assert_eq!(c.tick(50, None), Hlc::new(101, 0));
    }
}
