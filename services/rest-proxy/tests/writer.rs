//! The writer on devbroker: concurrent requests share transactions and each gets the
//! offsets of its own records; what it reports is what a read_committed reader sees.

use std::time::Duration;

use rdkafka::{Message, consumer::BaseConsumer};
use rest_proxy::writer::{Record, Writer, WriterConfig};
use test_support::{committed_reader, create_topic_blocking, kafka, unique, wait_for};

fn config() -> WriterConfig {
    WriterConfig {
        bootstrap_servers: kafka().bootstrap.clone(),
        transactional_id: unique("rest-proxy"),
        producers: 2,
        linger: Duration::from_millis(5),
        timeout: Duration::from_secs(10),
        kafka: vec![("broker.address.family".to_owned(), "v4".to_owned())],
    }
}

#[test]
fn concurrent_requests_get_their_own_offsets_and_all_is_committed() {
    let topic = unique("proxy");
    create_topic_blocking(&topic, 3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let writer = Writer::start(config());
    let requests: Vec<Vec<Record>> = (0..20)
        .map(|r| {
            (0..3)
                .map(|i| Record {
                    topic: topic.clone(),
                    partition: (r + i) % 3,
                    key: format!("k-{r}-{i}"),
                    value: format!("v-{r}-{i}").into_bytes(),
                    headers: Vec::new(),
                })
                .collect()
        })
        .collect();
    let answers = rt.block_on(async {
        let tasks: Vec<_> = requests
            .iter()
            .cloned()
            .map(|records| {
                let writer = writer.clone();
                tokio::spawn(async move { writer.write(records).await })
            })
            .collect();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.expect("task").expect("written"));
        }
        answers
    });
    let reader: BaseConsumer = committed_reader(&topic, 3);
    let mut seen = std::collections::BTreeMap::new();
    wait_for(Duration::from_secs(30), "all 60 records", || {
        while let Some(message) = reader.poll(Duration::from_millis(50)) {
            let message = message.expect("consume");
            _ = seen.insert(
                (message.partition(), message.offset()),
                String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned(),
            );
        }
        (seen.len() == 60).then_some(())
    });
    for (r, written) in answers.iter().enumerate() {
        assert_eq!(written.len(), 3);
        for (i, w) in written.iter().enumerate() {
            assert_eq!(w.key, format!("k-{r}-{i}"));
            assert_eq!(w.partition, (r as i32 + i as i32) % 3);
            assert_eq!(
                seen[&(w.partition, w.offset)],
                format!("v-{r}-{i}"),
                "{w:?}"
            );
        }
    }
}
