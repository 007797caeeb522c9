//! Time as a port: production reads the system clock, tests set it.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use time::OffsetDateTime;

/// The source of "now" for everything that expires. Inject it; never read the
/// system clock directly outside [`SystemClock`].
pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> OffsetDateTime;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }
}

/// A clock that tests move by hand. Cloning shares the same time.
#[derive(Debug, Clone)]
pub struct SettableClock {
    unix_millis: Arc<AtomicI64>,
}

impl SettableClock {
    pub fn new(start: OffsetDateTime) -> Self {
        Self {
            unix_millis: Arc::new(AtomicI64::new(
                (start.unix_timestamp_nanos() / 1_000_000) as i64,
            )),
        }
    }

    /// Starts at the current system time.
    pub fn starting_now() -> Self {
        Self::new(SystemClock.now())
    }

    pub fn advance(&self, by: time::Duration) {
        self.unix_millis
            .fetch_add(by.whole_milliseconds() as i64, Ordering::SeqCst);
    }

    pub fn set(&self, at: OffsetDateTime) {
        self.unix_millis.store(
            (at.unix_timestamp_nanos() / 1_000_000) as i64,
            Ordering::SeqCst,
        );
    }
}

impl Clock for SettableClock {
    fn now(&self) -> OffsetDateTime {
        let ms = self.unix_millis.load(Ordering::SeqCst);
        OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }
}

pub type SharedClock = Arc<dyn Clock>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settable_clock_moves_only_when_told() {
        let start = OffsetDateTime::from_unix_timestamp(1_700_000_000).unwrap();
        let c = SettableClock::new(start);
        assert_eq!(c.now(), start);
        c.advance(time::Duration::seconds(90));
        assert_eq!(c.now(), start + time::Duration::seconds(90));
        let shared = c.clone();
        shared.advance(time::Duration::seconds(10));
        assert_eq!(c.now(), start + time::Duration::seconds(100));
    }
}
