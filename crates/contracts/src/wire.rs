//! The Confluent wire format and subject naming.
//!
//! A value on a topic is `0x00`, the schema id as a big-endian u32, then the Avro binary
//! encoding. Subjects follow TopicRecordNameStrategy: `<topic>-<record full name>`, since
//! many record types share a topic.

/// The magic byte that opens a Confluent-framed value.
pub const MAGIC: u8 = 0;

/// A value that is not in the Confluent wire format.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("value of {0} bytes is shorter than the 5-byte header")]
    TooShort(usize),
    #[error("magic byte {0:#04x}, expected 0x00")]
    BadMagic(u8),
}

/// Frames an Avro payload with its schema id.
pub fn frame(schema_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = header(schema_id, payload.len());
    out.extend_from_slice(payload);
    out
}

/// The 5-byte header of a value with this schema id, with room for `payload` more bytes:
/// the Avro encoding is then appended in place.
pub fn header(schema_id: u32, payload: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + payload);
    out.push(MAGIC);
    out.extend_from_slice(&schema_id.to_be_bytes());
    out
}

/// Splits a framed value into its schema id and Avro payload.
pub fn unframe(value: &[u8]) -> Result<(u32, &[u8]), WireError> {
    if value.len() < 5 {
        return Err(WireError::TooShort(value.len()));
    }
    if value[0] != MAGIC {
        return Err(WireError::BadMagic(value[0]));
    }
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    Ok((id, &value[5..]))
}

/// The subject of a record type on a topic (TopicRecordNameStrategy).
pub fn subject(topic: &str, full_name: &str) -> String {
    format!("{topic}-{full_name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let framed = frame(42, b"avro");
        assert_eq!(framed, [0, 0, 0, 0, 42, b'a', b'v', b'r', b'o']);
        assert_eq!(unframe(&framed), Ok((42, &b"avro"[..])));
    }

    #[test]
    fn bad_frames_are_named() {
        assert_eq!(unframe(&[0, 1]), Err(WireError::TooShort(2)));
        assert_eq!(unframe(&[7, 0, 0, 0, 1]), Err(WireError::BadMagic(7)));
    }
}
