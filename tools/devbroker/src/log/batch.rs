//! Record batches as the log sees them: the attribute bits of transactions and control
//! batches, and the commit and abort markers it writes.

use std::time::SystemTime;

use bytes::Bytes;
use tansu_sans_io::{
    BatchAttribute, ControlBatch, EndTransactionMarker, ErrorCode,
    record::{Record, deflated, inflated},
};
use tracing::warn;

use super::LogResult;

/// Record-batch attribute bit: the batch belongs to a transaction.
const TRANSACTIONAL_BIT: i16 = 0x10;
/// Record-batch attribute bit: the batch is a control batch (a transaction marker).
const CONTROL_BIT: i16 = 0x20;

/// Whether a batch was written inside a transaction.
pub fn is_transactional(batch: &deflated::Batch) -> bool {
    batch.attributes & TRANSACTIONAL_BIT != 0
}

/// Whether a batch is a control batch (a transaction marker).
pub fn is_control(batch: &deflated::Batch) -> bool {
    batch.attributes & CONTROL_BIT != 0
}

/// `Some(true)` for a commit marker, `Some(false)` for an abort marker.
pub(super) fn control_kind(batch: &deflated::Batch) -> Option<bool> {
    let inflated = inflated::Batch::try_from(batch).ok()?;
    let key = inflated.records.first()?.key.clone()?;
    let control = ControlBatch::try_from(key).ok()?;
    Some(control.is_commit())
}

pub(super) fn marker(
    producer_id: i64,
    producer_epoch: i16,
    committed: bool,
) -> LogResult<deflated::Batch> {
    let encode = || -> Result<deflated::Batch, tansu_sans_io::Error> {
        let control = if committed {
            ControlBatch::default().commit()
        } else {
            ControlBatch::default().abort()
        };
        let key: Bytes = control.try_into()?;
        let value: Bytes = EndTransactionMarker::default().try_into()?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        inflated::Batch::builder()
            .record(Record::builder().key(key.into()).value(value.into()))
            .attributes(
                BatchAttribute::default()
                    .control(true)
                    .transaction(true)
                    .into(),
            )
            .producer_id(producer_id)
            .producer_epoch(producer_epoch)
            .base_sequence(-1)
            .base_timestamp(now)
            .max_timestamp(now)
            .build()
            .and_then(TryInto::try_into)
    };
    encode().map_err(|error| {
        warn!(%error, "Cannot encode a transaction marker.");
        ErrorCode::UnknownServerError
    })
}
