//! Fair sharing of one worker's webhook requests between organisations, then between each
//! organisation's endpoints, without churn.
//!
//! The worker claims many more jobs than it sends at once and holds them here, each for one
//! endpoint of one organisation. A held job waits for a slot. Slots are granted round-robin
//! between organisations with waiting jobs, inside an organisation round-robin between its
//! endpoints with waiting jobs, FIFO within an endpoint. With `n` organisations holding jobs
//! (waiting or in flight), and `m` endpoints of an organisation holding jobs, the limits are:
//! - the worker: `concurrency` requests in flight (`TRIGGERS_WORKER_CONCURRENCY`);
//! - an organisation: `org_limit = max(cap, concurrency / n)` (`cap`:
//!   `TRIGGERS_ORG_INFLIGHT_CAP`), so an organisation alone uses every slot (work-conserving)
//!   and each newcomer gets its share of the next free slots;
//! - an endpoint: `max(1, org_limit / m)`, its part of its organisation's share, so an endpoint
//!   alone in its organisation uses all of it and a newcomer gets its part of the next slots
//!   its organisation frees.
//!
//! Nothing in flight is taken back, so two allowances keep a newcomer from waiting for slow
//! requests to end; neither lets the worker have more than `concurrency + cap` in flight:
//! - an organisation below `cap` while other organisations hold slots may go over
//!   `concurrency`;
//! - an endpoint below `cap` and below its part, while its siblings hold more than their parts
//!   (slots they took while they were fewer), may go over its organisation's limit, up to
//!   `org_limit + cap` for the organisation, and over `concurrency`.
//!
//! What one endpoint may hold is bounded too: about what it can send in [`HOLD_HORIZON`] with
//! its part of the slots at the pace it answers (at least twice its part, at most the worker's
//! whole hold), so a fast endpoint may fill the worker while a slow one holds little and leaves
//! room to claim other jobs. Only beyond that is a job deferred: put back in the queue, due when
//! the endpoint's backlog ahead of it should have been sent. An endpoint's deferred jobs are
//! paced one after the other, so a slow endpoint's backlog comes back about once, not in a loop.
//! A request out with none back counts as taking as long as it has been out: as an endpoint
//! turns slow its bound shrinks, and [`Gate::shed`] (every [`SHED_INTERVAL`]) defers its newest
//! waiting jobs. Bounds and pacing are per endpoint: a slow endpoint's deferrals leave its
//! siblings' jobs alone. An organisation has no bound of its own (the worker's hold bounds all).
//!
//! The gate's state is bounded: it holds an organisation only while one of its endpoints holds
//! jobs. An endpoint that holds nothing keeps only its pacing (latency estimate and deferral
//! cursor), until [`FORGET_AFTER`] after it last held a job or after its last deferred job is
//! due, whichever is later; then it is forgotten. [`Gate::shed`] walks only endpoints with
//! waiting jobs.

use std::{
    cmp::Reverse,
    collections::{BinaryHeap, HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};
use uuid::Uuid;

/// How much work, in time, one endpoint may hold in the worker.
pub const HOLD_HORIZON: Duration = Duration::from_secs(2);

/// The shortest and longest deferral. apalis keeps `run_at` in whole seconds.
pub const MIN_DEFER: Duration = Duration::from_secs(1);
pub const MAX_DEFER: Duration = Duration::from_secs(60);

/// How often held jobs are checked against their endpoint's bound.
pub const SHED_INTERVAL: Duration = Duration::from_millis(250);

/// How long an endpoint holding nothing keeps its pacing, counted from when it last held a job
/// or from when its last deferred job is due, whichever is later: long enough for deferred jobs
/// to come back (apalis rounds `run_at` to seconds and polls) and meet their endpoint's latency,
/// short enough that the gate's memory follows the endpoints in use, not every one ever seen.
pub const FORGET_AFTER: Duration = Duration::from_secs(30);

/// What a request's latency is taken to be before one has been measured.
const FIRST_LATENCY: Duration = Duration::from_millis(50);

/// The slots of one worker. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    inner: Arc<Inner>,
}

struct Inner {
    concurrency: usize,
    cap: usize,
    /// How many jobs the worker holds at most (apalis' concurrency).
    hold: usize,
    state: Mutex<State>,
}

/// An endpoint of an organisation: `(organisation, endpoint)`.
type Key = (Uuid, Uuid);

#[derive(Default)]
struct State {
    closed: bool,
    inflight: Count,
    /// The organisations holding jobs, and only those.
    orgs: HashMap<Uuid, Org>,
    /// The organisations with waiting jobs, each once, in round-robin order.
    ring: VecDeque<Uuid>,
    /// Endpoints holding nothing, until they are forgotten.
    idle: HashMap<Key, Idle>,
    /// When to look at an idle endpoint again; at most one entry per endpoint (see `Pace`).
    forget: BinaryHeap<Reverse<(Instant, Key)>>,
}

#[derive(Default)]
struct Org {
    inflight: Count,
    /// Its endpoints holding jobs, and only those.
    endpoints: HashMap<Uuid, Endpoint>,
    /// Its endpoints with waiting jobs, each once, in round-robin order.
    ring: VecDeque<Uuid>,
}

#[derive(Default)]
struct Endpoint {
    inflight: Count,
    waiting: VecDeque<oneshot::Sender<Grant>>,
    /// Since when it has had a request in flight with none finishing.
    stalled_since: Option<Instant>,
    pace: Pace,
}

/// What an endpoint keeps while it holds nothing, until it is forgotten.
#[derive(Default)]
struct Pace {
    /// Smoothed request latency (seconds); `None` until one request ended.
    latency: Option<f64>,
    /// When its next deferred job is due.
    defer_cursor: Option<Instant>,
    /// Whether `State::forget` has an entry for it.
    scheduled: bool,
}

struct Idle {
    pace: Pace,
    forget_at: Instant,
}

/// A number of jobs or requests. Taking one from zero is a bookkeeping slip: it panics in debug
/// builds (every test) and is logged and ignored in release builds.
#[derive(Clone, Copy, Default)]
struct Count(usize);

impl Count {
    fn get(self) -> usize {
        self.0
    }

    fn up(&mut self) {
        self.0 = self.0.saturating_add(1);
    }

    fn down(&mut self) {
        match self.0.checked_sub(1) {
            Some(n) => self.0 = n,
            None => slip("a count went below zero"),
        }
    }
}

/// A bookkeeping slip: loud in debug builds, logged in release builds.
#[track_caller]
fn slip(what: &str) {
    if cfg!(debug_assertions) {
        panic!("fair: {what}");
    }
    tracing::error!(what, "fair-share bookkeeping slip");
}

impl Endpoint {
    fn held(&self) -> usize {
        self.inflight.get() + self.waiting.len()
    }

    /// The latency to plan with: the measured one, or longer while nothing has come back.
    fn latency(&self, now: Instant) -> f64 {
        let measured = self.pace.latency.unwrap_or(FIRST_LATENCY.as_secs_f64());
        let stalled = self
            .stalled_since
            .map_or(0.0, |s| now.duration_since(s).as_secs_f64());
        measured.max(stalled).max(1e-4)
    }

    /// How many jobs it may hold with `limit` slots: what it sends in [`HOLD_HORIZON`] at its
    /// pace, at least twice its slot limit, at most the worker's hold.
    fn bound(&self, limit: usize, hold: usize, now: Instant) -> usize {
        let rate = limit as f64 / self.latency(now);
        ((rate * HOLD_HORIZON.as_secs_f64()) as usize).clamp(limit.saturating_mul(2).min(hold), hold)
    }

    /// When a deferred job is due: once what it holds, and what it deferred before, should have
    /// been sent. Advances its pacing cursor.
    fn defer_delay(&mut self, limit: usize, now: Instant) -> Duration {
        let rate = limit as f64 / self.latency(now);
        let earliest = now + Duration::from_secs_f64(self.held() as f64 / rate);
        let due = self
            .pace
            .defer_cursor
            .map_or(earliest, |c| c.max(earliest))
            .min(now + MAX_DEFER);
        self.pace.defer_cursor = Some(due + Duration::from_secs_f64(1.0 / rate));
        due.duration_since(now).max(MIN_DEFER)
    }
}

/// What [`Gate::admit`] decided for one job.
pub enum Admission {
    /// Wait for a [`Grant`]; an error means the gate closed first (the worker is stopping):
    /// put the job back.
    Wait(oneshot::Receiver<Grant>),
    /// Its endpoint holds enough already: put the job back, due after this delay.
    Defer(Duration),
    /// The worker is stopping: put the job back at once.
    Closed,
}

/// The end of a wait.
pub enum Grant {
    Go(Permit),
    /// Shed: the endpoint holds more than it can send soon; put the job back, due after this
    /// delay.
    Defer(Duration),
}

/// One slot; dropping it frees the slot.
pub struct Permit {
    gate: Option<Gate>,
    key: Key,
    started: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.finish(self.key, self.started.elapsed());
        }
    }
}

/// The slots in flight a grant is weighed against.
struct Load {
    total: usize,
    org: usize,
    endpoint: usize,
}

/// The limits of the moment, for one organisation.
struct Limits {
    concurrency: usize,
    cap: usize,
    org: usize,
    /// An endpoint's part.
    endpoint: usize,
    /// The parts of an endpoint's siblings, together.
    siblings: usize,
}

impl Limits {
    /// Whether a job may have a slot now (the rules of the module header).
    fn allow(&self, load: &Load) -> bool {
        let over = |limit: usize| limit.saturating_add(self.cap);
        let org_starved = load.org < self.cap && load.total > load.org;
        let endpoint_starved =
            load.endpoint < self.cap && load.org.saturating_sub(load.endpoint) > self.siblings;
        load.endpoint < self.endpoint
            && (load.org < self.org || (endpoint_starved && load.org < over(self.org)))
            && (load.total < self.concurrency
                || ((org_starved || endpoint_starved) && load.total < over(self.concurrency)))
    }
}

impl Gate {
    pub fn new(concurrency: usize, cap: usize, hold: usize) -> Self {
        Self {
            inner: Arc::new(Inner {
                concurrency: concurrency.max(1),
                cap: cap.max(1),
                hold: hold.max(1),
                state: Mutex::new(State::default()),
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves counters that are still consistent enough.
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hold a job for `endpoint` of `org`: wait for a slot, or defer it.
    pub fn admit(&self, org: Uuid, endpoint: Uuid) -> Admission {
        let now = Instant::now();
        let mut state = self.lock();
        if state.closed {
            return Admission::Closed;
        }
        state.forget_idle(now);
        let orgs = state.orgs.len() + usize::from(!state.orgs.contains_key(&org));
        let org_limit = self.org_limit(orgs);
        // An endpoint holding nothing is always admitted: only one holding jobs is deferred.
        if let Some(entry) = state.orgs.get_mut(&org) {
            let limit = endpoint_limit(org_limit, entry.endpoints.len());
            if let Some(ep) = entry.endpoints.get_mut(&endpoint)
                && ep.held() >= ep.bound(limit, self.inner.hold, now)
            {
                return Admission::Defer(ep.defer_delay(limit, now));
            }
        }
        let (tx, rx) = oneshot::channel();
        state.enqueue((org, endpoint), tx);
        self.dispatch(&mut state, now);
        Admission::Wait(rx)
    }

    /// Defer the newest waiting jobs of every endpoint holding more than its bound now (it
    /// slowed down, or gained siblings, since they were admitted), and forget endpoints idle
    /// long enough. Returns how many jobs were deferred.
    pub fn shed(&self) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        state.forget_idle(now);
        let org_limit = self.org_limit(state.orgs.len());
        let hold = self.inner.hold;
        let mut shed = 0;
        let mut emptied = Vec::new();
        let State { orgs, ring, .. } = &mut *state;
        for org in ring.iter() {
            let Some(entry) = orgs.get_mut(org) else { continue };
            let limit = endpoint_limit(org_limit, entry.endpoints.len());
            for endpoint in &entry.ring {
                let Some(ep) = entry.endpoints.get_mut(endpoint) else {
                    continue;
                };
                let bound = ep.bound(limit, hold, now);
                while ep.held() > bound {
                    let Some(tx) = ep.waiting.pop_back() else { break };
                    let _ = tx.send(Grant::Defer(ep.defer_delay(limit, now)));
                    shed += 1;
                }
                if ep.waiting.is_empty() {
                    emptied.push((*org, *endpoint));
                }
            }
        }
        if !emptied.is_empty() {
            state.unring_emptied();
            for key in emptied {
                state.settle(key, now);
            }
            // Fewer endpoints or organisations hold jobs: the others' parts may have grown.
            self.dispatch(&mut state, now);
        }
        shed
    }

    /// Run [`Gate::shed`] every [`SHED_INTERVAL`] while the gate exists.
    pub fn spawn_shedder(&self) {
        let weak = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SHED_INTERVAL);
            loop {
                tick.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Gate { inner }.shed();
            }
        });
    }

    /// Stop granting: every waiting job is told to go back to the queue.
    pub fn close(&self) {
        let now = Instant::now();
        let mut state = self.lock();
        state.closed = true;
        let orgs: Vec<Uuid> = state.ring.drain(..).collect();
        for org in orgs {
            let Some(entry) = state.orgs.get_mut(&org) else {
                continue;
            };
            let endpoints: Vec<Uuid> = entry.ring.drain(..).collect();
            for endpoint in &endpoints {
                if let Some(ep) = entry.endpoints.get_mut(endpoint) {
                    ep.waiting.clear();
                }
            }
            for endpoint in endpoints {
                state.settle((org, endpoint), now);
            }
        }
    }

    /// Grant again (a new consumer started).
    pub fn open(&self) {
        self.lock().closed = false;
    }

    fn org_limit(&self, orgs: usize) -> usize {
        self.inner.cap.max(self.inner.concurrency / orgs.max(1))
    }

    fn finish(&self, key: Key, took: Duration) {
        let now = Instant::now();
        let mut state = self.lock();
        state.release(key, Some(took), now);
        self.dispatch(&mut state, now);
    }

    /// Grant free slots, round-robin between organisations with waiting jobs and inside each
    /// between its endpoints with waiting jobs.
    fn dispatch(&self, state: &mut State, now: Instant) {
        let (concurrency, cap) = (self.inner.concurrency, self.inner.cap);
        let mut passed = 0;
        while passed < state.ring.len() && state.inflight.get() < concurrency.saturating_add(cap) {
            let Some(org) = state.ring.pop_front() else { break };
            let org_limit = self.org_limit(state.orgs.len());
            let total = state.inflight.get();
            let Some(entry) = state.orgs.get_mut(&org) else {
                slip("an organisation in the ring holds nothing");
                continue;
            };
            let endpoints = entry.endpoints.len();
            let part = endpoint_limit(org_limit, endpoints);
            let limits = Limits {
                concurrency,
                cap,
                org: org_limit,
                endpoint: part,
                siblings: part.saturating_mul(endpoints.saturating_sub(1)),
            };
            let Some((endpoint, tx)) = entry.take_next(&limits, total, now) else {
                state.ring.push_back(org);
                passed += 1;
                continue;
            };
            if !entry.ring.is_empty() {
                state.ring.push_back(org);
            }
            state.inflight.up();
            let permit = Permit {
                gate: Some(self.clone()),
                key: (org, endpoint),
                started: now,
            };
            if let Err(Grant::Go(mut permit)) = tx.send(Grant::Go(permit)) {
                // The job's handler is gone (cancelled): give the slot back here, under the lock.
                permit.gate = None;
                state.release((org, endpoint), None, now);
            }
            passed = 0;
        }
    }
}

/// An endpoint's part of its organisation's slots, with `endpoints` of it holding jobs.
fn endpoint_limit(org_limit: usize, endpoints: usize) -> usize {
    (org_limit / endpoints.max(1)).max(1)
}

impl Org {
    /// Take the first waiting job, in round-robin order of its endpoints, that may have a slot
    /// now, and count that slot here and at its endpoint.
    fn take_next(
        &mut self,
        limits: &Limits,
        total: usize,
        now: Instant,
    ) -> Option<(Uuid, oneshot::Sender<Grant>)> {
        for _ in 0..self.ring.len() {
            let endpoint = self.ring.pop_front()?;
            let Some(ep) = self.endpoints.get_mut(&endpoint) else {
                slip("an endpoint in the ring holds nothing");
                continue;
            };
            let load = Load {
                total,
                org: self.inflight.get(),
                endpoint: ep.inflight.get(),
            };
            if !limits.allow(&load) {
                self.ring.push_back(endpoint);
                continue;
            }
            let Some(tx) = ep.waiting.pop_front() else {
                slip("an endpoint in the ring has no waiting job");
                continue;
            };
            if !ep.waiting.is_empty() {
                self.ring.push_back(endpoint);
            }
            ep.inflight.up();
            if ep.inflight.get() == 1 {
                ep.stalled_since = Some(now);
            }
            self.inflight.up();
            return Some((endpoint, tx));
        }
        None
    }
}

impl State {
    /// Add a waiting job for `key`, taking the endpoint's pacing back if it was idle.
    fn enqueue(&mut self, (org, endpoint): Key, tx: oneshot::Sender<Grant>) {
        let idle = self.idle.remove(&(org, endpoint));
        let entry = self.orgs.entry(org).or_default();
        let ep = entry.endpoints.entry(endpoint).or_insert_with(|| Endpoint {
            pace: idle.map(|i| i.pace).unwrap_or_default(),
            ..Endpoint::default()
        });
        ep.waiting.push_back(tx);
        if ep.waiting.len() == 1 {
            entry.ring.push_back(endpoint);
            if entry.ring.len() == 1 {
                self.ring.push_back(org);
            }
        }
    }

    /// A slot of `key` is free again: its request ended after `took`, or (`None`) it was never
    /// used.
    fn release(&mut self, (org, endpoint): Key, took: Option<Duration>, now: Instant) {
        self.inflight.down();
        let Some(entry) = self.orgs.get_mut(&org) else {
            return slip("a slot of an organisation that holds nothing");
        };
        entry.inflight.down();
        let Some(ep) = entry.endpoints.get_mut(&endpoint) else {
            return slip("a slot of an endpoint that holds nothing");
        };
        ep.inflight.down();
        if let Some(took) = took {
            let took = took.as_secs_f64();
            ep.pace.latency = Some(ep.pace.latency.map_or(took, |l| 0.8 * l + 0.2 * took));
        }
        if ep.inflight.get() == 0 {
            ep.stalled_since = None;
        } else if took.is_some() {
            ep.stalled_since = Some(now);
        }
        self.settle((org, endpoint), now);
    }

    /// Take endpoints whose waiting jobs were all deferred out of their organisation's ring, and
    /// organisations left with none out of the gate's.
    fn unring_emptied(&mut self) {
        let orgs = &mut self.orgs;
        self.ring.retain(|org| {
            let Some(entry) = orgs.get_mut(org) else {
                return false;
            };
            let endpoints = &entry.endpoints;
            entry
                .ring
                .retain(|e| endpoints.get(e).is_some_and(|ep| !ep.waiting.is_empty()));
            !entry.ring.is_empty()
        });
    }

    /// If `key` holds nothing (it has no waiting job, so it is in no ring), set it idle, and
    /// drop its organisation if that holds nothing either.
    fn settle(&mut self, (org, endpoint): Key, now: Instant) {
        let Some(entry) = self.orgs.get_mut(&org) else {
            return;
        };
        if entry.endpoints.get(&endpoint).is_none_or(|ep| ep.held() > 0) {
            return;
        }
        let Some(ep) = entry.endpoints.remove(&endpoint) else {
            return;
        };
        if entry.endpoints.is_empty() {
            self.orgs.remove(&org);
        }
        let mut pace = ep.pace;
        let forget_at = pace.defer_cursor.map_or(now, |c| c.max(now)) + FORGET_AFTER;
        if !pace.scheduled {
            self.forget.push(Reverse((forget_at, (org, endpoint))));
            pace.scheduled = true;
        }
        self.idle.insert((org, endpoint), Idle { pace, forget_at });
    }

    /// Forget the endpoints idle since long enough. An entry of `forget` whose endpoint went busy
    /// and idle again since is put back at the endpoint's new time.
    fn forget_idle(&mut self, now: Instant) {
        while let Some(&Reverse((at, key))) = self.forget.peek() {
            if at > now {
                break;
            }
            self.forget.pop();
            if let Some(idle) = self.idle.get(&key) {
                if idle.forget_at <= now {
                    self.idle.remove(&key);
                } else {
                    self.forget.push(Reverse((idle.forget_at, key)));
                }
            } else if let Some(ep) = self
                .orgs
                .get_mut(&key.0)
                .and_then(|o| o.endpoints.get_mut(&key.1))
            {
                // Busy: it schedules itself again when it next holds nothing.
                ep.pace.scheduled = false;
            }
        }
    }
}

#[cfg(test)]
mod tests;
