//! Fair sharing of one worker's webhook requests between organisations, without churn.
//!
//! The worker claims many more jobs than it sends at once and holds them here. A held job waits
//! for a slot; slots are granted round-robin between organisations with waiting jobs, FIFO
//! within one, under these limits:
//! - at most `concurrency` requests in flight in all (`TRIGGERS_WORKER_CONCURRENCY`);
//! - per organisation at most `max(cap, concurrency / organisations with work)`, so an
//!   organisation alone uses every slot (work-conserving) and each newcomer gets its share of
//!   the next free slots;
//! - an organisation below `cap` (`TRIGGERS_ORG_INFLIGHT_CAP`) may go over `concurrency` by up
//!   to `cap` in all: a newcomer never waits for a slow endpoint's requests to end.
//!
//! What one organisation may hold is bounded too: about what it can send in [`HOLD_HORIZON`]
//! at the pace its endpoint answers (at least twice its slot limit, at most the worker's whole
//! hold), so a fast organisation may fill the worker while a slow one holds little and leaves
//! room to claim other organisations' jobs. Only beyond that is a job deferred: put back in the
//! queue, due when the organisation's backlog ahead of it should have been sent. Deferred jobs
//! are paced one after the other, so a slow organisation's backlog comes back about once, not
//! in a loop. As an endpoint turns slow, its organisation's bound shrinks; [`Gate::shed`]
//! (every [`SHED_INTERVAL`]) then defers its newest waiting jobs.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant},
};

use tokio::sync::oneshot;
use uuid::Uuid;

/// How much work, in time, one organisation may hold in the worker.
pub const HOLD_HORIZON: Duration = Duration::from_secs(2);

/// The shortest and longest deferral. apalis keeps `run_at` in whole seconds.
pub const MIN_DEFER: Duration = Duration::from_secs(1);
pub const MAX_DEFER: Duration = Duration::from_secs(60);

/// How often held jobs are checked against their organisation's bound.
pub const SHED_INTERVAL: Duration = Duration::from_millis(250);

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

#[derive(Default)]
struct State {
    closed: bool,
    inflight: usize,
    /// Organisations holding jobs now.
    active: usize,
    orgs: HashMap<Uuid, Org>,
    /// Organisations with waiting jobs, in round-robin order.
    ring: VecDeque<Uuid>,
}

#[derive(Default)]
struct Org {
    inflight: usize,
    waiting: VecDeque<oneshot::Sender<Grant>>,
    /// Smoothed request latency (seconds); `None` until one request ended.
    latency: Option<f64>,
    /// Since when the organisation has had a request in flight with none finishing.
    stalled_since: Option<Instant>,
    /// When the next deferred job of this organisation is due.
    defer_cursor: Option<Instant>,
}

impl Org {
    fn held(&self) -> usize {
        self.inflight + self.waiting.len()
    }

    /// The latency to plan with: the measured one, or longer while nothing has come back.
    fn latency(&self, now: Instant) -> f64 {
        let measured = self.latency.unwrap_or(FIRST_LATENCY.as_secs_f64());
        let stalled = self
            .stalled_since
            .map_or(0.0, |s| now.duration_since(s).as_secs_f64());
        measured.max(stalled).max(1e-4)
    }
}

/// What [`Gate::admit`] decided for one job.
pub enum Admission {
    /// Wait for a [`Grant`]; an error means the gate closed first (the worker is stopping):
    /// put the job back.
    Wait(oneshot::Receiver<Grant>),
    /// Its organisation holds enough already: put the job back, due after this delay.
    Defer(Duration),
    /// The worker is stopping: put the job back at once.
    Closed,
}

/// The end of a wait.
pub enum Grant {
    Go(Permit),
    /// Shed: the organisation holds more than it can send soon; put the job back, due after
    /// this delay.
    Defer(Duration),
}

/// One slot; dropping it frees the slot.
pub struct Permit {
    gate: Option<Gate>,
    org: Uuid,
    started: Instant,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(gate) = self.gate.take() {
            gate.finish(self.org, self.started.elapsed());
        }
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

    /// Hold a job of `org`: wait for a slot, or defer it.
    pub fn admit(&self, org: Uuid) -> Admission {
        let now = Instant::now();
        let mut state = self.lock();
        if state.closed {
            return Admission::Closed;
        }
        let newcomer = state.orgs.get(&org).is_none_or(|o| o.held() == 0);
        let limit = self.limit(state.active + usize::from(newcomer));
        let hold = self.inner.hold;
        let entry = state.orgs.entry(org).or_default();
        if entry.held() >= bound(entry, limit, hold, now) {
            return Admission::Defer(defer_delay(entry, limit, now));
        }
        let (tx, rx) = oneshot::channel();
        entry.waiting.push_back(tx);
        if newcomer {
            state.active += 1;
        }
        if entry_waiting_len(&state, org) == 1 {
            state.ring.push_back(org);
        }
        self.dispatch(&mut state);
        Admission::Wait(rx)
    }

    /// Defer the newest waiting jobs of every organisation holding more than its bound now
    /// (its endpoint slowed down since they were admitted). Returns how many were deferred.
    pub fn shed(&self) -> usize {
        let now = Instant::now();
        let mut state = self.lock();
        let limit = self.limit(state.active);
        let hold = self.inner.hold;
        let mut shed = 0;
        let mut emptied = 0;
        for entry in state.orgs.values_mut() {
            if entry.waiting.is_empty() {
                continue;
            }
            let bound = bound(entry, limit, hold, now);
            while entry.held() > bound {
                let Some(tx) = entry.waiting.pop_back() else { break };
                let _ = tx.send(Grant::Defer(defer_delay(entry, limit, now)));
                shed += 1;
            }
            if entry.held() == 0 {
                emptied += 1;
            }
        }
        state.active -= emptied;
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
        let mut state = self.lock();
        state.closed = true;
        let ring: Vec<Uuid> = state.ring.drain(..).collect();
        for org in ring {
            if let Some(entry) = state.orgs.get_mut(&org) {
                let dropped = entry.waiting.len();
                entry.waiting.clear();
                if dropped > 0 && entry.held() == 0 {
                    state.active -= 1;
                }
            }
        }
    }

    /// Grant again (a new consumer started).
    pub fn open(&self) {
        self.lock().closed = false;
    }

    fn limit(&self, active: usize) -> usize {
        self.inner.cap.max(self.inner.concurrency / active.max(1))
    }

    fn finish(&self, org: Uuid, took: Duration) {
        let mut state = self.lock();
        state.inflight -= 1;
        if let Some(entry) = state.orgs.get_mut(&org) {
            entry.inflight -= 1;
            let took = took.as_secs_f64();
            entry.latency = Some(entry.latency.map_or(took, |l| 0.8 * l + 0.2 * took));
            entry.stalled_since = (entry.inflight > 0).then(Instant::now);
            if entry.held() == 0 {
                state.active -= 1;
            }
        }
        self.dispatch(&mut state);
    }

    /// Grant free slots, round-robin between organisations with waiting jobs.
    fn dispatch(&self, state: &mut State) {
        let (concurrency, cap) = (self.inner.concurrency, self.inner.cap);
        let mut passed = 0;
        while passed < state.ring.len() {
            let Some(org) = state.ring.pop_front() else { break };
            let limit = self.limit(state.active);
            let total = state.inflight;
            let Some(entry) = state.orgs.get_mut(&org) else {
                continue;
            };
            // Over `concurrency` only for an organisation below `cap` whose slots others hold.
            let others = total - entry.inflight;
            let may = entry.inflight < limit
                && (total < concurrency || (others > 0 && entry.inflight < cap && total < concurrency + cap));
            if !may {
                state.ring.push_back(org);
                passed += 1;
                continue;
            }
            let Some(tx) = entry.waiting.pop_front() else {
                continue;
            };
            entry.inflight += 1;
            if entry.inflight == 1 {
                entry.stalled_since = Some(Instant::now());
            }
            state.inflight += 1;
            let permit = Permit {
                gate: Some(self.clone()),
                org,
                started: Instant::now(),
            };
            if let Err(unwanted) = tx.send(Grant::Go(permit)) {
                // The job's handler is gone (cancelled): undo the grant here, under the lock.
                if let Grant::Go(mut permit) = unwanted {
                    permit.gate = None;
                }
                entry.inflight -= 1;
                state.inflight -= 1;
                if entry.held() == 0 {
                    state.active -= 1;
                }
            }
            let entry_waiting = state.orgs.get(&org).map_or(0, |e| e.waiting.len());
            if entry_waiting > 0 {
                state.ring.push_back(org);
            }
            passed = 0;
        }
    }
}

/// How many jobs `entry` may hold: what it sends in [`HOLD_HORIZON`] at its pace, at least
/// twice its slot limit, at most the worker's hold.
fn bound(entry: &Org, limit: usize, hold: usize, now: Instant) -> usize {
    let rate = limit as f64 / entry.latency(now);
    ((rate * HOLD_HORIZON.as_secs_f64()) as usize).clamp((2 * limit).min(hold), hold)
}

/// When a deferred job of `entry` is due: once what it holds, and what it deferred before,
/// should have been sent. Advances the organisation's pacing cursor.
fn defer_delay(entry: &mut Org, limit: usize, now: Instant) -> Duration {
    let rate = limit as f64 / entry.latency(now);
    let earliest = now + Duration::from_secs_f64(entry.held() as f64 / rate);
    let due = entry
        .defer_cursor
        .map_or(earliest, |c| c.max(earliest))
        .min(now + MAX_DEFER);
    entry.defer_cursor = Some(due + Duration::from_secs_f64(1.0 / rate));
    due.duration_since(now).max(MIN_DEFER)
}

fn entry_waiting_len(state: &State, org: Uuid) -> usize {
    state.orgs.get(&org).map_or(0, |e| e.waiting.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn granted(admission: Admission) -> Permit {
        match admission {
            Admission::Wait(mut rx) => match rx.try_recv().expect("granted at once") {
                Grant::Go(permit) => permit,
                Grant::Defer(_) => panic!("deferred"),
            },
            _ => panic!("expected a wait"),
        }
    }

    fn go(rx: &mut oneshot::Receiver<Grant>) -> bool {
        matches!(rx.try_recv(), Ok(Grant::Go(_)))
    }

    fn waiting(admission: Admission) -> oneshot::Receiver<Grant> {
        match admission {
            Admission::Wait(mut rx) => {
                assert!(rx.try_recv().is_err(), "expected to wait");
                rx
            }
            _ => panic!("expected a wait"),
        }
    }

    #[test]
    fn an_organisation_alone_gets_every_slot_and_a_newcomer_gets_the_next() {
        let gate = Gate::new(4, 1, 100);
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let mut held: Vec<Permit> = (0..4).map(|_| granted(gate.admit(a))).collect();
        let mut a_next = waiting(gate.admit(a));
        // b is below the cap: it may go over the concurrency by one.
        let b_first = granted(gate.admit(b));
        let mut b_next = waiting(gate.admit(b));
        // a is over its share (max(1, 4 / 2) = 2): once a slot is really free, it goes to b.
        held.pop();
        assert!(b_next.try_recv().is_err(), "4 in flight: none free yet");
        held.pop();
        assert!(go(&mut b_next), "the newcomer takes the freed slot");
        assert!(a_next.try_recv().is_err(), "a holds its share of 2");
        drop(b_first);
        held.pop();
        assert!(go(&mut a_next), "back within its share");
    }

    #[test]
    fn a_slow_organisation_is_deferred_beyond_what_it_can_send_soon() {
        let gate = Gate::new(2, 1, 1000);
        let a = Uuid::now_v7();
        let mut admitted = 0;
        let mut deferred = Vec::new();
        let mut keep = Vec::new();
        for _ in 0..200 {
            match gate.admit(a) {
                Admission::Wait(rx) => {
                    admitted += 1;
                    keep.push(rx);
                }
                Admission::Defer(d) => deferred.push(d),
                Admission::Closed => panic!("open"),
            }
        }
        // Unknown latency (50 ms), 2 slots: 40 a second, 80 in the horizon.
        assert_eq!(admitted, 80);
        assert_eq!(deferred.len(), 120);
        assert!(
            deferred.windows(2).all(|w| w[0] <= w[1]),
            "paced one after the other"
        );
        assert!(deferred[0] >= MIN_DEFER && *deferred.last().expect("some") <= MAX_DEFER);
        gate.close();
        assert!(matches!(gate.admit(a), Admission::Closed));
    }

    #[test]
    fn a_stalled_organisation_sheds_its_newest_waiting_jobs() {
        let gate = Gate::new(2, 1, 1000);
        let a = Uuid::now_v7();
        let mut rxs: Vec<_> = (0..80)
            .map(|_| match gate.admit(a) {
                Admission::Wait(rx) => rx,
                _ => panic!("expected a wait"),
            })
            .collect();
        // Two requests in flight, none back for 0.6 s: it sends at most ~3 a second now.
        std::thread::sleep(Duration::from_millis(600));
        let shed = gate.shed();
        assert!((74..=76).contains(&shed), "{shed} shed");
        let first: Vec<Grant> = rxs[..2].iter_mut().filter_map(|rx| rx.try_recv().ok()).collect();
        assert!(
            first.iter().all(|g| matches!(g, Grant::Go(_))) && first.len() == 2,
            "the oldest were granted"
        );
        assert!(matches!(rxs[79].try_recv(), Ok(Grant::Defer(d)) if d >= MIN_DEFER));
        assert!(
            rxs[2].try_recv().is_err(),
            "the oldest waiting job keeps its place"
        );
    }
}
