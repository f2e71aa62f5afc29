//! Compatibility with older Kafka clients.
//!
//! Tansu answers ApiVersions v3+ with the KIP-584 feature tagged fields (supported and
//! finalized features, their epoch, zk_migration_ready). librdkafka 2.0 — Debian 12's
//! kcat — fails to skip them ("Read underflow … broker version < 0.10") and never
//! connects. Every client treats those fields as optional, so devbroker answers without
//! them: the response is cut after `throttle_time_ms` and closed with an empty tag
//! section.

use bytes::{BufMut, Bytes, BytesMut};
use rama::{Context, Layer, Service};
use tracing::warn;

const API_VERSIONS_KEY: i16 = 18;

/// Adapts responses for clients older than Tansu expects.
#[derive(Clone, Copy, Debug, Default)]
pub struct LegacyClientLayer;

impl<S> Layer<S> for LegacyClientLayer {
    type Service = LegacyClientService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LegacyClientService { inner }
    }
}

#[derive(Clone, Debug)]
pub struct LegacyClientService<S> {
    inner: S,
}

impl<S, State> Service<State, Bytes> for LegacyClientService<S>
where
    S: Service<State, Bytes, Response = Bytes>,
    State: Clone + Send + Sync + 'static,
{
    type Response = Bytes;
    type Error = S::Error;

    async fn serve(&self, ctx: Context<State>, req: Bytes) -> Result<Bytes, S::Error> {
        let flexible_api_versions = req.len() >= 8
            && i16::from_be_bytes([req[4], req[5]]) == API_VERSIONS_KEY
            && i16::from_be_bytes([req[6], req[7]]) >= 3;
        let response = self.inner.serve(ctx, req).await?;
        if !flexible_api_versions {
            return Ok(response);
        }
        Ok(without_feature_tags(&response).unwrap_or_else(|| {
            warn!("Unexpected ApiVersions response layout; sent unchanged.");
            response
        }))
    }
}

/// Reads an unsigned varint at `*at`.
fn uvarint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let byte = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Skips a tagged-field section at `*at`.
fn skip_tags(bytes: &[u8], at: &mut usize) -> Option<()> {
    for _ in 0..uvarint(bytes, at)? {
        _ = uvarint(bytes, at)?;
        *at += usize::try_from(uvarint(bytes, at)?).ok()?;
    }
    (*at <= bytes.len()).then_some(())
}

/// An ApiVersions v3+ response frame (size, correlation id, body) re-framed without its
/// top-level tagged fields. `None` when the layout is not the expected one.
pub fn without_feature_tags(frame: &[u8]) -> Option<Bytes> {
    // size (4), correlation id (4), error code (2)
    let mut at = 10;
    let keys = uvarint(frame, &mut at)?.checked_sub(1)?;
    for _ in 0..keys {
        at += 6; // api key, min version, max version
        skip_tags(frame, &mut at)?;
    }
    at += 4; // throttle_time_ms
    if at > frame.len() {
        return None;
    }
    let mut out = BytesMut::with_capacity(at + 1);
    out.put_i32(i32::try_from(at + 1 - 4).ok()?);
    out.put_slice(&frame[4..at]);
    out.put_u8(0);
    Some(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feature_tags_are_dropped_and_the_frame_resized() {
        let mut body = vec![0, 0, 0, 7]; // correlation id
        body.extend([0, 0]); // error code
        body.push(2); // one api key
        body.extend([0, 18, 0, 0, 0, 4, 0]); // ApiVersions 0..=4, no tags
        body.extend([0, 0, 0, 0]); // throttle
        body.extend([
            2, 1, 8, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 3, 1, 0,
        ]);
        let mut frame = (body.len() as i32).to_be_bytes().to_vec();
        frame.extend(&body);

        let fixed = without_feature_tags(&frame).expect("expected layout");
        let mut expected = ((body.len() - 14 + 1) as i32).to_be_bytes().to_vec();
        expected.extend(&body[..body.len() - 14]);
        expected.push(0);
        assert_eq!(fixed.as_ref(), expected.as_slice());
    }

    #[test]
    fn a_truncated_frame_is_left_alone() {
        assert_eq!(
            without_feature_tags(&[0, 0, 0, 6, 0, 0, 0, 1, 0, 0, 9]),
            None
        );
    }
}
