//! Reading one metric out of a Prometheus text exposition (format 0.0.4): enough for a client that
//! compares counters before and after a run, not a general parser.

/// The sum of every sample of the metric `name` in `text`, whatever its labels; `None` when no
/// sample of that name parses.
///
/// A sample line is `name[{labels}] value [timestamp]`; label values may hold spaces, braces and
/// escaped quotes. Comment lines (`# HELP`, `# TYPE`) and other metrics, including those whose
/// name merely starts with `name` (`name_bucket`, `name_created`), are skipped.
pub fn metric_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum: Option<f64> = None;
    for line in text.lines() {
        if let Some(value) = sample_value(line.trim_start(), name) {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// The value of `line` if it is a sample of the metric `name`.
fn sample_value(line: &str, name: &str) -> Option<f64> {
    let rest = line.strip_prefix(name)?;
    let rest = match rest.chars().next()? {
        '{' => after_labels(rest)?,
        ' ' | '\t' => rest,
        _ => return None,
    };
    rest.split_whitespace().next()?.parse().ok()
}

/// What follows the label set at the start of `s` (which begins with `{`), skipping quoted
/// values so that a `}` inside one does not end the set. `None` if the set is not closed.
fn after_labels(s: &str) -> Option<&str> {
    let mut in_quotes = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if in_quotes => escaped = true,
            '"' => in_quotes = !in_quotes,
            '}' if !in_quotes => return Some(&s[i + 1..]),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP ffd_prequential_predictions_total Labelled samples classified before learning.
# TYPE ffd_prequential_predictions_total counter
ffd_prequential_predictions_total 60000
# HELP ffd_prequential_correct_total Prequential predictions that were right.
# TYPE ffd_prequential_correct_total counter
ffd_prequential_correct_total 5.5e4
ffd_prequential_correct_total_created 1.7e9
ffd_prequential_accuracy 0.93
# TYPE ffd_samples_learned_total counter
ffd_samples_learned_total{phase="wake"} 1200 1700000000000
ffd_samples_learned_total{phase="sleep"} 300
ffd_http_requests_total{route="/learn",status="202"} 7
ffd_http_requests_total{route="/odd } \" route",status="429"} 2
ffd_http_requests_total{route="/classify",status="200"}	5
"#;

    #[test]
    fn reads_an_unlabelled_counter() {
        assert_eq!(
            metric_sum(SCRAPE, "ffd_prequential_predictions_total"),
            Some(60000.0)
        );
        // Scientific notation, and a longer name with the same prefix is not counted.
        assert_eq!(
            metric_sum(SCRAPE, "ffd_prequential_correct_total"),
            Some(55000.0)
        );
    }

    #[test]
    fn sums_labelled_series_and_ignores_timestamps() {
        assert_eq!(
            metric_sum(SCRAPE, "ffd_samples_learned_total"),
            Some(1500.0)
        );
        // Quoted `}` and escaped quotes in a label value; a tab before the value.
        assert_eq!(metric_sum(SCRAPE, "ffd_http_requests_total"), Some(14.0));
    }

    #[test]
    fn missing_or_partial_names_give_none() {
        assert_eq!(metric_sum(SCRAPE, "ffd_sleep_cycles_total"), None);
        assert_eq!(metric_sum(SCRAPE, "ffd_prequential"), None);
        assert_eq!(metric_sum(SCRAPE, "ffd_prequential_correct"), None);
        assert_eq!(metric_sum("", "ffd_model_version"), None);
        // HELP and TYPE lines mention the name but are not samples.
        assert_eq!(
            metric_sum(
                "# TYPE ffd_model_version gauge\n# HELP ffd_model_version x 3\n",
                "ffd_model_version"
            ),
            None
        );
    }

    #[test]
    fn malformed_samples_are_skipped() {
        let text = "m{a=\"unclosed} 1\nm\nm notanumber\nm 2\nm{a=\"b\"} +Inf\n";
        assert_eq!(metric_sum(text, "m"), Some(f64::INFINITY));
        assert_eq!(metric_sum("m{} 3\nm 4\n", "m"), Some(7.0));
    }
}
