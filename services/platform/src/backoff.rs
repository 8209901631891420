//! The one retry delay of the code base: exponential, capped, with jitter, and cut short by
//! shutdown. The outbox relay, the event consumer and start-up all wait through it.
//!
//! Why jitter: replicas that lost the same database or broker at the same moment would
//! otherwise retry in lock-step and hit it together when it comes back.

use std::time::Duration;

use rand::Rng;
use tokio_util::sync::CancellationToken;

/// First wait after a failure.
pub const DEFAULT_MIN: Duration = Duration::from_millis(100);

/// Longest wait between two attempts while a dependency is down. Short, so that work resumes
/// within a couple of seconds of an outage ending (the services recover within 10 s of a fault
/// clearing); an attempt costs one query, one publish or one pull.
pub const DEFAULT_MAX: Duration = Duration::from_secs(2);

/// Exponential backoff between `min` and `max`, each wait drawn from its upper half.
#[derive(Clone, Debug)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new(DEFAULT_MIN, DEFAULT_MAX)
    }
}

impl Backoff {
    /// Waits starting at `min`, doubling up to `max`.
    pub fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            next: min,
        }
    }

    /// Back to the shortest wait (after a success).
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The next wait, and doubles the one after it. Drawn from `[next/2, next]`, so the mean
    /// still grows exponentially while replicas drift apart.
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.next;
        self.next = (self.next * 2).min(self.max);
        let floor = ceiling / 2;
        let spread = ceiling.saturating_sub(floor);
        floor + spread.mul_f64(rand::rng().random::<f64>())
    }

    /// Sleeps the next wait; `true` when `shutdown` fired first (the caller should stop).
    pub async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(delay) => false,
            _ = shutdown.cancelled() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_and_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let waits: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
        let ceilings = [100, 200, 400, 400, 400];
        for (wait, ceiling) in waits.iter().zip(ceilings) {
            let ceiling = Duration::from_millis(ceiling);
            assert!(
                *wait >= ceiling / 2 && *wait <= ceiling,
                "{wait:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        backoff.reset();
        assert!(backoff.next_delay() <= Duration::from_millis(100));
    }

    #[tokio::test]
    async fn shutdown_cuts_the_wait_short() {
        let shutdown = CancellationToken::new();
        shutdown.cancel();
        let mut backoff = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
        let started = std::time::Instant::now();
        assert!(backoff.wait(&shutdown).await);
        // Bounded loosely: the point is that it did not sleep a minute.
        assert!(started.elapsed() < Duration::from_secs(30));
    }
}
