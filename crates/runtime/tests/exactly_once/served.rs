//! The engine's producer (`ServedProducer`): its own thread serves delivery reports as
//! librdkafka hands them over, with nobody polling, and sleeps while nothing comes.

use std::sync::atomic::{AtomicUsize, Ordering};

use habitat_runtime::served::ServedProducer;
use rdkafka::{ClientContext, message::DeliveryResult, producer::ProducerContext};

use super::*;

#[derive(Default)]
struct Delivered(AtomicUsize);

impl ClientContext for Delivered {}

impl ProducerContext for Delivered {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): Self::DeliveryOpaque) {
        if result.is_ok() {
            _ = self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[test]
fn reports_are_served_without_polling_and_an_idle_producer_sleeps() {
    let topic = unique("served");
    create_topic_blocking(&topic, PARTITIONS);
    // The thread's safety net is an hour: only librdkafka's wake-ups can serve the reports.
    let producer = ServedProducer::with_safety_net(
        client_config()
            .set("linger.ms", "5")
            .create_with_context(Delivered::default())
            .expect("producer"),
        Duration::from_secs(3_600),
    )
    .expect("served producer");
    for i in 0..500_i32 {
        let key = format!("k{i}");
        producer
            .send(
                BaseRecord::to(&topic)
                    .partition(i % PARTITIONS)
                    .key(key.as_str())
                    .payload("v"),
            )
            .map_err(|(e, _)| e)
            .expect("send");
    }
    // Nobody here polls: the producer's thread serves the reports.
    wait_for(LONG, "every record's delivery report", || {
        (producer.context().0.load(Ordering::SeqCst) == 500).then_some(())
    });
    assert_eq!(producer.in_flight_count(), 0);
    assert!(producer.passes() >= 1);

    // Idle, the thread sleeps until an event comes. rdkafka's `ThreadedProducer` polls every
    // 100 ms and ends each poll in a busy wait; a thread polling like it would pass here
    // thousands of times. The window observes that nothing happens, so it is a fixed wait.
    let before = producer.passes();
    std::thread::sleep(Duration::from_secs(2));
    let passes = producer.passes() - before;
    assert!(
        passes <= 1,
        "the idle producer's thread looked at its queue {passes} times in 2 s"
    );

    // Woken again by the next report; dropping it wakes and stops the thread.
    producer
        .send(BaseRecord::to(&topic).partition(0).key("last").payload("v"))
        .map_err(|(e, _)| e)
        .expect("send");
    wait_for(LONG, "the last report", || {
        (producer.context().0.load(Ordering::SeqCst) == 501).then_some(())
    });
    drop(producer);
}
