//! The Dockerfile and docker-compose.yml: every program built, run with settings it reads.

use super::*;

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
    let mut compose: Value = serde_norway::from_str(&text).expect("docker-compose.yml parses");
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
    // Postgres with the WAL settings docs/operations.md recommends for the sink.
    let postgres = string_list(&service("postgres")["command"]);
    for setting in ["wal_buffers=16MB", "max_wal_size=4GB"] {
        let at = postgres.iter().position(|a| a == setting);
        assert!(
            at.is_some_and(|i| i > 0 && postgres[i - 1] == "-c"),
            "{setting} in {postgres:?}"
        );
    }
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
            config["bootstrap_servers"] == bootstrap.as_str(),
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
