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
