//! The alert rules and the dashboard (helm/habitat-streams/files/): every rule complete, every
//! panel readable, and the chart installs both as the files say. That they name only metrics
//! the programs export is checked on a running stack (tests/stack.rs).

use super::*;

#[test]
fn every_alert_rule_is_complete() {
    let rules: Value = serde_norway::from_str(habitat::monitoring::ALERTS).expect("YAML");
    let mut alerts = BTreeSet::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let alert = rule["alert"].as_str().expect("an alert name");
            assert!(alerts.insert(alert.to_owned()), "{alert} twice");
            assert!(rule["expr"].as_str().is_some(), "{alert}: expr");
            assert!(rule["for"].as_str().is_some(), "{alert}: for");
            assert!(
                matches!(
                    rule["labels"]["severity"].as_str(),
                    Some("critical" | "warning")
                ),
                "{alert}: severity"
            );
            for annotation in ["summary", "description"] {
                assert!(
                    rule["annotations"][annotation].as_str().is_some(),
                    "{alert}: {annotation}"
                );
            }
            // docs/operations.md says what to do about each.
            assert!(
                read("docs/operations.md").contains(alert),
                "{alert} undocumented"
            );
        }
    }
    for alert in [
        "HabitatInvariantBroken",
        "HabitatBooksBreak",
        "HabitatDeadLetters",
        "HabitatConsumerLag",
        "HabitatStalled",
        "HabitatProxyUnavailable",
    ] {
        assert!(alerts.contains(alert), "{alert} missing");
    }
}

#[test]
fn every_dashboard_panel_has_a_place_and_queries() {
    let dashboard: Json = serde_json::from_str(habitat::monitoring::DASHBOARD).expect("JSON");
    assert_eq!(dashboard["uid"], "habitat-streams");
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().expect("a title");
        assert!(
            ids.insert(panel["id"].as_u64().expect("an id")),
            "{title}: id twice"
        );
        for side in ["h", "w", "x", "y"] {
            assert!(panel["gridPos"][side].is_u64(), "{title}: gridPos.{side}");
        }
        if panel["type"] == "row" {
            continue;
        }
        assert!(titles.insert(title.to_owned()), "{title} twice");
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            assert!(target["expr"].as_str().is_some(), "{title}: expr");
        }
    }
    // What the operator watches (issue list of docs/operations.md's metrics table).
    for title in [
        "Records in per processor",
        "Consumer lag",
        "Commit latency p99",
        "End-to-end latency (occurred_at to committed)",
        "Dead letters by class",
        "Transactions aborted",
        "Sink rows written",
        "REST proxy requests by status",
        "REST proxy latency p99 by status",
        "Schema registry requests",
    ] {
        assert!(titles.contains(title), "no panel {title:?}");
    }
}

#[test]
fn the_chart_installs_the_rules_the_dashboard_and_a_service_monitor() {
    let (objects, lint) = chart::render(&serde_json::json!({
        "monitoring": {
            "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
            "rules": {"enabled": true},
            "dashboard": {"enabled": true},
        }
    }));
    assert_eq!(lint["errors"].as_array().map(Vec::len), Some(0), "{lint}");
    assert!(
        lint["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .all(|m| m["severity"].as_u64() <= Some(1)),
        "helm lint: {lint}"
    );
    let rule = chart::of_kind(&objects, "PrometheusRule");
    assert_eq!(rule.len(), 1);
    let shipped: Value = serde_norway::from_str(habitat::monitoring::ALERTS).expect("YAML");
    assert_eq!(
        rule[0]["spec"], shipped,
        "the PrometheusRule is files/alerts.yml"
    );

    let maps = chart::of_kind(&objects, "ConfigMap");
    let dashboard = maps
        .iter()
        .find_map(|map| map["data"]["habitat-streams.json"].as_str())
        .expect("the dashboard's ConfigMap");
    let shipped: Json = serde_json::from_str(habitat::monitoring::DASHBOARD).expect("JSON");
    assert_eq!(
        serde_json::from_str::<Json>(dashboard).expect("JSON"),
        shipped
    );

    let monitor = chart::of_kind(&objects, "ServiceMonitor");
    assert_eq!(monitor.len(), 1);
    assert_eq!(monitor[0]["metadata"]["labels"]["release"], "prometheus");
    let selector = &monitor[0]["spec"]["selector"]["matchLabels"];
    let services = chart::of_kind(&objects, "Service");
    let metrics = services
        .iter()
        .find(|service| {
            selector
                .as_mapping()
                .expect("labels")
                .iter()
                .all(|(k, v)| &service["metadata"]["labels"][k] == v)
        })
        .expect("a Service the ServiceMonitor selects");
    // Every port the ServiceMonitor scrapes is a Service port whose target is a port every
    // program's container names: processors, sink and relay `metrics`, the proxy `http`.
    let scraped: BTreeSet<&str> = monitor[0]["spec"]["endpoints"]
        .as_sequence()
        .expect("endpoints")
        .iter()
        .map(|e| e["port"].as_str().expect("a port name"))
        .collect();
    let served: BTreeSet<&str> = metrics["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| p["name"].as_str().expect("a name"))
        .collect();
    assert_eq!(scraped, served);
    for deployment in chart::of_kind(&objects, "Deployment") {
        let template = &deployment["spec"]["template"];
        for (k, v) in metrics["spec"]["selector"].as_mapping().expect("selector") {
            assert_eq!(&template["metadata"]["labels"][k], v);
        }
        let container = &template["spec"]["containers"][0];
        let names: BTreeSet<&str> = container["ports"]
            .as_sequence()
            .expect("ports")
            .iter()
            .filter_map(|p| p["name"].as_str())
            .collect();
        assert!(
            names.iter().any(|name| scraped.contains(name)),
            "{:?}: no scraped port",
            deployment["metadata"]["name"]
        );
    }

    // Off by default.
    let (objects, _) = chart::render(&serde_json::json!({}));
    for kind in ["ServiceMonitor", "PrometheusRule"] {
        assert!(chart::of_kind(&objects, kind).is_empty(), "{kind}");
    }
}
