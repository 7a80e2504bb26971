//! `ffd train`: offline training and evaluation on MNIST, per sample by default. Progress and
//! one line per epoch go to stderr; the last line on stdout is a JSON summary.
//!
//! The hyper-parameter flags are the engine's config structs flattened into clap
//! (`NetworkConfig`, `TrainConfig`, `AverageConfig`): each is named like its key in
//! `ffd serve`'s configuration, with the same default except where `service::config::Config`'s
//! `Default` lists a departure. Only the options that concern an offline run live here.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde_json::json;

use crate::data::augment::Shift;
use crate::data::idx::load_mnist;
use crate::data::order::EpochOrder;
use crate::eval::evaluate;
use crate::ff::short_float::widen;
use crate::ff::{
    AverageConfig, LrSchedule, Model, NetworkConfig, ScheduleMode, TrainConfig, Trainer,
    WeightAverage,
};

/// Arguments of `ffd train`.
#[derive(Debug, Clone, Args)]
pub struct TrainArgs {
    /// Directory with the four MNIST IDX files (gzipped or raw), e.g. from
    /// <https://yann.lecun.com/exdb/mnist/> or any mirror; a 3 000-sample subset ships in
    /// tests/data/mnist-small.
    #[arg(long)]
    pub mnist: PathBuf,
    /// Passes over the training set.
    #[arg(long, default_value_t = 1)]
    pub epochs: usize,
    /// Use only the first N training samples.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test samples.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// The network (`inputs` and `classes` come from the data set).
    #[command(flatten)]
    pub network: NetworkConfig,
    /// Optimiser, negatives, classifier, schedule.
    #[command(flatten)]
    pub train: TrainConfig,
    /// Weight averaging: evaluate and save the average instead of the live weights.
    #[command(flatten)]
    pub average: AverageConfig,
    /// Fraction of training after which the learning rate decays linearly to zero (1: never).
    /// Per sample, decaying over the whole run (0) measured better after one MNIST epoch than
    /// Hinton's second-half decay (0.5): 3.69 % against 4.05 % over five seeds. `ffd serve`
    /// has no such key: a stream has no end to decay towards.
    #[arg(long, default_value_t = 0.0)]
    pub lr_decay_start: f32,
    /// Random seed (initialisation, shuffling, negatives).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Learn the training samples in file order (every epoch) instead of a seeded shuffle:
    /// a stream prepared in an order of its own, e.g. to compare learners on the same stream.
    #[arg(long)]
    pub no_shuffle: bool,
    /// Classify each training sample before learning it (test-then-train), as the service does,
    /// and report the prequential accuracy.
    #[arg(long)]
    pub prequential: bool,
    /// With `--prequential`: the summary's `prequential_curve` holds the accuracy of each
    /// window of this many consecutive samples.
    #[arg(long, default_value_t = 1000)]
    pub prequential_window: usize,
    /// Threads for evaluation and for learning: per sample, each layer's units are split into
    /// bands learned in parallel (bit-identical to one thread); in mini-batches
    /// (`--batch-size` > 1), the matrix products are split.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Translate every training image by a random offset of up to N pixels along each axis
    /// each time it is learned (0: no augmentation). Test images are never shifted.
    #[arg(long, default_value_t = 0)]
    pub augment_shift: usize,
    /// Write the evaluated model here (safetensors): the weight average when averaging is on,
    /// else the live weights.
    #[arg(long)]
    pub save: Option<PathBuf>,
}

impl TrainArgs {
    /// The network and training configuration these arguments describe, for a data set of
    /// `inputs` features and `classes` classes and a run of `steps` samples.
    pub fn configs(
        &self,
        inputs: usize,
        classes: usize,
        steps: u64,
    ) -> (NetworkConfig, TrainConfig) {
        let net = NetworkConfig {
            inputs,
            classes,
            ..self.network.clone()
        };
        let mut train = self.train.clone();
        train.optimiser.lr_schedule = if self.lr_decay_start >= 1.0 {
            LrSchedule::Constant
        } else {
            LrSchedule::LinearDecay {
                total_steps: steps,
                decay_start: self.lr_decay_start,
            }
        };
        // The softmax and combined classifiers read the head, so asking for one asks for its training.
        train.train_head |= train.classifier.reads_head();
        (net, train)
    }
}

/// Runs `ffd train`.
pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    let (_evaluated, summary) = train(&args)?;
    println!("{summary}");
    Ok(())
}

/// A value's name on the command line (`sleep`, not `Sleep`).
fn flag_value(value: impl ValueEnum) -> String {
    value
        .to_possible_value()
        .map(|v| v.get_name().to_owned())
        .unwrap_or_default()
}

/// Trains, evaluates and saves as `args` say; returns the model that was evaluated (and saved):
/// the weight average, or the live weights; and the JSON summary.
fn train(args: &TrainArgs) -> anyhow::Result<(Model, serde_json::Value)> {
    anyhow::ensure!(args.epochs > 0, "--epochs must be at least 1");
    let mut mnist = load_mnist(&args.mnist)?;
    if let Some(n) = args.train_limit {
        mnist.train.truncate(n);
    }
    if let Some(n) = args.test_limit {
        mnist.test.truncate(n);
    }
    let (train, test) = (&mnist.train, &mnist.test);
    anyhow::ensure!(!train.is_empty(), "the training set is empty");
    let steps = (train.len() * args.epochs) as u64;
    let (net, train_cfg) = args.configs(train.dim, train.classes, steps);
    let model = Model::new(net.clone(), &mut StdRng::seed_from_u64(args.seed))
        .context("network configuration")?;
    let mut average = WeightAverage::new(&args.average, model.clone())
        .context("weight-averaging configuration")?;
    let mut trainer =
        Trainer::new(model, train_cfg.clone(), args.seed).context("training configuration")?;
    trainer.set_threads(args.threads);
    let batched = trainer.learns_in_batches();
    let mut batch_features = Vec::with_capacity(train_cfg.batch_size * train.dim);
    let mut batch_labels = Vec::with_capacity(train_cfg.batch_size);
    let classifier = train_cfg.classifier;
    let sleep_mode = train_cfg.schedule == ScheduleMode::Sleep;
    let sleep_interval = train_cfg.sleep_interval().filter(|_| sleep_mode);

    let hidden: Vec<String> = net.hidden.iter().map(usize::to_string).collect();
    eprintln!(
        "ffd train: {} train / {} test samples, --hidden {} --schedule {} --negatives {} --classifier {}{}{}",
        train.len(),
        test.len(),
        hidden.join(","),
        flag_value(train_cfg.schedule),
        flag_value(train_cfg.negatives),
        flag_value(classifier),
        if average.is_some() {
            format!(" --average-decay {}", args.average.average_decay)
        } else {
            String::new()
        },
        if train_cfg.layer_collaboration {
            " --layer-collaboration"
        } else {
            ""
        },
    );
    let bar = ProgressBar::new(steps);
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} samples, {per_sec}, eta {eta} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let shift = (args.augment_shift > 0)
        .then(|| Shift::new(args.augment_shift, train.shape))
        .transpose()
        .context("--augment-shift")?;
    // Its own stream, so that shifting changes nothing else a seed decides.
    let mut shift_rng = StdRng::seed_from_u64(args.seed ^ 0x5348_4946_5453);
    let mut shifted = Vec::with_capacity(train.dim);
    let mut order = EpochOrder::new(train.len(), args.seed, !args.no_shuffle);
    let mut train_seconds = 0.0;
    let mut curve = Vec::new();
    let mut last_error = f64::NAN;
    let mut sleeps = 0u64;
    let mut prequential_correct = 0u64;
    let window = args.prequential_window.max(1);
    let (mut window_hits, mut window_seen, mut prequential_curve) = (0usize, 0usize, Vec::new());
    let mut last_sleep = Instant::now();
    for epoch in 1..=args.epochs {
        let started = Instant::now();
        let indices = order.next_epoch();
        // Mini-batches run on matrix products when the configuration allows (see
        // `Trainer::learns_in_batches`); otherwise every sample goes through `learn`.
        let chunk = if batched { train_cfg.batch_size } else { 1 };
        for (step, batch) in indices.chunks(chunk).enumerate() {
            let (single, many);
            let outcomes: &[_] = if batched {
                batch_features.clear();
                batch_labels.clear();
                for &idx in batch {
                    let (x, y) = train.sample(idx);
                    let x = match &shift {
                        Some(shift) => shift.apply(x, &mut shift_rng, &mut shifted),
                        None => x,
                    };
                    if let Some(average) = average.as_mut() {
                        average.calibrate(x, y, classifier);
                    }
                    batch_features.extend_from_slice(x);
                    batch_labels.push(y);
                }
                many = trainer.learn_batch(&batch_features, &batch_labels, args.prequential)?;
                &many
            } else {
                let (x, y) = train.sample(batch[0]);
                let x = match &shift {
                    Some(shift) => shift.apply(x, &mut shift_rng, &mut shifted),
                    None => x,
                };
                if let Some(average) = average.as_mut() {
                    average.calibrate(x, y, classifier);
                }
                single = [trainer.learn_unchecked(x, y, args.prequential)];
                &single
            };
            for (outcome, &idx) in outcomes.iter().zip(batch) {
                let hit = outcome.predicted == Some(train.sample(idx).1);
                prequential_correct += u64::from(hit);
                window_hits += usize::from(hit);
                window_seen += 1;
                if window_seen == window {
                    prequential_curve.push(window_hits as f64 / window as f64);
                    (window_hits, window_seen) = (0, 0);
                }
            }
            let learned = outcomes.iter().filter(|o| !o.refused).count();
            if let Some(average) = average.as_mut() {
                // Counted per sample; with mini-batches the average sees the weights after
                // the batch that crossed the count.
                if (0..learned).fold(false, |due, _| average.observe() || due) {
                    trainer.settle();
                    average.update(trainer.model())?;
                }
            }
            let sleep_due = outcomes.last().is_some_and(|o| o.sleep_due);
            let sleep_by_time = sleep_interval.is_some_and(|every| {
                trainer.wake_samples_since_sleep() > 0 && last_sleep.elapsed() >= every
            });
            if sleep_due || sleep_by_time {
                trainer.sleep();
                sleeps += 1;
                last_sleep = Instant::now();
            }
            let (before, after) = (step * chunk, step * chunk + batch.len());
            if before / 256 != after / 256 {
                bar.set_position(((epoch - 1) * train.len() + after) as u64);
            }
        }
        // An epoch ends asleep: the wake samples since the last sleep are slept on before the
        // evaluation (a no-op when the cycle divides the epoch).
        if sleep_mode && trainer.wake_samples_since_sleep() > 0 {
            trainer.sleep();
            sleeps += 1;
            last_sleep = Instant::now();
        }
        let epoch_seconds = started.elapsed().as_secs_f64();
        train_seconds += epoch_seconds;
        bar.set_position((epoch * train.len()) as u64);
        let stats = trainer.take_stats();
        let loss: f64 = stats.layers.iter().map(|l| l.loss()).sum();
        let goodness: Vec<String> = stats
            .layers
            .iter()
            .map(|l| format!("{:.0}/{:.0}", l.positive_goodness(), l.negative_goodness()))
            .collect();
        trainer.settle();
        let evaluated = average
            .as_ref()
            .map_or(trainer.model(), WeightAverage::model);
        let eval = evaluate(evaluated, test, classifier, args.threads);
        last_error = eval.error_rate();
        let rate = train.len() as f64 / epoch_seconds;
        bar.suspend(|| {
            eprintln!(
                "epoch {epoch}: train loss {loss:.4}, test error {:.2}% ({}/{}), {rate:.0} samples/s, goodness +/- {}",
                100.0 * last_error,
                eval.errors,
                eval.total,
                goodness.join(" ")
            )
        });
        curve.push(json!({"epoch": epoch, "train_loss": loss, "test_error": last_error, "samples_per_second": rate}));
    }
    bar.finish_and_clear();
    trainer.settle();
    let (evaluated, saved_kind) = match average {
        Some(average) => (average.model().clone(), "average"),
        None => (trainer.into_model(), "live"),
    };
    if let Some(path) = &args.save {
        crate::store::model_file::save_model(path, &evaluated, Some(&train_cfg))
            .with_context(|| format!("saving the model to {}", path.display()))?;
        eprintln!("saved the {saved_kind} model to {}", path.display());
    }
    let summary = json!({
        "test_error": last_error,
        "test_accuracy": 1.0 - last_error,
        "epochs": args.epochs,
        "hidden": net.hidden,
        "schedule": train_cfg.schedule,
        "sleep_every_samples": sleep_mode.then_some(train_cfg.sleep_every_samples),
        "sleep_every_seconds": sleep_interval.map(|d| d.as_secs_f64()),
        "sleep_method": sleep_mode.then_some(train_cfg.sleep_method),
        "sleeps": sleeps,
        "negatives": train_cfg.negatives,
        "augment_shift": args.augment_shift,
        "classifier": classifier,
        "layer_collaboration": train_cfg.layer_collaboration,
        "lr": widen(train_cfg.optimiser.lr),
        "momentum": widen(train_cfg.optimiser.momentum),
        "average_decay": widen(args.average.average_decay),
        "saved": args.save.as_ref().map(|_| saved_kind),
        "train_samples": train.len(),
        "test_samples": test.len(),
        "train_seconds": train_seconds,
        "samples_per_second": (train.len() * args.epochs) as f64 / train_seconds,
        "seed": args.seed,
        "prequential_accuracy": args
            .prequential
            .then(|| prequential_correct as f64 / (train.len() * args.epochs) as f64),
        "prequential_curve": args.prequential.then_some(prequential_curve),
        "curve": curve,
    });
    Ok((evaluated, summary))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::Cli;
    use crate::data::idx::load_mnist;
    use crate::service::Config;
    use crate::store::model_file::load_model;

    fn mnist_small() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/data/mnist-small"
        ))
    }

    fn parse(extra: &[&str]) -> TrainArgs {
        let mnist = mnist_small();
        let mut argv = vec![
            "ffd",
            "train",
            "--mnist",
            mnist.to_str().expect("UTF-8 path"),
        ];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            crate::cli::Command::Train(args) => args,
            other => panic!("not train: {other:?}"),
        }
    }

    /// The keys of each engine section as `ffd serve`'s configuration prints them.
    fn engine_sections() -> BTreeMap<&'static str, Vec<String>> {
        let keys = |value: toml::Value| -> Vec<String> {
            value.as_table().expect("a table").keys().cloned().collect()
        };
        let config = toml::Value::try_from(Config::default()).expect("serialises");
        ["network", "train", "average"]
            .into_iter()
            .map(|s| (s, keys(config[s].clone())))
            .collect()
    }

    /// One vocabulary: each engine key of `ffd serve`'s configuration is a flag of `ffd train`
    /// with the same name (`_` → `-`), each engine struct's field is a key of its section, and
    /// no key name appears in two sections (so dropping the section cannot make two flags).
    #[test]
    fn every_engine_key_is_a_flag_and_a_key() {
        let cmd = Cli::command();
        let train = cmd
            .get_subcommands()
            .find(|c| c.get_name() == "train")
            .expect("a train subcommand");
        let flags: Vec<&str> = train.get_arguments().filter_map(|a| a.get_long()).collect();
        let sections = engine_sections();
        // Taken from the data set by `ffd train`.
        let from_data = ["inputs", "classes"];
        for (section, keys) in &sections {
            for key in keys {
                if from_data.contains(&key.as_str()) {
                    continue;
                }
                let flag = key.replace('_', "-");
                assert!(
                    flags.contains(&flag.as_str()),
                    "[{section}] {key}: no --{flag}"
                );
            }
        }
        // Every field of the engine structs is a key (nothing is skipped when printing).
        let fields = |v: toml::Value| v.as_table().map_or(0, |t| t.len());
        assert_eq!(
            sections["network"].len(),
            fields(toml::Value::try_from(NetworkConfig::default()).expect("ser"))
        );
        assert_eq!(
            sections["train"].len(),
            fields(toml::Value::try_from(TrainConfig::default()).expect("ser"))
        );
        assert_eq!(
            sections["average"].len(),
            fields(toml::Value::try_from(AverageConfig::default()).expect("ser"))
        );

        let config = toml::Value::try_from(Config::default()).expect("serialises");
        let mut seen: BTreeMap<String, String> = BTreeMap::new();
        for (section, value) in config.as_table().expect("a table") {
            let Some(table) = value.as_table() else {
                continue;
            };
            for key in table.keys() {
                if let Some(other) = seen.insert(key.clone(), section.clone()) {
                    panic!("`{key}` is a key of both [{other}] and [{section}]");
                }
            }
        }
    }

    /// The header names settings the way the command line does.
    #[test]
    fn header_uses_flag_values() {
        assert_eq!(flag_value(ScheduleMode::Sleep), "sleep");
        assert_eq!(flag_value(crate::ff::NegativeStrategy::Hybrid), "hybrid");
        assert_eq!(flag_value(crate::ff::Classifier::Softmax), "softmax");
    }

    /// A flag sets its key, and each flag's default is the engine struct's default.
    #[test]
    fn flags_set_the_engine_structs() {
        let args = parse(&[]);
        assert_eq!(args.network, NetworkConfig::default());
        assert_eq!(args.train, TrainConfig::default());
        assert_eq!(args.average, AverageConfig::default());
        let args = parse(&[
            "--hidden",
            "7,9",
            "--schedule",
            "sleep",
            "--sleep-every-samples",
            "8",
            "--replay-capacity",
            "64",
            "--negatives",
            "random",
            "--lr",
            "0.001",
            "--average-decay",
            "0.9",
            "--average-every-samples",
            "10",
            "--label-placement",
            "overwrite",
        ]);
        assert_eq!(args.network.hidden, vec![7, 9]);
        assert_eq!(args.train.schedule, ScheduleMode::Sleep);
        assert_eq!(args.train.sleep_every_samples, 8);
        assert_eq!(args.train.replay_capacity, 64);
        assert_eq!(args.train.negatives, crate::ff::NegativeStrategy::Random);
        assert_eq!(args.train.optimiser.lr, 0.001);
        assert_eq!(args.average.average_decay, 0.9);
        assert_eq!(args.average.average_every_samples, 10);
        assert_eq!(
            args.network.label_placement,
            crate::ff::LabelPlacement::Overwrite
        );
    }

    /// `--save` with averaging writes the model that was evaluated: the loaded file predicts
    /// exactly what the evaluated average predicts (and not what the live weights predict).
    #[test]
    fn save_writes_the_evaluated_average() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("avg.safetensors");
        let mut args = parse(&[
            "--train-limit",
            "400",
            "--test-limit",
            "200",
            "--hidden",
            "64,64",
            "--average-decay",
            "0.9",
            "--average-every-samples",
            "20",
            "--threads",
            "1",
        ]);
        args.save = Some(path.clone());
        let (evaluated, summary) = train(&args).expect("trains");
        assert_eq!(summary["saved"], "average");
        let loaded = load_model(&path).expect("loads").model;
        assert_eq!(loaded, evaluated);

        let test = load_mnist(&mnist_small()).expect("data").test;
        let classifier = args.train.classifier;
        let mut differs_from_live = false;
        let live = {
            let mut live_args = args.clone();
            live_args.average.average_decay = 0.0;
            live_args.save = Some(dir.path().join("live.safetensors"));
            let (live, summary) = train(&live_args).expect("trains");
            assert_eq!(summary["saved"], "live");
            live
        };
        for i in 0..200 {
            let (x, _) = test.sample(i);
            let a = loaded.classify(x, classifier).expect("valid");
            let b = evaluated.classify(x, classifier).expect("valid");
            assert_eq!(a, b, "sample {i}");
            differs_from_live |= live.classify(x, classifier).expect("valid") != a;
        }
        assert!(
            differs_from_live,
            "the average predicts differently from the live weights"
        );
        let mut first = test.clone();
        first.truncate(200);
        let error = crate::eval::evaluate(&loaded, &first, classifier, 1).error_rate();
        assert_eq!(summary["test_error"], error);
    }

    /// `--augment-shift` learns shifted images: the model differs from an unshifted run of the
    /// same seed, the same flag gives the same model twice, and a shift as wide as the image is
    /// refused naming the flag.
    #[test]
    fn augment_shift_changes_what_is_learned_and_refuses_too_wide_a_shift() {
        let base = [
            "--train-limit",
            "300",
            "--test-limit",
            "100",
            "--hidden",
            "32,32",
            "--threads",
            "1",
        ];
        let run = |shift: &str| {
            let mut argv = base.to_vec();
            argv.extend_from_slice(&["--augment-shift", shift]);
            train(&parse(&argv))
        };
        let (plain, plain_summary) = run("0").expect("trains");
        let (shifted, summary) = run("2").expect("trains");
        let (again, _) = run("2").expect("trains");
        assert_eq!(plain_summary["augment_shift"], 0);
        assert_eq!(summary["augment_shift"], 2);
        assert_ne!(plain, shifted, "shifted images teach other weights");
        assert_eq!(shifted, again, "the shifts are drawn from the seed");
        let error = run("28").expect_err("28 pixels leave nothing of a 28x28 image");
        assert!(
            format!("{error:#}").contains("--augment-shift"),
            "{error:#}"
        );
    }
}
