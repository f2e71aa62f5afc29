//! The counting example as a process: `COUNTER_NAME` (default `counter`) names it,
//! `COUNTER_OUTPUT` is its output topic; everything else is the runtime's configuration.

mod processor;

use std::{
    process::ExitCode,
    sync::atomic::{AtomicBool, Ordering},
};

use habitat_runtime::{Codec, CodecError, Utf8};

/// UTF-8 values; the value `unavailable-once` makes the first decode fail as an
/// unreachable schema registry would, so the runtime aborts and rewinds.
#[derive(Default)]
struct Flaky {
    tripped: AtomicBool,
}

impl Codec for Flaky {
    type In = String;
    type Out = String;

    fn decode(&self, topic: &str, bytes: &[u8]) -> Result<String, CodecError> {
        if bytes == b"unavailable-once" && !self.tripped.swap(true, Ordering::SeqCst) {
            return Err(CodecError::Unavailable("simulated outage".to_owned()));
        }
        Utf8.decode(topic, bytes)
    }

    fn encode(&self, topic: &str, value: &String) -> Result<Vec<u8>, CodecError> {
        Utf8.encode(topic, value)
    }
}

fn main() -> ExitCode {
    let name = std::env::var("COUNTER_NAME").unwrap_or_else(|_| "counter".to_owned());
    let Ok(output) = std::env::var("COUNTER_OUTPUT") else {
        eprintln!("error: set COUNTER_OUTPUT to the output topic");
        return ExitCode::from(2);
    };
    habitat_runtime::run(processor::Counter { name, output }, Flaky::default())
}
