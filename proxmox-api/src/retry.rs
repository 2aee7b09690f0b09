//! Jittered exponential backoff for idempotent calls and lock timeouts.

use std::future::Future;
use std::time::Duration;

use rand::Rng;

use crate::error::Error;

/// How often and how patiently to retry.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    /// Total attempts, including the first (at least 1).
    pub max_attempts: u32,
    /// Backoff before the second attempt.
    pub initial_backoff: Duration,
    /// Upper bound of any backoff.
    pub max_backoff: Duration,
    /// Growth factor per attempt.
    pub multiplier: f64,
}

impl Default for RetryPolicy {
    /// 4 attempts; 250 ms, 500 ms, 1 s (each jittered to 50–100 %), at most 5 s.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            multiplier: 2.0,
        }
    }
}

impl RetryPolicy {
    /// The un-jittered backoff after failed attempt number `attempt` (1-based).
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .multiplier
            .max(1.0)
            .powi(i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX));
        let secs = self.initial_backoff.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= self.max_backoff.as_secs_f64() {
            self.max_backoff
        } else {
            Duration::from_secs_f64(secs)
        }
    }

    /// The backoff with jitter: uniformly in `[backoff/2, backoff]`.
    pub fn jittered_backoff(&self, attempt: u32) -> Duration {
        let b = self.backoff(attempt);
        let nanos = u64::try_from(b.as_nanos()).unwrap_or(u64::MAX);
        if nanos < 2 {
            return b;
        }
        Duration::from_nanos(rand::rng().random_range(nanos / 2..=nanos))
    }
}

/// Runs `op` until it succeeds, fails with a non-retryable error ([`Error::is_retryable`]), or
/// `policy.max_attempts` attempts were made; sleeps a jittered, growing backoff in between.
/// Returns the last error.
pub async fn retry<T, F, Fut>(policy: &RetryPolicy, mut op: F) -> Result<T, Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Error>>,
{
    let max = policy.max_attempts.max(1);
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(e) if attempt < max && e.is_retryable() => {
                let wait = policy.jittered_backoff(attempt);
                tracing::warn!(attempt, max, ?wait, error = %e, "retryable Proxmox error; backing off");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn api(status: u16) -> Error {
        Error::Api {
            method: "GET",
            endpoint: "/version",
            status,
            message: "x".into(),
            errors: BTreeMap::new(),
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(4),
            multiplier: 2.0,
        }
    }

    #[test]
    fn backoff_grows_and_caps_and_jitters_within_bounds() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(250));
        assert_eq!(p.backoff(2), Duration::from_millis(500));
        assert_eq!(p.backoff(3), Duration::from_secs(1));
        assert_eq!(p.backoff(10), Duration::from_secs(5));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(5));
        for attempt in 1..6 {
            for _ in 0..50 {
                let j = p.jittered_backoff(attempt);
                assert!(
                    j <= p.backoff(attempt) && j >= p.backoff(attempt) / 2,
                    "{j:?}"
                );
            }
        }
    }

    #[tokio::test]
    async fn retries_retryable_until_success() {
        let calls = AtomicU32::new(0);
        let r = retry(&fast(), || async {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            if n < 2 { Err(api(596)) } else { Ok(n) }
        })
        .await;
        assert_eq!(r.unwrap(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn stops_at_max_attempts_and_on_non_retryable() {
        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(&fast(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(api(500))
        })
        .await;
        assert_eq!(r.unwrap_err().status(), Some(500));
        assert_eq!(calls.load(Ordering::SeqCst), 4);

        let calls = AtomicU32::new(0);
        let r: Result<(), _> = retry(&fast(), || async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(api(400))
        })
        .await;
        assert_eq!(r.unwrap_err().status(), Some(400));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
