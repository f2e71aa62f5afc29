//! docker-compose.yml, the Dockerfile and the Helm chart checked against the programs they
//! run (neither Docker nor Kubernetes runs here): every program exists and is built into
//! the image; every port is the one the program listens on; every `HABITAT_*` variable is
//! one the program reads — each program's `--print-config` says which variables it read
//! and which it ignored; the chart renders with Helm's own engine and lints clean; the setup
//! Job's command plans the chart's topics against a real broker.

mod chart;
mod compose;
mod monitoring;

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use devstack::process::sibling_binary;
use habitat::stack::PROCESSORS;
use serde_json::Value as Json;
use serde_norway::Value;

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
        .chain(&["postgres-sink", "rest-proxy", "outbox-relay", "habitat"])
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
fn reads_exactly(program: &str, env: &BTreeMap<String, String>, place: &str) -> Json {
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
    assert!(report["config"].is_object(), "{place}: {program}: {report}");
    report["config"].clone()
}

/// The variables `habitat <command…>` reads, from its help (`[env: NAME=`), plus the
/// logging and memory ones and, for `topics apply`, the librdkafka settings.
fn cli_reads(command: &[&str], name: &str) -> bool {
    if habitat_runtime::config::process_variables().any(|v| v == name) {
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

/// One configuration path for every program: a YAML file, then `HABITAT_*` variables, then
/// flags — the flag-configured programs (proxy, relay) as the processors and the sink.
#[test]
fn every_program_reads_a_file_under_its_variables_and_its_flags() {
    use serde_json::json;
    let dir = test_support::scratch_dir().join(test_support::unique("config"));
    std::fs::create_dir_all(&dir).expect("a directory");
    let cases = [
        // program, file, the variable over the file, the flag over both
        (
            "rest-proxy",
            "database_url: postgres://habitat:secret@db/habitat\nmax_body_bytes: 2097152\n\
             key_cache_seconds: 30\nrate_limit_per_second: 7\n",
            (
                "HABITAT_KEY_CACHE_SECONDS",
                "40",
                "key_cache_seconds",
                json!(40),
            ),
            (
                "--rate-limit-per-second",
                "9",
                "rate_limit_per_second",
                json!(9),
            ),
            ("max_body_bytes", json!(2_097_152)),
        ),
        (
            "outbox-relay",
            "database_url: postgres://habitat:secret@db/habitat\n\
             schema_registry_url: http://registry:8081\nbatch: 100\npoll_ms: 50\nname: billing\n",
            ("HABITAT_OUTBOX_POLL_MS", "75", "poll_ms", json!(75)),
            ("--batch", "250", "batch", json!(250)),
            ("name", json!("billing")),
        ),
        (
            "patronage-aggregator",
            "commit_interval_ms: 250\nsession_timeout_ms: 20000\ngive_up_seconds: 60\n",
            (
                "HABITAT_SESSION_TIMEOUT_MS",
                "30000",
                "session_timeout_ms",
                json!(30_000),
            ),
            ("--instance-id", "pod-1", "instance_id", json!("pod-1")),
            ("commit_interval_ms", json!(250)),
        ),
    ];
    for (program, file, (variable, value, env_setting, env_expect), flag, from_file) in cases {
        let path = dir.join(format!("{program}.yaml"));
        std::fs::write(&path, file).expect("write");
        let output = Command::new(binary(program))
            .arg("--config")
            .arg(&path)
            .args([flag.0, flag.1])
            .arg("--print-config")
            .env_clear()
            .env(variable, value)
            .output()
            .expect("run the program");
        assert!(
            output.status.success(),
            "{program}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        let report: Json = serde_json::from_slice(&output.stdout).expect("JSON");
        let config = &report["config"];
        assert_eq!(config[env_setting], env_expect, "{program}: {config}");
        assert_eq!(config[flag.2], flag.3, "{program}: {config}");
        assert_eq!(config[from_file.0], from_file.1, "{program}: {config}");
        let shown = config.to_string();
        assert!(!shown.contains("secret"), "{program}: {shown}");

        // A key the program has no setting for is refused, naming it.
        std::fs::write(&path, "commit_intervall_ms: 5\n").expect("write");
        let output = Command::new(binary(program))
            .arg("--config")
            .arg(&path)
            .arg("--print-config")
            .env_clear()
            .output()
            .expect("run the program");
        let message = String::from_utf8_lossy(&output.stderr);
        assert!(
            !output.status.success() && message.contains("commit_intervall_ms"),
            "{program}: {message}"
        );
    }
}
