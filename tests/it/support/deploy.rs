//! Helpers of the `deploy_*` tests: reading the files under `deploy/` and the `Dockerfile`,
//! finding the metric names and labels a PromQL expression refers to, and checking them against
//! a live `/metrics` scrape.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

/// A path inside the repository.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(relative)
}

/// Every YAML document of a repository file, as JSON values (YAML's data model, for the files
/// used here: string keys, scalars, lists).
pub fn yaml_docs(relative: &str) -> Vec<Value> {
    let path = repo_path(relative);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| {
            Value::deserialize(doc).unwrap_or_else(|e| panic!("{relative} is not valid YAML: {e}"))
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

/// The single YAML document of a repository file.
pub fn yaml(relative: &str) -> Value {
    let mut docs = yaml_docs(relative);
    assert_eq!(docs.len(), 1, "{relative}: expected one YAML document");
    docs.remove(0)
}

/// A JSON repository file.
pub fn json(relative: &str) -> Value {
    let path = repo_path(relative);
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{relative} is not valid JSON: {e}"))
}

/// `value[key]` as a string, failing with the path when absent.
pub fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value
        .pointer(pointer)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("no string at {pointer} in {value}"))
}

/// Resolves Compose's variable syntax the way `docker compose` does when the variables are not
/// set: `${NAME:-default}` and `${NAME-default}` become the default, `$$` becomes `$`. A
/// variable without a default would be empty, which these files never rely on: it fails.
pub fn compose_default(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('{') {
            let end = body
                .find('}')
                .unwrap_or_else(|| panic!("unclosed ${{ in {text}"));
            let inner = &body[..end];
            let default = inner
                .split_once(":-")
                .or_else(|| inner.split_once('-'))
                .map(|(_, default)| default)
                .unwrap_or_else(|| panic!("`{text}`: ${{{inner}}} has no default"));
            out.push_str(default);
            rest = &body[end + 1..];
        } else {
            panic!("`{text}`: bare $ (write $$ for a literal $)");
        }
    }
    out.push_str(rest);
    out
}

/// What the runtime stage of the `Dockerfile` declares.
#[derive(Debug, Default)]
pub struct Dockerfile {
    /// `ENV` variables, in order.
    pub env: Vec<(String, String)>,
    /// `EXPOSE`d ports.
    pub expose: Vec<u16>,
    /// `USER uid:gid`, numeric.
    pub user: Option<(u32, u32)>,
    /// `VOLUME` paths.
    pub volumes: Vec<String>,
}

impl Dockerfile {
    /// Reads the last stage (the image that runs) of the repository's `Dockerfile`.
    pub fn read() -> Self {
        let text = std::fs::read_to_string(repo_path("Dockerfile")).expect("read Dockerfile");
        // Continuation lines joined, comments dropped.
        let joined = text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n")
            .replace("\\\n", " ");
        let last_stage = joined
            .rsplit_once("\nFROM ")
            .map(|(_, stage)| stage)
            .expect("a FROM line");
        let mut file = Dockerfile::default();
        for line in last_stage.lines().map(str::trim) {
            let (instruction, args) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let args = args.trim();
            match instruction {
                "ENV" => {
                    for pair in args.split_whitespace() {
                        let (k, v) = pair
                            .split_once('=')
                            .unwrap_or_else(|| panic!("ENV {pair}: use KEY=VALUE"));
                        file.env
                            .push((k.to_owned(), v.trim_matches('"').to_owned()));
                    }
                }
                "EXPOSE" => file.expose.extend(args.split_whitespace().map(|p| {
                    p.trim_end_matches("/tcp")
                        .parse::<u16>()
                        .unwrap_or_else(|e| panic!("EXPOSE {p}: {e}"))
                })),
                "USER" => {
                    let (uid, gid) = args
                        .split_once(':')
                        .unwrap_or_else(|| panic!("USER {args}: expected numeric uid:gid"));
                    file.user = Some((
                        uid.parse().expect("numeric uid"),
                        gid.parse().expect("numeric gid"),
                    ));
                }
                "VOLUME" => {
                    let paths: Vec<String> = serde_json::from_str(args)
                        .unwrap_or_else(|e| panic!("VOLUME {args}: use the JSON form ({e})"));
                    file.volumes.extend(paths);
                }
                _ => {}
            }
        }
        file
    }

    /// The value of `ENV name`, if set.
    pub fn env(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The configuration `ffd serve` runs with in the container: the one the image loads
/// (`config/default.toml`, which the Dockerfile copies to `/etc/ffd/ffd.toml`) with the image's
/// `FFD_*` variables and then `overrides` (a manifest's environment) applied, exactly as the
/// service loads it. Bearer-token variables are left out: they are credentials, not settings.
/// A variable that is not a configuration key fails here as it would fail the container's
/// start.
pub fn container_config(overrides: &[(String, String)]) -> ffd::service::Config {
    let image = Dockerfile::read();
    let env: Vec<(String, String)> = image
        .env
        .iter()
        .chain(overrides)
        .filter(|(k, _)| k.starts_with("FFD_") && !k.contains("TOKEN"))
        .cloned()
        .collect();
    ffd::service::Config::load(Some(Path::new(&repo_path("config/default.toml"))), env)
        .unwrap_or_else(|e| panic!("the container's configuration does not load: {e}"))
}

/// The port `ffd serve` listens on in the container (see [`container_config`]).
pub fn container_listen_port(overrides: &[(String, String)]) -> u16 {
    container_config(overrides).listen.port()
}

/// A metric selector found in a PromQL expression: the metric name and its label matchers
/// `(label, operator, value)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    pub matchers: Vec<(String, String, String)>,
}

/// The metrics and labels a PromQL expression refers to.
#[derive(Debug, Default, Clone)]
pub struct QueryRefs {
    pub selectors: Vec<Selector>,
    /// Labels of `by`, `without`, `on`, `ignoring`, `group_left` and `group_right` clauses.
    pub grouping_labels: Vec<String>,
}

/// Aggregation operators, keywords and literals: identifiers that are never metric names.
const PROMQL_WORDS: [&str; 28] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// Clauses followed by a parenthesised list of label names.
const LABEL_LIST_WORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

fn is_ident_start(c: char) -> bool {
    c.is_ascii_alphabetic() || c == '_' || c == ':'
}

fn is_ident_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// Reads a quoted string starting at `chars[*i]` (`"`, `'` or `` ` ``), returns its content.
fn read_string(chars: &[char], i: &mut usize) -> String {
    let quote = chars[*i];
    *i += 1;
    let mut out = String::new();
    while *i < chars.len() && chars[*i] != quote {
        if chars[*i] == '\\' && quote != '`' && *i + 1 < chars.len() {
            *i += 1;
        }
        out.push(chars[*i]);
        *i += 1;
    }
    *i += 1;
    out
}

fn skip_space(chars: &[char], i: &mut usize) {
    while *i < chars.len() && chars[*i].is_whitespace() {
        *i += 1;
    }
}

fn read_ident(chars: &[char], i: &mut usize) -> String {
    let start = *i;
    while *i < chars.len() && is_ident_char(chars[*i]) {
        *i += 1;
    }
    chars[start..*i].iter().collect()
}

/// Reads `{label op "value", ...}` starting at `chars[*i] == '{'`.
fn read_matchers(chars: &[char], i: &mut usize) -> Vec<(String, String, String)> {
    *i += 1;
    let mut matchers = Vec::new();
    loop {
        skip_space(chars, i);
        match chars.get(*i) {
            None => panic!("unclosed label matcher"),
            Some('}') => {
                *i += 1;
                return matchers;
            }
            Some(',') => *i += 1,
            Some(_) => {
                let label = read_ident(chars, i);
                assert!(!label.is_empty(), "label name expected at {}", *i);
                skip_space(chars, i);
                let mut op = String::new();
                while let Some(&c) = chars.get(*i) {
                    if "=!~".contains(c) {
                        op.push(c);
                        *i += 1;
                    } else {
                        break;
                    }
                }
                skip_space(chars, i);
                let value = read_string(chars, i);
                matchers.push((label, op, value));
            }
        }
    }
}

/// Finds every metric selector and grouping label of a PromQL expression. Grafana variables
/// (`$name`, `${name}`) are skipped.
pub fn promql_refs(expr: &str) -> QueryRefs {
    let chars: Vec<char> = expr.chars().collect();
    let mut refs = QueryRefs::default();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '"' || c == '\'' || c == '`' {
            read_string(&chars, &mut i);
        } else if c == '[' {
            // A range or subquery: durations only.
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            i += 1;
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                read_ident(&chars, &mut i);
            }
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            // A number or a duration (`5m`, `1e3`).
            while i < chars.len() && (is_ident_char(chars[i]) || chars[i] == '.') {
                i += 1;
            }
        } else if c == '{' {
            let matchers = read_matchers(&chars, &mut i);
            let metric = matchers
                .iter()
                .find(|(l, op, _)| l == "__name__" && op == "=")
                .map(|(_, _, v)| v.clone())
                .unwrap_or_default();
            refs.selectors.push(Selector { metric, matchers });
        } else if is_ident_start(c) {
            let word = read_ident(&chars, &mut i);
            let mut next = i;
            skip_space(&chars, &mut next);
            let before_paren = chars.get(next) == Some(&'(');
            if LABEL_LIST_WORDS.contains(&word.as_str()) {
                if before_paren {
                    let close = chars[next..]
                        .iter()
                        .position(|&c| c == ')')
                        .map(|p| next + p)
                        .unwrap_or_else(|| panic!("unclosed {word}( in {expr}"));
                    let list: String = chars[next + 1..close].iter().collect();
                    refs.grouping_labels.extend(
                        list.split(',')
                            .map(str::trim)
                            .filter(|l| !l.is_empty())
                            .map(str::to_owned),
                    );
                    i = close + 1;
                }
            } else if before_paren || PROMQL_WORDS.contains(&word.as_str()) {
                // A function call or a keyword.
            } else {
                let matchers = if chars.get(next) == Some(&'{') {
                    i = next;
                    read_matchers(&chars, &mut i)
                } else {
                    Vec::new()
                };
                refs.selectors.push(Selector {
                    metric: word,
                    matchers,
                });
            }
        } else {
            i += 1;
        }
    }
    refs
}

/// A parsed Prometheus text exposition: metric family types and every sample's name and labels.
#[derive(Debug, Default)]
pub struct Scrape {
    /// `# TYPE name type`.
    pub types: BTreeMap<String, String>,
    /// Sample name → the label sets of its series.
    pub series: BTreeMap<String, Vec<BTreeMap<String, String>>>,
}

impl Scrape {
    /// Parses the text format (as `ffd` writes it: one sample per line, quoted label values).
    pub fn parse(text: &str) -> Self {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                if let Some((name, kind)) = rest.split_once(' ') {
                    scrape.types.insert(name.to_owned(), kind.trim().to_owned());
                }
                continue;
            }
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let chars: Vec<char> = line.chars().collect();
            let mut i = 0;
            let name = read_ident(&chars, &mut i);
            let labels = if chars.get(i) == Some(&'{') {
                read_matchers(&chars, &mut i)
                    .into_iter()
                    .map(|(l, _, v)| (l, v))
                    .collect()
            } else {
                BTreeMap::new()
            };
            scrape.series.entry(name).or_default().push(labels);
        }
        scrape
    }

    /// The family a sample name belongs to: itself, or a histogram or summary whose `_bucket`,
    /// `_sum` or `_count` series it is.
    pub fn family_of(&self, sample: &str) -> Option<&str> {
        if let Some((name, _)) = self.types.get_key_value(sample) {
            return Some(name);
        }
        ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
            let base = sample.strip_suffix(suffix)?;
            let (name, kind) = self.types.get_key_value(base)?;
            let fits = kind == "histogram" || (kind == "summary" && *suffix != "_bucket");
            fits.then_some(name.as_str())
        })
    }

    /// Whether a series of `sample` has `label` (and, if given, that value).
    fn has_label(&self, sample: &str, label: &str, value: Option<&str>) -> bool {
        self.series.get(sample).is_some_and(|sets| {
            sets.iter().any(|labels| match (labels.get(label), value) {
                (Some(v), Some(want)) => v == want,
                (Some(_), None) => true,
                (None, _) => false,
            })
        })
    }
}

/// Labels Prometheus attaches to every series it scrapes (the target's), absent from `/metrics`.
pub const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// Every problem with the metric references of `expr` against `scrape`: a metric that the
/// server does not expose (a histogram's `_bucket`/`_sum`/`_count` series count as exposed only
/// when the family is a histogram), a label it does not have, a label value it never takes.
/// `synthetic` names series that Prometheus itself makes (`up`).
pub fn check_query(expr: &str, scrape: &Scrape, synthetic: &[&str]) -> Vec<String> {
    let refs = promql_refs(expr);
    let mut problems = Vec::new();
    if refs.selectors.is_empty() {
        problems.push(format!("`{expr}` refers to no metric"));
    }
    let mut labels_in_expr: BTreeSet<String> =
        TARGET_LABELS.iter().map(|l| (*l).to_owned()).collect();
    for selector in &refs.selectors {
        let metric = selector.metric.as_str();
        if synthetic.contains(&metric) {
            continue;
        }
        if metric.is_empty() {
            problems.push(format!("`{expr}`: a selector without a metric name"));
            continue;
        }
        if !scrape.series.contains_key(metric) || scrape.family_of(metric).is_none() {
            problems.push(format!(
                "`{expr}`: {metric} is not in the live /metrics scrape"
            ));
            continue;
        }
        if let Some(sets) = scrape.series.get(metric) {
            labels_in_expr.extend(sets.iter().flat_map(|labels| labels.keys().cloned()));
        }
        for (label, op, value) in &selector.matchers {
            if TARGET_LABELS.contains(&label.as_str()) {
                continue;
            }
            let plain_alternatives = value
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_/-|".contains(c));
            let wanted: Vec<Option<&str>> = match op.as_str() {
                "=" if !value.is_empty() => vec![Some(value.as_str())],
                "=~" if plain_alternatives => value.split('|').map(Some).collect(),
                _ => vec![None],
            };
            for want in wanted {
                if !scrape.has_label(metric, label, want) {
                    problems.push(format!(
                        "`{expr}`: no series {metric}{{{label}{}}} in the live scrape",
                        want.map(|w| format!("=\"{w}\"")).unwrap_or_default()
                    ));
                }
            }
        }
    }
    for label in &refs.grouping_labels {
        if !labels_in_expr.contains(label) {
            problems.push(format!(
                "`{expr}`: grouping label `{label}` is not a label of its metrics"
            ));
        }
    }
    problems
}

/// The PromQL of every target of every panel of a Grafana dashboard (panels nested in rows
/// included), with the panel's title.
pub fn dashboard_queries(dashboard: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for panel in panels.as_array().into_iter().flatten() {
            let title = panel["title"].as_str().unwrap_or("(untitled)").to_owned();
            for target in panel["targets"].as_array().into_iter().flatten() {
                if let Some(expr) = target["expr"].as_str() {
                    out.push((title.clone(), expr.to_owned()));
                }
            }
            walk(&panel["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    for annotation in dashboard["annotations"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(expr) = annotation["expr"].as_str() {
            let name = annotation["name"].as_str().unwrap_or("(unnamed)");
            out.push((format!("annotation {name}"), expr.to_owned()));
        }
    }
    out
}

/// The `environment` of a compose service (map form) as `(name, value)` pairs, defaults
/// resolved.
pub fn compose_env(service: &Value) -> Vec<(String, String)> {
    service["environment"]
        .as_object()
        .map(|env| {
            env.iter()
                .map(|(k, v)| {
                    let value = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k.clone(), compose_default(&value))
                })
                .collect()
        })
        .unwrap_or_default()
}
