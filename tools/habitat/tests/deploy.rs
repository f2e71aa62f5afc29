//! docker-compose.yml, the Dockerfile and the Helm chart checked against the programs they
//! run (neither Docker nor Kubernetes runs here): every program exists and is built into
//! the image; every port is the one the program listens on; every `HABITAT_*` variable is
//! one the program reads — each program's `--print-config` says which variables it read
//! and which it ignored; the chart renders with Helm's own engine and lints clean; the setup
//! Job's command plans the chart's topics against a real broker.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use devstack::process::sibling_binary;
use habitat::stack::PROCESSORS;
use serde_json::Value as Json;
use serde_yaml::Value;

const IMAGE: &str = concat!("habitat-streams:", env!("CARGO_PKG_VERSION"));

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The programs the Dockerfile builds and copies into the image.
fn image_programs() -> BTreeSet<String> {
    let dockerfile = read("Dockerfile");
    let copied: String = dockerfile
        .split("&& cp ")
        .nth(1)
        .expect("the Dockerfile copies the binaries")
        .split("/out/")
        .next()
        .expect("into /out/")
        .to_owned();
    let programs: BTreeSet<String> = copied
        .split_whitespace()
        .filter_map(|word| word.strip_prefix("target/release/"))
        .map(str::to_owned)
        .collect();
    for program in &programs {
        assert!(
            dockerfile.contains(&format!("-p {program}")),
            "the Dockerfile copies {program} but does not build it"
        );
    }
    programs
}

fn all_programs() -> BTreeSet<String> {
    PROCESSORS
        .iter()
        .chain(&["postgres-sink", "rest-proxy", "habitat"])
        .map(|p| (*p).to_owned())
        .collect()
}

fn binary(program: &str) -> PathBuf {
    if program == "habitat" {
        return env!("CARGO_BIN_EXE_habitat").into();
    }
    let env_var = format!("HABITAT_{}_BIN", program.to_uppercase().replace('-', "_"));
    sibling_binary(program, &env_var).expect("a workspace binary")
}

/// Compose's variables as Compose fills them with none set: `${NAME:-default}` becomes its
/// default; `${NAME:?message}` (Compose refuses to start without it) becomes
/// `required-<NAME>`. Also the names of the required ones.
fn compose_defaults(text: &str) -> (String, BTreeSet<String>) {
    let mut out = String::new();
    let mut required = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').expect("closing brace") + start;
        let inner = &rest[start + 2..end];
        if let Some((name, _)) = inner.split_once(":?") {
            out.push_str(&format!("required-{name}"));
            _ = required.insert(name.to_owned());
        } else {
            let (_, default) = inner
                .split_once(":-")
                .expect("a default or a requirement for every variable");
            out.push_str(default);
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    (out, required)
}

/// What `<program> --print-config` reports with exactly `env`.
fn print_config(program: &str, env: &BTreeMap<String, String>) -> Json {
    let output = Command::new(binary(program))
        .arg("--print-config")
        .env_clear()
        .envs(env)
        .output()
        .expect("run the program");
    assert!(
        output.status.success(),
        "{program} --print-config with {env:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("JSON")
}

fn names(json: &Json) -> BTreeSet<String> {
    json.as_array()
        .expect("array")
        .iter()
        .map(|n| n.as_str().expect("name").to_owned())
        .collect()
}

/// Asserts that `program` reads every `HABITAT_*` variable of `env` and ignores none, and
/// returns its configuration as printed.
fn reads_exactly(program: &str, env: &BTreeMap<String, String>, place: &str) -> String {
    let report = print_config(program, env);
    let given: BTreeSet<String> = env
        .keys()
        .filter(|k| k.starts_with("HABITAT_"))
        .cloned()
        .collect();
    assert_eq!(
        names(&report["variables"]["ignored"]),
        BTreeSet::new(),
        "{place}: {program} has no setting for these"
    );
    assert_eq!(names(&report["variables"]["read"]), given, "{place}");
    report["config"].as_str().expect("config").to_owned()
}

/// The variables `habitat <command…>` reads, from its help (`[env: NAME=`), plus the
/// logging ones and, for `topics apply`, the librdkafka settings.
fn cli_reads(command: &[&str], name: &str) -> bool {
    if habitat_runtime::config::LOG_VARIABLES.contains(&name) {
        return true;
    }
    if command == ["topics", "apply"] && name.starts_with("HABITAT_KAFKA_") {
        return true;
    }
    let help = Command::new(env!("CARGO_BIN_EXE_habitat"))
        .args(command)
        .arg("--help")
        .env_clear()
        .output()
        .expect("habitat --help");
    let help = String::from_utf8_lossy(&help.stdout);
    // `[env: NAME=]`, or `[env: NAME]` for a secret whose value help does not show.
    help.contains(&format!("[env: {name}=")) || help.contains(&format!("[env: {name}]"))
}

/// The `habitat …` commands of a setup command (`sh -c "habitat a && habitat b"`).
fn setup_commands(command: &[String]) -> Vec<Vec<String>> {
    assert_eq!(command[..2], ["sh", "-c"], "{command:?}");
    command[2]
        .split("&&")
        .map(|part| part.split_whitespace().map(str::to_owned).collect())
        .collect()
}

/// Asserts every variable of the setup job is read by one of its commands.
fn setup_reads_its_env(command: &[String], env: &BTreeMap<String, String>, place: &str) {
    let commands = setup_commands(command);
    assert_eq!(
        commands,
        [
            vec!["habitat", "topics", "apply"],
            vec!["habitat", "schemas", "register"]
        ],
        "{place}"
    );
    for name in env.keys().filter(|k| k.starts_with("HABITAT_")) {
        assert!(
            commands.iter().any(|c| {
                let words: Vec<&str> = c[1..].iter().map(String::as_str).collect();
                cli_reads(&words, name)
            }),
            "{place}: neither setup command reads {name}"
        );
    }
}

fn port_of(listen: &str) -> u16 {
    listen
        .rsplit_once(':')
        .and_then(|(_, p)| p.parse().ok())
        .unwrap_or_else(|| panic!("{listen} has a port"))
}

fn string_list(value: &Value) -> Vec<String> {
    value
        .as_sequence()
        .unwrap_or_else(|| panic!("a list: {value:?}"))
        .iter()
        .map(|v| v.as_str().expect("string").to_owned())
        .collect()
}

fn string_map(value: &Value) -> BTreeMap<String, String> {
    value
        .as_mapping()
        .expect("a mapping")
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                other => panic!("{other:?}"),
            };
            (k.as_str().expect("name").to_owned(), v)
        })
        .collect()
}

#[test]
fn the_dockerfile_builds_every_program_the_deployments_run() {
    assert_eq!(image_programs(), all_programs());
    for program in all_programs() {
        assert!(binary(&program).is_file(), "{program}");
    }
    let dockerfile = read("Dockerfile");
    assert!(
        dockerfile.contains("FROM rust:1.95"),
        "the workspace's toolchain"
    );
    assert!(dockerfile.contains("SQLX_OFFLINE=true"));
    assert!(
        root().join(".sqlx").is_dir(),
        "the query cache the image builds with"
    );
    let ignored = read(".dockerignore");
    assert!(ignored.lines().any(|l| l == "target"));
}

#[test]
fn docker_compose_runs_every_program_with_settings_it_has() {
    let (text, required) = compose_defaults(&read("docker-compose.yml"));
    let mut compose: Value = serde_yaml::from_str(&text).expect("docker-compose.yml parses");
    // No default secret: the password is required, never defaulted.
    assert_eq!(required, BTreeSet::from(["POSTGRES_PASSWORD".to_owned()]));
    assert!(
        !read("docker-compose.yml").contains("POSTGRES_PASSWORD:-"),
        "a default password"
    );
    // Twice: an anchor that merges another anchor brings its own `<<` along.
    compose.apply_merge().expect("merge keys");
    compose.apply_merge().expect("nested merge keys");
    let services = compose["services"].as_mapping().expect("services");
    let service = |name: &str| &compose["services"][name];

    // Redpanda with transactions and its registry; Postgres; both with healthchecks.
    let redpanda = string_list(&service("redpanda")["command"]);
    for flag in [
        "--set=redpanda.enable_transactions=true",
        "--set=redpanda.enable_idempotence=true",
    ] {
        assert!(redpanda.contains(&flag.to_owned()), "{flag}");
    }
    let registry_addr = redpanda
        .iter()
        .find_map(|a| a.strip_prefix("--schema-registry-addr="))
        .expect("the schema registry is on");
    let kafka_addr = redpanda
        .iter()
        .find_map(|a| a.strip_prefix("--advertise-kafka-addr="))
        .expect("advertised address");
    for part in ["redpanda", "postgres"] {
        assert!(
            !service(part)["healthcheck"]["test"].is_null(),
            "{part} healthcheck"
        );
        assert_eq!(
            service(part)["restart"].as_str(),
            Some("unless-stopped"),
            "{part} is started again when it dies"
        );
    }

    let ours: Vec<String> = services
        .iter()
        .filter(|(_, s)| s["image"].as_str() == Some(IMAGE))
        .map(|(k, _)| k.as_str().expect("name").to_owned())
        .collect();
    let expected: BTreeSet<String> = all_programs()
        .into_iter()
        .filter(|p| p != "habitat")
        .chain(["topics-and-schemas".to_owned()])
        .collect();
    assert_eq!(ours.iter().cloned().collect::<BTreeSet<_>>(), expected);

    for name in &ours {
        let spec = service(name);
        assert_eq!(
            spec["build"].as_str(),
            Some("."),
            "{name} image is built here"
        );
        let env = string_map(&spec["environment"]);
        let command = string_list(&spec["command"]);
        let bootstrap = &env["HABITAT_BOOTSTRAP_SERVERS"];
        assert!(
            kafka_addr.contains(&format!("internal://{bootstrap}")),
            "{name}: {bootstrap} is Redpanda's internal listener"
        );
        let registry = &env["HABITAT_SCHEMA_REGISTRY_URL"];
        assert_eq!(
            port_of(registry),
            port_of(registry_addr.split(',').next().expect("internal")),
            "{name}: the registry's port"
        );
        if name == "topics-and-schemas" {
            setup_reads_its_env(&command, &env, "docker-compose.yml");
            assert_eq!(spec["restart"].as_str(), Some("no"));
            continue;
        }
        assert_eq!(
            spec["restart"].as_str(),
            Some("unless-stopped"),
            "{name} is started again when it dies"
        );
        assert_eq!(
            command,
            std::slice::from_ref(name),
            "{name} runs its own program"
        );
        let config = reads_exactly(name, &env, "docker-compose.yml");
        assert!(
            config.contains(&format!("{bootstrap:?}")),
            "{name}: {config}"
        );
        assert_eq!(
            spec["depends_on"]["topics-and-schemas"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} starts after the topics and schemas"
        );
        if env.contains_key("HABITAT_DATABASE_URL") {
            assert_eq!(
                spec["depends_on"]["postgres"]["condition"].as_str(),
                Some("service_healthy")
            );
            assert!(env["HABITAT_DATABASE_URL"].contains("@postgres:5432/"));
        }
        // The healthcheck asks the port the program serves /readyz on.
        let listen = env
            .get("HABITAT_METRICS_LISTEN")
            .or_else(|| env.get("HABITAT_LISTEN"))
            .unwrap_or_else(|| panic!("{name} serves /readyz somewhere"));
        let check = string_list(&spec["healthcheck"]["test"]);
        assert_eq!(
            check.last().map(String::as_str),
            Some(format!("http://localhost:{}/readyz", port_of(listen)).as_str()),
            "{name}"
        );
    }
    // The REST proxy is published on the port it listens on, on the loopback.
    let proxy = service("rest-proxy");
    let listen = port_of(&string_map(&proxy["environment"])["HABITAT_LISTEN"]);
    assert_eq!(
        string_list(&proxy["ports"]),
        [format!("127.0.0.1:{listen}:{listen}")]
    );
    // Every published port is bound to the loopback only.
    for (name, spec) in services.iter().filter(|(_, s)| s["ports"].is_sequence()) {
        for port in string_list(&spec["ports"]) {
            assert!(port.starts_with("127.0.0.1:"), "{name:?} publishes {port}");
        }
    }
    // Postgres takes the required password; every URL carries that one.
    assert_eq!(
        string_map(&service("postgres")["environment"])["POSTGRES_PASSWORD"],
        "required-POSTGRES_PASSWORD"
    );
    for name in &ours {
        if let Some(url) = string_map(&service(name)["environment"]).get("HABITAT_DATABASE_URL") {
            assert!(
                url.contains(":required-POSTGRES_PASSWORD@"),
                "{name}: {url}"
            );
        }
    }
}

/// Helm's rendering of the chart with `values` over values.yaml: the objects, and lint's
/// findings.
fn render(values: &Json) -> (Vec<Value>, Json) {
    let output = Command::new("python3")
        .arg(root().join("scripts/helm-render"))
        .arg(root().join("helm/habitat-streams"))
        .args(["--release", "coop", "--namespace", "finance"])
        .args(["--values", &values.to_string()])
        .output()
        .expect("python3");
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
        for document in serde_yaml::Deserializer::from_str(text.as_str().expect("text")) {
            let object: Value =
                serde::Deserialize::deserialize(document).unwrap_or_else(|e| panic!("{path}: {e}"));
            if !object.is_null() {
                objects.push(object);
            }
        }
    }
    (objects, answer["lint"].clone())
}

fn of_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
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
            config.contains("\"security.protocol\": \"SASL_SSL\""),
            "{place}: {config}"
        );
        assert!(
            config.contains("\"sasl.password\": \"***\""),
            "{place}: {config}"
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
