//! Engine speed: per-sample learning throughput, single-sample and batched classification, and
//! the matrix product behind the batches against this core's FMA peak.
//!
//! `cargo bench --bench engine` runs on one thread, except `learn_threads` (one and two threads)
//! and the two-thread `learn_batch` cases.
//! Inputs are real MNIST digits from the committed subset, so ReLU sparsity is realistic.
//! `bench/compare_speed.sh` runs it and `bench/torch/ff_per_sample.py` back to back.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ffd::data::idx::{load_mnist, Dataset};
use ffd::ff::matmul::{gemm, Op};
use ffd::ff::{
    BatchWorkspace, Classifier, Model, NegativeStrategy, NetworkConfig, TrainConfig, Trainer,
    Workspace,
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

/// `784-500-500` for hidden widths `[500, 500]`.
fn net_name(hidden: &[usize]) -> String {
    let widths: Vec<String> = hidden.iter().map(usize::to_string).collect();
    format!("784-{}", widths.join("-"))
}

fn learn(c: &mut Criterion) {
    let data = data();
    let mut group = c.benchmark_group("learn_per_sample");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for hidden in [vec![500, 500], vec![1000, 1000, 1000]] {
        let name = net_name(&hidden);
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

/// Per-sample learning with each layer's units split over one and two threads (hard
/// negatives, the default): samples per second, the ratio of the two is the speed-up.
fn learn_threads(c: &mut Criterion) {
    let data = data();
    let mut group = c.benchmark_group("learn_threads");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(8));
    for hidden in [vec![500, 500], vec![1000, 1000, 1000]] {
        let name = net_name(&hidden);
        for threads in [1, 2] {
            let mut t = trainer(&hidden, NegativeStrategy::Hard);
            t.set_threads(threads);
            for i in 0..500 {
                let (x, y) = data.sample(i);
                t.learn_unchecked(x, y, false);
            }
            let mut i = 0;
            group.bench_function(BenchmarkId::new(format!("t{threads}"), &name), |b| {
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

/// Mini-batch learning on matrix products (`Trainer::learn_batch`), batch 100, on one and two
/// threads: samples per second, to set against `learn_per_sample`.
fn learn_batch(c: &mut Criterion) {
    let data = data();
    let batch = 100;
    let mut group = c.benchmark_group("learn_batch");
    group.throughput(Throughput::Elements(batch as u64));
    group.measurement_time(Duration::from_secs(8));
    group.sample_size(20);
    for hidden in [vec![500, 500], vec![1000, 1000, 1000]] {
        let name = net_name(&hidden);
        for (variant, negatives) in [
            ("pos+neg", NegativeStrategy::Random),
            ("pos+neg+hard", NegativeStrategy::Hard),
        ] {
            for threads in [1, 2] {
                let net = NetworkConfig {
                    hidden: hidden.clone(),
                    ..Default::default()
                };
                let config = TrainConfig {
                    negatives,
                    batch_size: batch,
                    ..Default::default()
                };
                let model = Model::new(net, &mut StdRng::seed_from_u64(0)).expect("valid config");
                let mut t = Trainer::new(model, config, 0).expect("valid config");
                t.set_threads(threads);
                let labels: Vec<usize> = data.labels.iter().map(|&y| usize::from(y)).collect();
                let mut start = 0;
                let mut step = |t: &mut Trainer| {
                    if start + batch > data.len() {
                        start = 0;
                    }
                    let x = &data.features[start * data.dim..(start + batch) * data.dim];
                    let y = &labels[start..start + batch];
                    start += batch;
                    t.learn_batch(x, y, false)
                };
                for _ in 0..5 {
                    let _ = step(&mut t);
                }
                let id = BenchmarkId::new(format!("{variant}/{threads}t"), &name);
                group.bench_function(id, |b| b.iter(|| step(&mut t)));
            }
        }
    }
    group.finish();
}

/// A 784-500-500 model after 500 samples, so activities and sparsity look like training.
fn warmed_up_model(data: &Dataset) -> Model {
    let mut t = trainer(&[500, 500], NegativeStrategy::Hard);
    for i in 0..500 {
        let (x, y) = data.sample(i);
        t.learn_unchecked(x, y, false);
    }
    t.settle();
    t.model().clone()
}

fn classify(c: &mut Criterion) {
    let data = data();
    let mut group = c.benchmark_group("classify_one");
    let model = warmed_up_model(&data);
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

/// Batched classification (one thread): per-sample throughput at batch sizes 1, 10 and 100,
/// to set against `classify_one`.
fn classify_batch(c: &mut Criterion) {
    let data = data();
    let mut group = c.benchmark_group("classify_batch");
    let model = warmed_up_model(&data);
    let mut ws = BatchWorkspace::new(1);
    for batch in [1, 10, 100] {
        group.throughput(Throughput::Elements(batch as u64));
        let mut start = 0;
        group.bench_function(BenchmarkId::new("goodness/784-500-500", batch), |b| {
            b.iter(|| {
                if start + batch > data.len() {
                    start = 0;
                }
                let x = &data.features[start * data.dim..(start + batch) * data.dim];
                start += batch;
                model.classify_batch_with(&mut ws, x, Classifier::Goodness)
            })
        });
    }
    group.finish();
}

/// The matrix product on the shapes the batches use, `C[m,n] = A[m,k]·W[n,k]ᵀ`: throughput in
/// FLOP (`2mnk`), so criterion's "elem/s" reads as FLOP/s. One thread.
fn matmul(c: &mut Criterion) {
    let mut group = c.benchmark_group("gemm");
    for (m, n, k) in [
        (100, 1000, 794),
        (200, 1000, 1000),
        (1000, 1000, 1000),
        (1000, 794, 200),
    ] {
        let a: Vec<f32> = (0..m * k).map(|i| ((i as f32) * 0.37).sin()).collect();
        let w: Vec<f32> = (0..n * k).map(|i| ((i as f32) * 0.11).sin()).collect();
        let mut out = vec![0.0; m * n];
        group.throughput(Throughput::Elements(2 * (m * n * k) as u64));
        group.bench_function(format!("{m}x{n}x{k}"), |b| {
            b.iter(|| gemm((m, n, k), 1.0, &a, Op::N, &w, Op::T, 0.0, &mut out, 1))
        });
    }
    group.finish();
}

/// This core's measured AVX2 FMA peak: twelve independent chains of 256-bit FMAs, enough to
/// keep two FMA ports busy through a four-cycle latency. FLOP/s as "elem/s", as in `gemm`.
#[cfg(target_arch = "x86_64")]
fn fma_peak(c: &mut Criterion) {
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2,fma")]
    unsafe fn chains(iters: usize, a: f32, b: f32) -> f32 {
        let mut acc = [_mm256_set1_ps(0.0); 12];
        let (a, b) = (_mm256_set1_ps(a), _mm256_set1_ps(b));
        for _ in 0..iters {
            for x in acc.iter_mut() {
                *x = _mm256_fmadd_ps(*x, a, b);
            }
        }
        let mut out = [0.0f32; 8];
        let sum = acc
            .iter()
            .fold(_mm256_setzero_ps(), |s, &x| _mm256_add_ps(s, x));
        _mm256_storeu_ps(out.as_mut_ptr(), sum);
        out.iter().sum()
    }

    if !(std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma"))
    {
        return;
    }
    let iters = 100_000;
    let mut group = c.benchmark_group("fma_peak");
    group.throughput(Throughput::Elements((iters * 12 * 16) as u64));
    // SAFETY: AVX2 and FMA were detected above.
    // Opaque operands, so the compiler cannot fold the chains into a constant.
    let (x, y) = (std::hint::black_box(0.999_999), std::hint::black_box(1e-7));
    group.bench_function("avx2", |b| {
        b.iter(|| unsafe { chains(std::hint::black_box(iters), x, y) })
    });
    group.finish();
}

#[cfg(not(target_arch = "x86_64"))]
fn fma_peak(_: &mut Criterion) {}

criterion_group!(
    benches,
    learn,
    learn_threads,
    learn_batch,
    classify,
    classify_batch,
    matmul,
    fma_peak
);
criterion_main!(benches);
