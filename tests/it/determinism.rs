//! Same seed and same data order give bit-identical weights; a different seed does not.
use crate::support;

use ffd::ff::{Model, NetworkConfig, ScheduleMode, TrainConfig, Trainer};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn train(seed: u64, mode: ScheduleMode) -> Model {
    let data = support::mnist_small();
    let net = NetworkConfig {
        hidden: vec![64, 32],
        ..Default::default()
    };
    let config = TrainConfig {
        schedule: mode,
        sleep_every_samples: 7,
        ..Default::default()
    };
    let model = Model::new(net, &mut StdRng::seed_from_u64(seed)).expect("valid config");
    let mut trainer = Trainer::new(model, config, seed).expect("valid config");
    for i in 0..500 {
        let (x, y) = data.train.sample(i);
        if trainer.learn(x, y, true).expect("valid sample").sleep_due {
            trainer.sleep();
        }
    }
    trainer.into_model()
}

#[test]
fn same_seed_same_weights() {
    for mode in [ScheduleMode::Interleaved, ScheduleMode::Sleep] {
        let (a, b) = (train(9, mode), train(9, mode));
        for (la, lb) in a.layers().iter().zip(b.layers()) {
            let bits =
                |l: &ffd::ff::Layer| l.weight().iter().map(|w| w.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(la), bits(lb), "{mode:?}");
        }
        assert_eq!(a, b);
    }
}

#[test]
fn different_seed_different_weights() {
    assert_ne!(
        train(1, ScheduleMode::Interleaved),
        train(2, ScheduleMode::Interleaved)
    );
}

/// Updates are applied lazily, inside the next sample's forward pass; forcing them out after
/// every sample (by reading the model) must not change a single bit.
#[test]
fn deferred_updates_change_nothing() {
    let data = support::mnist_small();
    let net = NetworkConfig {
        hidden: vec![500, 500],
        ..Default::default()
    };
    let model = Model::new(net, &mut StdRng::seed_from_u64(3)).expect("valid config");
    let mut a = Trainer::new(model.clone(), TrainConfig::default(), 3).expect("valid config");
    let mut b = Trainer::new(model, TrainConfig::default(), 3).expect("valid config");
    for i in 0..300 {
        let (x, y) = data.train.sample(i);
        let oa = a.learn(x, y, true).expect("valid sample");
        let ob = b.learn(x, y, true).expect("valid sample");
        b.settle();
        assert_eq!(oa, ob, "sample {i}");
    }
    a.settle();
    assert!(a.model() == b.model());
}
