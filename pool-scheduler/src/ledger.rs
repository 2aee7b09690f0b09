//! The dispatcher's record of its own work in flight, and the rule that keeps supply exact while the
//! cluster listing lags.
//!
//! `/cluster/resources` lists a new VM at once (its VMID, `tags` and `lock` are read from the config), but its
//! `name`, `status` and `uptime` come from the nodes' next status broadcast, up to ~10 s later. A provision
//! that has just finished must therefore not vanish from the planner's view until an observation that
//! *started after it finished* lists the VM: until then its record stays in the ledger ("settling") and the
//! planner keeps counting it as in-flight supply toward the caps. An observation that began before the
//! provision finished may have been answered before the VM carried its marks, so it settles nothing.
//!
//! The ledger is pure: the dispatcher calls [`Ledger::observation_started`] right before it lists the VMs,
//! [`Ledger::settle`] with that observation's listing, and [`Ledger::begin`] / [`Ledger::finish`] around each
//! executor. `tests/ledger_model.rs` drives it with a lagging model cluster and checks the caps.

use std::collections::BTreeMap;

use crate::observed::{InFlight, Op};

/// How many observations a finished provision may stay unlisted before its record is dropped (the VM was
/// deleted by someone else, or the listing lost it): it then counts as whatever the listing says.
pub const SETTLE_MAX_OBSERVATIONS: u64 = 30;

/// How a piece of work ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A provision handed its credential over: the VM exists and is supply until the listing shows it.
    Provisioned,
    /// The work ended and left nothing that needs counting (a deletion, or a rolled-back provision).
    Gone,
}

#[derive(Debug, Clone)]
struct Entry {
    work: InFlight,
    /// The epoch in which a provision finished (settling), `None` while it runs.
    finished_in: Option<u64>,
}

/// Work in flight by VMID, plus finished provisions not yet seen in a listing.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    entries: BTreeMap<u32, Entry>,
    /// Incremented by every observation; a provision finishing in epoch `e` settles in an observation of a
    /// later epoch.
    epoch: u64,
}

impl Ledger {
    /// An empty ledger.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Records new work; `false` (nothing recorded) when the VMID already has work or a settling record.
    pub fn begin(&mut self, work: InFlight) -> bool {
        if self.entries.contains_key(&work.vmid) {
            return false;
        }
        self.entries.insert(
            work.vmid,
            Entry {
                work,
                finished_in: None,
            },
        );
        true
    }

    /// Whether the VMID has work in flight or a settling record.
    #[must_use]
    pub fn contains(&self, vmid: u32) -> bool {
        self.entries.contains_key(&vmid)
    }

    /// The work on `vmid` ended. A successful provision stays as a settling record until an observation
    /// begun after this call lists the VM; anything else is removed.
    pub fn finish(&mut self, vmid: u32, outcome: Outcome) {
        match (outcome, self.entries.get_mut(&vmid)) {
            (Outcome::Provisioned, Some(e)) if e.work.op == Op::Provision => {
                e.finished_in = Some(self.epoch);
            }
            _ => {
                self.entries.remove(&vmid);
            }
        }
    }

    /// Marks the start of an observation (call it right before listing the VMs) and returns its epoch.
    pub fn observation_started(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// Drops the settling records that the observation of `epoch` can account for: the provision finished
    /// before that observation began and `listed(vmid)` says its listing shows the VM. Records unlisted for
    /// [`SETTLE_MAX_OBSERVATIONS`] observations are dropped too.
    pub fn settle(&mut self, epoch: u64, listed: impl Fn(u32) -> bool) {
        self.entries.retain(|vmid, e| match e.finished_in {
            None => true,
            Some(done) if done >= epoch => true,
            Some(done) => !listed(*vmid) && epoch - done < SETTLE_MAX_OBSERVATIONS,
        });
    }

    /// The work the planner must know about: running work and settling provisions (as `Provision`).
    #[must_use]
    pub fn snapshot(&self) -> Vec<InFlight> {
        self.entries.values().map(|e| e.work.clone()).collect()
    }

    /// Running work only (no settling records): what a shutdown waits for.
    #[must_use]
    pub fn running(&self) -> usize {
        self.entries
            .values()
            .filter(|e| e.finished_in.is_none())
            .count()
    }

    /// Number of records (running and settling).
    #[must_use]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the ledger holds nothing.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(vmid: u32, op: Op) -> InFlight {
        InFlight {
            pool: "p".into(),
            vmid,
            node: "n".into(),
            runner_name: format!("r-{vmid}"),
            op,
            stopped: false,
        }
    }

    #[test]
    fn a_finished_provision_settles_only_in_a_later_observation_that_lists_it() {
        let mut l = Ledger::new();
        assert!(l.begin(work(200, Op::Provision)));
        assert!(!l.begin(work(200, Op::Delete)), "one record per VMID");
        let e1 = l.observation_started();
        l.finish(200, Outcome::Provisioned);
        // The observation that began before the finish settles nothing, even if it lists the VM.
        l.settle(e1, |_| true);
        assert!(l.contains(200));
        let e2 = l.observation_started();
        // A later observation that does not list it keeps the record.
        l.settle(e2, |_| false);
        assert!(l.contains(200));
        assert_eq!(l.snapshot()[0].op, Op::Provision);
        assert_eq!(l.running(), 0);
        let e3 = l.observation_started();
        l.settle(e3, |id| id == 200);
        assert!(l.is_empty());
    }

    #[test]
    fn failures_and_deletions_leave_at_once() {
        let mut l = Ledger::new();
        l.begin(work(1, Op::Provision));
        l.begin(work(2, Op::Delete));
        l.finish(1, Outcome::Gone);
        l.finish(2, Outcome::Provisioned);
        assert!(l.is_empty());
    }

    #[test]
    fn an_unlisted_settling_record_is_dropped_after_the_bound() {
        let mut l = Ledger::new();
        l.begin(work(7, Op::Provision));
        l.finish(7, Outcome::Provisioned);
        for _ in 0..SETTLE_MAX_OBSERVATIONS {
            let e = l.observation_started();
            l.settle(e, |_| false);
        }
        assert!(l.is_empty());
    }
}
