//! What the engine's loop and the sink's share of Kafka: the headers of a consumed record,
//! and waits on librdkafka without spinning ([`crate::waits`]).

use rdkafka::message::{Headers, Message};

pub use crate::waits::{settle, settled, whole_millis};

/// The headers of a consumed record, as (name, value) pairs.
pub fn headers_of(message: &impl Message) -> Vec<(String, Vec<u8>)> {
    message
        .headers()
        .map(|hs| {
            hs.iter()
                .map(|h| (h.key.to_owned(), h.value.unwrap_or_default().to_vec()))
                .collect()
        })
        .unwrap_or_default()
}
