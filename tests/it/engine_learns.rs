//! Learning works on real data: short per-sample runs on the committed MNIST subset reach an
//! accuracy far above chance (10 %), under both schedules and both classifiers.
use crate::support;

use ffd::eval::evaluate;
use ffd::ff::{
    Classifier, LrSchedule, Model, NegativeStrategy, NetworkConfig, ScheduleMode, TrainConfig,
    Trainer,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn train(config: TrainConfig, epochs: usize) -> f64 {
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
    1.0 - evaluate(trainer.model(), &data.test, classifier, 2).error_rate()
}

/// `ffd train --mnist tests/data/mnist-small --epochs 3 --lr-decay-start 0.5 --seed S` (the same
/// setup) measured
/// 87.5-89.4 % for seeds 1-4; a model that does not learn stays near 10 %.
#[test]
fn interleaved_hard_negatives_reach_85_percent() {
    let accuracy = train(TrainConfig::default(), 3);
    assert!(accuracy >= 0.85, "accuracy {accuracy}");
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
