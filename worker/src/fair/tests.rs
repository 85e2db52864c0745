use std::collections::HashSet;

use tokio::{sync::oneshot::error::TryRecvError, time::advance};

use super::*;

/// What the gate holds, after checking every invariant of its state.
#[derive(Debug, PartialEq, Eq)]
struct Census {
    orgs: usize,
    endpoints: usize,
    idle: usize,
    scheduled: usize,
    inflight: usize,
}

impl Census {
    /// Nothing held; `idle` endpoints remembered.
    fn resting(idle: usize) -> Self {
        Self {
            orgs: 0,
            endpoints: 0,
            idle,
            scheduled: idle,
            inflight: 0,
        }
    }
}

impl Gate {
    fn census(&self) -> Census {
        let state = self.lock();
        let mut total = 0;
        let mut endpoints = 0;
        let mut scheduled = state.idle.len();
        for (org, entry) in &state.orgs {
            assert!(
                !entry.endpoints.is_empty(),
                "an organisation holding nothing is kept"
            );
            let mut inflight = 0;
            for (endpoint, ep) in &entry.endpoints {
                assert!(ep.held() > 0, "an endpoint holding nothing is kept busy");
                assert!(
                    !state.idle.contains_key(&(*org, *endpoint)),
                    "busy and idle at once"
                );
                assert_eq!(
                    entry.ring.iter().filter(|e| *e == endpoint).count(),
                    usize::from(!ep.waiting.is_empty()),
                    "an endpoint is in its organisation's ring once exactly when it has waiting jobs"
                );
                assert_eq!(ep.stalled_since.is_some(), ep.inflight.get() > 0);
                inflight += ep.inflight.get();
                scheduled += usize::from(ep.pace.scheduled);
            }
            assert_eq!(
                entry.inflight.get(),
                inflight,
                "an organisation's count is its endpoints' sum"
            );
            assert!(entry.ring.iter().all(|e| entry.endpoints.contains_key(e)));
            assert_eq!(
                state.ring.iter().filter(|o| *o == org).count(),
                usize::from(!entry.ring.is_empty()),
                "an organisation is in the ring once exactly when it has waiting jobs"
            );
            total += inflight;
            endpoints += entry.endpoints.len();
        }
        assert!(state.ring.iter().all(|o| state.orgs.contains_key(o)));
        assert!(
            state.idle.values().all(|i| i.pace.scheduled),
            "an idle endpoint is never forgotten"
        );
        assert_eq!(
            state.inflight.get(),
            total,
            "the worker's count is the organisations' sum"
        );
        let entries: HashSet<Key> = state.forget.iter().map(|Reverse((_, key))| *key).collect();
        assert_eq!(entries.len(), state.forget.len(), "one entry per endpoint");
        assert_eq!(
            state.forget.len(),
            scheduled,
            "an entry exactly for each endpoint marked so"
        );
        Census {
            orgs: state.orgs.len(),
            endpoints,
            idle: state.idle.len(),
            scheduled: state.forget.len(),
            inflight: total,
        }
    }

    /// The latency an endpoint is remembered with, busy or idle.
    fn remembered_latency(&self, key: Key) -> Option<f64> {
        let state = self.lock();
        let busy = state.orgs.get(&key.0).and_then(|o| o.endpoints.get(&key.1));
        busy.map(|ep| &ep.pace)
            .or_else(|| state.idle.get(&key).map(|i| &i.pace))
            .and_then(|pace| pace.latency)
    }
}

/// Jobs held by one gate, as the worker's handlers see them.
struct Jobs {
    gate: Gate,
    /// Waiting, in the order they were admitted, each with its number in that order.
    waiting: Vec<(Key, usize, oneshot::Receiver<Grant>)>,
    admitted: usize,
    /// Granted, in the order their grants were seen.
    running: VecDeque<(Key, Permit)>,
    /// Deferred at admission or shed, with their delay.
    deferred: Vec<(Key, Duration)>,
    /// Most requests seen in flight at once, for each endpoint and in all.
    peak: HashMap<Key, usize>,
    peak_total: usize,
}

impl Jobs {
    fn new(gate: &Gate) -> Self {
        Self {
            gate: gate.clone(),
            waiting: Vec::new(),
            admitted: 0,
            running: VecDeque::new(),
            deferred: Vec::new(),
            peak: HashMap::new(),
            peak_total: 0,
        }
    }

    /// Admit `n` jobs for `key`; returns how many were deferred at once.
    fn admit(&mut self, key: Key, n: usize) -> usize {
        let before = self.deferred.len();
        for _ in 0..n {
            match self.gate.admit(key.0, key.1) {
                Admission::Wait(rx) => {
                    self.waiting.push((key, self.admitted, rx));
                    self.admitted += 1;
                }
                Admission::Defer(delay) => self.deferred.push((key, delay)),
                Admission::Closed => panic!("the gate is open"),
            }
        }
        self.poll();
        self.deferred.len() - before
    }

    /// Collect what the gate decided for waiting jobs; jobs told to go back are dropped.
    fn poll(&mut self) {
        let mut still = Vec::new();
        for (key, n, mut rx) in self.waiting.drain(..) {
            match rx.try_recv() {
                Ok(Grant::Go(permit)) => self.running.push_back((key, permit)),
                Ok(Grant::Defer(delay)) => self.deferred.push((key, delay)),
                Err(TryRecvError::Empty) => still.push((key, n, rx)),
                Err(TryRecvError::Closed) => {}
            }
        }
        self.waiting = still;
        for (key, _) in &self.running {
            let n = self.running(*key);
            let peak = self.peak.entry(*key).or_default();
            *peak = (*peak).max(n);
        }
        self.peak_total = self.peak_total.max(self.running.len());
    }

    fn running(&self, key: Key) -> usize {
        self.running.iter().filter(|(k, _)| *k == key).count()
    }

    fn waiting(&self, key: Key) -> usize {
        self.waiting_numbers(key).len()
    }

    fn waiting_numbers(&self, key: Key) -> Vec<usize> {
        self.waiting
            .iter()
            .filter(|(k, ..)| *k == key)
            .map(|(_, n, _)| *n)
            .collect()
    }

    fn deferred(&self, key: Key) -> usize {
        self.deferred.iter().filter(|(k, _)| *k == key).count()
    }

    fn running_for_org(&self, org: Uuid) -> usize {
        self.running.iter().filter(|(k, _)| k.0 == org).count()
    }

    /// End the oldest request of `key` (the oldest of all with `None`); false if there is none.
    fn finish(&mut self, key: Option<Key>) -> bool {
        let Some(i) = self
            .running
            .iter()
            .position(|(k, _)| key.is_none_or(|key| *k == key))
        else {
            return false;
        };
        self.running.remove(i);
        self.poll();
        true
    }
}

fn key() -> Key {
    (Uuid::now_v7(), Uuid::now_v7())
}

fn sibling(of: Key) -> Key {
    (of.0, Uuid::now_v7())
}

#[test]
fn an_organisation_alone_gets_every_slot_and_a_newcomer_gets_the_next() {
    let gate = Gate::new(4, 1, 100);
    let mut jobs = Jobs::new(&gate);
    let (a, b) = (key(), key());
    jobs.admit(a, 5);
    assert_eq!(
        (jobs.running(a), jobs.waiting(a)),
        (4, 1),
        "alone: every slot, no more"
    );
    // b is below the cap: it may go over the concurrency by one, and no further.
    jobs.admit(b, 2);
    assert_eq!((jobs.running(b), jobs.waiting(b)), (1, 1));
    // a is over its share (max(1, 4 / 2) = 2): once a slot is really free, it goes to b.
    jobs.finish(Some(a));
    assert_eq!(jobs.running(b), 1, "4 in flight: none free yet");
    jobs.finish(Some(a));
    assert_eq!(jobs.running(b), 2, "the newcomer takes the freed slot");
    assert_eq!(jobs.waiting(a), 1, "a holds its share of 2");
    jobs.finish(Some(b));
    jobs.finish(Some(a));
    assert_eq!(jobs.running(a), 2, "back within its share");
    assert_eq!(gate.census().inflight, 3);
}

#[test]
fn a_lone_endpoint_of_a_lone_organisation_uses_every_slot() {
    let gate = Gate::new(64, 16, 1024);
    let mut jobs = Jobs::new(&gate);
    let a = key();
    jobs.admit(a, 100);
    assert_eq!((jobs.running(a), jobs.waiting(a)), (64, 36));
    // Work-conserving: each slot freed is taken again at once, never more than the concurrency.
    for _ in 0..36 {
        assert!(jobs.finish(Some(a)));
        assert_eq!(jobs.running(a), 64);
    }
    assert_eq!(jobs.waiting(a), 0);
    assert_eq!(jobs.peak_total, 64);
}

/// Three organisations, or three endpoints of one, with more jobs than slots, the first come
/// before the others: whatever the first took alone is shared out as its requests end.
fn three_end_up_with_equal_shares(keys: [Key; 3]) {
    let gate = Gate::new(12, 2, 1000);
    let mut jobs = Jobs::new(&gate);
    for key in keys {
        jobs.admit(key, 100);
    }
    let running = |jobs: &Jobs| keys.map(|key| jobs.running(key));
    // The first took every slot; the second went over by the cap of 2, the third could not.
    assert_eq!(running(&jobs), [12, 2, 0]);
    for _ in 0..8 {
        jobs.finish(Some(keys[0]));
    }
    assert_eq!(running(&jobs), [4, 4, 4]);
    // From then on, whoever frees a slot gets it back: the shares stay equal.
    for _ in 0..60 {
        jobs.finish(None);
        assert_eq!(running(&jobs), [4, 4, 4]);
    }
    assert_eq!(jobs.peak_total, 12 + 2, "never over the concurrency plus the cap");
    assert_eq!(gate.census().inflight, 12);
}

#[test]
fn three_organisations_end_up_with_equal_shares() {
    three_end_up_with_equal_shares([key(), key(), key()]);
}

#[test]
fn three_endpoints_of_one_organisation_end_up_with_equal_parts_of_it() {
    let x = key();
    three_end_up_with_equal_shares([x, sibling(x), sibling(x)]);
}

#[test]
fn a_stalled_endpoints_backlog_does_not_hold_back_its_siblings_burst() {
    // The worker's defaults: concurrency 64, cap 16.
    let gate = Gate::new(64, 16, 1024);
    let mut jobs = Jobs::new(&gate);
    let slow = key();
    let fast = sibling(slow);
    jobs.admit(slow, 500);
    assert_eq!(
        (jobs.running(slow), jobs.waiting(slow)),
        (64, 436),
        "alone, it took every slot"
    );
    // None of the slow endpoint's requests ever ends in this test; the burst still gets slots
    // at once, and one after the other as its own requests end.
    assert_eq!(
        jobs.admit(fast, 300),
        0,
        "nothing of the fast endpoint is deferred"
    );
    assert_eq!(
        jobs.running(fast),
        16,
        "the sibling's allowance: the cap, at once"
    );
    let mut sent = 0;
    while jobs.finish(Some(fast)) {
        sent += 1;
    }
    assert_eq!(sent, 300, "every job of the burst was sent");
    assert_eq!(jobs.waiting(fast), 0);
    assert_eq!(jobs.peak[&fast], 16);
    assert_eq!(
        jobs.peak_total,
        64 + 16,
        "never over the concurrency plus the cap"
    );
    assert_eq!(
        (jobs.running(slow), jobs.waiting(slow)),
        (64, 436),
        "the slow endpoint got nothing more meanwhile"
    );
    // Once its requests end, it has the organisation again.
    jobs.finish(Some(slow));
    assert_eq!(jobs.running(slow), 64);
    gate.census();
}

#[test]
fn a_newcomer_endpoint_gets_its_part_as_a_slow_siblings_requests_end() {
    let gate = Gate::new(64, 16, 1024);
    let mut jobs = Jobs::new(&gate);
    let slow = key();
    let fast = sibling(slow);
    jobs.admit(slow, 200);
    jobs.admit(fast, 200);
    assert_eq!([jobs.running(slow), jobs.running(fast)], [64, 16]);
    // The slow endpoint's requests end: its freed slots go to the sibling up to half each.
    for _ in 0..48 {
        jobs.finish(Some(slow));
    }
    assert_eq!([jobs.running(slow), jobs.running(fast)], [32, 32]);
    for _ in 0..20 {
        jobs.finish(Some(slow));
        jobs.finish(Some(fast));
        assert_eq!([jobs.running(slow), jobs.running(fast)], [32, 32]);
    }
}

#[test]
fn the_organisation_level_goes_first_an_organisation_with_many_endpoints_gets_its_share_only() {
    let gate = Gate::new(8, 2, 1000);
    let mut jobs = Jobs::new(&gate);
    let many = key();
    let endpoints: Vec<Key> = std::iter::once(many)
        .chain((0..7).map(|_| sibling(many)))
        .collect();
    for endpoint in &endpoints {
        jobs.admit(*endpoint, 10);
    }
    let single = key();
    jobs.admit(single, 100);
    while jobs.running_for_org(single.0) < 4 {
        assert!(jobs.finish(Some(jobs.running[0].0)), "requests to end");
    }
    // Eight endpoints against one: each organisation has half, whoever came first.
    for _ in 0..40 {
        jobs.finish(None);
        assert_eq!(
            [jobs.running_for_org(many.0), jobs.running_for_org(single.0)],
            [4, 4]
        );
    }
}

#[test]
fn a_cancelled_wait_gives_its_slot_to_the_next_job() {
    let gate = Gate::new(1, 1, 100);
    let a = key();
    let mut jobs = Jobs::new(&gate);
    jobs.admit(a, 3);
    assert_eq!((jobs.running(a), jobs.waiting(a)), (1, 2));
    // The first waiting job's handler is cancelled: its grant finds nobody.
    jobs.waiting.remove(0);
    jobs.finish(Some(a));
    assert_eq!((jobs.running(a), jobs.waiting(a)), (1, 0));
    jobs.finish(Some(a));
    assert_eq!(gate.census(), Census::resting(1));
}

#[test]
fn closing_sends_every_waiting_job_back_and_keeps_the_requests_in_flight() {
    let gate = Gate::new(2, 1, 100);
    let mut jobs = Jobs::new(&gate);
    let a = key();
    let b = sibling(a);
    jobs.admit(a, 5);
    jobs.admit(b, 5);
    gate.close();
    jobs.poll();
    assert_eq!(jobs.waiting.len(), 0, "every waiting job was told to go back");
    assert_eq!(jobs.running.len(), 3);
    assert!(matches!(gate.admit(a.0, a.1), Admission::Closed));
    assert_eq!(gate.census().endpoints, 2, "their requests are still in flight");
    while jobs.finish(None) {}
    assert_eq!(gate.census(), Census::resting(2));
    gate.open();
    assert_eq!(jobs.admit(a, 1), 0);
    assert_eq!(jobs.running(a), 1);
}

#[test]
fn a_slow_endpoint_is_deferred_beyond_what_it_can_send_soon_and_its_sibling_is_not() {
    let gate = Gate::new(2, 1, 1000);
    let mut jobs = Jobs::new(&gate);
    let a = key();
    // Unknown latency (50 ms), 2 slots: 40 a second, 80 in the horizon.
    assert_eq!(jobs.admit(a, 200), 120);
    let delays: Vec<Duration> = jobs.deferred.iter().map(|(_, d)| *d).collect();
    assert!(
        delays.windows(2).all(|w| w[0] <= w[1]),
        "paced one after the other"
    );
    assert!(delays[0] >= MIN_DEFER && delays[delays.len() - 1] <= MAX_DEFER);
    // A sibling endpoint has a bound of its own: nothing of it is deferred.
    assert_eq!(jobs.admit(sibling(a), 40), 0);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_endpoint_sheds_its_newest_waiting_jobs_and_leaves_its_sibling_alone() {
    let gate = Gate::new(8, 2, 1000);
    let mut jobs = Jobs::new(&gate);
    let slow = key();
    let fast = sibling(slow);
    jobs.admit(slow, 60);
    let oldest = jobs.waiting_numbers(slow);
    // Half a second during which the sibling answers every 10 ms and the slow endpoint's 8
    // requests (it was alone: every slot) stay out.
    for _ in 0..50 {
        jobs.admit(fast, 3);
        advance(Duration::from_millis(10)).await;
        while jobs.finish(Some(fast)) {}
    }
    jobs.admit(fast, 10);
    let fast_waiting = jobs.waiting_numbers(fast);
    assert_eq!((jobs.running(fast), fast_waiting.len()), (2, 8));
    assert_eq!(jobs.running(slow), 8);
    // Nothing back for 0.5 s: with its part of 4 slots it sends about 8 a second, so it may hold
    // max(8 x 2 s, 2 x 4) = 16: its 8 requests and its 8 oldest waiting jobs.
    let shed = gate.shed();
    jobs.poll();
    assert_eq!(shed, 60 - 16);
    assert_eq!(jobs.deferred(slow), shed);
    assert_eq!(
        jobs.waiting_numbers(slow),
        oldest[..8],
        "the oldest keep their places"
    );
    assert_eq!(
        jobs.waiting_numbers(fast),
        fast_waiting,
        "the sibling's jobs are left alone"
    );
    assert!(
        jobs.deferred
            .iter()
            .all(|(_, d)| *d >= MIN_DEFER && *d <= MAX_DEFER)
    );
    assert_eq!(gate.shed(), 0, "shed once");
    gate.census();
}

#[test]
fn an_endpoint_that_gains_siblings_sheds_what_its_smaller_part_cannot_send_soon() {
    let gate = Gate::new(4, 1, 1000);
    let mut jobs = Jobs::new(&gate);
    let a = key();
    // Alone: 4 slots at 50 ms, 160 in the horizon.
    assert_eq!(jobs.admit(a, 160), 0);
    jobs.admit(sibling(a), 1);
    jobs.admit(sibling(a), 1);
    jobs.admit(sibling(a), 1);
    // A quarter of the organisation's slots now: 1 at 50 ms, 40 in the horizon.
    assert_eq!(gate.shed(), 120);
    jobs.poll();
    assert_eq!(jobs.running(a) + jobs.waiting(a), 40);
    assert_eq!(jobs.deferred.len(), 120);
}

#[tokio::test(start_paused = true)]
async fn organisations_and_endpoints_that_come_and_go_are_forgotten() {
    let gate = Gate::new(4, 2, 100);
    let mut jobs = Jobs::new(&gate);
    for _ in 0..500 {
        let a = key();
        jobs.admit(a, 2);
        jobs.admit(sibling(a), 2);
        advance(Duration::from_millis(2)).await;
        while jobs.finish(None) {}
    }
    assert_eq!(gate.census(), Census::resting(1000));
    // Each endpoint is forgotten FORGET_AFTER after its last request ended, not before.
    advance(FORGET_AFTER - Duration::from_millis(500)).await;
    gate.shed();
    assert_eq!(
        gate.census().idle,
        1000 - 500,
        "the first half second's are gone, no others"
    );
    advance(Duration::from_millis(500)).await;
    gate.shed();
    assert_eq!(gate.census(), Census::resting(0));
}

#[tokio::test(start_paused = true)]
async fn an_idle_endpoint_is_remembered_until_its_deferred_jobs_are_due_and_a_while_after() {
    let gate = Gate::new(2, 1, 1000);
    let mut jobs = Jobs::new(&gate);
    let a = key();
    // Its requests take 2 s.
    jobs.admit(a, 2);
    advance(Duration::from_secs(2)).await;
    while jobs.finish(None) {}
    assert_eq!(gate.remembered_latency(a), Some(2.0));
    // Idle for a while, then busy again: it is bounded at its known pace at once, not at the
    // first guess (that would admit 80): 2 slots at 2 s, at least 2 x 2 held.
    advance(FORGET_AFTER - Duration::from_secs(1)).await;
    assert_eq!(jobs.admit(a, 100), 96);
    let last_due = jobs.deferred.iter().map(|(_, d)| *d).max().unwrap_or_default();
    assert_eq!(
        last_due, MAX_DEFER,
        "a slow endpoint's backlog is spread to the longest delay"
    );
    // It sends what it holds, then holds nothing; its deferred jobs are not back yet.
    advance(Duration::from_secs(2)).await;
    while jobs.finish(None) {}
    advance(Duration::from_secs(2)).await;
    while jobs.finish(None) {}
    assert_eq!(gate.census().endpoints, 0);
    // Remembered until its last deferred job is due, then for FORGET_AFTER.
    advance(MAX_DEFER - Duration::from_secs(4) + FORGET_AFTER - Duration::from_secs(1)).await;
    gate.shed();
    assert_eq!(gate.census().idle, 1);
    assert!(gate.remembered_latency(a).is_some_and(|l| l > 1.0));
    advance(Duration::from_secs(2)).await;
    gate.shed();
    assert_eq!(gate.census(), Census::resting(0));
    // Back after that, it starts from the first guess again.
    assert_eq!(jobs.admit(a, 100), 20);
}

#[test]
#[should_panic(expected = "below zero")]
fn a_count_taken_below_zero_is_a_loud_slip_in_tests() {
    let mut count = Count::default();
    count.up();
    count.down();
    count.down();
}
