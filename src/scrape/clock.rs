//! The loop's timers: every scrape schedule and scrape timeout waits here, on one async-io
//! timer, so that waiting allocates nothing.
//!
//! async-io keeps its timers in a `BTreeMap`: each registration inserts a key, each expiry or
//! drop removes one, and the map allocates and frees nodes as it fills and empties (a node
//! per scrape when it runs empty, a split every few registrations when it holds many). A
//! per-target `Timer` would therefore allocate on the loop in steady state. [`Clock`] keeps
//! its own binary heap of deadlines (capacity kept, lazy deletion) and drives it from one
//! async-io timer, re-armed with `set_at`; a second async-io timer that never fires keeps the
//! map from running empty. Both sit in one B-tree leaf: no node is ever allocated again.

use std::cell::{Cell, RefCell};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// One waiting [`Sleep`]: its waker and the generation that owns the slot.
#[derive(Default)]
struct Slot {
    waker: Option<Waker>,
    generation: u64,
    fired: bool,
}

#[derive(Default)]
struct State {
    /// (deadline, slot, generation), earliest first.
    heap: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    next_generation: u64,
    /// The driver task's waker, to re-arm for an earlier deadline.
    driver: Option<Waker>,
    /// The deadline the driver's timer is armed for.
    armed: Option<Instant>,
}

/// The loop's timer service; clone the `Rc` into every task. Run [`Clock::drive`] as a task.
#[derive(Default)]
pub struct Clock {
    state: RefCell<State>,
    /// Registrations so far (for tests).
    registrations: Cell<u64>,
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.state.borrow();
        f.debug_struct("Clock")
            .field("pending", &s.heap.len())
            .field("slots", &s.slots.len())
            .finish()
    }
}

impl Clock {
    /// A new clock.
    pub fn new() -> Rc<Clock> {
        Rc::new(Clock::default())
    }

    /// Completes at `deadline`.
    pub fn sleep_until(self: &Rc<Self>, deadline: Instant) -> Sleep {
        Sleep {
            clock: Rc::clone(self),
            deadline,
            slot: None,
        }
    }

    /// Completes after `d`.
    pub fn sleep(self: &Rc<Self>, d: Duration) -> Sleep {
        self.sleep_until(Instant::now() + d)
    }

    /// Timers registered so far.
    pub fn registrations(&self) -> u64 {
        self.registrations.get()
    }

    /// Fires what is due; returns the next deadline.
    fn fire(&self, now: Instant) -> Option<Instant> {
        let mut s = self.state.borrow_mut();
        while let Some(Reverse((at, slot, generation))) = s.heap.peek().copied() {
            let live = s
                .slots
                .get(slot)
                .is_some_and(|x| x.generation == generation);
            if !live {
                s.heap.pop();
                continue;
            }
            if at > now {
                return Some(at);
            }
            s.heap.pop();
            let x = &mut s.slots[slot];
            x.fired = true;
            if let Some(w) = x.waker.take() {
                w.wake();
            }
        }
        None
    }

    /// The driver: run it once, as a task on the loop, for as long as the clock is used.
    pub async fn drive(self: Rc<Self>) {
        // Keeps async-io's timer map from running empty (see the module docs).
        let _keeper = smol::Timer::after(Duration::from_secs(100 * 365 * 86_400));
        let mut keeper = std::pin::pin!(_keeper);
        let mut timer = smol::Timer::never();
        loop {
            let next = self.fire(Instant::now());
            self.state.borrow_mut().armed = next;
            match next {
                Some(at) => timer.set_at(at),
                None => timer = smol::Timer::never(),
            }
            // Wait for the timer, or for an earlier deadline registered meanwhile.
            std::future::poll_fn(|cx| {
                // Registering the keeper once puts it in the map; it never completes.
                let _ = keeper.as_mut().poll(cx);
                {
                    let mut s = self.state.borrow_mut();
                    match &s.driver {
                        Some(w) if w.will_wake(cx.waker()) => {}
                        _ => s.driver = Some(cx.waker().clone()),
                    }
                    if let Some(Reverse((earliest, _, _))) = s.heap.peek() {
                        if s.armed.is_none_or(|armed| *earliest < armed) {
                            return Poll::Ready(());
                        }
                    }
                }
                match Pin::new(&mut timer).poll(cx) {
                    Poll::Ready(_) => Poll::Ready(()),
                    Poll::Pending => Poll::Pending,
                }
            })
            .await;
        }
    }
}

/// Runs `f` to completion on a local executor of its own, with `clock` driven beside it
/// (tests and tools; the agent drives its clock on its own loop).
pub fn block_on<T>(clock: &Rc<Clock>, f: impl Future<Output = T>) -> T {
    let ex = smol::LocalExecutor::new();
    let driver = ex.spawn(Rc::clone(clock).drive());
    let out = smol::block_on(ex.run(f));
    drop(driver);
    out
}

/// A wait on the [`Clock`]. Dropping it cancels it.
pub struct Sleep {
    clock: Rc<Clock>,
    deadline: Instant,
    slot: Option<(usize, u64)>,
}

impl fmt::Debug for Sleep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sleep")
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        let mut s = this.clock.state.borrow_mut();
        match this.slot {
            Some((slot, generation)) => {
                let x = &mut s.slots[slot];
                if x.generation == generation && x.fired {
                    return Poll::Ready(());
                }
                match &x.waker {
                    Some(w) if w.will_wake(cx.waker()) => {}
                    _ => x.waker = Some(cx.waker().clone()),
                }
                Poll::Pending
            }
            None => {
                if this.deadline <= Instant::now() {
                    return Poll::Ready(());
                }
                let slot = match s.free.pop() {
                    Some(i) => i,
                    None => {
                        s.slots.push(Slot::default());
                        s.slots.len() - 1
                    }
                };
                s.next_generation += 1;
                let generation = s.next_generation;
                s.slots[slot] = Slot {
                    waker: Some(cx.waker().clone()),
                    generation,
                    fired: false,
                };
                // Cancelled sleeps (a scrape's timeout, mostly) stay in the heap until their
                // deadline; drop them before the heap would grow, so its capacity settles at
                // the live sleeps' high-water mark.
                if s.heap.len() == s.heap.capacity() {
                    let State { heap, slots, .. } = &mut *s;
                    heap.retain(|Reverse((_, i, g))| {
                        slots.get(*i).is_some_and(|x| x.generation == *g)
                    });
                }
                s.heap.push(Reverse((this.deadline, slot, generation)));
                this.slot = Some((slot, generation));
                this.clock
                    .registrations
                    .set(this.clock.registrations.get() + 1);
                let earlier = s.armed.is_none_or(|at| this.deadline < at);
                if earlier {
                    if let Some(d) = &s.driver {
                        d.wake_by_ref();
                    }
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Sleep {
    fn drop(&mut self) {
        if let Some((slot, generation)) = self.slot {
            let mut s = self.clock.state.borrow_mut();
            if s.slots[slot].generation == generation {
                // The heap entry is left behind and skipped when it comes up (its
                // generation no longer owns the slot).
                s.slots[slot].generation = 0;
                s.slots[slot].waker = None;
                s.free.push(slot);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sleeps_fire_in_order_and_cancelled_ones_never() {
        let ex = smol::LocalExecutor::new();
        let clock = Clock::new();
        let order = Rc::new(RefCell::new(Vec::new()));
        smol::block_on(ex.run(async {
            ex.spawn(Rc::clone(&clock).drive()).detach();
            let mut tasks = Vec::new();
            for (i, ms) in [(1, 60u64), (2, 20), (3, 40)] {
                let (clock, order) = (Rc::clone(&clock), Rc::clone(&order));
                tasks.push(ex.spawn(async move {
                    clock.sleep(Duration::from_millis(ms)).await;
                    order.borrow_mut().push(i);
                }));
            }
            // A sleep dropped before its deadline is skipped.
            let cancelled = clock.sleep(Duration::from_millis(30));
            drop(cancelled);
            let start = Instant::now();
            for t in tasks {
                t.await;
            }
            assert!(start.elapsed() >= Duration::from_millis(55));
        }));
        assert_eq!(*order.borrow(), vec![2, 3, 1]);
        // Slots are reused: three sleeps, at most three slots.
        assert!(clock.state.borrow().slots.len() <= 3);
    }
}
