//! How record values are turned into the processor's types and back.

use std::collections::HashSet;

use crate::Payload;

/// Why a value could not be decoded or encoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// The bytes are not a value of the expected format: the record is dead-lettered.
    #[error("undecodable: {0}")]
    Undecodable(String),
    /// The value names a schema the registry does not have: the record is dead-lettered.
    #[error("unknown schema: {0}")]
    UnknownSchema(String),
    /// The registry could not be reached: the transaction is aborted and retried.
    #[error("schema registry unavailable: {0}")]
    Unavailable(String),
    /// The registry refused our credentials: misconfigured, the process stops (the record
    /// is not at fault and is not dead-lettered).
    #[error("the schema registry refused the credentials: {0}")]
    Unauthorized(String),
    /// A value the processor made cannot be written: a defect, the process stops.
    #[error("cannot encode: {0}")]
    Encode(String),
}

/// Turns record bytes into input values and output values into bytes.
pub trait Codec: Send + Sync + 'static {
    type In: Payload + Send + 'static;
    type Out: Payload + Send + 'static;

    fn decode(&self, topic: &str, bytes: &[u8]) -> Result<Self::In, CodecError>;
    fn encode(&self, topic: &str, value: &Self::Out) -> Result<Vec<u8>, CodecError>;

    /// Whether a value is of one of the record types in `reads`. A codec that can tell a
    /// value's type without decoding it (Avro: by its schema id) answers; the engine then
    /// passes over values of types its processor does not read, undecoded. When the type
    /// cannot be told, the answer is `true` and decoding decides.
    fn is_read(&self, _bytes: &[u8], _reads: &HashSet<String>) -> bool {
        true
    }
}

/// UTF-8 text values (tools, tests, examples).
#[derive(Clone, Copy, Debug, Default)]
pub struct Utf8;

impl Codec for Utf8 {
    type In = String;
    type Out = String;

    fn decode(&self, _topic: &str, bytes: &[u8]) -> Result<String, CodecError> {
        String::from_utf8(bytes.to_vec())
            .map_err(|e| CodecError::Undecodable(format!("not UTF-8: {e}")))
    }

    fn encode(&self, _topic: &str, value: &String) -> Result<Vec<u8>, CodecError> {
        Ok(value.clone().into_bytes())
    }
}
