//! The per-sample hot path allocates nothing after warm-up: learning (both schedules, hard and
//! random negatives, with the softmax head) and sleeping only touch memory the trainer owns.

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use ffd::ff::{
    Classifier, Model, NegativeStrategy, NetworkConfig, ScheduleMode, TrainConfig, Trainer,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

#[test]
fn learning_allocates_nothing_per_sample() {
    let data = common::mnist_small();
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
    for config in configs {
        let net = NetworkConfig {
            hidden: vec![64, 64],
            ..Default::default()
        };
        let model = Model::new(net, &mut StdRng::seed_from_u64(0)).expect("valid config");
        let mut trainer = Trainer::new(model, config.clone(), 0).expect("valid config");
        let mut run = |range: std::ops::Range<usize>| {
            for i in range {
                let (x, y) = data.train.sample(i);
                if trainer.learn_unchecked(x, y, true).sleep_due {
                    trainer.sleep();
                }
            }
        };
        run(0..50);
        let before = ALLOCATIONS.load(Ordering::Relaxed);
        run(50..250);
        let after = ALLOCATIONS.load(Ordering::Relaxed);
        assert_eq!(
            after - before,
            0,
            "allocations while learning with {config:?}"
        );
    }
}
