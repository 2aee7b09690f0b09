//! Shared task watching: one task-list poll per node for every task being waited for.
//!
//! [`ProxmoxApi::wait_task`] polls `GET /nodes/{node}/tasks/{upid}/status` for each task on its
//! own; thirty jobs starting at once make thirty pollers against pveproxy's three worker
//! processes (shared with every admin's web UI). A [`TaskWatcher`] instead asks each node that
//! has waiters for its task list once per interval (`GET /nodes/{node}/tasks?source=all&since=…`)
//! and wakes every waiter whose task shows up finished; a finished entry carries the exit status,
//! so no per-task status call is needed.
//!
//! Per node, a driver task is spawned when the first waiter registers and ends when none is left
//! (no polls while idle). Its first poll comes [`TaskWatcherOptions::first_poll`] after that first
//! waiter — registrations arriving together share it — then one every
//! [`TaskWatcherOptions::interval`]. Fallbacks:
//! - the list request fails with a non-retryable error (501 on an old or odd server, 403, 400, an
//!   undecodable answer): that node's waiters, and new ones for
//!   [`TaskWatcherOptions::fallback_for`], poll their task's status on their own, as
//!   [`ProxmoxApi::wait_task`] does;
//! - a waited task is missing from the list for [`TaskWatcherOptions::not_listed_grace`] (another
//!   user's task without `Sys.Audit`, more tasks than the limit): its status is read directly,
//!   once per grace period, while the list keeps being watched.
//!
//! A waiter's future may be dropped at any time (cancellation): it deregisters, and a node left
//! without waiters is not polled again.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::api::{ProxmoxApi, finished, poll_task_status};
use crate::error::Error;
use crate::types::{NodeName, TaskListEntry, TaskListQuery, TaskSource, TaskStatus, Upid};

/// Default [`TaskWatcherOptions::interval`].
pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(500);
/// Default [`TaskWatcherOptions::first_poll`].
pub const DEFAULT_FIRST_POLL: Duration = Duration::from_millis(150);
/// Default [`TaskWatcherOptions::not_listed_grace`].
pub const DEFAULT_NOT_LISTED_GRACE: Duration = Duration::from_secs(3);

/// Tuning of a [`TaskWatcher`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskWatcherOptions {
    /// Time between two task-list polls of a node that has waiters (default 500 ms).
    pub interval: Duration,
    /// Delay of a node's first poll after its first waiter registered; waiters registering
    /// meanwhile share that poll (default 150 ms).
    pub first_poll: Duration,
    /// How long a waited task may be missing from its node's list before its status is read
    /// directly; repeated once per grace period while it stays missing (default 3 s).
    pub not_listed_grace: Duration,
    /// The list asks for tasks started since the oldest waited task's start time (from its
    /// UPID) minus this margin (default 10 s).
    pub since_margin: Duration,
    /// `limit` of each list request (default 1000).
    pub limit: u32,
    /// After a non-retryable list error, how long the node's waiters poll per task before the
    /// list is tried again (default 5 min).
    pub fallback_for: Duration,
}

impl Default for TaskWatcherOptions {
    fn default() -> Self {
        TaskWatcherOptions {
            interval: DEFAULT_INTERVAL,
            first_poll: DEFAULT_FIRST_POLL,
            not_listed_grace: DEFAULT_NOT_LISTED_GRACE,
            since_margin: Duration::from_secs(10),
            limit: 1000,
            fallback_for: Duration::from_secs(300),
        }
    }
}

/// Waits for Proxmox VE tasks with one shared task-list poll per node (see the module docs).
///
/// Cheap to clone (clones share the waiters and the drivers). Needs a Tokio runtime: the
/// per-node drivers are spawned with [`tokio::spawn`].
///
/// ```no_run
/// # use std::{sync::Arc, time::Duration};
/// # use proxmox_api::{ProxmoxApi, ProxmoxClient, Upid};
/// # use proxmox_api::watch::{TaskWatcher, TaskWatcherOptions};
/// # async fn run(client: ProxmoxClient, upid: Upid) -> Result<(), proxmox_api::Error> {
/// let api: Arc<dyn ProxmoxApi> = Arc::new(client);
/// let watcher = TaskWatcher::new(api, TaskWatcherOptions::default());
/// let status = watcher.wait(&upid, Duration::from_secs(300)).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct TaskWatcher {
    shared: Arc<Shared>,
}

struct Shared {
    api: Arc<dyn ProxmoxApi>,
    options: TaskWatcherOptions,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Source of waiter and driver ids.
    next_id: u64,
    nodes: HashMap<NodeName, NodeState>,
}

impl State {
    fn next_id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    /// Ends `driver`'s reign over `node` (if it still is the node's driver), sending any
    /// waiters left to per-task polling; forgets the node unless it is in fallback.
    fn end_driver(&mut self, node: &NodeName, driver: u64) {
        let Some(ns) = self.nodes.get_mut(node) else {
            return;
        };
        if ns.driver != Some(driver) {
            return;
        }
        ns.driver = None;
        for (_, w) in ns.waiters.drain() {
            let _ = w.tx.send(Message::PerTask);
        }
        if ns
            .fallback_until
            .is_none_or(|until| until <= Instant::now())
        {
            self.nodes.remove(node);
        }
    }
}

#[derive(Default)]
struct NodeState {
    waiters: HashMap<u64, Waiter>,
    /// The id of the driver task polling this node, if one runs.
    driver: Option<u64>,
    /// The list failed non-retryably: waiters poll per task until then.
    fallback_until: Option<Instant>,
}

struct Waiter {
    upid: Upid,
    registered: Instant,
    /// Since when the task has been missing from the list (starts at registration).
    unlisted_since: Option<Instant>,
    /// A poll that began after registration answered for this task (finished or not).
    checked: bool,
    tx: oneshot::Sender<Message>,
}

enum Message {
    /// The task stopped (status `stopped`), or reading its status failed for good.
    Done(Result<TaskStatus, Error>),
    /// The node's list cannot be used: poll this task's status directly.
    PerTask,
}

impl fmt::Debug for TaskWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.lock();
        let waiters: usize = state.nodes.values().map(|n| n.waiters.len()).sum();
        f.debug_struct("TaskWatcher")
            .field("options", &self.shared.options)
            .field("nodes", &state.nodes.len())
            .field("waiters", &waiters)
            .finish()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl TaskWatcher {
    /// A watcher using `api` for the list and status requests.
    pub fn new(api: Arc<dyn ProxmoxApi>, options: TaskWatcherOptions) -> Self {
        TaskWatcher {
            shared: Arc::new(Shared {
                api,
                options,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// The options it was built with.
    pub fn options(&self) -> &TaskWatcherOptions {
        &self.shared.options
    }

    /// How many waiters are registered with a node's shared poll right now (waiters polling
    /// per task after a fallback are not counted).
    pub fn waiters(&self) -> usize {
        self.shared
            .lock()
            .nodes
            .values()
            .map(|n| n.waiters.len())
            .sum()
    }

    /// Waits until the task stops or `deadline` passes — the semantics of
    /// [`ProxmoxApi::wait_task`]: `Ok` only when it stopped with `OK` or `WARNINGS: n`;
    /// [`Error::TaskFailed`] with the exit status otherwise; [`Error::DeadlineExceeded`] if still
    /// running at the deadline. Retryable errors are tolerated until the deadline; a
    /// non-retryable error reading this task's status is returned.
    ///
    /// Dropping the future deregisters the waiter.
    pub async fn wait(&self, upid: &Upid, deadline: Duration) -> Result<TaskStatus, Error> {
        let started = Instant::now();
        let (tx, rx) = oneshot::channel();
        let Some(guard) = self.register(upid, started, tx) else {
            return poll_task_status(&*self.shared.api, upid, started, deadline).await;
        };
        let outcome = match started.checked_add(deadline) {
            Some(end) => tokio::time::timeout_at(end.into(), rx).await,
            None => Ok(rx.await),
        };
        match outcome {
            Ok(Ok(Message::Done(result))) => result.and_then(|status| finished(upid, status)),
            // The node's list is unusable (or its driver is gone): poll as wait_task does.
            Ok(Ok(Message::PerTask) | Err(_)) => {
                drop(guard);
                poll_task_status(&*self.shared.api, upid, started, deadline).await
            }
            Err(_elapsed) => {
                let checked = guard.checked();
                drop(guard);
                if !checked {
                    // Nothing answered for this task yet (deadline shorter than the first
                    // poll): read it once, as wait_task polls at least once.
                    match self.shared.api.task_status(upid).await {
                        Ok(status) if status.is_stopped() => return finished(upid, status),
                        Ok(_) => {}
                        Err(e) if e.is_retryable() => {
                            tracing::warn!(upid = %upid, error = %e, "task status read failed");
                        }
                        Err(e) => return Err(e),
                    }
                }
                Err(Error::DeadlineExceeded {
                    upid: upid.clone(),
                    waited: started.elapsed(),
                })
            }
        }
    }

    /// Registers a waiter with its node's shared poll (spawning the node's driver if none runs);
    /// `None` while the node is in per-task fallback.
    fn register(
        &self,
        upid: &Upid,
        now: Instant,
        tx: oneshot::Sender<Message>,
    ) -> Option<WaiterGuard> {
        let mut state = self.shared.lock();
        let id = state.next_id();
        let driver = state.next_id();
        let node = upid.node().clone();
        let ns = state.nodes.entry(node.clone()).or_default();
        if let Some(until) = ns.fallback_until {
            if now < until {
                return None;
            }
            ns.fallback_until = None;
        }
        ns.waiters.insert(
            id,
            Waiter {
                upid: upid.clone(),
                registered: now,
                unlisted_since: Some(now),
                checked: false,
                tx,
            },
        );
        if ns.driver.is_none() {
            ns.driver = Some(driver);
            tokio::spawn(drive(self.shared.clone(), node.clone(), driver));
        }
        Some(WaiterGuard {
            shared: self.shared.clone(),
            node,
            id,
        })
    }
}

/// Deregisters a waiter when dropped (answered, timed out or cancelled).
struct WaiterGuard {
    shared: Arc<Shared>,
    node: NodeName,
    id: u64,
}

impl WaiterGuard {
    fn checked(&self) -> bool {
        self.shared
            .lock()
            .nodes
            .get(&self.node)
            .and_then(|n| n.waiters.get(&self.id))
            .is_some_and(|w| w.checked)
    }
}

impl Drop for WaiterGuard {
    fn drop(&mut self) {
        if let Some(ns) = self.shared.lock().nodes.get_mut(&self.node) {
            ns.waiters.remove(&self.id);
        }
    }
}

/// Ends the driver's reign when its task ends however it ends (normally it already has: a
/// panic, or the runtime shutting down): waiters left poll per task, none hangs.
struct DriverGuard {
    shared: Arc<Shared>,
    node: NodeName,
    id: u64,
}

impl Drop for DriverGuard {
    fn drop(&mut self) {
        self.shared.lock().end_driver(&self.node, self.id);
    }
}

/// What one list poll asks the driver to do next.
enum Next {
    /// Read these tasks' status directly (waiter id, UPID).
    Continue(Vec<(u64, Upid)>),
    /// Stop: no waiters left, or the node fell back to per-task polling.
    Stop,
}

/// The per-node driver: polls the node's task list while it has waiters.
async fn drive(shared: Arc<Shared>, node: NodeName, id: u64) {
    let _guard = DriverGuard {
        shared: shared.clone(),
        node: node.clone(),
        id,
    };
    let opts = shared.options.clone();
    tokio::time::sleep(opts.first_poll).await;
    loop {
        let tick = Instant::now();
        let Some(since) = oldest_start(&shared, &node, id) else {
            return;
        };
        let query = TaskListQuery {
            source: Some(TaskSource::All),
            since: Some(since.saturating_sub(opts.since_margin.as_secs())),
            limit: Some(opts.limit),
            ..TaskListQuery::default()
        };
        let result = shared.api.node_tasks(&node, &query).await;
        let direct = match apply_list(&shared, &node, id, tick, result) {
            Next::Continue(direct) => direct,
            Next::Stop => return,
        };
        for (id, upid) in direct {
            if !has_waiter(&shared, &node, id) {
                continue;
            }
            let read_at = Instant::now();
            let result = shared.api.task_status(&upid).await;
            apply_direct(&shared, &node, id, read_at, result);
        }
        tokio::time::sleep_until((tick + opts.interval).into()).await;
    }
}

/// The earliest start time (from the UPIDs) of the node's waited tasks. Without waiters, ends
/// the driver (in the same critical section, so a waiter registering next spawns a new one) and
/// returns `None`.
fn oldest_start(shared: &Shared, node: &NodeName, driver: u64) -> Option<u64> {
    let mut state = shared.lock();
    let oldest = state
        .nodes
        .get(node)
        .and_then(|ns| ns.waiters.values().map(|w| w.upid.starttime()).min());
    if oldest.is_none() {
        state.end_driver(node, driver);
    }
    oldest
}

fn has_waiter(shared: &Shared, node: &NodeName, id: u64) -> bool {
    shared
        .lock()
        .nodes
        .get(node)
        .is_some_and(|n| n.waiters.contains_key(&id))
}

/// Wakes the waiters whose task the list shows finished; returns the tasks to read directly.
fn apply_list(
    shared: &Shared,
    node: &NodeName,
    driver: u64,
    tick: Instant,
    result: Result<Vec<TaskListEntry>, Error>,
) -> Next {
    let opts = &shared.options;
    let mut state = shared.lock();
    let Some(ns) = state.nodes.get_mut(node) else {
        return Next::Stop;
    };
    let list = match result {
        Ok(list) => list,
        Err(e) if e.is_retryable() => {
            tracing::warn!(%node, error = %e, "task list poll failed; retrying");
            return Next::Continue(Vec::new());
        }
        Err(e) => {
            tracing::warn!(
                %node, error = %e,
                "task list unusable; polling each task's status instead for {:?}",
                opts.fallback_for
            );
            ns.fallback_until = Some(Instant::now() + opts.fallback_for);
            state.end_driver(node, driver);
            return Next::Stop;
        }
    };
    let by_upid: HashMap<&str, &TaskListEntry> =
        list.iter().map(|e| (e.upid.as_str(), e)).collect();
    let now = Instant::now();
    let mut done = Vec::new();
    let mut direct = Vec::new();
    for (id, w) in ns.waiters.iter_mut() {
        let polled_after_registration = w.registered <= tick;
        match by_upid.get(w.upid.as_str()) {
            Some(entry) if entry.is_finished() => {
                if entry.exitstatus().is_some() {
                    done.push((*id, entry.task_status()));
                } else {
                    // Finished without an exit status: ask the task itself.
                    direct.push((*id, w.upid.clone()));
                }
            }
            Some(_) => {
                w.unlisted_since = None;
                w.checked |= polled_after_registration;
            }
            None => {
                let since = *w.unlisted_since.get_or_insert(now);
                if now.duration_since(since) >= opts.not_listed_grace {
                    w.unlisted_since = Some(now);
                    direct.push((*id, w.upid.clone()));
                }
            }
        }
    }
    for (id, status) in done {
        if let Some(w) = ns.waiters.remove(&id) {
            let _ = w.tx.send(Message::Done(Ok(status)));
        }
    }
    Next::Continue(direct)
}

/// Applies one direct status read to its waiter.
fn apply_direct(
    shared: &Shared,
    node: &NodeName,
    id: u64,
    read_at: Instant,
    result: Result<TaskStatus, Error>,
) {
    let mut state = shared.lock();
    let Some(ns) = state.nodes.get_mut(node) else {
        return;
    };
    let Some(w) = ns.waiters.get_mut(&id) else {
        return;
    };
    let message = match result {
        Ok(status) if status.is_stopped() => Message::Done(Ok(status)),
        Ok(_) => {
            w.checked |= w.registered <= read_at;
            return;
        }
        Err(e) if e.is_retryable() => {
            tracing::warn!(upid = %w.upid, error = %e, "task status read failed; retrying");
            return;
        }
        Err(e) => Message::Done(Err(e)),
    };
    if let Some(w) = ns.waiters.remove(&id) {
        let _ = w.tx.send(message);
    }
}
