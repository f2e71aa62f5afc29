//! The OpenAPI document: generated from the catalog (a stale file fails), valid OpenAPI 3.1
//! by an independent validator, every example valid against its event's schema and
//! accepted by the proxy, and `servers` the address the request came to.

use std::path::Path;

use rest_proxy::openapi::generate;

use super::*;

/// Validates the document (openapi-spec-validator), then every example against its
/// submission schema and against `Submission` (jsonschema, formats checked); prints the
/// count.
const VALIDATE: &str = r#"
import json, sys
import jsonschema
from openapi_spec_validator import validate
doc = json.load(open(sys.argv[1]))
validate(doc)
schemas = doc["components"]["schemas"]
checked = 0
for name, schema in schemas.items():
    if not name.endswith(".Submission"):
        continue
    for example in schema["examples"]:
        for root in (dict(schema), dict(schemas["Submission"])):
            root["components"] = doc["components"]
            jsonschema.Draft202012Validator(
                root, format_checker=jsonschema.FormatChecker()
            ).validate(example)
        checked += 1
print(f"valid; {checked} examples valid")
"#;

#[test]
fn the_document_is_current_and_valid_and_every_example_is_accepted() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("openapi.json");
    let committed = std::fs::read_to_string(&path).expect("openapi.json");
    assert!(
        committed == generate::render(),
        "{} is stale: run `./habitat catalog`",
        path.display()
    );

    let python = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tools/python-confluent/bin/python");
    let validated = std::process::Command::new(&python)
        .args(["-c", VALIDATE])
        .arg(&path)
        .output()
        .expect("openapi-spec-validator (scripts/test installs it)");
    let examples = generate::examples();
    let writable = contracts::records::CATALOG
        .iter()
        .filter(|info| info.producer_writable)
        .count();
    assert_eq!(
        examples.len(),
        writable,
        "an example per writable event type"
    );
    assert_eq!(
        String::from_utf8_lossy(&validated.stdout).trim(),
        format!("valid; {writable} examples valid"),
        "{}",
        String::from_utf8_lossy(&validated.stderr)
    );

    // The fixture the document shows is what the proxy takes.
    let proxy = start(&kafka().bootstrap);
    for (event_type, payload) in &examples {
        let mut submission = generate::example_submission(event_type, payload);
        submission["tenant_id"] = Value::String(proxy.tenant.clone());
        let (status, _, body) = proxy.post("/v1/events", &submission);
        assert_eq!(status, 202, "{event_type}: {body}");
    }

    // `servers`: where the request went, or where a reverse proxy says it went.
    let servers = |forwarded: &[(&str, &str)]| {
        proxy.rt.block_on(async {
            let mut request = reqwest::Client::new().get(format!("{}/openapi.json", proxy.url));
            for (name, value) in forwarded {
                request = request.header(*name, *value);
            }
            let document: Value = request
                .send()
                .await
                .expect("request")
                .json()
                .await
                .expect("json");
            document["servers"].clone()
        })
    };
    assert_eq!(servers(&[]), json!([{"url": proxy.url}]));
    assert_eq!(
        servers(&[
            ("x-forwarded-proto", "https"),
            ("x-forwarded-host", "api.example.coop")
        ]),
        json!([{"url": "https://api.example.coop"}])
    );
}

/// Debian's chromium, which scripts/test installs.
fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|path| path.exists())
}

#[test]
fn the_reference_page_renders_every_event_type_in_a_headless_browser() {
    let Some(browser) = chromium() else {
        println!("skipped: no chromium here (scripts/test installs Debian's package as root)");
        return;
    };
    let proxy = start(&kafka().bootstrap);
    // The page loads nothing from elsewhere: its one script is the proxy's own.
    let page = proxy.rt.block_on(async {
        reqwest::get(format!("{}/docs", proxy.url))
            .await
            .expect("request")
            .text()
            .await
            .expect("text")
    });
    assert!(
        page.contains(r#"<script src="/docs/redoc.standalone.js"></script>"#),
        "{page}"
    );
    assert!(!page.contains("https://"), "no CDN: {page}");

    let scratch = test_support::scratch_dir().join(unique("chromium"));
    let rendered = std::process::Command::new(&browser)
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--virtual-time-budget=20000",
        ])
        .arg(format!("--user-data-dir={}", scratch.display()))
        .arg("--dump-dom")
        .arg(format!("{}/docs", proxy.url))
        .output()
        .expect("run chromium");
    _ = std::fs::remove_dir_all(&scratch);
    let dom = String::from_utf8_lossy(&rendered.stdout);
    assert!(
        dom.contains("Write one event") && dom.contains("Write one record (Confluent REST v3)"),
        "Redoc rendered the operations: {}",
        String::from_utf8_lossy(&rendered.stderr)
    );
    for info in contracts::records::CATALOG
        .iter()
        .filter(|info| info.producer_writable)
    {
        assert!(
            dom.contains(info.event_type),
            "{} is on the rendered page",
            info.event_type
        );
    }
}
