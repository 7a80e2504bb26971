//! Per-sample learning on one thread against N threads, in alternating bursts so that both see
//! the same load on a shared machine (results in BENCHMARKS.md §2):
//!
//! ```text
//! cargo run --release --example threads_bench -- MNIST_DIR HIDDEN [THREADS] [ROUNDS] [BURST]
//! cargo run --release --example threads_bench -- tests/data/mnist-small 1000,1000,1000 2 10 300
//! ```
//!
//! Two trainers start from the same model and seed (hard negatives, the defaults otherwise),
//! one on one thread, one on THREADS (default 2). Each round each learns the same BURST
//! (default 300) samples, timed; the rounds alternate which goes first. Prints every round's
//! rates, the CPU time each used per sample (all its threads: the cost of splitting), the
//! median ratio, and whether both trainers hold bit-identical weights.

use std::path::PathBuf;
use std::time::Instant;

use ffd::data::idx::load_mnist;
use ffd::ff::{Model, NetworkConfig, TrainConfig, Trainer};
use rand::rngs::StdRng;
use rand::SeedableRng;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let dir = PathBuf::from(
        args.first()
            .ok_or("usage: MNIST_DIR HIDDEN [THREADS] [ROUNDS] [BURST]")?,
    );
    let hidden: Vec<usize> = args
        .get(1)
        .map_or("1000,1000,1000", String::as_str)
        .split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let threads: usize = args.get(2).map_or(Ok(2), |s| s.parse())?;
    let rounds: usize = args.get(3).map_or(Ok(10), |s| s.parse::<usize>())?.max(1);
    let burst: usize = args.get(4).map_or(Ok(300), |s| s.parse())?;
    let data = load_mnist(&dir)?.train;
    let net = NetworkConfig {
        hidden: hidden.clone(),
        ..Default::default()
    };
    let model = Model::new(net, &mut StdRng::seed_from_u64(1))?;
    let mut one = Trainer::new(model.clone(), TrainConfig::default(), 1)?;
    let mut many = Trainer::new(model, TrainConfig::default(), 1)?;
    many.set_threads(threads);
    let mut next = 0;
    let mut ratios = Vec::new();
    let mut cpu: Vec<f64> = Vec::new();
    println!("hidden {hidden:?}, 1 vs {threads} threads, {rounds} rounds of {burst} samples");
    for round in 0..rounds {
        let start = next;
        next = (next + burst) % data.len().max(1);
        let run = |t: &mut Trainer| {
            let (t0, c0) = (Instant::now(), cpu_seconds());
            for i in start..start + burst {
                let (x, y) = data.sample(i % data.len());
                t.learn_unchecked(x, y, false);
            }
            let cpu_us = (cpu_seconds() - c0) * 1e6 / burst as f64;
            (burst as f64 / t0.elapsed().as_secs_f64(), cpu_us)
        };
        let ((r1, c1), (rn, cn)) = if round % 2 == 0 {
            let a = run(&mut one);
            (a, run(&mut many))
        } else {
            let b = run(&mut many);
            (run(&mut one), b)
        };
        ratios.push(rn / r1);
        cpu.push(cn / c1);
        println!(
            "round {round}: 1 thread {r1:.0}/s ({c1:.0} µs CPU/sample), {threads} threads \
             {rn:.0}/s ({cn:.0} µs CPU/sample), ratio {:.2}",
            rn / r1
        );
    }
    ratios.sort_by(f64::total_cmp);
    cpu.sort_by(f64::total_cmp);
    println!(
        "median ratio {:.2} (min {:.2}, max {:.2}); CPU time per sample, {threads} threads ÷ 1: \
         median {:.2}",
        ratios[ratios.len() / 2],
        ratios[0],
        ratios[ratios.len() - 1],
        cpu[cpu.len() / 2]
    );
    one.settle();
    many.settle();
    println!("bit-identical weights: {}", one.model() == many.model());
    Ok(())
}

/// User plus system CPU time of this process (all threads), in seconds.
fn cpu_seconds() -> f64 {
    // SAFETY: `getrusage` only writes the struct it is given.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}
