//! The monitoring manifests in `deploy/monitoring/` held to promtool, to the metric
//! names this crate exports, and to their runbook, `docs/operations/monitoring.md`.
//!
//! Needs `promtool` (Debian's `prometheus` package; `PROMTOOL` names another
//! binary): without it the promtool tests fail, they do not skip.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use fleetforge_obs::metrics::ALL;
use serde_yaml_ng::Value;

/// The scrape job the operator's rules and dashboard panels select.
const JOB: &str = "fleetforge-operator";
/// The scrape job the player gateway's rules and dashboard panels select.
const GATEWAY_JOB: &str = "fleetforge-gateway";
/// The evaluation and scrape interval the alert timings assume.
const INTERVAL: &str = "15s";
/// Every promtool breach scenario starts at this time (see the tests' header).
const BREACH_AT_SECONDS: u64 = 300;
/// REQ-OBS-003: alerts within 60 s of an SLI breach.
const MAX_TIME_TO_FIRE_SECONDS: u64 = 60;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate lives in the workspace")
        .to_path_buf()
}

fn monitoring() -> PathBuf {
    root().join("deploy/monitoring")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Value {
    serde_yaml_ng::from_str(&read(path)).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn rule_file() -> Value {
    yaml(&monitoring().join("rules/fleetforge.rules.yaml"))
}

fn str_of<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// Every rule of every group of a rule file.
fn rules(file: &Value) -> Vec<&Value> {
    file["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .collect()
}

fn alerts(file: &Value) -> Vec<&Value> {
    rules(file)
        .into_iter()
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn recording_names(file: &Value) -> BTreeSet<String> {
    rules(file)
        .into_iter()
        .filter_map(|r| str_of(r, "record"))
        .map(str::to_owned)
        .collect()
}

fn test_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(monitoring().join("tests"))
        .expect("deploy/monitoring/tests")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no promtool tests in deploy/monitoring/tests");
    files
}

fn dashboards() -> Vec<(String, serde_json::Value)> {
    ["fleetforge-overview.json", "fleetforge-world.json"]
        .iter()
        .map(|name| {
            (
                (*name).to_owned(),
                json(&monitoring().join("dashboards").join(name)),
            )
        })
        .collect()
}

/// Runs promtool in `dir`; fails with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> String {
    let program = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_owned());
    let output = match Command::new(&program).args(args).current_dir(dir).output() {
        Ok(output) => output,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "`{program}` not found: install Debian's `prometheus` package (`apt-get install prometheus`, \
             which ships promtool), or set PROMTOOL to a promtool binary"
        ),
        Err(e) => panic!("running {program}: {e}"),
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool {} failed ({}):\n{text}",
        args.join(" "),
        output.status
    );
    text
}

// ---------------------------------------------------------------------------
// (a) promtool

#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let dir = monitoring();
    promtool(&dir, &["check", "rules", "rules/fleetforge.rules.yaml"]);
    let files: Vec<String> = test_files()
        .iter()
        .map(|p| format!("tests/{}", p.file_name().expect("file name").to_string_lossy()))
        .collect();
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    promtool(&dir, &args);
}

/// Every dashboard query is valid PromQL: each, with Grafana's variables given
/// values, becomes a recording rule of a scratch file for `promtool check rules`.
#[test]
fn promtool_parses_every_dashboard_query() {
    let mut rules = Vec::new();
    for (name, dashboard) in dashboards() {
        for (i, expr) in dashboard_exprs(&dashboard).into_iter().enumerate() {
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__range", "1h")
                .replace("$world", "games/meadow");
            let record = format!(
                "dashboard:{}:{i}",
                name.trim_end_matches(".json").replace('-', "_")
            );
            rules.push(serde_json::json!({ "record": record, "expr": expr }));
        }
    }
    assert!(rules.len() > 20, "dashboards without queries?");
    let file = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
    let dir = tempfile::tempdir().expect("temporary directory");
    std::fs::write(
        dir.path().join("dashboards.yaml"),
        serde_yaml_ng::to_string(&file).expect("yaml"),
    )
    .expect("writing the scratch rule file");
    promtool(dir.path(), &["check", "rules", "dashboards.yaml"]);
}

fn seconds(duration: &str) -> u64 {
    let mut total = 0;
    let mut number = String::new();
    for c in duration.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().unwrap_or_else(|_| panic!("duration {duration:?}"));
        number.clear();
        total += n * match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            _ => panic!("duration {duration:?}"),
        };
    }
    assert!(number.is_empty(), "duration {duration:?} lacks a unit");
    total
}

/// The promtool tests are complete: every alert is seen firing within 60 s of a
/// breach (and quiet just before), and seen never to fire on healthy or noisy
/// series; every recording rule's value is checked.
#[test]
fn every_alert_and_recording_rule_is_unit_tested() {
    let file = rule_file();
    // (alert, test) -> the first time the test sees the alert firing
    let mut fired: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut quiet_before: BTreeSet<(String, String)> = BTreeSet::new();
    let mut never_fires: BTreeSet<String> = BTreeSet::new();
    let mut tested_exprs = Vec::new();
    for path in test_files() {
        let tests = yaml(&path);
        assert_eq!(
            str_of(&tests, "evaluation_interval"),
            Some(INTERVAL),
            "{}: rules must be evaluated every {INTERVAL}, as in production",
            path.display()
        );
        for group in tests["tests"].as_sequence().expect("tests") {
            let test = str_of(group, "name")
                .expect("every test group has a name")
                .to_owned();
            assert_eq!(
                str_of(group, "interval"),
                Some(INTERVAL),
                "{test}: samples every {INTERVAL}"
            );
            let mut firing_here = BTreeSet::new();
            for case in group
                .get("alert_rule_test")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let alert = str_of(case, "alertname").expect("alertname").to_owned();
                let at = seconds(str_of(case, "eval_time").expect("eval_time"));
                if case["exp_alerts"].as_sequence().expect("exp_alerts").is_empty() {
                    if at == BREACH_AT_SECONDS - 15 {
                        quiet_before.insert((alert, test.clone()));
                    }
                } else {
                    let first = fired.entry((alert.clone(), test.clone())).or_insert(at);
                    *first = (*first).min(at);
                    firing_here.insert(alert);
                }
            }
            for case in group
                .get("promql_expr_test")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let expr = str_of(case, "expr").expect("expr").to_owned();
                let no_samples = case["exp_samples"].as_sequence().is_some_and(Vec::is_empty);
                let quiet_alert = expr
                    .strip_prefix("count_over_time(ALERTS{alertname=\"")
                    .and_then(|rest| rest.split_once("\",alertstate=\"firing\"}["))
                    .map(|(alert, _)| alert.to_owned());
                if let Some(alert) = quiet_alert
                    && no_samples
                    && !firing_here.contains(&alert)
                {
                    never_fires.insert(alert);
                }
                tested_exprs.push(expr);
            }
        }
    }
    let mut problems = Vec::new();
    for rule in alerts(&file) {
        let alert = str_of(rule, "alert").expect("alert name").to_owned();
        let breaches: Vec<(&String, &u64)> = fired
            .iter()
            .filter(|((a, _), _)| *a == alert)
            .map(|((_, test), at)| (test, at))
            .collect();
        if breaches.is_empty() {
            problems.push(format!("{alert}: no test sees it fire"));
        }
        for (test, at) in breaches {
            if !(BREACH_AT_SECONDS..=BREACH_AT_SECONDS + MAX_TIME_TO_FIRE_SECONDS).contains(at) {
                problems.push(format!(
                    "{alert}: {test:?} first sees it firing at {at} s, not within \
                     {MAX_TIME_TO_FIRE_SECONDS} s of the breach at {BREACH_AT_SECONDS} s"
                ));
            }
            if !quiet_before.contains(&(alert.clone(), test.clone())) {
                problems.push(format!(
                    "{alert}: {test:?} does not check it is quiet just before the breach ({} s)",
                    BREACH_AT_SECONDS - 15
                ));
            }
        }
        if !never_fires.contains(&alert) {
            problems.push(format!(
                "{alert}: no healthy or noisy test checks it never fires \
                 (count_over_time(ALERTS{{alertname=\"{alert}\",alertstate=\"firing\"}}[..]) with no samples)"
            ));
        }
    }
    for record in recording_names(&file) {
        let used = tested_exprs.iter().any(|e| {
            e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
                .any(|word| word == record)
        });
        if !used {
            problems.push(format!(
                "recording rule {record}: no promql_expr_test checks its value"
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "incomplete promtool tests:\n{}",
        problems.join("\n")
    );
}

// ---------------------------------------------------------------------------
// (b) the PrometheusRule is the rule file

#[test]
fn the_prometheus_rule_carries_exactly_the_rule_file_groups() {
    let rule = yaml(&monitoring().join("prometheus-rule.yaml"));
    assert_eq!(str_of(&rule, "apiVersion"), Some("monitoring.coreos.com/v1"));
    assert_eq!(str_of(&rule, "kind"), Some("PrometheusRule"));
    assert_eq!(str_of(&rule["metadata"], "namespace"), Some("fleetforge-system"));
    assert_eq!(
        rule["spec"]["groups"],
        rule_file()["groups"],
        "deploy/monitoring/prometheus-rule.yaml spec.groups differs from rules/fleetforge.rules.yaml groups: \
         copy the rule file's groups into it"
    );
}

// ---------------------------------------------------------------------------
// (c) only exported metrics, and every exported metric on a dashboard

/// The metric names an expression selects: identifiers outside strings, label
/// matchers, grouping lists and ranges that are not functions, aggregations or
/// keywords. Grafana's `$variables` are skipped.
fn metric_names(expr: &str) -> BTreeSet<String> {
    const KEYWORDS: &[&str] = &[
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "atan2",
        "sum",
        "avg",
        "min",
        "max",
        "count",
        "stddev",
        "stdvar",
        "topk",
        "bottomk",
        "quantile",
        "count_values",
        "group",
        "inf",
        "nan",
    ];
    const GROUPING: &[&str] = &["by", "without", "on", "ignoring", "group_left", "group_right"];
    let chars: Vec<char> = expr.chars().collect();
    let mut names = BTreeSet::new();
    let mut braces = 0usize;
    let mut brackets = 0usize;
    // Set after a grouping keyword: the next parenthesised list holds label names.
    let mut grouping = false;
    let mut in_grouping_list = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    if chars[i] == '\\' && c != '`' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            '{' => {
                braces += 1;
                i += 1;
            }
            '}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            '[' => {
                brackets += 1;
                i += 1;
            }
            ']' => {
                brackets = brackets.saturating_sub(1);
                i += 1;
            }
            '(' => {
                if grouping {
                    in_grouping_list = true;
                    grouping = false;
                }
                i += 1;
            }
            ')' => {
                in_grouping_list = false;
                i += 1;
            }
            '$' => {
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            c if c.is_ascii_digit() || c == '.' => {
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
                {
                    i += 1;
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect();
                let next = chars[i..].iter().find(|c| !c.is_whitespace());
                if braces > 0 || brackets > 0 || in_grouping_list {
                    continue;
                }
                grouping = GROUPING.contains(&word.as_str()) && next == Some(&'(');
                if grouping {
                    continue;
                }
                if KEYWORDS.contains(&word.as_str()) || next == Some(&'(') {
                    continue;
                }
                names.insert(word);
            }
            _ => i += 1,
        }
    }
    names
}

/// Why `name` may not be used, if it may not: it must be `up`, a recording rule
/// of the rule file, a metric in `ALL`, or a histogram of `ALL` with its
/// `_bucket`, `_sum` or `_count` suffix.
fn unknown_metric(name: &str, records: &BTreeSet<String>) -> Option<String> {
    if name == "up" || records.contains(name) || ALL.contains(&name) {
        return None;
    }
    if name.contains(':') {
        return Some(format!(
            "{name} is not a recording rule of rules/fleetforge.rules.yaml"
        ));
    }
    let histogram = ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .any(|base| base.ends_with("_seconds") && ALL.contains(&base));
    if histogram {
        return None;
    }
    Some(format!("{name} is not exported (fleetforge_obs::metrics::ALL)"))
}

/// The exported base name a series name belongs to.
fn base_name(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .filter_map(|suffix| name.strip_suffix(suffix))
        .find(|base| ALL.contains(base))
        .unwrap_or(name)
}

/// Every query of a dashboard: panel targets (rows included) and query variables.
fn dashboard_exprs(dashboard: &serde_json::Value) -> Vec<String> {
    fn panels<'a>(list: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            panels(&p["panels"], out);
        }
    }
    let mut all = Vec::new();
    panels(&dashboard["panels"], &mut all);
    let mut exprs: Vec<String> = all
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .map(str::to_owned)
        .collect();
    for var in dashboard["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let query = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .expect("variable query");
        // label_values(<selector>, <label>): the selector is the query.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|q| q.rsplit_once(','))
            .map_or(query, |(selector, _)| selector);
        exprs.push(inner.to_owned());
    }
    exprs
}

#[test]
fn the_metric_name_extraction_finds_metrics_and_only_metrics() {
    let names = metric_names(
        r#"histogram_quantile(0.95, sum by (le, world) (rate(fleetforge_x_bucket{job="a",le=~"5(\\.0)?"}[$__rate_interval])))
           / on() group_left sum without (pod) (fleetforge:y:ratio offset 1m) or vector(0)
           and max_over_time(sum(fleetforge_z)[$__range:]) > bool 1e3 unless fleetfroge_typo{x="fleetforge_not"}
           * on(world) group_left rate(fleetforge_w[5m])"#,
    );
    let expected: BTreeSet<String> = [
        "fleetforge_x_bucket",
        "fleetforge:y:ratio",
        "fleetforge_z",
        "fleetfroge_typo",
        "fleetforge_w",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    assert_eq!(names, expected);
    let records: BTreeSet<String> = ["fleetforge:y:ratio".to_owned()].into();
    assert_eq!(
        unknown_metric("fleetforge_reconcile_duration_seconds_bucket", &records),
        None
    );
    assert_eq!(unknown_metric("fleetforge:y:ratio", &records), None);
    assert_eq!(unknown_metric("up", &records), None);
    assert!(unknown_metric("fleetfroge_typo", &records).is_some());
    assert!(unknown_metric("fleetforge:y:rate5m", &records).is_some());
    // a counter has no _count series
    assert!(unknown_metric("fleetforge_reconciles_total_count", &records).is_some());
    assert_eq!(
        base_name("fleetforge_cell_ready_duration_seconds_count"),
        "fleetforge_cell_ready_duration_seconds"
    );
}

#[test]
fn rules_and_dashboards_use_only_exported_metrics_and_recording_rules() {
    let file = rule_file();
    let records = recording_names(&file);
    let mut problems = Vec::new();
    for rule in rules(&file) {
        let name = str_of(rule, "alert")
            .or(str_of(rule, "record"))
            .expect("rule name");
        let names = metric_names(str_of(rule, "expr").expect("expr"));
        assert!(!names.is_empty(), "{name}: no metric found in its expression");
        for metric in names {
            if let Some(why) = unknown_metric(&metric, &records) {
                problems.push(format!("rule {name}: {why}"));
            }
        }
    }
    for (dashboard, json) in dashboards() {
        for expr in dashboard_exprs(&json) {
            for metric in metric_names(&expr) {
                if let Some(why) = unknown_metric(&metric, &records) {
                    problems.push(format!("{dashboard}: {why}, in `{expr}`"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_exported_metric_is_on_a_dashboard() {
    let shown: BTreeSet<String> = dashboards()
        .iter()
        .flat_map(|(_, d)| dashboard_exprs(d))
        .flat_map(|e| metric_names(&e))
        .map(|m| base_name(&m).to_owned())
        .collect();
    let missing: Vec<&str> = ALL.iter().copied().filter(|m| !shown.contains(*m)).collect();
    assert!(
        missing.is_empty(),
        "exported but on no dashboard (queried directly, not only through a recording rule): {missing:?}"
    );
}

#[test]
fn dashboards_are_grafana_dashboards_on_a_datasource_variable() {
    let mut uids = BTreeSet::new();
    for (name, d) in dashboards() {
        assert!(
            d["schemaVersion"].as_u64().is_some_and(|v| v >= 36),
            "{name}: schemaVersion"
        );
        assert!(
            uids.insert(d["uid"].as_str().expect("uid").to_owned()),
            "{name}: uid repeated"
        );
        let vars = d["templating"]["list"].as_array().expect("templating");
        assert!(
            vars.iter().any(|v| v["name"] == "datasource"
                && v["type"] == "datasource"
                && v["query"] == "prometheus"),
            "{name}: no Prometheus datasource variable"
        );
        let mut ids = BTreeSet::new();
        for p in d["panels"].as_array().expect("panels") {
            assert!(
                ids.insert(p["id"].as_u64().expect("panel id")),
                "{name}: panel id repeated"
            );
            if p.get("targets").is_some() {
                assert_eq!(
                    p["datasource"]["uid"], "${datasource}",
                    "{name}: panel {} uses a fixed datasource",
                    p["title"]
                );
            }
            for t in p["targets"].as_array().into_iter().flatten() {
                assert_eq!(
                    t["datasource"]["uid"], "${datasource}",
                    "{name}: panel {} queries a fixed datasource",
                    p["title"]
                );
                assert!(
                    t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                    "{name}: empty query"
                );
            }
        }
    }
    let (_, world) = dashboards().remove(1);
    let var = world["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .find(|v| v["name"] == "world")
        .expect("the world dashboard has a `world` variable")
        .clone();
    assert!(
        var["query"]["query"]
            .as_str()
            .is_some_and(|q| q.starts_with("label_values(fleetforge_active_cells") && q.ends_with(", world)")),
        "world variable: {var}"
    );
    // The per-cell map must not pretend: no query may group or select by a cell label.
    for expr in dashboard_exprs(&world) {
        assert!(
            !expr.contains("cell=") && !expr.contains("(cell)"),
            "per-cell query: {expr}"
        );
    }
}

// ---------------------------------------------------------------------------
// (d) alerts are labelled, annotated and have a runbook section

/// GitHub's anchor for a heading: lower case, punctuation dropped, spaces to `-`.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-' || *c == '_')
        .map(|c| if c == ' ' { '-' } else { c })
        .collect()
}

/// The anchors of the Markdown headings of a document (outside code blocks).
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut fenced = false;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let heading = line.trim_start_matches('#');
        if !heading.starts_with(' ') {
            continue;
        }
        let anchor = github_anchor(heading);
        let n = seen.entry(anchor.clone()).or_insert(0);
        out.insert(if *n == 0 {
            anchor.clone()
        } else {
            format!("{anchor}-{n}")
        });
        *n += 1;
    }
    out
}

#[test]
fn github_anchors_follow_githubs_rules() {
    assert_eq!(github_anchor(" FleetForgeNoLeader"), "fleetforgenoleader");
    assert_eq!(
        github_anchor(" SLOs and SLIs (REQ-OBS-003)"),
        "slos-and-slis-req-obs-003"
    );
    assert_eq!(
        github_anchor(" What `for: 30s` means, 1.0"),
        "what-for-30s-means-10"
    );
    let md = "# A\n```sh\n# not a heading\n```\n## A\n#notaheading\n";
    let expected: BTreeSet<String> = ["a".to_owned(), "a-1".to_owned()].into();
    assert_eq!(anchors(md), expected);
}

#[test]
fn every_alert_has_severity_summary_description_and_a_runbook_section() {
    let doc = root().join("docs/operations/monitoring.md");
    let headings = anchors(&read(&doc));
    let prefix = format!(
        "{}/blob/main/docs/operations/monitoring.md#",
        env!("CARGO_PKG_REPOSITORY")
    );
    let file = rule_file();
    let mut problems = Vec::new();
    let mut names = BTreeSet::new();
    for rule in alerts(&file) {
        let alert = str_of(rule, "alert").expect("alert name");
        if !names.insert(alert) {
            problems.push(format!("{alert}: defined twice"));
        }
        match str_of(&rule["labels"], "severity") {
            Some("critical" | "warning") => {}
            other => problems.push(format!("{alert}: severity {other:?}, want critical or warning")),
        }
        for key in ["summary", "description"] {
            if str_of(&rule["annotations"], key).is_none_or(|s| s.trim().len() <= 10) {
                problems.push(format!("{alert}: no {key} annotation"));
            }
        }
        match str_of(&rule["annotations"], "runbook_url").map(|u| u.strip_prefix(&prefix)) {
            None => problems.push(format!("{alert}: no runbook_url annotation")),
            Some(None) => problems.push(format!("{alert}: runbook_url does not start with {prefix}")),
            Some(Some(anchor)) => {
                if anchor != alert.to_lowercase() {
                    problems.push(format!(
                        "{alert}: runbook anchor #{anchor}, want #{}",
                        alert.to_lowercase()
                    ));
                }
                if !headings.contains(anchor) {
                    problems.push(format!(
                        "{alert}: no heading with anchor #{anchor} in {}",
                        doc.display()
                    ));
                }
            }
        }
        // REQ-OBS-003: scrape (15 s) + evaluation (15 s) + `for` within 60 s.
        let hold = str_of(rule, "for").map_or(0, seconds);
        if hold > 30 {
            problems.push(format!(
                "{alert}: for: {hold}s leaves no room to fire within 60 s"
            ));
        }
    }
    for group in file["groups"].as_sequence().expect("groups") {
        if str_of(group, "interval") != Some(INTERVAL) {
            problems.push(format!(
                "group {:?}: interval must be {INTERVAL}",
                str_of(group, "name")
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---------------------------------------------------------------------------
// scrape wiring: Deployment -> Service -> ServiceMonitor -> job label

/// The documents of a multi-document YAML file (the tests' one reader).
fn docs_of(path: &Path) -> Vec<Value> {
    fleetforge_testenv::yaml::file_documents(path)
        .unwrap_or_else(|e| panic!("{e:#}"))
        .into_iter()
        .map(|doc| serde_yaml_ng::to_value(doc).unwrap_or_else(|e| panic!("{}: {e}", path.display())))
        .collect()
}

/// Whether a `matchLabels` selector selects `labels`; a missing one selects all.
fn labels_match(selector: &Value, labels: &Value) -> bool {
    match selector.as_mapping() {
        None => selector.is_null(),
        Some(m) => m
            .iter()
            .all(|(k, v)| labels.get(k.as_str().expect("label key")) == Some(v)),
    }
}

/// One component's scrape wiring: its Deployment (under `deploy/`), metrics
/// Service and NetworkPolicies (under `deploy/`), and ServiceMonitor (under
/// `deploy/monitoring/`), which must give its series `job`.
struct Scrape<'a> {
    component: &'a str,
    deployment: &'a str,
    service: &'a str,
    policies: &'a str,
    monitor: &'a str,
    job: &'a str,
}

fn check_scrape_wiring(s: &Scrape<'_>) {
    let component = s.component;
    let deploy = root().join("deploy");
    let deployment = yaml(&deploy.join(s.deployment));
    let service = yaml(&deploy.join(s.service));
    let monitor = yaml(&monitoring().join(s.monitor));
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let admin = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| str_of(p, "name") == Some("admin"))
        .unwrap_or_else(|| panic!("the {component} container has no port named admin"));

    assert_eq!(
        str_of(&service["metadata"], "namespace"),
        Some("fleetforge-system")
    );
    assert!(
        labels_match(&service["spec"]["selector"], pod_labels),
        "the {component} metrics Service does not select the {component} Pods"
    );
    let port = &service["spec"]["ports"][0];
    assert_eq!(str_of(port, "name"), Some("metrics"));
    assert_eq!(str_of(port, "targetPort"), Some("admin"));
    assert_eq!(
        service["spec"]["publishNotReadyAddresses"].as_bool(),
        Some(true),
        "a {component} replica that is not ready yet must be scraped"
    );

    let kustomization = yaml(&deploy.join("kustomization.yaml"));
    assert!(
        kustomization["resources"]
            .as_sequence()
            .expect("resources")
            .iter()
            .any(|r| r.as_str() == Some(s.service)),
        "deploy/kustomization.yaml does not include {}",
        s.service
    );

    assert_eq!(str_of(&monitor, "kind"), Some("ServiceMonitor"));
    assert!(
        labels_match(
            &monitor["spec"]["selector"]["matchLabels"],
            &service["metadata"]["labels"]
        ),
        "the {component} ServiceMonitor does not select its metrics Service"
    );
    let job_label = str_of(&monitor["spec"], "jobLabel").expect("jobLabel");
    assert_eq!(
        str_of(&service["metadata"]["labels"], job_label),
        Some(s.job),
        "{component} series would not carry job=\"{}\", which the rules select",
        s.job
    );
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(str_of(endpoint, "port"), str_of(port, "name"));
    assert_eq!(str_of(endpoint, "path"), Some("/metrics"));
    assert_eq!(str_of(endpoint, "interval"), Some(INTERVAL));

    // The component's NetworkPolicy admits the scrape on the admin port.
    let admin_port = admin["containerPort"].as_u64().expect("containerPort");
    let admitted = docs_of(&deploy.join(s.policies)).iter().any(|p| {
        labels_match(&p["spec"]["podSelector"]["matchLabels"], pod_labels)
            && p["spec"]["ingress"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|rule| {
                    rule["from"].as_sequence().into_iter().flatten().any(|f| {
                        str_of(&f["namespaceSelector"]["matchLabels"], "fleetforge.io/monitoring")
                            == Some("true")
                    }) && rule["ports"]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .any(|p| p["port"].as_u64() == Some(admin_port))
                })
    });
    assert!(
        admitted,
        "no NetworkPolicy admits a fleetforge.io/monitoring=true namespace to the {component}'s port {admin_port}"
    );
}

#[test]
fn the_service_monitor_scrapes_every_operator_replica_as_the_rules_job() {
    check_scrape_wiring(&Scrape {
        component: "operator",
        deployment: "operator/deployment.yaml",
        service: "operator/metrics-service.yaml",
        policies: "operator/network-policies.yaml",
        monitor: "service-monitor.yaml",
        job: JOB,
    });
}

#[test]
fn the_gateway_service_monitor_scrapes_every_gateway_replica_as_the_rules_job() {
    check_scrape_wiring(&Scrape {
        component: "gateway",
        deployment: "gateway/deployment.yaml",
        service: "gateway/metrics-service.yaml",
        policies: "gateway/network-policies.yaml",
        monitor: "gateway-service-monitor.yaml",
        job: GATEWAY_JOB,
    });
}

/// Every selector of every rule names one of the two jobs, and a rule selects
/// one job only.
#[test]
fn every_rule_selects_the_operator_or_the_gateway_job() {
    let jobs = [JOB, GATEWAY_JOB].map(|job| format!("job=\"{job}\""));
    for rule in rules(&rule_file()) {
        let expr = str_of(rule, "expr").expect("expr");
        let selectors = expr.matches("job=").count();
        assert!(
            jobs.iter()
                .any(|job| expr.matches(job.as_str()).count() == selectors),
            "{expr}: selects another job, or both"
        );
    }
}

#[test]
fn the_monitoring_kustomization_ships_rules_monitor_and_dashboards() {
    let k = yaml(&monitoring().join("kustomization.yaml"));
    assert_eq!(str_of(&k, "namespace"), Some("fleetforge-system"));
    let resources: BTreeSet<&str> = k["resources"]
        .as_sequence()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "prometheus-rule.yaml",
        "service-monitor.yaml",
        "gateway-service-monitor.yaml",
    ]
    .into();
    assert_eq!(resources, expected);
    let generator = &k["configMapGenerator"][0];
    assert_eq!(
        str_of(&generator["options"]["labels"], "grafana_dashboard"),
        Some("1")
    );
    let files: BTreeSet<&str> = generator["files"]
        .as_sequence()
        .expect("files")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let expected: BTreeSet<&str> = [
        "dashboards/fleetforge-overview.json",
        "dashboards/fleetforge-world.json",
    ]
    .into();
    assert_eq!(files, expected);
    for file in files {
        assert!(monitoring().join(file).is_file(), "{file} missing");
    }
}
