//! The Helm chart rendered and linted: every program run with settings it reads.

use super::*;

/// Helm's rendering of the chart with `values` over values.yaml: the objects, and lint's
/// findings.
pub(super) fn render(values: &Json) -> (Vec<Value>, Json) {
    let output = helm_render(values);
    assert!(
        output.status.success(),
        "scripts/helm-render: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answer: Json = serde_json::from_slice(&output.stdout).expect("JSON");
    let mut objects = Vec::new();
    for (path, text) in answer["manifests"].as_object().expect("manifests") {
        if !path.ends_with(".yaml") {
            continue;
        }
        for document in serde_norway::Deserializer::from_str(text.as_str().expect("text")) {
            let object: Value =
                serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{path}: {e}"));
            if !object.is_null() {
                objects.push(object);
            }
        }
    }
    (objects, answer["lint"].clone())
}

/// scripts/helm-render's run with `values` over values.yaml.
fn helm_render(values: &Json) -> std::process::Output {
    Command::new("python3")
        .arg(root().join("scripts/helm-render"))
        .arg(root().join("helm/habitat-streams"))
        .args(["--release", "coop", "--namespace", "finance"])
        .args(["--values", &values.to_string()])
        .output()
        .expect("python3")
}

pub(super) fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects
        .iter()
        .filter(|o| o["kind"].as_str() == Some(kind))
        .collect()
}

/// A container's variables: literal values as they are, references as stand-ins of the
/// right shape.
fn container_env(container: &Value) -> BTreeMap<String, String> {
    container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|var| {
            let name = var["name"].as_str().expect("name").to_owned();
            let value = if let Some(value) = var["value"].as_str() {
                value.to_owned()
            } else if var["valueFrom"]["fieldRef"]["fieldPath"].as_str() == Some("metadata.name") {
                "coop-pod-0".to_owned()
            } else {
                let secret = &var["valueFrom"]["secretKeyRef"];
                assert!(
                    secret["name"].is_string() && secret["key"].is_string(),
                    "{name} is a value, the pod's name or a secret reference"
                );
                match name.as_str() {
                    "HABITAT_DATABASE_URL" => "postgres://habitat:secret@db:5432/habitat",
                    "HABITAT_SCHEMA_REGISTRY_AUTH" => "habitat:secret",
                    _ => "secret",
                }
                .to_owned()
            };
            (name, value)
        })
        .collect()
}

fn named_port(container: &Value, name: &str) -> u16 {
    container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some(name))
        .and_then(|p| p["containerPort"].as_u64())
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or_else(|| panic!("a port named {name}"))
}

#[test]
fn the_chart_renders_and_runs_every_program_with_settings_it_has() {
    let production_topics = read("topics.yaml").replacen("  partitions: 6", "  partitions: 24", 1);
    let values = serde_json::json!({
        "kafka": {
            "settings": {"security.protocol": "SASL_SSL", "sasl.mechanism": "SCRAM-SHA-512"},
            "passwordSecret": {"name": "kafka-credentials", "key": "password"},
        },
        "schemaRegistry": {"authSecret": {"name": "registry-credentials", "key": "user-info"}},
        "topicsYaml": production_topics,
        // Settings beyond the chart's own: for every program, and per program.
        "extraEnv": [{"name": "HABITAT_KAFKA_CLIENT_RACK", "value": "eu-west-1a"}],
        "processors": {"patronage-aggregator": {"env": {"HABITAT_COMMIT_INTERVAL_MS": 250}}},
        "sink": {"env": {"HABITAT_WRITERS": "4"}},
        "restProxy": {"env": {"HABITAT_KEY_CACHE_SECONDS": "10"}},
        "podAnnotations": {"example.com/team": "finance"},
    });
    let (objects, lint) = render(&values);
    let findings = lint["messages"].as_array().expect("messages");
    assert!(
        findings.iter().all(|m| m["severity"].as_u64() <= Some(1)),
        "helm lint: {findings:?}"
    );
    assert_eq!(lint["errors"].as_array().map(Vec::len), Some(0), "{lint}");

    let deployments = of_kind(&objects, "Deployment");
    let mut components = BTreeSet::new();
    for deployment in &deployments {
        let component =
            deployment["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/component"]
                .as_str()
                .expect("component")
                .to_owned();
        let place = format!("Deployment {component}");
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["enableServiceLinks"].as_bool(), Some(false), "{place}");
        let containers = pod["containers"].as_sequence().expect("containers");
        assert_eq!(containers.len(), 1, "{place}");
        let container = &containers[0];
        assert_eq!(container["image"].as_str(), Some(IMAGE), "{place}");
        assert_eq!(
            string_list(&container["command"]),
            std::slice::from_ref(&component),
            "{place}"
        );
        let env = container_env(container);
        let config = reads_exactly(&component, &env, &place);
        assert!(
            config["kafka"]["security.protocol"] == "SASL_SSL",
            "{place}: {config}"
        );
        assert!(
            config["kafka"]["sasl.password"] == "***",
            "{place}: {config}"
        );
        assert_eq!(
            config["kafka"]["client.rack"], "eu-west-1a",
            "{place}: extraEnv"
        );
        let own = match component.as_str() {
            "patronage-aggregator" => Some(("commit_interval_ms", 250)),
            "postgres-sink" => Some(("writers", 4)),
            "rest-proxy" => Some(("key_cache_seconds", 10)),
            _ => None,
        };
        if let Some((setting, value)) = own {
            assert_eq!(config[setting], value, "{place}: its own env");
        }
        assert_eq!(
            pod["serviceAccountName"].as_str(),
            Some("coop-habitat-streams"),
            "{place}"
        );

        // Probes, scraping and the listening port agree.
        let (port_name, listen) = match env.get("HABITAT_METRICS_LISTEN") {
            Some(listen) => ("metrics", listen),
            None => ("http", &env["HABITAT_LISTEN"]),
        };
        let port = named_port(container, port_name);
        assert_eq!(port, port_of(listen), "{place}");
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{place} {probe}");
            assert_eq!(get["port"].as_str(), Some(port_name), "{place} {probe}");
        }
        let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
        assert_eq!(annotations["example.com/team"].as_str(), Some("finance"));
        assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(port.to_string().as_str()),
            "{place}"
        );
        assert!(
            container["resources"]["requests"]["cpu"].is_string()
                && container["resources"]["limits"]["memory"].is_string(),
            "{place} resources"
        );
        assert_eq!(
            container["securityContext"]["readOnlyRootFilesystem"].as_bool(),
            Some(true)
        );
        assert!(components.insert(component), "{place} twice");
    }
    let expected: BTreeSet<String> = all_programs()
        .into_iter()
        .filter(|p| p != "habitat")
        .collect();
    assert_eq!(components, expected);

    // Its own service account, without an API token (the programs call no API); a
    // disruption budget for every program.
    let accounts = of_kind(&objects, "ServiceAccount");
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0]["metadata"]["name"], "coop-habitat-streams");
    assert_eq!(
        accounts[0]["automountServiceAccountToken"].as_bool(),
        Some(false)
    );
    let budgets: BTreeMap<String, &Value> = of_kind(&objects, "PodDisruptionBudget")
        .into_iter()
        .map(|b| {
            let component = b["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"]
                .as_str()
                .expect("a component")
                .to_owned();
            (component, b)
        })
        .collect();
    assert_eq!(budgets.keys().cloned().collect::<BTreeSet<_>>(), components);
    for deployment in &deployments {
        let labels = &deployment["spec"]["template"]["metadata"]["labels"];
        let component = labels["app.kubernetes.io/component"]
            .as_str()
            .expect("component");
        for (k, v) in budgets[component]["spec"]["selector"]["matchLabels"]
            .as_mapping()
            .expect("labels")
        {
            assert_eq!(&labels[k], v, "{component}: the budget selects its pods");
        }
        assert_eq!(
            budgets[component]["spec"]["maxUnavailable"].as_u64(),
            Some(1)
        );
    }

    // The proxy's Service reaches its http port.
    let services = of_kind(&objects, "Service");
    assert_eq!(services.len(), 1);
    assert_eq!(
        services[0]["spec"]["selector"]["app.kubernetes.io/component"].as_str(),
        Some("rest-proxy")
    );
    assert_eq!(
        services[0]["spec"]["ports"][0]["targetPort"].as_str(),
        Some("http")
    );

    // The setup Job: a hook before install and upgrade, mounting topics.yaml from the
    // ConfigMap (a hook created before it) where HABITAT_TOPICS_FILE points.
    let jobs = of_kind(&objects, "Job");
    assert_eq!(jobs.len(), 1);
    let job = jobs[0];
    let hook = |o: &Value| {
        (
            o["metadata"]["annotations"]["helm.sh/hook"]
                .as_str()
                .map(str::to_owned),
            o["metadata"]["annotations"]["helm.sh/hook-weight"]
                .as_str()
                .and_then(|w| w.parse::<i32>().ok()),
        )
    };
    let config_maps = of_kind(&objects, "ConfigMap");
    assert_eq!(config_maps.len(), 1);
    let config_map = config_maps[0];
    let (job_hook, job_weight) = hook(job);
    let (map_hook, map_weight) = hook(config_map);
    assert_eq!(job_hook.as_deref(), Some("pre-install,pre-upgrade"));
    assert_eq!(map_hook, job_hook);
    assert!(
        map_weight < job_weight,
        "the ConfigMap exists before the Job"
    );
    let pod = &job["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(container["image"].as_str(), Some(IMAGE));
    let command = string_list(&container["command"]);
    let env = container_env(container);
    setup_reads_its_env(&command, &env, "the setup Job");
    let topics_file = Path::new(&env["HABITAT_TOPICS_FILE"]);
    let mount = &container["volumeMounts"][0];
    assert_eq!(
        mount["mountPath"].as_str().map(Path::new),
        topics_file.parent()
    );
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], mount["name"]);
    assert_eq!(volume["configMap"]["name"], config_map["metadata"]["name"]);
    let file_name = topics_file
        .file_name()
        .and_then(|f| f.to_str())
        .expect("name");
    let shipped = config_map["data"][file_name].as_str().expect("topics.yaml");
    assert_eq!(shipped.trim_end(), production_topics.trim_end());

    // With the chart's defaults, the ConfigMap ships the release's own topics.yaml.
    let (defaults, _) = render(&serde_json::json!({}));
    let default_map = of_kind(&defaults, "ConfigMap")[0];
    assert_eq!(
        default_map["data"][file_name].as_str().map(str::trim_end),
        Some(read("topics.yaml").trim_end())
    );

    // The Job's first command plans the shipped file on a real broker.
    let file = test_support::scratch_dir()
        .join(test_support::unique("topics"))
        .join(file_name);
    std::fs::create_dir_all(file.parent().expect("dir")).expect("dir");
    std::fs::write(&file, shipped).expect("write");
    let plan = |environment: &str| {
        Command::new(env!("CARGO_BIN_EXE_habitat"))
            .args(["topics", "apply", "--dry-run"])
            .env_clear()
            .env(
                "HABITAT_BOOTSTRAP_SERVERS",
                &test_support::kafka().bootstrap,
            )
            .env("HABITAT_ENVIRONMENT", environment)
            .env("HABITAT_TOPICS_FILE", &file)
            .output()
            .expect("habitat topics apply")
    };
    let planned = plan(&env["HABITAT_ENVIRONMENT"]);
    let said = String::from_utf8_lossy(&planned.stdout);
    assert!(
        planned.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&planned.stderr)
    );
    for topic in ["habitat.people", "habitat.treasury", "habitat.agreements"] {
        assert!(said.contains(topic), "{said}");
    }

    // A file that changes the release's records is refused.
    std::fs::write(
        &file,
        shipped.replacen("name: habitat.treasury", "name: treasury", 1),
    )
    .expect("write");
    let refused = plan("dev");
    assert!(!refused.status.success());
    let error = String::from_utf8_lossy(&refused.stderr);
    assert!(
        error.contains("the context topics differ from this release's topics.yaml"),
        "{error}"
    );
}

/// values.schema.json refuses what the chart cannot run, naming the value.
#[test]
fn values_the_schema_refuses_are_named() {
    for (values, named) in [
        (
            serde_json::json!({"restProxy": {"replicas": "two"}}),
            "replicas",
        ),
        (
            serde_json::json!({"kafka": {"bootstrapServer": "kafka:9092"}}),
            "bootstrapServer",
        ),
        (serde_json::json!({"metrics": {"port": 70000}}), "port"),
        (serde_json::json!({"extraEnv": [{"value": "x"}]}), "name"),
    ] {
        let output = helm_render(&values);
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{values} rendered");
        assert!(
            message.contains("schema") && message.contains(named),
            "{values}: {message}"
        );
    }
}
