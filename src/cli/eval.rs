//! `ffd eval`: how trustworthy a saved model's probabilities are on the MNIST test set —
//! accuracy, expected calibration error, NLL and Brier score at the model's own temperature, at
//! `T = 1` (the raw softmax of the scores) and at the best single temperature for this very test
//! set (an after-the-fact bound no online fit can beat by construction) — and, on request, a
//! reliability diagram as PNG. The last line on stdout is a JSON summary.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use plotters::prelude::*;
use serde_json::json;

use crate::data::idx::load_mnist;
use crate::eval::{calibration_report, predict_all, CalibrationReport};
use crate::ff::calibration::best_temperature;
use crate::store::model_file::load_model;

/// Confidence bins of the expected calibration error and of the diagram.
const BINS: usize = 10;

/// Arguments of `ffd eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// A model file written by `ffd train --save` (or a served model saved the same way).
    #[arg(long)]
    pub model: PathBuf,
    /// Directory with the four MNIST IDX files (gzipped or raw); only the test set is read.
    #[arg(long)]
    pub mnist: PathBuf,
    /// Use only the first N test samples.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// Evaluation threads.
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Write a reliability diagram here (PNG, 640×640): per confidence bin, the accuracy (blue
    /// bar) against the mean confidence (red outline) and the diagonal of perfect calibration;
    /// below, the share of predictions in each bin.
    #[arg(long)]
    pub reliability_png: Option<PathBuf>,
}

/// Runs `ffd eval`.
pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let summary = eval(&args)?;
    println!("{summary}");
    Ok(())
}

fn line(name: &str, r: &CalibrationReport) -> String {
    format!(
        "{name:<24} T = {:>7.3}  accuracy {:.4}  mean confidence {:.4}  ECE {:.4}  NLL {:.4}  Brier {:.4}",
        r.temperature, r.accuracy, r.mean_confidence, r.ece, r.nll, r.brier
    )
}

fn eval(args: &EvalArgs) -> anyhow::Result<serde_json::Value> {
    let loaded = load_model(&args.model)?;
    let mut mnist = load_mnist(&args.mnist)?;
    if let Some(n) = args.test_limit {
        mnist.test.truncate(n);
    }
    let test = &mnist.test;
    anyhow::ensure!(!test.is_empty(), "the test set is empty");
    anyhow::ensure!(
        test.dim == loaded.model.config().inputs,
        "the model takes {} features, the data set has {}",
        loaded.model.config().inputs,
        test.dim
    );
    let classifier = loaded
        .train
        .as_ref()
        .map(|t| t.classifier)
        .unwrap_or_default();
    let predictions = predict_all(&loaded.model, test, classifier, args.threads);
    let model_t = f64::from(loaded.model.calibration().temperature);
    let served = calibration_report(&predictions, model_t, BINS);
    let raw = calibration_report(&predictions, 1.0, BINS);
    let (best_t, _) = best_temperature(predictions.iter(), 0.01, 10_000.0, 1200);
    let best = calibration_report(&predictions, best_t, BINS);
    eprintln!(
        "ffd eval: {} test samples, classifier {classifier:?}",
        test.len()
    );
    eprintln!("{}", line("model's temperature", &served));
    eprintln!("{}", line("T = 1 (raw softmax)", &raw));
    eprintln!("{}", line("best T for this test set", &best));
    if let Some(path) = &args.reliability_png {
        draw_reliability(path, &served)
            .with_context(|| format!("writing the reliability diagram {}", path.display()))?;
        eprintln!("wrote the reliability diagram to {}", path.display());
    }
    Ok(json!({
        "model": served,
        "raw": raw,
        "best_temperature": best,
        "classifier": classifier,
    }))
}

/// Draws `report`'s reliability diagram. No text: the bitmap backend is built without fonts,
/// and the axes are fixed (confidence 0–1 across, accuracy 0–1 up, gridlines every 0.1).
fn draw_reliability(path: &Path, report: &CalibrationReport) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (640, 640)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(500);
    let grid = RGBColor(220, 220, 220);
    let mut chart = ChartBuilder::on(&top)
        .margin(20)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    for i in 0..=10 {
        let v = f64::from(i) / 10.0;
        chart.draw_series(std::iter::once(PathElement::new(
            [(v, 0.0), (v, 1.0)],
            grid,
        )))?;
        chart.draw_series(std::iter::once(PathElement::new(
            [(0.0, v), (1.0, v)],
            grid,
        )))?;
    }
    let bars = report.bins.iter().filter(|b| b.count > 0);
    chart.draw_series(bars.clone().map(|b| {
        Rectangle::new(
            [(b.lower, 0.0), (b.upper, b.accuracy)],
            BLUE.mix(0.6).filled(),
        )
    }))?;
    chart.draw_series(bars.map(|b| {
        Rectangle::new(
            [(b.lower, 0.0), (b.upper, b.confidence)],
            RED.stroke_width(2),
        )
    }))?;
    chart.draw_series(std::iter::once(PathElement::new(
        [(0.0, 0.0), (1.0, 1.0)],
        BLACK.stroke_width(2),
    )))?;
    let mut counts = ChartBuilder::on(&bottom)
        .margin(20)
        .build_cartesian_2d(0f64..1f64, 0f64..1f64)?;
    let n = report.samples.max(1) as f64;
    counts.draw_series(report.bins.iter().map(|b| {
        Rectangle::new(
            [(b.lower, 0.0), (b.upper, b.count as f64 / n)],
            BLACK.mix(0.5).filled(),
        )
    }))?;
    counts.draw_series(std::iter::once(PathElement::new(
        [(0.0, 0.0), (1.0, 0.0)],
        BLACK,
    )))?;
    root.present()?;
    Ok(())
}
