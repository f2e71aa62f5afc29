//! The main job end to end: `habitat up --demo` brings up devbroker, Postgres, the registry,
//! the four processors, the sink and the REST proxy as separate processes and posts the
//! demo cooperative's year through the proxy. Every report is checked to the cent, a second
//! run writes nothing, and `habitat verify replay` finds no difference.

mod common;

use std::{collections::BTreeMap, process::Command};

use common::Stack;
use habitat::demo::ALLOCATION_COLUMNS;
use serde_json::Value;

/// `habitat <args…>` against the stack's database, broker and registry.
fn habitat(stack: &Stack, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_habitat"))
        .args(args)
        .env(
            "HABITAT_DATABASE_URL",
            format!(
                "postgres://habitat@127.0.0.1:{}/habitat",
                stack.postgres_port
            ),
        )
        .env(
            "HABITAT_BOOTSTRAP_SERVERS",
            format!("127.0.0.1:{}", stack.broker_port),
        )
        .env(
            "HABITAT_SCHEMA_REGISTRY_URL",
            format!("http://127.0.0.1:{}", stack.registry_port),
        )
        .output()
        .expect("run habitat");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A report of the demo tenant as rows of `columns`.
fn report(stack: &Stack, name: &str, columns: &[&str]) -> Vec<Vec<String>> {
    let (code, out, err) = habitat(
        stack,
        &["report", name, "--tenant", "demo-coop", "--format", "json"],
    );
    assert_eq!(code, 0, "report {name}: {err}");
    let rows: Vec<Value> = serde_json::from_str(&out).expect("json rows");
    rows.iter()
        .map(|row| {
            columns
                .iter()
                .map(|c| row[*c].as_str().unwrap_or("null").to_owned())
                .collect()
        })
        .collect()
}

fn rows(expected: &[&[&str]]) -> Vec<Vec<String>> {
    expected
        .iter()
        .map(|row| row.iter().map(|v| (*v).to_owned()).collect())
        .collect()
}

fn up_demo(stack: &Stack) -> String {
    let output = stack.habitat_with("up", &["--demo"], stack.broker_port);
    let out = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "habitat up --demo failed:\n{out}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

/// `up` made the registry's credentials, kept them readable by the owner only and said
/// where; the registry refuses a write without them and takes one with them.
fn registry_credentials_guard_writes(stack: &Stack, out: &str) {
    use std::os::unix::fs::PermissionsExt as _;
    let path = stack.dir.join("registry-credentials");
    assert!(
        out.contains(&path.display().to_string()),
        "says where: {out}"
    );
    let mode = std::fs::metadata(&path)
        .expect("the credentials file")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let text = std::fs::read_to_string(&path).expect("read");
    assert_eq!(text.lines().count(), 1, "{text:?}");
    let (user, password) = text.trim_end().split_once(':').expect("user:password");
    assert!(!user.is_empty() && password.len() >= 16, "{text:?}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let register = |auth: Option<(&str, &str)>| {
        let mut request = reqwest::Client::new()
            .put(format!(
                "http://127.0.0.1:{}/config/habitat.people-habitat.people.MemberRegistered",
                stack.registry_port
            ))
            .header("content-type", "application/vnd.schemaregistry.v1+json")
            .body(r#"{"compatibility": "BACKWARD_TRANSITIVE"}"#);
        if let Some((user, password)) = auth {
            request = request.basic_auth(user, Some(password));
        }
        rt.block_on(request.send())
            .expect("registry")
            .status()
            .as_u16()
    };
    assert_eq!(register(None), 401);
    assert_eq!(register(Some((user, password))), 200);
}

#[test]
fn the_demo_year_ends_in_reports_exact_to_the_cent_and_a_clean_replay() {
    let stack = Stack::new();
    let out = up_demo(&stack);
    assert!(
        out.contains("period-allocation") && out.contains("trial-balance"),
        "{out}"
    );
    assert!(
        out.contains(&format!("http://127.0.0.1:{}", stack.proxy_port)),
        "says where the proxy is: {out}"
    );
    registry_credentials_guard_writes(&stack, &out);

    // Weighted patronage W: ana 1250 × 1.0, ben 800 × 1.5, cleo 600 × 1.0, dev 400 × 0.5;
    // T = 3250. Shares of 10,000.00: 3846.153…, 3692.307…, 1846.153…, 615.384…; floors sum
    // to 9999.98, the two cents to the largest remainders (ben .77, dev .46). Cash =
    // ceil(amount × 0.30).
    let allocation = report(&stack, "period-allocation", &ALLOCATION_COLUMNS);
    assert_eq!(
        allocation,
        rows(&[
            &[
                "m-ana",
                "1250.0000",
                "3846.15",
                "1153.85",
                "2692.30",
                "APPROVED",
                "APPROVED"
            ],
            &[
                "m-ben",
                "1200.0000",
                "3692.31",
                "1107.70",
                "2584.61",
                "APPROVED",
                "APPROVED"
            ],
            &[
                "m-cleo", "600.0000", "1846.15", "553.85", "1292.30", "APPROVED", "APPROVED"
            ],
            &[
                "m-dev", "200.0000", "615.39", "184.62", "430.77", "APPROVED", "APPROVED"
            ],
        ])
    );

    // Distributions: 8 installments, dev's first failed (7 settled, 2907.71). The loan of
    // 5000.00 at 6 % over 12 months: 430.33 a month; three repayments settled — interest
    // 25.00 + 22.97 + 20.94, principal 405.33 + 407.36 + 409.39.
    let trial = report(
        &stack,
        "trial-balance",
        &["account", "debit", "credit", "balance"],
    );
    assert_eq!(
        trial,
        rows(&[
            &["1010", "1290.99", "7907.71", "-6616.72"],
            &["1300", "5000.00", "1222.08", "3777.92"],
            &["2300", "2907.71", "3000.02", "-92.31"],
            &["3100", "0.00", "6999.98", "-6999.98"],
            &["3900", "10000.00", "0.00", "10000.00"],
            &["4200", "0.00", "68.91", "-68.91"],
        ])
    );

    // Form 1099-PATR, tax year 2026: cash paid + qualified written notices (retained, cash
    // share ≥ 20 %).
    let patr = report(
        &stack,
        "1099-patr",
        &[
            "tax_year",
            "member_id",
            "patronage_dividends_cash",
            "qualified_notices_of_allocation",
            "nonqualified_notices_of_allocation",
            "box_1_patronage_dividends",
        ],
    );
    assert_eq!(
        patr,
        rows(&[
            &["2026", "m-ana", "1153.85", "2692.30", "0.00", "3846.15"],
            &["2026", "m-ben", "1107.70", "2584.61", "0.00", "3692.31"],
            &["2026", "m-cleo", "553.85", "1292.30", "0.00", "1846.15"],
            &["2026", "m-dev", "92.31", "430.77", "0.00", "523.08"],
        ])
    );

    // Still to pay: the loan's repayments 4 to 12; their principal is the balance of 1300.
    let due = report(
        &stack,
        "payments-due",
        &["purpose", "member_id", "seq", "amount", "principal"],
    );
    assert_eq!(due.len(), 9, "{due:?}");
    assert!(
        due.iter()
            .all(|r| r[0] == "LOAN_REPAYMENT" && r[1] == "m-ben"),
        "{due:?}"
    );
    let seqs: Vec<&str> = due.iter().map(|r| r[2].as_str()).collect();
    assert_eq!(seqs, ["4", "5", "6", "7", "8", "9", "10", "11", "12"]);
    assert!(due[..8].iter().all(|r| r[3] == "430.33"), "{due:?}");
    let principal: rust_decimal::Decimal = due
        .iter()
        .map(|r| r[4].parse::<rust_decimal::Decimal>().expect("decimal"))
        .sum();
    assert_eq!(principal.to_string(), "3777.92");

    // A member's statement: the last balance of each account, in its normal direction.
    let statement = report(
        &stack,
        "member-statement",
        &["member_id", "account", "balance"],
    );
    let last: BTreeMap<(String, String), String> = statement
        .into_iter()
        .map(|r| ((r[0].clone(), r[1].clone()), r[2].clone()))
        .collect();
    let expected: BTreeMap<(String, String), String> = [
        ("m-ana", "2300", "0.00"),
        ("m-ana", "3100", "2692.30"),
        ("m-ben", "1300", "3777.92"),
        ("m-ben", "2300", "0.00"),
        ("m-ben", "3100", "2584.61"),
        ("m-cleo", "2300", "0.00"),
        ("m-cleo", "3100", "1292.30"),
        ("m-dev", "2300", "92.31"),
        ("m-dev", "3100", "430.77"),
    ]
    .into_iter()
    .map(|(m, a, b)| ((m.to_owned(), a.to_owned()), b.to_owned()))
    .collect();
    assert_eq!(last, expected);

    // What finance must look at: the contribution changed after the close, the failure.
    let exceptions = report(&stack, "exceptions", &["kind", "subject", "detail"]);
    assert_eq!(exceptions.len(), 2, "{exceptions:?}");
    assert!(
        exceptions
            .iter()
            .any(|r| r[0] == "LATE_CONTRIBUTION_CHANGE" && r[1] == "c-6"),
        "{exceptions:?}"
    );
    assert!(
        exceptions.iter().any(|r| r[0] == "PAYMENT_FAILED"
            && r[2].starts_with("m-dev 92.31")
            && r[2].ends_with("account closed")),
        "{exceptions:?}"
    );

    // Running it again writes nothing twice: the same reports.
    let again = up_demo(&stack);
    assert!(again.contains("trial-balance"), "{again}");
    assert_eq!(
        report(
            &stack,
            "trial-balance",
            &["account", "debit", "credit", "balance"]
        ),
        trial
    );
    assert_eq!(
        report(&stack, "period-allocation", &ALLOCATION_COLUMNS),
        allocation
    );

    // For Excel: the same CSV behind a UTF-8 byte order mark.
    let (code, plain, err) = habitat(
        &stack,
        &["report", "member-statement", "--tenant", "demo-coop"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, marked, err) = habitat(
        &stack,
        &[
            "report",
            "member-statement",
            "--tenant",
            "demo-coop",
            "--bom",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(marked.strip_prefix('\u{feff}'), Some(plain.as_str()));
    assert!(plain.lines().count() > 1, "{plain}");

    // Every report of the tenant and period in one workbook, read back with openpyxl: the
    // same values as the JSON export, amounts as numbers with two decimals, dates as
    // dates, the header frozen.
    workbook_matches_the_exports(&stack);

    // The tables are exactly what the topics say.
    let (code, out, err) = habitat(&stack, &["verify", "replay"]);
    assert_eq!(code, 0, "verify replay: {out}\n{err}");
    // Its progress ends with every offset read (plain lines: stderr is not a terminal).
    let last = err
        .lines()
        .rfind(|line| line.starts_with("verify replay: "))
        .unwrap_or_default();
    let (read, total) = last
        .strip_prefix("verify replay: ")
        .and_then(|rest| rest.split_once(" offsets replayed in "))
        .and_then(|(counts, _)| counts.split_once(" of "))
        .unwrap_or_else(|| panic!("no final progress line: {err}"));
    assert_eq!(read, total, "{last}");
    assert!(total.parse::<u64>().expect("a count") > 0, "{last}");

    // The books hold; a ledger line altered by hand is named, with what it breaks.
    let (code, out, err) = habitat(&stack, &["verify", "books", "--tenant", "demo-coop"]);
    assert_eq!(
        (code, out.as_str()),
        (0, "books: every invariant holds\n"),
        "{err}"
    );
    let altered = devstack::postgres::PgBin::locate()
        .expect("Postgres")
        .command("psql")
        .args(["-h", "127.0.0.1", "-U", "habitat", "-d", "habitat", "-v", "ON_ERROR_STOP=1"])
        .arg(format!("--port={}", stack.postgres_port))
        .arg("--command=UPDATE habitat.ledger_lines SET credit = credit + 1 \
                WHERE (record_key, line_no) = (SELECT record_key, line_no FROM habitat.ledger_lines \
                WHERE tenant_id = 'demo-coop' AND account = '3100' AND member_id = 'm-ana' \
                ORDER BY record_key LIMIT 1)")
        .output()
        .expect("psql");
    assert!(altered.status.success(), "{altered:?}");
    let (code, out, err) = habitat(&stack, &["verify", "books", "--tenant", "demo-coop"]);
    assert_eq!(code, 1, "{out}\n{err}");
    for named in [
        "books: 3 breaks",
        "TRIAL_BALANCE",
        "POSTING_BALANCES",
        "CAPITAL_EQUALS_LEDGER",
        "m-ana",
    ] {
        assert!(out.contains(named), "{named}: {out}");
    }

    // A producer team's client (examples/python): one event and a batch with an
    // Idempotency-Key, the batch retried; the sink has each member once.
    python_client_example_posts_once(&stack);
    // A team producing straight to Kafka (examples/python/produce_direct.py): the tenant's
    // partition by murmur2, the registered schema; the sink reads them like the proxy's.
    python_direct_producer_reaches_the_sink(&stack);
}

fn python_direct_producer_reaches_the_sink(stack: &Stack) {
    let out = run_example(
        "produce_direct.py",
        "direct-coop",
        &[
            (
                "HABITAT_BOOTSTRAP_SERVERS",
                format!("127.0.0.1:{}", stack.broker_port),
            ),
            (
                "HABITAT_SCHEMA_REGISTRY_URL",
                format!("http://127.0.0.1:{}", stack.registry_port),
            ),
        ],
    );
    // The partition `habitat partition direct-coop` names, from an independent murmur2.
    let (code, partition, err) = habitat(stack, &["partition", "direct-coop"]);
    assert_eq!(code, 0, "{err}");
    let people = partition
        .lines()
        .find(|line| line.contains("habitat.people"))
        .expect("habitat.people's partition");
    let number = people
        .split_whitespace()
        .find_map(|word| word.parse::<i32>().ok())
        .expect("a partition number");
    assert!(
        out.contains(&format!("partition {number} of")),
        "{out} / {people}"
    );
    assert_eq!(
        members_in_sink(stack, "direct-coop", "m-201"),
        "m-200 Dalia Haddad, m-201 Emeka Obi"
    );
}

/// Runs `examples/python/<script> <tenant>` with `env`; its standard output.
fn run_example(script: &str, tenant: &str, env: &[(&str, String)]) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let run = Command::new(root.join("target/tools/python-confluent/bin/python"))
        .arg(root.join("examples/python").join(script))
        .arg(tenant)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .expect("python (scripts/test installs requests and confluent-kafka)");
    let out = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "{script}: {out}{}",
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// A tenant's members in the sink ("id name, …"), once `last` is among them.
fn members_in_sink(stack: &Stack, tenant: &str, last: &str) -> String {
    test_support::wait_for(
        std::time::Duration::from_secs(60),
        &format!("{tenant}'s members in the sink"),
        || {
            let output = devstack::postgres::PgBin::locate()
                .expect("Postgres")
                .command("psql")
                .args(["-h", "127.0.0.1", "-U", "habitat", "-d", "habitat", "-At"])
                .arg(format!("--port={}", stack.postgres_port))
                .arg(format!(
                    "--command=SELECT string_agg(member_id || ' ' || display_name, ', ' \
                     ORDER BY member_id) FROM habitat.members WHERE tenant_id = '{tenant}'"
                ))
                .output()
                .expect("psql");
            let found = String::from_utf8_lossy(&output.stdout).trim().to_owned();
            found.contains(last).then_some(found)
        },
    )
}

/// Reads a workbook's every sheet with openpyxl (Python, installed by scripts/test): per
/// sheet, the frozen cell and each cell as `{t, v, f}` (type, value, number format).
const READ_WORKBOOK: &str = r#"
import datetime, json, sys, openpyxl
book = openpyxl.load_workbook(sys.argv[1])
out = {}
for sheet in book.worksheets:
    rows = []
    for row in sheet.iter_rows():
        cells = []
        for cell in row:
            v = cell.value
            if v is None:
                cells.append(None)
            elif isinstance(v, bool):
                cells.append({"t": "b", "v": v, "f": cell.number_format})
            elif isinstance(v, (int, float)):
                cells.append({"t": "n", "v": v, "f": cell.number_format})
            elif isinstance(v, datetime.datetime):
                cells.append({"t": "d", "v": v.isoformat(), "f": cell.number_format})
            else:
                cells.append({"t": "s", "v": str(v), "f": cell.number_format})
        rows.append(cells)
    out[sheet.title] = {"freeze": sheet.freeze_panes, "rows": rows}
print(json.dumps(out))
"#;

fn workbook_matches_the_exports(stack: &Stack) {
    let path = stack.dir.join("books.xlsx");
    let path_text = path.to_str().expect("utf-8");
    let (code, _, err) = habitat(
        stack,
        &[
            "report",
            "--all",
            "--tenant",
            "demo-coop",
            "--period",
            habitat::demo::PERIOD,
            "--format",
            "xlsx",
            "--output",
            path_text,
        ],
    );
    assert_eq!(code, 0, "{err}");
    let python = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/tools/python-confluent/bin/python");
    let read = Command::new(&python)
        .args(["-c", READ_WORKBOOK, path_text])
        .output()
        .expect("openpyxl (scripts/test installs it)");
    assert!(
        read.status.success(),
        "{}",
        String::from_utf8_lossy(&read.stderr)
    );
    let book: Value = serde_json::from_slice(&read.stdout).expect("JSON");
    let sheets = book.as_object().expect("sheets");
    assert_eq!(
        sheets.len(),
        postgres_sink::report::REPORTS.len(),
        "{:?}",
        sheets.keys()
    );
    let mut amounts = 0;
    for report in postgres_sink::report::REPORTS {
        let sheet = &book[report.name];
        assert_eq!(sheet["freeze"], "A2", "{}", report.name);
        let mut args = vec![
            "report",
            report.name,
            "--tenant",
            "demo-coop",
            "--format",
            "json",
        ];
        if report.period.is_some() {
            args.extend(["--period", habitat::demo::PERIOD]);
        }
        let (code, out, err) = habitat(stack, &args);
        assert_eq!(code, 0, "{err}");
        let exported: Vec<Value> = serde_json::from_str(&out).expect("JSON rows");
        let rows = sheet["rows"].as_array().expect("rows");
        assert_eq!(
            rows.len(),
            exported.len() + 1,
            "{}: header and rows",
            report.name
        );
        let header: Vec<&str> = rows[0]
            .as_array()
            .expect("header")
            .iter()
            .map(|c| c["v"].as_str().expect("a column name"))
            .collect();
        for (row, expected) in rows[1..].iter().zip(&exported) {
            for (cell, column) in row.as_array().expect("cells").iter().zip(&header) {
                let want = &expected[*column];
                let place = format!("{} {column}", report.name);
                match (cell["t"].as_str(), want.as_str()) {
                    (None, None) => {}
                    (Some("n"), Some(text)) => {
                        let number: f64 = text.parse().expect("a number");
                        assert_eq!(cell["v"].as_f64(), Some(number), "{place}");
                        if cell["f"] == "#,##0.00" {
                            amounts += 1;
                        }
                    }
                    (Some("d"), Some(text)) => {
                        let day = &text[..10];
                        assert!(
                            cell["v"].as_str().expect("iso").starts_with(day),
                            "{place}: {cell} / {text}"
                        );
                        assert!(
                            cell["f"]
                                .as_str()
                                .expect("format")
                                .starts_with("yyyy-mm-dd")
                        );
                    }
                    (Some("b"), Some(text)) => {
                        assert_eq!(cell["v"].as_bool(), Some(text == "true"))
                    }
                    (Some("s"), Some(text)) => assert_eq!(cell["v"], text, "{place}"),
                    other => panic!("{place}: {other:?}"),
                }
            }
        }
    }
    assert!(amounts > 10, "amounts shown as money: {amounts}");
}

fn python_client_example_posts_once(stack: &Stack) {
    let (code, out, err) = habitat(
        stack,
        &[
            "keys",
            "create",
            "--name",
            "members-service",
            "--tenant",
            "example-coop",
            "--event-type",
            "people.MemberRegistered",
        ],
    );
    assert_eq!(code, 0, "{out}{err}");
    let secret = out
        .lines()
        .skip_while(|line| !line.starts_with("Its secret is shown this once"))
        .nth(1)
        .expect("the key's secret");
    let out = run_example(
        "post_events.py",
        "example-coop",
        &[
            (
                "HABITAT_PROXY_URL",
                format!("http://127.0.0.1:{}", stack.proxy_port),
            ),
            ("HABITAT_API_KEY", secret.to_owned()),
        ],
    );
    assert!(
        out.contains("retry answered 202 with the first result"),
        "{out}"
    );
    assert_eq!(
        members_in_sink(stack, "example-coop", "m-102"),
        "m-100 Amara Okafor, m-101 Bruno Díaz, m-102 Chiara Rossi"
    );
}
