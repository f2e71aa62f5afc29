//! Avro values through the schema registry: the Confluent wire format, subjects by
//! TopicRecordNameStrategy (`<topic>-<record full name>`), schemas cached by id and by
//! subject so the registry is asked once per schema per process.
//!
//! Decoding resolves the writer's schema (from the id in the record) to this build's
//! reader schema of the same record, so records written by older producers still read.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, RwLock},
};

use apache_avro::Schema;
use contracts::{
    records::{CATALOG, Event},
    wire,
};
use schema_registry_converter::{
    async_impl::schema_registry::{SrSettings, get_schema_by_id, get_schema_by_subject},
    error::SRCError,
    schema_registry_common::{SchemaType, SubjectNameStrategy, SuppliedSchema},
};
use tokio::runtime::Handle;

use crate::{Codec, CodecError, config::RegistryAuth};

/// The codec of [`Event`]s: every record of the catalog, Avro through the registry.
pub struct AvroCodec {
    settings: SrSettings,
    handle: Handle,
    writers: RwLock<HashMap<u32, Arc<Known>>>,
    /// Registered ids by record full name, then topic.
    ids: RwLock<HashMap<&'static str, Vec<(String, u32)>>>,
    readers: HashMap<&'static str, Known>,
}

/// A parsed schema with its record's full name and its Parsing Canonical Form.
struct Known {
    name: String,
    schema: Schema,
    canonical: String,
}

impl Known {
    fn new(name: String, schema: Schema) -> Self {
        let canonical = schema.canonical_form();
        Self {
            name,
            schema,
            canonical,
        }
    }
}

impl AvroCodec {
    /// A codec asking the registry at `url` without credentials; registry calls run on
    /// `handle`.
    pub fn new(url: &str, handle: Handle) -> Result<Self, CodecError> {
        Self::with_auth(url, None, handle)
    }

    /// A codec asking the registry at `url` with HTTP Basic credentials, when given (a
    /// registry that requires them for writes refuses to register without).
    pub fn with_auth(
        url: &str,
        auth: Option<&RegistryAuth>,
        handle: Handle,
    ) -> Result<Self, CodecError> {
        let readers = CATALOG
            .iter()
            .map(|info| {
                Schema::parse_str(info.schema)
                    .map(|schema| {
                        (
                            info.full_name,
                            Known::new(info.full_name.to_owned(), schema),
                        )
                    })
                    .map_err(|e| CodecError::Encode(format!("{}: {e}", info.full_name)))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            settings: {
                let mut settings = SrSettings::new_builder(url.trim_end_matches('/').to_owned());
                if let Some(auth) = auth {
                    _ = settings.set_basic_authorization(&auth.user, Some(&auth.password));
                }
                settings
                    .build()
                    .map_err(|e| CodecError::Unavailable(format!("registry client: {e}")))?
            },
            handle,
            writers: RwLock::new(HashMap::new()),
            ids: RwLock::new(HashMap::new()),
            readers,
        })
    }

    fn writer(&self, id: u32) -> Result<Arc<Known>, CodecError> {
        if let Some(found) = self.writers.read().expect("cache lock").get(&id) {
            return Ok(found.clone());
        }
        let registered = self
            .handle
            .block_on(get_schema_by_id(id, &self.settings))
            .map_err(|e| lookup_error(&e, &format!("schema id {id}")))?;
        let schema = Schema::parse_str(&registered.schema).map_err(|e| {
            CodecError::UnknownSchema(format!("schema id {id} does not parse: {e}"))
        })?;
        let name = match &schema {
            Schema::Record(record) => record.name.fullname(None),
            other => {
                return Err(CodecError::UnknownSchema(format!(
                    "schema id {id} is not a record: {other:?}"
                )));
            }
        };
        let entry = Arc::new(Known::new(name, schema));
        _ = self
            .writers
            .write()
            .expect("cache lock")
            .insert(id, entry.clone());
        Ok(entry)
    }

    /// The registered id of `full_name` on `topic`, when this codec has already looked it up.
    fn cached_id(&self, topic: &str, full_name: &str) -> Option<u32> {
        self.ids
            .read()
            .expect("cache lock")
            .get(full_name)
            .and_then(|topics| topics.iter().find(|(t, _)| t == topic).map(|(_, id)| *id))
    }

    /// `event` encoded as [`Codec::encode`] does, when that needs no registry lookup (its
    /// schema's id is cached); `None` otherwise. An async caller encodes in place with this
    /// and moves to a blocking thread only for the first record of a type.
    pub fn encode_cached(&self, topic: &str, event: &Event) -> Option<Result<Vec<u8>, CodecError>> {
        let id = self.cached_id(topic, event.full_name())?;
        Some(Self::framed(id, event))
    }

    /// `bytes` decoded as [`Codec::decode`] does, when that needs no registry lookup (its
    /// writer schema is cached); `None` otherwise.
    pub fn decode_cached(&self, topic: &str, bytes: &[u8]) -> Option<Result<Event, CodecError>> {
        let (id, _) = wire::unframe(bytes).ok()?;
        let cached = self.writers.read().expect("cache lock").contains_key(&id);
        cached.then(|| self.decode(topic, bytes))
    }

    fn framed(id: u32, event: &Event) -> Result<Vec<u8>, CodecError> {
        let mut out = wire::header(id, 256);
        event
            .write_avro(&mut out)
            .map_err(|e| CodecError::Encode(e.to_string()))?;
        Ok(out)
    }

    fn id(&self, topic: &str, full_name: &'static str, schema: &str) -> Result<u32, CodecError> {
        if let Some(id) = self.cached_id(topic, full_name) {
            return Ok(id);
        }
        let supplied = SuppliedSchema::new(
            Some(full_name.to_owned()),
            SchemaType::Avro,
            schema.to_owned(),
        );
        let strategy =
            SubjectNameStrategy::TopicRecordNameStrategyWithSchema(topic.to_owned(), supplied);
        let registered = self
            .handle
            .block_on(get_schema_by_subject(&self.settings, &strategy))
            .map_err(
                |e| match lookup_error(&e, &wire::subject(topic, full_name)) {
                    CodecError::UnknownSchema(m) => CodecError::Encode(m),
                    other => other,
                },
            )?;
        self.ids
            .write()
            .expect("cache lock")
            .entry(full_name)
            .or_default()
            .push((topic.to_owned(), registered.id));
        Ok(registered.id)
    }
}

fn lookup_error(error: &SRCError, what: &str) -> CodecError {
    let text = format!("{what}: {error}");
    // The registry answers 404 for an id or subject it does not have, 401/403 for missing
    // or wrong credentials; anything else (unreachable, 5xx) is worth retrying.
    if !error.retriable && text.contains("status 404") {
        CodecError::UnknownSchema(text)
    } else if !error.retriable && (text.contains("status 401") || text.contains("status 403")) {
        CodecError::Unauthorized(format!(
            "{text} (set HABITAT_SCHEMA_REGISTRY_AUTH=user:password)"
        ))
    } else {
        CodecError::Unavailable(text)
    }
}

impl Codec for AvroCodec {
    type In = Event;
    type Out = Event;

    fn decode(&self, topic: &str, bytes: &[u8]) -> Result<Event, CodecError> {
        let (id, mut payload) =
            wire::unframe(bytes).map_err(|e| CodecError::Undecodable(format!("{topic}: {e}")))?;
        let writer = self.writer(id)?;
        let name = &writer.name;
        let reader = self.readers.get(name.as_str()).ok_or_else(|| {
            CodecError::UnknownSchema(format!(
                "{name} (schema id {id}) is not in the event catalog"
            ))
        })?;
        // Same schema (the common case): read straight into the record. Another version
        // of the record is resolved to this build's schema by the generic reader.
        if writer.canonical == reader.canonical {
            return Event::read_avro(name, payload)
                .map_err(|e| CodecError::Undecodable(format!("{name} (schema id {id}): {e}")));
        }
        let undecodable = |e: apache_avro::Error| {
            CodecError::Undecodable(format!("{name} (schema id {id}): {e}"))
        };
        let value = contracts::avro::read_resolved(&mut payload, &writer.schema, &reader.schema)
            .map_err(undecodable)?;
        Event::from_value(name, value).map_err(|e| CodecError::Undecodable(e.to_string()))
    }

    fn is_read(&self, bytes: &[u8], reads: &HashSet<String>) -> bool {
        // The schema id names the record; an unknown id or an unreachable registry is
        // left to `decode`, which dead-letters or retries.
        match wire::unframe(bytes).ok().map(|(id, _)| self.writer(id)) {
            Some(Ok(writer)) => reads.contains(&writer.name),
            _ => true,
        }
    }

    fn encode(&self, topic: &str, event: &Event) -> Result<Vec<u8>, CodecError> {
        let full_name = event.full_name();
        let id = self.id(topic, full_name, event.schema())?;
        Self::framed(id, event)
    }
}
