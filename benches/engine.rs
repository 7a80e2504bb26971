//! Engine speed: per-sample learning throughput and single-sample classification latency.
//!
//! `cargo bench --bench engine` runs on one thread (the engine is single-threaded per sample).
//! Inputs are real MNIST digits from the committed subset, so ReLU sparsity is realistic.
//! `bench/compare_speed.sh` runs it and `bench/torch/ff_per_sample.py` back to back.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ffd::data::idx::{load_mnist, Dataset};
use ffd::ff::{
    Classifier, Model, NegativeStrategy, NetworkConfig, TrainConfig, Trainer, Workspace,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn data() -> Dataset {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/mnist-small");
    load_mnist(&dir)
        .expect("the committed MNIST subset loads")
        .train
}

fn trainer(hidden: &[usize], negatives: NegativeStrategy) -> Trainer {
    let net = NetworkConfig {
        hidden: hidden.to_vec(),
        ..Default::default()
    };
    let config = TrainConfig {
        negatives,
        ..Default::default()
    };
    let model = Model::new(net, &mut StdRng::seed_from_u64(0)).expect("valid config");
    Trainer::new(model, config, 0).expect("valid config")
}

fn learn(c: &mut Criterion) {
    let data = data();
    let mut group = c.benchmark_group("learn_per_sample");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for hidden in [vec![500, 500], vec![1000, 1000, 1000]] {
        let name = format!(
            "784-{}",
            hidden
                .iter()
                .map(|w| w.to_string())
                .collect::<Vec<_>>()
                .join("-")
        );
        for (variant, negatives) in [
            ("pos+neg", NegativeStrategy::Random),
            ("pos+neg+hard", NegativeStrategy::Hard),
        ] {
            let mut t = trainer(&hidden, negatives);
            // Warm up past the first updates so weights and sparsity look like training.
            for i in 0..500 {
                let (x, y) = data.sample(i);
                t.learn_unchecked(x, y, false);
            }
            let mut i = 0;
            group.bench_function(BenchmarkId::new(variant, &name), |b| {
                b.iter(|| {
                    let (x, y) = data.sample(i % data.len());
                    i += 1;
                    t.learn_unchecked(x, y, false)
                })
            });
        }
    }
    group.finish();
}

fn classify(c: &mut Criterion) {
    let data = data();
    let mut group = c.benchmark_group("classify_one");
    let mut t = trainer(&[500, 500], NegativeStrategy::Hard);
    for i in 0..500 {
        let (x, y) = data.sample(i);
        t.learn_unchecked(x, y, false);
    }
    t.settle();
    let model = t.model().clone();
    let mut ws = Workspace::new(model.config());
    for (name, classifier) in [
        ("goodness", Classifier::Goodness),
        ("softmax", Classifier::Softmax),
    ] {
        let mut i = 0;
        group.bench_function(BenchmarkId::new(name, "784-500-500"), |b| {
            b.iter(|| {
                let (x, _) = data.sample(i % data.len());
                i += 1;
                model.classify_with(&mut ws, x, classifier)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, learn, classify);
criterion_main!(benches);
