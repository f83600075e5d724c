//! One retry policy for lake: exponential backoff, with jitter for retries (the `backon`
//! crate), without for polls.
//!
//! HTTP sources retry a failed GET with it (or wait what the server's `Retry-After` says), the
//! EMR backend its throttled API calls and server faults, and the orchestrator spaces the polls of
//! a running step with it. What may be retried is decided by the caller's error type (a status
//! code, an AWS error code), never by matching message text. AWS calls are retried here only:
//! lake's EMR client has the SDK's own retries off, so a throttled call is not retried twice.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

/// Waits that double from `first` up to `max`, for at most `retries` retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first wait.
    pub first: Duration,
    /// The longest wait.
    pub max: Duration,
    /// Retries after the first attempt (`None`: no end, as polls).
    pub retries: Option<usize>,
    /// Random extra of up to the wait itself, so clients that failed together do not retry
    /// together (retries); off for polls, whose cadence is a schedule.
    pub jitter: bool,
}

impl Backoff {
    /// A retry policy: `attempts` in all (the first included), jittered waits from `first`
    /// doubling up to `max`.
    pub fn retries(attempts: u32, first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            retries: Some(attempts.saturating_sub(1) as usize),
            jitter: true,
        }
    }

    /// A poll schedule: waits from `first` doubling up to `max`, without end or jitter.
    pub fn polls(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max: max.max(first),
            retries: None,
            jitter: false,
        }
    }

    /// The waits, in order; `None` once the retries are used up.
    pub fn delays(&self) -> impl Iterator<Item = Duration> + Send + use<> {
        let mut b = ExponentialBuilder::default()
            .with_factor(2.0)
            .with_min_delay(self.first)
            .with_max_delay(self.max);
        b = match self.retries {
            Some(n) => b.with_max_times(n),
            None => b.without_max_times(),
        };
        if self.jitter {
            b = b.with_jitter();
        }
        b.build()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_double_to_their_ceiling_without_end() {
        let d: Vec<Duration> = Backoff::polls(Duration::from_secs(2), Duration::from_secs(30))
            .delays()
            .take(7)
            .collect();
        let secs: Vec<u64> = d.iter().map(Duration::as_secs).collect();
        assert_eq!(secs, [2, 4, 8, 16, 30, 30, 30]);
    }

    #[test]
    fn retries_are_jittered_bounded_and_end() {
        let b = Backoff::retries(5, Duration::from_millis(100), Duration::from_millis(400));
        let runs: Vec<Vec<Duration>> = (0..20).map(|_| b.delays().collect()).collect();
        for d in &runs {
            assert_eq!(d.len(), 4, "5 attempts: 4 waits");
            for (i, w) in d.iter().enumerate() {
                let base = Duration::from_millis(100 << i.min(2));
                assert!(*w >= base && *w <= base * 2, "wait {i}: {w:?}");
            }
        }
        // Jitter: not every run waits the same (the clock-nanos jitter this replaces was 0 on
        // a microsecond clock).
        assert!(runs.iter().any(|d| d != &runs[0]), "{runs:?}");
    }
}
