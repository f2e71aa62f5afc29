//! The alert rules and the Grafana dashboard the chart ships (`helm/habitat-streams/files/`),
//! read as the PromQL expressions they hold and the metrics those name — so that a test can
//! hold both to what the programs really export.

use std::collections::BTreeSet;

/// Prometheus alert rules (a rule file; the chart's PrometheusRule spec).
pub const ALERTS: &str = include_str!("../../../helm/habitat-streams/files/alerts.yml");
/// The Grafana dashboard.
pub const DASHBOARD: &str = include_str!("../../../helm/habitat-streams/files/dashboard.json");

/// One PromQL expression and where it stands (`alert X`, `panel "Y" A`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expression {
    pub place: String,
    pub expr: String,
}

/// Every expression of the alert rules and of the dashboard's panels.
pub fn expressions() -> Result<Vec<Expression>, String> {
    let mut found = Vec::new();
    let rules: serde_norway::Value =
        serde_norway::from_str(ALERTS).map_err(|e| format!("alerts.yml: {e}"))?;
    for group in rules["groups"]
        .as_sequence()
        .ok_or("alerts.yml: no groups")?
    {
        for rule in group["rules"]
            .as_sequence()
            .ok_or("alerts.yml: a group without rules")?
        {
            let alert = rule["alert"]
                .as_str()
                .ok_or("alerts.yml: a rule without a name")?;
            let expr = rule["expr"]
                .as_str()
                .ok_or_else(|| format!("alerts.yml: {alert} has no expression"))?;
            found.push(Expression {
                place: format!("alert {alert}"),
                expr: expr.to_owned(),
            });
        }
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(DASHBOARD).map_err(|e| format!("dashboard.json: {e}"))?;
    for panel in dashboard["panels"]
        .as_array()
        .ok_or("dashboard.json: no panels")?
    {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().ok_or_else(|| {
                format!("dashboard.json: panel {title:?} has a target without expr")
            })?;
            found.push(Expression {
                place: format!(
                    "panel {title:?} {}",
                    target["refId"].as_str().unwrap_or("?")
                ),
                expr: expr.to_owned(),
            });
        }
    }
    Ok(found)
}

/// The metric names an expression reads: its identifiers of the programs' namespaces
/// (`habitat_*`, `process_*`) outside quoted label values, histogram series (`_bucket`)
/// included as written.
pub fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut unquoted = String::with_capacity(expr.len());
    let mut quoted = false;
    for c in expr.chars() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted {
            unquoted.push(c);
        }
    }
    unquoted
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("habitat_") || word.starts_with("process_"))
        .map(str::to_owned)
        .collect()
}

/// The series names of a Prometheus text exposition (`name{labels} value` lines).
pub fn exported_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| line.split(['{', ' ']).next())
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_expressions_and_expositions() {
        assert_eq!(
            metric_names(
                "histogram_quantile(0.99, sum by (le) (rate(habitat_commit_latency_seconds_bucket[5m]))) \
                 > 1 and on (processor) process_open_fds{job=\"habitat_x\"}"
            ),
            BTreeSet::from([
                "habitat_commit_latency_seconds_bucket".to_owned(),
                "process_open_fds".to_owned(),
            ])
        );
        let exposition = "# HELP a_total A.\n# TYPE a_total counter\na_total{x=\"1\"} 2\nb 3\n";
        assert_eq!(
            exported_names(exposition),
            BTreeSet::from(["a_total".to_owned(), "b".to_owned()])
        );
    }

    #[test]
    fn the_rules_and_the_dashboard_hold_expressions() {
        let all = expressions().expect("readable");
        assert!(
            all.iter()
                .any(|e| e.place == "alert HabitatInvariantBroken")
        );
        assert!(
            all.iter()
                .any(|e| e.place.starts_with("panel \"Consumer lag\""))
        );
        for expression in &all {
            assert!(
                !metric_names(&expression.expr).is_empty(),
                "{} reads no metric of the programs",
                expression.place
            );
        }
    }
}
