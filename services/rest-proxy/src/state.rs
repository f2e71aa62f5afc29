//! What the handlers share, and the limits of a request.

use std::sync::Arc;

use habitat_runtime::avro::AvroCodec;

use crate::{
    idempotency::Idempotency, keys::Keys, metrics::HttpMetrics, partitions::Partitions,
    rate::RateLimit, registry::Schemas, writer::Writer,
};

/// Limits of a request.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of a request body (413 above).
    pub body_bytes: usize,
    /// Events of a batch (422 above).
    pub batch_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            body_bytes: 1024 * 1024,
            batch_events: 500,
        }
    }
}

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub keys: Arc<Keys>,
    pub rate: Arc<RateLimit>,
    pub idempotency: Idempotency,
    pub writer: Writer,
    pub codec: Arc<AvroCodec>,
    pub partitions: Arc<Partitions>,
    /// Schemas named by v3 requests.
    pub schemas: Arc<Schemas>,
    pub limits: Limits,
    pub metrics: HttpMetrics,
}
