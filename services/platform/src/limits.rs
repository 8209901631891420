//! Overload protection shared by every service: a per-key token bucket (a partner's records
//! per second, say), and a process-wide limit on concurrent gRPC requests that refuses what is
//! over it at once instead of queueing it.
//!
//! Refusals answer `RESOURCE_EXHAUSTED`, a message naming the limit and the flag that sets it,
//! and a retry hint ([`Error::retry_after`]). Neither ever waits: a queue that grows under a
//! flood turns one client's excess into everyone's latency and into unbounded memory.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};
use std::task::{Context as TaskContext, Poll};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::Config;
use crate::error::Error;
use crate::metrics::{self, Counter};

/// How long a client shed by the concurrency limit is told to wait: long enough for a typical
/// request to finish and free a slot, short enough not to idle a client for nothing.
pub const SHED_RETRY_AFTER: Duration = Duration::from_millis(100);

/// Path prefix of gRPC health: never shed, so an orchestrator does not restart a replica for
/// being busy, which would only move its load to the others.
const HEALTH_PATH: &str = "/grpc.health.v1.Health/";

/// A token bucket per key: `rate` tokens per second up to `burst`. Keys are whatever the caller
/// throttles by (a partner); the map holds one small entry per key ever seen, so keys must come
/// from a bounded set (authenticated identities, never raw input).
#[derive(Debug)]
pub struct RateLimiter<K> {
    rate: u32,
    burst: u32,
    buckets: Mutex<HashMap<K, Bucket>>,
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// Why a rate limiter refused a call.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Refusal {
    /// Not enough tokens now; this many would be there after the wait.
    RetryAfter(Duration),
    /// The call costs more than the bucket holds: it can never pass and must be split.
    OverBurst,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// A limiter of `rate` tokens per second with buckets of `burst`; `None` when `rate` is 0
    /// (no limit).
    pub fn new(rate: u32, burst: u32) -> Option<Self> {
        (rate > 0).then(|| RateLimiter {
            rate,
            burst: burst.max(1),
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// The refill rate, tokens per second.
    pub fn rate(&self) -> u32 {
        self.rate
    }

    /// The bucket size.
    pub fn burst(&self) -> u32 {
        self.burst
    }

    /// Takes `cost` tokens from `key`'s bucket now, or says how long until it could.
    pub fn try_acquire(&self, key: &K, cost: u32) -> Result<(), Refusal> {
        self.try_acquire_at(key, cost, Instant::now())
    }

    /// Without taking anything: how long until `key`'s bucket holds one token, when it holds
    /// less than one now (`None` when a call of one record would pass).
    pub fn empty_for(&self, key: &K) -> Option<Duration> {
        self.empty_for_at(key, Instant::now())
    }

    /// [`RateLimiter::empty_for`] at a given instant.
    pub fn empty_for_at(&self, key: &K, now: Instant) -> Option<Duration> {
        let buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let bucket = buckets.get(key)?;
        let rate = f64::from(self.rate);
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        let tokens = (bucket.tokens + elapsed * rate).min(f64::from(self.burst));
        (tokens < 1.0)
            .then(|| Duration::from_secs_f64((1.0 - tokens) / rate).max(Duration::from_millis(1)))
    }

    /// [`RateLimiter::try_acquire`] for keys from an unbounded set (client addresses): when
    /// `max_keys` keys are remembered already, a key not among them is charged to `overflow`'s
    /// bucket instead, so memory stays bounded; [`RateLimiter::retain_recent`] frees the room.
    pub fn try_acquire_bounded(
        &self,
        key: &K,
        cost: u32,
        max_keys: usize,
        overflow: &K,
    ) -> Result<(), Refusal> {
        // One lock for the look-up and the charge: taken apart, it was locked twice per
        // request, and two new keys checked at once could both pass the bound.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let known = buckets.contains_key(key) || buckets.len() < max_keys;
        let key = if known { key } else { overflow };
        self.take(&mut buckets, key, cost, Instant::now())
    }

    /// Forgets every key whose bucket has refilled to its burst by `now`: such a key behaves
    /// exactly as one never seen, so forgetting it changes no answer.
    pub fn retain_recent(&self, now: Instant) {
        let burst = f64::from(self.burst);
        let rate = f64::from(self.rate);
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        buckets.retain(|_, bucket| {
            let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
            bucket.tokens + elapsed * rate < burst
        });
    }

    /// Keys remembered now.
    pub fn len(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }

    /// True when no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`RateLimiter::try_acquire`] at a given instant (tests drive the clock).
    pub fn try_acquire_at(&self, key: &K, cost: u32, now: Instant) -> Result<(), Refusal> {
        // A poisoned lock only means another call panicked mid-update of plain numbers; the
        // bucket is still usable, and refusing every partner forever would be worse.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        self.take(&mut buckets, key, cost, now)
    }

    /// Takes `cost` tokens from `key`'s bucket in `buckets` (locked by the caller) at `now`.
    fn take(
        &self,
        buckets: &mut HashMap<K, Bucket>,
        key: &K,
        cost: u32,
        now: Instant,
    ) -> Result<(), Refusal> {
        if cost > self.burst {
            return Err(Refusal::OverBurst);
        }
        let burst = f64::from(self.burst);
        let rate = f64::from(self.rate);
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * rate).min(burst);
        bucket.updated = bucket.updated.max(now);
        let cost = f64::from(cost);
        if bucket.tokens >= cost {
            bucket.tokens -= cost;
            return Ok(());
        }
        // Refused calls take nothing, so a client hammering at its limit is not pushed back
        // further than the hint says.
        let wait = (cost - bucket.tokens) / rate;
        Err(Refusal::RetryAfter(
            Duration::from_secs_f64(wait).max(Duration::from_millis(1)),
        ))
    }
}

/// The process-wide limit on concurrent gRPC requests, as a tower layer for the server. A
/// request over the limit is answered at once with `RESOURCE_EXHAUSTED` and a retry hint,
/// before its body is read, so a flood costs neither memory nor other clients' latency.
#[derive(Clone, Debug)]
pub struct ConcurrencyLimitLayer {
    permits: Arc<Semaphore>,
    max: u32,
}

impl ConcurrencyLimitLayer {
    /// At most `max` requests at once (at least one).
    pub fn new(max: u32) -> Self {
        let max = max.max(1);
        ConcurrencyLimitLayer {
            permits: Arc::new(Semaphore::new(max as usize)),
            max,
        }
    }

    /// The limit `--max-concurrent-requests` configures.
    pub fn from_config(config: &Config) -> Self {
        Self::new(config.max_concurrent_requests)
    }

    /// The limit.
    pub fn max(&self) -> u32 {
        self.max
    }

    fn shed_error(&self) -> Error {
        Error::exhausted(format!(
            "the server is at its limit of {} concurrent requests (--max-concurrent-requests) and refuses \
             this one rather than queue it: retry after {} ms",
            self.max,
            SHED_RETRY_AFTER.as_millis()
        ))
        .with_retry_after(SHED_RETRY_AFTER)
    }
}

impl<S> tower::Layer<S> for ConcurrencyLimitLayer {
    type Service = ConcurrencyLimit<S>;
    fn layer(&self, inner: S) -> Self::Service {
        ConcurrencyLimit {
            inner,
            limit: self.clone(),
        }
    }
}

/// The service of [`ConcurrencyLimitLayer`].
#[derive(Clone, Debug)]
pub struct ConcurrencyLimit<S> {
    inner: S,
    limit: ConcurrencyLimitLayer,
}

impl<S, B, R> tower::Service<http::Request<B>> for ConcurrencyLimit<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), Self::Error>> {
        // Readiness is the inner service's; the limit is applied per call so that an
        // over-limit request is answered, not left waiting for a slot.
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if request.uri().path().starts_with(HEALTH_PATH) {
            return Box::pin(self.inner.call(request));
        }
        let permit: OwnedSemaphorePermit = match self.limit.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                shed_counter().inc();
                let status = tonic::Status::from(self.limit.shed_error());
                return Box::pin(std::future::ready(Ok(status.into_http())));
            }
        };
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await;
            // Held until the handler answered: for unary calls that covers reading the request
            // and all the work, which is what the limit bounds.
            drop(permit);
            response
        })
    }
}

fn shed_counter() -> &'static Counter {
    static SHED: std::sync::OnceLock<Counter> = std::sync::OnceLock::new();
    SHED.get_or_init(|| {
        metrics::counter(
            "agriportal_grpc_shed",
            "gRPC requests refused because the server was at --max-concurrent-requests",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_for_reads_without_taking() {
        let limiter = RateLimiter::new(10, 20).unwrap();
        let t0 = Instant::now();
        assert_eq!(
            limiter.empty_for_at(&"a", t0),
            None,
            "unknown key: full bucket"
        );
        limiter.try_acquire_at(&"a", 20, t0).unwrap();
        let wait = limiter.empty_for_at(&"a", t0).expect("empty");
        assert_eq!(wait, Duration::from_millis(100));
        // Peeking took nothing: a tenth of a second later one record passes.
        assert_eq!(
            limiter.empty_for_at(&"a", t0 + Duration::from_millis(100)),
            None
        );
        limiter
            .try_acquire_at(&"a", 1, t0 + Duration::from_millis(100))
            .unwrap();
        assert!(limiter.empty_for_at(&"b", t0).is_none());
    }

    #[test]
    fn bounded_keys_share_the_overflow_bucket_and_full_buckets_are_forgotten() {
        let limiter = RateLimiter::new(10, 2).expect("on");
        let t0 = Instant::now();
        limiter.try_acquire_bounded(&"a", 1, 2, &"*").unwrap();
        limiter.try_acquire_bounded(&"b", 1, 2, &"*").unwrap();
        // A third key is over the bound: charged to the overflow bucket, which fills.
        limiter.try_acquire_bounded(&"c", 1, 2, &"*").unwrap();
        limiter.try_acquire_bounded(&"d", 1, 2, &"*").unwrap();
        assert!(limiter.try_acquire_bounded(&"e", 1, 2, &"*").is_err());
        assert_eq!(limiter.len(), 3, "a, b and the overflow bucket");
        // Known keys keep their own buckets.
        limiter.try_acquire_bounded(&"a", 1, 2, &"*").unwrap();
        // Nothing is full yet; a second later every bucket is, and all are forgotten.
        limiter.retain_recent(t0);
        assert_eq!(limiter.len(), 3);
        limiter.retain_recent(t0 + Duration::from_secs(1));
        assert!(limiter.is_empty());
    }

    #[test]
    fn bucket_refills_at_its_rate_up_to_its_burst() {
        let limiter = RateLimiter::new(10, 20).expect("on");
        let t0 = Instant::now();
        assert_eq!(limiter.try_acquire_at(&"a", 15, t0), Ok(()));
        // 5 left; 15 more need 10 tokens = 1 s.
        assert_eq!(
            limiter.try_acquire_at(&"a", 15, t0),
            Err(Refusal::RetryAfter(Duration::from_secs(1)))
        );
        // Another key has its own bucket.
        assert_eq!(limiter.try_acquire_at(&"b", 20, t0), Ok(()));
        assert_eq!(
            limiter.try_acquire_at(&"a", 15, t0 + Duration::from_secs(1)),
            Ok(())
        );
        // Never more than the burst, however long the pause.
        let later = t0 + Duration::from_secs(3600);
        assert_eq!(limiter.try_acquire_at(&"a", 20, later), Ok(()));
        assert!(matches!(
            limiter.try_acquire_at(&"a", 1, later),
            Err(Refusal::RetryAfter(_))
        ));
        assert_eq!(
            limiter.try_acquire_at(&"a", 21, later),
            Err(Refusal::OverBurst)
        );
        assert!(RateLimiter::<&str>::new(0, 10).is_none());
    }
}
