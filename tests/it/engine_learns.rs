//! Learning works on real data: short per-sample runs on the committed MNIST subset reach an
//! accuracy far above chance (10 %), under both schedules and both classifiers, and with long
//! sleeps when they consolidate.
use crate::support;

use ffd::eval::evaluate;
use ffd::ff::{
    Classifier, LrSchedule, Model, NegativeStrategy, NetworkConfig, ScheduleMode, SleepMethod,
    TrainConfig, Trainer,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn train(config: TrainConfig, epochs: usize) -> f64 {
    train_on_threads(config, epochs, 1).1
}

/// The trained model and its test accuracy, learning split over `threads` threads.
fn train_on_threads(config: TrainConfig, epochs: usize, threads: usize) -> (Model, f64) {
    let data = support::mnist_small();
    let net = NetworkConfig {
        inputs: data.train.dim,
        classes: 10,
        hidden: vec![500, 500],
        ..Default::default()
    };
    let model = Model::new(net, &mut StdRng::seed_from_u64(1)).expect("valid config");
    let classifier = config.classifier;
    let mut trainer = Trainer::new(model, config, 1).expect("valid config");
    trainer.set_threads(threads);
    // As `ffd train` does: constant rate for half the run, then linear decay to zero.
    trainer.set_lr_schedule(LrSchedule::LinearDecay {
        total_steps: (epochs * data.train.len()) as u64,
        decay_start: 0.5,
    });
    for _ in 0..epochs {
        for i in 0..data.train.len() {
            let (x, y) = data.train.sample(i);
            if trainer.learn(x, y, false).expect("valid sample").sleep_due {
                trainer.sleep();
            }
        }
    }
    trainer.settle();
    let accuracy = 1.0 - evaluate(trainer.model(), &data.test, classifier, 2).error_rate();
    (trainer.into_model(), accuracy)
}

/// `ffd train --mnist tests/data/mnist-small --epochs 3 --lr-decay-start 0.5 --seed S` (the same
/// setup) measured
/// 87.5-89.4 % for seeds 1-4; a model that does not learn stays near 10 %.
#[test]
fn interleaved_hard_negatives_reach_85_percent() {
    let accuracy = train(TrainConfig::default(), 3);
    assert!(accuracy >= 0.85, "accuracy {accuracy}");
}

/// Learning split over two threads (`ffd train --threads 2`, `[learner] threads = 2`) learns:
/// one epoch reaches 80 %, and the model is the one-thread model bit for bit, under both
/// schedules.
#[test]
fn two_threads_learn_the_one_thread_model() {
    for schedule in [ScheduleMode::Interleaved, ScheduleMode::Sleep] {
        let config = TrainConfig {
            schedule,
            ..Default::default()
        };
        let (one, _) = train_on_threads(config.clone(), 1, 1);
        let (two, accuracy) = train_on_threads(config, 1, 2);
        assert!(accuracy >= 0.80, "{schedule:?}: accuracy {accuracy}");
        assert!(
            one == two,
            "{schedule:?}: two threads learned another model"
        );
    }
}

/// The wake/sleep split learns too: positive-only updates online, negatives in sleep.
#[test]
fn sleep_schedule_reaches_80_percent() {
    let config = TrainConfig {
        schedule: ScheduleMode::Sleep,
        sleep_every_samples: 16,
        ..Default::default()
    };
    let accuracy = train(config, 3);
    assert!(accuracy >= 0.80, "accuracy {accuracy}");
}

/// The softmax head, trained on neutral-label activities, classifies too.
#[test]
fn softmax_head_with_random_negatives_reaches_80_percent() {
    let config = TrainConfig {
        negatives: NegativeStrategy::Random,
        classifier: Classifier::Softmax,
        train_head: true,
        ..Default::default()
    };
    let accuracy = train(config, 3);
    assert!(accuracy >= 0.80, "accuracy {accuracy}");
}

/// Long sleeps: a wake of 1 000 samples (a third of the subset), then a sleep. Consolidating
/// (the wake's updates are fast weights; the sleep replays each wake sample as a positive and a
/// negative update) learns as interleaved does; the same cycle with negative-only sleeps does
/// not. `ffd train --mnist tests/data/mnist-small --epochs 3 --lr-decay-start 0.5 --schedule
/// sleep --sleep-every-samples 1000 --sleep-method M --seed 1` measured 89.1 % (consolidate,
/// = interleaved) and 24.2 % (negatives).
#[test]
fn long_sleeps_learn_when_they_consolidate() {
    let long_sleep = |sleep_method| TrainConfig {
        schedule: ScheduleMode::Sleep,
        sleep_every_samples: 1_000,
        sleep_method,
        ..Default::default()
    };
    let consolidated = train(long_sleep(SleepMethod::Consolidate), 3);
    assert!(consolidated >= 0.85, "consolidate: accuracy {consolidated}");
    let negatives_only = train(long_sleep(SleepMethod::Negatives), 3);
    assert!(negatives_only < 0.5, "negatives: accuracy {negatives_only}");
}
