//! The per-sample hot path allocates nothing after warm-up: learning (both schedules, hard and
//! random negatives, with the softmax head) and sleeping only touch memory the trainer owns, on
//! one thread and with each layer split into bands over two. Allocations are counted on the
//! learning thread: it is the one that splits a layer and hands the bands out (a helper only runs
//! the same unit loop as the caller).
use crate::support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use ffd::ff::{
    Classifier, Model, NegativeStrategy, NetworkConfig, ScheduleMode, TrainConfig, Trainer,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

/// Counts allocations per thread: the other tests of this binary run on other threads at the
/// same time, and their allocations must not count against the learner's.
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

fn count() {
    // `try_with`: a thread that is being torn down has no counter left, and needs none.
    let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
}

fn allocations() -> usize {
    ALLOCATIONS.with(Cell::get)
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn learning_allocates_nothing_per_sample() {
    let data = support::mnist_small();
    let configs = [
        TrainConfig::default(),
        TrainConfig {
            negatives: NegativeStrategy::Random,
            classifier: Classifier::Softmax,
            train_head: true,
            ..Default::default()
        },
        TrainConfig {
            schedule: ScheduleMode::Sleep,
            sleep_every_samples: 8,
            ..Default::default()
        },
        TrainConfig {
            negatives: NegativeStrategy::Hybrid,
            classifier: Classifier::Softmax,
            train_head: true,
            ..Default::default()
        },
    ];
    // 128 units: two bands of 64, the fewest rows a band is given.
    for (config, threads) in configs
        .iter()
        .flat_map(|c| [(c.clone(), 1), (c.clone(), 2)])
    {
        let net = NetworkConfig {
            hidden: vec![128, 128],
            ..Default::default()
        };
        let model = Model::new(net, &mut StdRng::seed_from_u64(0)).expect("valid config");
        let mut trainer = Trainer::new(model, config.clone(), 0).expect("valid config");
        trainer.set_threads(threads);
        let mut run = |range: std::ops::Range<usize>| {
            for i in range {
                let (x, y) = data.train.sample(i);
                if trainer.learn_unchecked(x, y, true).sleep_due {
                    trainer.sleep();
                }
            }
        };
        run(0..50);
        let before = allocations();
        run(50..250);
        let after = allocations();
        assert_eq!(
            after - before,
            0,
            "allocations while learning on {threads} thread(s) with {config:?}"
        );
    }
}
