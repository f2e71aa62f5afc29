//! `habitat chaos` on a stack of its own: two cooperatives' years posted through the REST
//! proxy while 20 programs are killed at random (each processor, the sink, the proxy and
//! devbroker by SIGKILL, Postgres by an immediate shutdown); the command's own checks must
//! all pass (every accepted post once in `event_log`, allocations equal to the surplus,
//! balanced ledgers, a clean replay, every program ready again).

mod common;

use common::Stack;

#[test]
fn twenty_kills_lose_nothing_and_write_nothing_twice() {
    let stack = Stack::new();
    let output = stack.habitat_with(
        "chaos",
        &["--kills", "20", "--seed", "20261203", "--cooperatives", "2"],
        stack.broker_port,
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("20 kills; time to ready again"), "{stdout}");
    for check in [
        "ok   every accepted post in event_log exactly once",
        "ok   allocations add up to each period's surplus: 2 periods",
        "ok   every tenant's ledger balances: 2 ledgers",
        "ok   habitat verify replay: clean",
        "ok   every program running and ready: all",
    ] {
        assert!(stdout.contains(check), "{check}:\n{stdout}");
    }
    assert!(!stdout.contains("FAIL"), "{stdout}");
}
