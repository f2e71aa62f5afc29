//! The template processor as a process on devbroker: it creates its own output topic and
//! publishes each member's period total there, as JSON, once the total has been quiet.

use std::{collections::HashMap, time::Duration};

use chrono::Utc;
use contracts::records::Event;
use end_to_end::{PARTITIONS, Running, post, runtime, stack};
use rdkafka::Message;
use template_processor::{MemberPeriodTotal, QUIET_VARIABLE, TOTALS_TOPIC};
use test_support::{committed_reader, records, unique, wait_for};

fn approved(
    tenant: &str,
    id: &str,
    member: &str,
    value: &str,
) -> contracts::records::ContributionApproved {
    let meta = records::meta(
        tenant,
        "people.ContributionApproved",
        &uuid::Uuid::now_v7().to_string(),
        Utc::now(),
    );
    records::approved(meta, id, member, "2026", value)
}

#[test]
fn the_template_publishes_quiet_totals_on_its_own_topic() {
    let runtime = runtime();
    let (registry, codec) = stack(&runtime);
    let tenant = unique("tpl");
    let _template = Running::start_with_args(
        "template-processor",
        &registry,
        &[(QUIET_VARIABLE, "1".to_owned())],
        &["--input", "habitat.people"],
    );
    let dropped = approved(&tenant, "c3", "m2", "9.00");
    let events: Vec<Event> = vec![
        approved(&tenant, "c1", "m1", "10.00").into(),
        approved(&tenant, "c2", "m1", "5.25").into(),
        dropped.clone().into(),
        records::rejected(dropped, "duplicate").into(),
    ];
    post(&codec, &events);

    // The topic is the template's own: it exists once the template has started.
    let reader = committed_reader(TOTALS_TOPIC, PARTITIONS);
    let mut latest: HashMap<String, Option<MemberPeriodTotal>> = HashMap::new();
    let m1 = format!("{tenant}/m1/2026");
    let m2 = format!("{tenant}/m2/2026");
    wait_for(Duration::from_secs(120), "both totals published", || {
        while let Some(Ok(message)) = reader.poll(Duration::from_millis(50)) {
            let key = String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned();
            let value = message
                .payload()
                .map(|bytes| serde_json::from_slice::<MemberPeriodTotal>(bytes).expect("JSON"));
            _ = latest.insert(key, value);
        }
        (latest.contains_key(&m1) && latest.contains_key(&m2)).then_some(())
    });
    let total = latest[&m1].clone().expect("m1's total");
    assert_eq!(
        (total.contributions, total.value, total.member_id.as_str()),
        (2, records::dec("15.25"), "m1")
    );
    // Approved then rejected: nothing counts, so the view has a tombstone for it.
    assert_eq!(latest[&m2], None);
}
