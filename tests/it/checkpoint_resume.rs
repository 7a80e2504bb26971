//! A trainer restored from a checkpoint continues exactly like the uninterrupted one: train A
//! for n samples, write its state to checkpoint bytes, read them back into B, feed both the
//! same next m samples — weights, optimiser buffers and predictions are bit-identical. Covers
//! momentum buffers, the replay buffer, the sleep counter, the softmax head, hard negatives
//! (the RNG position), the weight average and the slow weights of the `consolidate` sleep.
use crate::support;

use std::path::Path;

use ffd::ff::{
    Boost, Classifier, Model, NetworkConfig, OptimiserConfig, ScheduleMode, SleepMethod,
    TrainConfig, Trainer,
};
use ffd::store::checkpoint::{self, Checkpoint, CheckpointError, Counters};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn config(momentum: f32) -> TrainConfig {
    config_with(momentum, SleepMethod::Negatives)
}

fn config_with(momentum: f32, sleep_method: SleepMethod) -> TrainConfig {
    TrainConfig {
        sleep_method,
        optimiser: OptimiserConfig {
            momentum,
            ..Default::default()
        },
        schedule: ScheduleMode::Sleep,
        sleep_every_samples: 7,
        replay_capacity: 50,
        train_head: true,
        ..Default::default()
    }
}

fn net() -> NetworkConfig {
    NetworkConfig {
        hidden: vec![24, 16],
        ..Default::default()
    }
}

/// Feeds samples `range` of the committed MNIST subset, sleeping when due; returns the
/// predictions made before each sample was learned.
fn feed(trainer: &mut Trainer, range: std::ops::Range<usize>) -> Vec<Option<usize>> {
    let data = support::mnist_small();
    range
        .map(|i| {
            let (x, y) = data.train.sample(i);
            let outcome = trainer.learn(x, y, true).expect("valid sample");
            if outcome.sleep_due {
                trainer.sleep();
            }
            outcome.predicted
        })
        .collect()
}

fn bits(model: &Model) -> Vec<u32> {
    model
        .layers()
        .iter()
        .flat_map(|l| l.weight().iter().chain(l.bias().iter()))
        .chain(model.head().weight().iter())
        .map(|w| w.to_bits())
        .collect()
}

#[test]
fn restored_trainer_continues_bit_identically() {
    let cases = [
        (0.0, SleepMethod::Negatives),
        (0.9, SleepMethod::Negatives),
        (0.9, SleepMethod::Consolidate),
    ];
    for (momentum, method) in cases {
        let config = || config_with(momentum, method);
        let model = Model::new(net(), &mut StdRng::seed_from_u64(4)).expect("valid config");
        let mut a = Trainer::new(model, config(), 4).expect("valid config");
        // 103 is not a multiple of the sleep period: the sleep counter must be restored too.
        feed(&mut a, 0..103);
        if momentum > 0.0 {
            // A drift's boost, restarted mid-stream, is part of the state.
            a.restart_boost_with(Boost {
                factor: 7.5,
                samples: 40,
            });
        }
        a.settle();
        let mut average = a.model().clone();
        average.blend_toward(a.model(), 0.5).expect("same config");
        let saved = Checkpoint {
            trainer: a.state(),
            average: Some(average.clone()),
            counters: Counters {
                last_seq: 103,
                high_water_seq: 103,
                samples_learned: 103,
                sleep_cycles: 14,
                model_version: 9,
                since_average: 3,
            },
        };
        let bytes = checkpoint::to_bytes(&saved);
        let read = checkpoint::from_bytes(&bytes, Path::new("mem"), &net()).expect("verifies");
        assert_eq!(read, saved, "the file round-trips every field");
        // 103 = 14 sleeps of 7 and 5 wake samples on fast weights.
        assert_eq!(
            read.trainer.slow.is_some(),
            method == SleepMethod::Consolidate,
            "slow weights are saved for consolidate only"
        );
        let mut b = Trainer::from_state(read.trainer, config()).expect("fits");

        let pa = feed(&mut a, 103..303);
        let pb = feed(&mut b, 103..303);
        assert_eq!(pa, pb, "{method:?}, momentum {momentum}: same predictions");
        a.settle();
        b.settle();
        assert_eq!(
            bits(a.model()),
            bits(b.model()),
            "{method:?}, momentum {momentum}: same weights"
        );
        assert_eq!(a.layer_states(), b.layer_states(), "same optimiser state");
        let x = support::mnist_small().test.sample(0).0.to_vec();
        assert_eq!(
            a.model().classify(&x, Classifier::Softmax).expect("valid"),
            b.model().classify(&x, Classifier::Softmax).expect("valid"),
        );
    }
}

#[test]
fn restoring_into_a_different_optimiser_is_refused() {
    let model = Model::new(net(), &mut StdRng::seed_from_u64(4)).expect("valid config");
    let mut a = Trainer::new(model, config(0.9), 4).expect("valid config");
    feed(&mut a, 0..10);
    a.settle();
    let err = Trainer::from_state(a.state(), config(0.0)).expect_err("momentum buffers do not fit");
    assert!(err.to_string().contains("momentum"), "{err}");
}

#[test]
fn damaged_bytes_and_other_networks_are_refused() {
    let model = Model::new(net(), &mut StdRng::seed_from_u64(4)).expect("valid config");
    let mut a = Trainer::new(model, config(0.0), 4).expect("valid config");
    feed(&mut a, 0..20);
    a.settle();
    let bytes = checkpoint::to_bytes(&Checkpoint {
        trainer: a.state(),
        average: None,
        counters: Counters::default(),
    });
    // One flipped bit in the tensor data, and every truncation point sampled: never loaded.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 100;
    flipped[at] ^= 0x01;
    let err = checkpoint::from_bytes(&flipped, Path::new("f"), &net()).expect_err("damaged");
    assert!(matches!(err, CheckpointError::Damaged(_)), "{err}");
    assert!(err.to_string().contains("checksum"), "{err}");
    for len in (0..bytes.len()).step_by(997) {
        let err =
            checkpoint::from_bytes(&bytes[..len], Path::new("t"), &net()).expect_err("truncated");
        assert!(matches!(err, CheckpointError::Damaged(_)), "{len}: {err}");
    }
    let other = NetworkConfig {
        hidden: vec![24, 24],
        ..Default::default()
    };
    let err = checkpoint::from_bytes(&bytes, Path::new("m"), &other).expect_err("other network");
    assert!(matches!(err, CheckpointError::Mismatch { .. }), "{err}");
    assert!(err.to_string().contains("--reset"), "{err}");
}
