//! Whether a pool may start provisions now: back-off after transient failures, and *holds* after failures
//! that would repeat identically (a render error, a missing template, a 403, a 400 parameter error).
//!
//! A transient failure (5xx, timeout, lock timeout) pauses the pool's provisions for a jittered, doubling
//! back-off. A deterministic failure holds the pool: one error line, the reason in `status`, `/readyz` and
//! `gha_pool_held{pool,reason}`, and no new VM until the pool's template in the cluster changes (its
//! fingerprint: the template VMs found under the pool's template name) or [`HOLD_RETRY`] passed; then one
//! provision tries again. Other pools are never affected.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::error::Error;

/// How long a held pool waits before one more attempt when nothing changed.
pub const HOLD_RETRY: Duration = Duration::from_secs(600);

/// A held pool, for `status`, `/readyz` and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPool {
    /// Pool name.
    pub pool: String,
    /// Bounded reason (metric label).
    pub reason: &'static str,
    /// The error, one line.
    pub message: String,
}

#[derive(Debug, Default)]
struct Gate {
    failures: u32,
    until: Option<Instant>,
    held: Option<Hold>,
    /// A hold was lifted for one attempt that has not ended yet: no other provision of the pool starts.
    probing: bool,
}

#[derive(Debug)]
struct Hold {
    reason: &'static str,
    message: String,
    fingerprint: String,
}

/// The gates of every pool (kept in the reconciler's state; never held across an `.await`).
#[derive(Debug, Default)]
pub struct PoolGates {
    gates: BTreeMap<String, Gate>,
}

/// The delays of [`PoolGates::failure`].
#[derive(Debug, Clone, Copy)]
pub struct GateTiming {
    /// First back-off after a transient failure (doubles per failure).
    pub base: Duration,
    /// Longest back-off.
    pub max: Duration,
    /// How long a hold lasts when nothing changed.
    pub hold_retry: Duration,
}

/// What [`PoolGates::admit`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// The pool may start a provision.
    Open,
    /// A back-off after a transient failure is running.
    BackingOff,
    /// The pool is held after a deterministic failure.
    Held,
}

impl PoolGates {
    /// Whether `pool` may start a provision now. `fingerprint` describes what the pool depends on in the
    /// cluster (its template VMs); a hold whose fingerprint changed, or that is older than [`HOLD_RETRY`],
    /// is lifted for one attempt.
    pub fn admit(&mut self, pool: &str, fingerprint: &str, now: Instant) -> Admission {
        let Some(gate) = self.gates.get_mut(pool) else {
            return Admission::Open;
        };
        if gate.probing {
            return Admission::Held;
        }
        if let Some(hold) = &gate.held {
            let expired = gate.until.is_none_or(|u| u <= now);
            if hold.fingerprint == fingerprint && !expired {
                return Admission::Held;
            }
            tracing::info!(
                pool = %pool,
                reason = hold.reason,
                "held pool: {}; trying one provision again",
                if expired {
                    "hold period over"
                } else {
                    "its template changed"
                }
            );
            gate.held = None;
            gate.until = None;
            gate.probing = true;
            return Admission::Open;
        }
        if gate.until.is_some_and(|u| u > now) {
            Admission::BackingOff
        } else {
            Admission::Open
        }
    }

    /// A provision of `pool` succeeded: back-off and hold are cleared.
    pub fn success(&mut self, pool: &str) {
        if let Some(gate) = self.gates.remove(pool)
            && let Some(hold) = gate.held
        {
            tracing::info!(pool, reason = hold.reason, "pool no longer held");
        }
    }

    /// `pool` cannot provision: held for `hold_retry` when the error is deterministic, else backed off
    /// (`base · 2^(n−1)`, at most `max`, jittered).
    pub fn failure(
        &mut self,
        pool: &str,
        error: &Error,
        fingerprint: &str,
        now: Instant,
        timing: GateTiming,
    ) {
        let GateTiming {
            base,
            max,
            hold_retry,
        } = timing;
        let gate = self.gates.entry(pool.to_owned()).or_default();
        gate.failures = gate.failures.saturating_add(1);
        gate.probing = false;
        if let Some(reason) = error.hold_reason() {
            let message = one_line(&error.to_string());
            let repeated = gate
                .held
                .as_ref()
                .is_some_and(|h| h.reason == reason && h.message == message);
            if !repeated {
                tracing::error!(
                    pool = %pool,
                    reason,
                    error = %message,
                    retry_in_s = hold_retry.as_secs(),
                    "pool held: this failure repeats on every attempt; no new VM until the pool's template \
                     changes or the hold period is over"
                );
            }
            gate.held = Some(Hold {
                reason,
                message,
                fingerprint: fingerprint.to_owned(),
            });
            gate.until = Some(now + hold_retry);
            return;
        }
        let delay = crate::reconciler::backoff_delay(base, max, gate.failures);
        gate.until = Some(now + delay);
        tracing::warn!(
            pool = %pool,
            failures = gate.failures,
            backoff_s = delay.as_secs_f32(),
            "pool provisions paused after a failure"
        );
    }

    /// A provision of `pool` ended without telling anything about the pool (shutdown, a taken VMID).
    pub fn inconclusive(&mut self, pool: &str) {
        if let Some(gate) = self.gates.get_mut(pool) {
            gate.probing = false;
        }
    }

    /// The held pools, by name.
    pub fn held(&self) -> Vec<HeldPool> {
        self.gates
            .iter()
            .filter_map(|(pool, g)| {
                g.held.as_ref().map(|h| HeldPool {
                    pool: pool.clone(),
                    reason: h.reason,
                    message: h.message.clone(),
                })
            })
            .collect()
    }
}

/// The first line of `text`, at most 300 bytes.
pub(crate) fn one_line(text: &str) -> String {
    let mut line = text.lines().next().unwrap_or_default().to_owned();
    if line.len() > 300 {
        let mut cut = 300;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push('…');
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(s: Duration) -> GateTiming {
        GateTiming {
            base: s,
            max: s * 10,
            hold_retry: HOLD_RETRY,
        }
    }

    fn missing() -> Error {
        Error::TemplateNotFound {
            pool: "p".into(),
            template: "t".into(),
        }
    }

    #[test]
    fn a_deterministic_failure_holds_until_the_template_changes_or_time_passes() {
        let mut g = PoolGates::default();
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        assert_eq!(g.admit("p", "a", t0), Admission::Open);
        g.failure("p", &missing(), "a", t0, timing(s));
        assert_eq!(g.admit("p", "a", t0 + s * 30), Admission::Held);
        assert_eq!(
            g.admit("other", "a", t0),
            Admission::Open,
            "other pools unaffected"
        );
        assert_eq!(g.held().len(), 1);
        assert_eq!(g.held()[0].reason, "template_missing");
        // The template appeared (fingerprint changed): one attempt, and only one at a time.
        assert_eq!(g.admit("p", "b", t0 + s * 31), Admission::Open);
        assert_eq!(g.admit("p", "b", t0 + s * 31), Admission::Held);
        g.failure("p", &missing(), "b", t0 + s * 32, timing(s));
        assert_eq!(g.admit("p", "b", t0 + s * 33), Admission::Held);
        assert_eq!(g.admit("p", "b", t0 + HOLD_RETRY + s * 33), Admission::Open);
        g.success("p");
        assert!(g.held().is_empty());
    }

    #[test]
    fn a_transient_failure_backs_off_without_holding() {
        let mut g = PoolGates::default();
        let t0 = Instant::now();
        let e = Error::VmidTaken {
            vmid: 1,
            message: "x".into(),
        };
        let s = Duration::from_secs(1);
        g.failure("p", &e, "a", t0, timing(s));
        assert_eq!(g.admit("p", "a", t0), Admission::BackingOff);
        assert_eq!(g.admit("p", "a", t0 + s * 11), Admission::Open);
        assert!(g.held().is_empty());
    }

    #[test]
    fn one_line_cuts_at_a_char_boundary() {
        let long = "é".repeat(400);
        let l = one_line(&format!("{long}\nsecond"));
        assert!(l.len() <= 304 && l.ends_with('…'));
        assert_eq!(one_line("a\nb"), "a");
    }
}
