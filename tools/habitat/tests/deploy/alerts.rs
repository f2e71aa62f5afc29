//! monitoring/alerts.yml: every rule is complete and watches metrics the programs define.

use super::*;

/// The metrics the programs define that the rules may name.
fn defined() -> BTreeSet<&'static str> {
    BTreeSet::from([
        habitat_runtime::metrics::names::INVARIANT_BREAKS,
        postgres_sink::books::BOOKS_BREAKS,
    ])
}

#[test]
fn every_alert_rule_is_complete_and_watches_a_defined_metric() {
    let rules: Value = serde_yaml::from_str(&read("monitoring/alerts.yml")).expect("YAML");
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("an alert name");
            assert!(alerts.insert(alert.to_owned()), "{alert} twice");
            let expr = rule["expr"].as_str().expect("an expression");
            let named: Vec<&str> = expr
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .filter(|word| word.starts_with("habitat_"))
                .collect();
            assert!(!named.is_empty(), "{alert} watches no habitat metric");
            for metric in named {
                assert!(
                    defined().contains(metric),
                    "{alert}: {metric} is not defined"
                );
            }
            assert!(rule["for"].as_str().is_some(), "{alert}: for");
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("critical" | "warning")
                ),
                "{alert}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{alert}: summary"
            );
        }
    }
    assert!(alerts.contains("HabitatInvariantBroken") && alerts.contains("HabitatBooksBreak"));
}
