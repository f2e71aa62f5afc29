//! What the runtime reads from a record value for tracing, meta and metrics.

use chrono::{DateTime, Utc};
use contracts::records::Event;

/// The envelope facts of a record value, when it has them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Trace {
    pub event_id: String,
    pub event_type: String,
    pub tenant_id: String,
    pub correlation_id: String,
    pub causation_id: Option<String>,
    pub occurred_at: DateTime<Utc>,
}

/// A record value the runtime can move: plain values have no envelope.
pub trait Payload {
    /// The envelope, for values that carry `meta`.
    fn trace(&self) -> Option<Trace> {
        None
    }

    /// The record type (Avro full name), for values of the event catalog.
    fn record_type(&self) -> Option<&'static str> {
        None
    }
}

impl Payload for String {}
impl Payload for Vec<u8> {}

impl Payload for Event {
    fn trace(&self) -> Option<Trace> {
        let meta = self.meta();
        Some(Trace {
            event_id: meta.event_id.clone(),
            event_type: meta.event_type.clone(),
            tenant_id: meta.tenant_id.clone(),
            correlation_id: meta.correlation_id.clone(),
            causation_id: meta.causation_id.clone(),
            occurred_at: meta.occurred_at,
        })
    }

    fn record_type(&self) -> Option<&'static str> {
        Some(self.full_name())
    }
}

/// An output value that knows where it goes: its topic and its key. [`Event`]s go to their
/// context topic under the key `topics.yaml` gives them; a processor's own output type (a
/// derived view on a topic of its own) says the same of itself, and `ctx.emit` does the rest.
pub trait Routed: Payload {
    /// The topic the value is written to.
    fn topic(&self) -> &str;
    /// Its key: tenant first, so it lands on the tenant's partition.
    fn key(&self) -> String;
}

impl Routed for Event {
    fn topic(&self) -> &str {
        Event::topic(self)
    }

    fn key(&self) -> String {
        Event::key(self)
    }
}

/// Header names the runtime writes on every output that has an envelope.
pub mod headers {
    pub const EVENT_ID: &str = "habitat.event_id";
    pub const EVENT_TYPE: &str = "habitat.event_type";
    pub const CORRELATION_ID: &str = "habitat.correlation_id";
    pub const CAUSATION_ID: &str = "habitat.causation_id";
}

/// The headers of an output with this envelope.
pub fn trace_headers(trace: &Trace) -> Vec<(String, Vec<u8>)> {
    let mut out = vec![
        (
            headers::EVENT_ID.to_owned(),
            trace.event_id.clone().into_bytes(),
        ),
        (
            headers::EVENT_TYPE.to_owned(),
            trace.event_type.clone().into_bytes(),
        ),
        (
            headers::CORRELATION_ID.to_owned(),
            trace.correlation_id.clone().into_bytes(),
        ),
    ];
    if let Some(causation) = &trace.causation_id {
        out.push((
            headers::CAUSATION_ID.to_owned(),
            causation.clone().into_bytes(),
        ));
    }
    out
}
