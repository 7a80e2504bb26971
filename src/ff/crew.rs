//! `Crew`: a few persistent helper threads that run borrowed work and are waited for, like
//! `std::thread::scope` without starting a thread each time. Per-sample learning on several
//! threads meets once per layer; starting threads for every meeting costs tens of µs on an idle
//! machine and hundreds on a busy one (BENCHMARKS.md §2), waking a parked one a few µs to ~30.
//!
//! Hand-written rather than rayon: called from a thread outside rayon's pool (the service's
//! learner, `ffd train`'s main thread), rayon hands the whole job to its pool and parks the
//! caller, two hand-overs per meeting where this needs one, and the engine keeps its
//! dependencies to ndarray, rand and serde.

use std::panic::{self, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

/// Work shared by the caller of [`Crew::run`] and the helpers, borrowed for the duration of the
/// call: `task(part)` does part `part`. A borrowed `Fn` plus an index, not boxed closures, so a
/// meeting allocates nothing (the per-sample path must not: `tests/it/no_alloc.rs`).
pub(crate) type Task<'a> = &'a (dyn Fn(usize) + Sync + 'a);

/// What a helper holds.
enum State {
    Idle,
    /// The shared task and the part this helper does.
    Work(Task<'static>, usize),
    /// Finished; `true` if the part panicked.
    Done(bool),
    Quit,
}

struct Slot {
    state: Mutex<State>,
    changed: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A part's panic is caught outside the lock, so the lock is never poisoned by one; if
        // it ever were, the state inside is still consistent (every write is one assignment).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed.wait(guard).unwrap_or_else(|e| e.into_inner())
    }
}

/// Helper threads, started once, parked between calls.
pub(crate) struct Crew {
    slots: Vec<Arc<Slot>>,
    handles: Vec<JoinHandle<()>>,
    /// Serialises [`Crew::run`] between clones of a trainer that share the crew.
    running: Mutex<()>,
}

impl std::fmt::Debug for Crew {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crew")
            .field("helpers", &self.slots.len())
            .finish()
    }
}

impl Crew {
    /// A crew of `helpers` threads; fewer if the OS refuses to start some (then `run` simply
    /// does more work on the calling thread: results never depend on the crew's size).
    pub(crate) fn new(helpers: usize) -> Self {
        let mut slots = Vec::with_capacity(helpers);
        let mut handles = Vec::with_capacity(helpers);
        for i in 0..helpers {
            let slot = Arc::new(Slot {
                state: Mutex::new(State::Idle),
                changed: Condvar::new(),
            });
            let theirs = Arc::clone(&slot);
            let spawned = std::thread::Builder::new()
                .name(format!("ffd-band-{}", i + 1))
                .spawn(move || serve(&theirs));
            match spawned {
                Ok(handle) => {
                    slots.push(slot);
                    handles.push(handle);
                }
                Err(_) => break,
            }
        }
        Self {
            slots,
            handles,
            running: Mutex::new(()),
        }
    }

    /// Helper threads (the caller of [`Crew::run`] works too).
    pub(crate) fn helpers(&self) -> usize {
        self.slots.len()
    }

    /// Runs `task(0)`, …, `task(parts - 1)`, part 0 on the calling thread and parts 1.. on a
    /// helper each (parts beyond [`Crew::helpers`] on the calling thread too), and returns once
    /// all have finished. A panic in any part is raised here after all have finished.
    pub(crate) fn run(&self, parts: usize, task: Task<'_>) {
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let handed = parts.saturating_sub(1).min(self.slots.len());
        for (i, slot) in self.slots[..handed].iter().enumerate() {
            // SAFETY: `task` borrows data that outlives this call, and this call does not
            // return (nor unwind) before every helper given it has finished and let go of it:
            // `Wait` below blocks until each handed part reports `Done`, also when the calling
            // thread's parts panic.
            let task: Task<'static> = unsafe { std::mem::transmute::<Task<'_>, _>(task) };
            *slot.lock() = State::Work(task, i + 1);
            slot.changed.notify_all();
        }
        let wait = Wait {
            slots: &self.slots[..handed],
        };
        let local_result = panic::catch_unwind(AssertUnwindSafe(|| {
            task(0);
            for part in handed + 1..parts {
                task(part);
            }
        }));
        let helper_panicked = wait.finish();
        if let Err(payload) = local_result {
            panic::resume_unwind(payload);
        }
        if helper_panicked {
            panic!("a helper thread's part panicked");
        }
    }
}

/// Blocks until every handed part is done, on `finish` or when dropped (unwinding).
struct Wait<'s> {
    slots: &'s [Arc<Slot>],
}

impl Wait<'_> {
    fn finish(self) -> bool {
        let panicked = self.wait_all();
        std::mem::forget(self);
        panicked
    }

    fn wait_all(&self) -> bool {
        let mut panicked = false;
        for slot in self.slots {
            let mut state = slot.lock();
            loop {
                match *state {
                    State::Done(p) => {
                        panicked |= p;
                        *state = State::Idle;
                        break;
                    }
                    _ => state = slot.wait(state),
                }
            }
        }
        panicked
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        self.wait_all();
    }
}

impl Drop for Crew {
    fn drop(&mut self) {
        for slot in &self.slots {
            *slot.lock() = State::Quit;
            slot.changed.notify_all();
        }
        for handle in self.handles.drain(..) {
            let _ = handle.join();
        }
    }
}

/// A helper's loop: wait for a part, do it, report, until told to quit.
fn serve(slot: &Slot) {
    let mut state = slot.lock();
    loop {
        match std::mem::replace(&mut *state, State::Idle) {
            State::Work(task, part) => {
                drop(state);
                let panicked = panic::catch_unwind(AssertUnwindSafe(|| task(part))).is_err();
                state = slot.lock();
                *state = State::Done(panicked);
                slot.changed.notify_all();
            }
            State::Quit => return,
            other => {
                *state = other;
                state = slot.wait(state);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every part runs exactly once and the caller sees its writes, for more parts than
    /// helpers too; a crew is reusable.
    #[test]
    fn runs_every_part_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let crew = Crew::new(2);
        for round in 0..50 {
            let out: Vec<AtomicUsize> = (0..5).map(|_| AtomicUsize::new(0)).collect();
            crew.run(5, &|part| {
                out[part].fetch_add(part + round, Ordering::Relaxed);
            });
            let out: Vec<usize> = out.into_iter().map(AtomicUsize::into_inner).collect();
            assert_eq!(out, vec![round, round + 1, round + 2, round + 3, round + 4]);
        }
    }

    /// A panicking part is reported to the caller, after every other part has finished, and
    /// the crew still works afterwards.
    #[test]
    fn a_panicking_part_panics_the_caller() {
        let crew = Crew::new(1);
        let done = Mutex::new(false);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            crew.run(2, &|part| {
                if part == 1 {
                    panic!("part fails");
                }
                *done.lock().unwrap_or_else(|e| e.into_inner()) = true;
            });
        }));
        assert!(result.is_err());
        assert!(*done.lock().unwrap_or_else(|e| e.into_inner()));
        let x = Mutex::new(0);
        crew.run(2, &|_| *x.lock().unwrap_or_else(|e| e.into_inner()) += 1);
        assert_eq!(*x.lock().unwrap_or_else(|e| e.into_inner()), 2);
    }
}
