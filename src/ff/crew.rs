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

/// Work for one helper, borrowed from the caller of [`Crew::run`] for the duration of the call.
pub(crate) type Job<'a> = Box<dyn FnOnce() + Send + 'a>;

/// What a helper holds.
enum State {
    Idle,
    Work(Job<'static>),
    /// Finished; `true` if the job panicked.
    Done(bool),
    Quit,
}

struct Slot {
    state: Mutex<State>,
    changed: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A job's panic is caught outside the lock, so the lock is never poisoned by one; if
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

    /// Runs `local` on the calling thread and each of `jobs` on a helper of its own (at most
    /// [`Crew::helpers`] of them; any beyond run on the calling thread), and returns once all
    /// have finished. A panic in any job is raised here after all have finished.
    pub(crate) fn run<'a>(&self, jobs: Vec<Job<'a>>, local: impl FnOnce()) {
        let _running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let mut handed = 0;
        let mut rest = Vec::new();
        for job in jobs {
            match self.slots.get(handed) {
                Some(slot) => {
                    // SAFETY: the job borrows data that outlives this call, and this call does
                    // not return (nor unwind) before the helper has finished the job and
                    // dropped it: `Wait` below blocks until every handed job reports `Done`,
                    // also when `local` or another job panics.
                    let job: Job<'static> = unsafe { std::mem::transmute::<Job<'a>, _>(job) };
                    *slot.lock() = State::Work(job);
                    slot.changed.notify_all();
                    handed += 1;
                }
                None => rest.push(job),
            }
        }
        let wait = Wait {
            slots: &self.slots[..handed],
        };
        let local_result = panic::catch_unwind(AssertUnwindSafe(move || {
            local();
            for job in rest {
                job();
            }
        }));
        let helper_panicked = wait.finish();
        if let Err(payload) = local_result {
            panic::resume_unwind(payload);
        }
        if helper_panicked {
            panic!("a helper thread's job panicked");
        }
    }
}

/// Blocks until every handed job is done, on `finish` or when dropped (unwinding).
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

/// A helper's loop: wait for work, do it, report, until told to quit.
fn serve(slot: &Slot) {
    let mut state = slot.lock();
    loop {
        match std::mem::replace(&mut *state, State::Idle) {
            State::Work(job) => {
                drop(state);
                let panicked = panic::catch_unwind(AssertUnwindSafe(job)).is_err();
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

    /// Every job runs exactly once and the caller sees its writes, for more jobs than helpers
    /// too; a crew is reusable.
    #[test]
    fn runs_every_job_once() {
        let crew = Crew::new(2);
        for round in 0..50 {
            let mut out = vec![0usize; 5];
            let (first, rest) = out.split_at_mut(1);
            let jobs: Vec<Job<'_>> = rest
                .iter_mut()
                .enumerate()
                .map(|(i, o)| Box::new(move || *o += i + 1 + round) as Job<'_>)
                .collect();
            crew.run(jobs, || first[0] += round);
            assert_eq!(out, vec![round, round + 1, round + 2, round + 3, round + 4]);
        }
    }

    /// A panicking job is reported to the caller, after every other job has finished, and the
    /// crew still works afterwards.
    #[test]
    fn a_panicking_job_panics_the_caller() {
        let crew = Crew::new(1);
        let mut done = false;
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            let jobs: Vec<Job<'_>> = vec![Box::new(|| panic!("job fails"))];
            crew.run(jobs, || done = true);
        }));
        assert!(result.is_err());
        assert!(done);
        let mut x = 0;
        crew.run(vec![Box::new(|| x += 1)], || {});
        assert_eq!(x, 1);
    }
}
