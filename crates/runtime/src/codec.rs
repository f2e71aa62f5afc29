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

/// JSON values of a serde type: a processor's own output (a derived view on a topic of its
/// own), never a record of the catalog, which is Avro through the registry.
pub struct Json<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Default for Json<T> {
    fn default() -> Self {
        Self(std::marker::PhantomData)
    }
}

impl<T> Codec for Json<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Payload + Send + 'static,
{
    type In = T;
    type Out = T;

    fn decode(&self, _topic: &str, bytes: &[u8]) -> Result<T, CodecError> {
        serde_json::from_slice(bytes).map_err(|e| CodecError::Undecodable(format!("JSON: {e}")))
    }

    fn encode(&self, _topic: &str, value: &T) -> Result<Vec<u8>, CodecError> {
        serde_json::to_vec(value).map_err(|e| CodecError::Encode(format!("JSON: {e}")))
    }
}

/// Inputs read with one codec, outputs written with another: a processor that reads the
/// catalog (Avro) and writes a view of its own (JSON).
pub struct Paired<I, O> {
    pub input: I,
    pub output: O,
}

impl<I: Codec, O: Codec> Codec for Paired<I, O> {
    type In = I::In;
    type Out = O::Out;

    fn decode(&self, topic: &str, bytes: &[u8]) -> Result<Self::In, CodecError> {
        self.input.decode(topic, bytes)
    }

    fn encode(&self, topic: &str, value: &Self::Out) -> Result<Vec<u8>, CodecError> {
        self.output.encode(topic, value)
    }

    fn is_read(&self, bytes: &[u8], reads: &HashSet<String>) -> bool {
        self.input.is_read(bytes, reads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct View {
        member: String,
    }
    impl Payload for View {}

    #[test]
    fn a_pair_reads_with_its_input_codec_and_writes_with_its_output_codec() {
        let codec = Paired {
            input: Utf8,
            output: Json::<View>::default(),
        };
        assert_eq!(codec.decode("t", b"text").expect("utf-8"), "text");
        let view = View {
            member: "m-1".to_owned(),
        };
        let bytes = codec.encode("t", &view).expect("json");
        assert_eq!(bytes, br#"{"member":"m-1"}"#);
        assert_eq!(
            Json::<View>::default().decode("t", &bytes).expect("back"),
            view
        );
        assert!(matches!(
            Json::<View>::default().decode("t", b"{"),
            Err(CodecError::Undecodable(_))
        ));
    }
}
