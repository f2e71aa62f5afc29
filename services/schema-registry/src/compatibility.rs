//! Compatibility levels and the check between a candidate schema and registered ones,
//! decided by apache-avro's schema-compatibility checker.

use std::{fmt, str::FromStr};

use apache_avro::{Schema, schema_compatibility::SchemaCompatibility};

use crate::error::{RegistryError, Result};

/// Confluent's compatibility levels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    None,
    Backward,
    BackwardTransitive,
    Forward,
    ForwardTransitive,
    Full,
    FullTransitive,
}

impl Level {
    pub const ALL: [Self; 7] = [
        Self::None,
        Self::Backward,
        Self::BackwardTransitive,
        Self::Forward,
        Self::ForwardTransitive,
        Self::Full,
        Self::FullTransitive,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "NONE",
            Self::Backward => "BACKWARD",
            Self::BackwardTransitive => "BACKWARD_TRANSITIVE",
            Self::Forward => "FORWARD",
            Self::ForwardTransitive => "FORWARD_TRANSITIVE",
            Self::Full => "FULL",
            Self::FullTransitive => "FULL_TRANSITIVE",
        }
    }

    /// Whether the candidate is checked against every earlier version, or the latest only.
    pub fn transitive(self) -> bool {
        matches!(
            self,
            Self::BackwardTransitive | Self::ForwardTransitive | Self::FullTransitive
        )
    }

    fn backward(self) -> bool {
        matches!(
            self,
            Self::Backward | Self::BackwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    fn forward(self) -> bool {
        matches!(
            self,
            Self::Forward | Self::ForwardTransitive | Self::Full | Self::FullTransitive
        )
    }

    /// Why `candidate` may not follow `existing` (version `version`) at this level; empty
    /// when it may.
    pub fn problems(self, candidate: &Schema, existing: &Schema, version: i32) -> Vec<String> {
        let mut problems = Vec::new();
        if self.backward()
            && let Err(error) = SchemaCompatibility::can_read(existing, candidate)
        {
            problems.push(format!(
                "the new schema cannot read data written with version {version} (BACKWARD): {error}"
            ));
        }
        if self.forward()
            && let Err(error) = SchemaCompatibility::can_read(candidate, existing)
        {
            problems.push(format!(
                "version {version} cannot read data written with the new schema (FORWARD): {error}"
            ));
        }
        problems
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Level {
    type Err = ();

    fn from_str(text: &str) -> Result<Self, ()> {
        let upper = text.to_ascii_uppercase();
        Self::ALL
            .into_iter()
            .find(|level| level.as_str() == upper)
            .ok_or(())
    }
}

/// Parses a schema text; an invalid one is Confluent's 42201.
pub fn parse(text: &str) -> Result<Schema> {
    Schema::parse_str(text)
        .map_err(|e| RegistryError::invalid_schema(format!("Invalid schema: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(fields: &str) -> Schema {
        Schema::parse_str(&format!(
            r#"{{"type":"record","name":"R","namespace":"t","fields":[{fields}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_new_field_without_default_breaks_backward_but_not_forward() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
        assert!(!Level::Backward.problems(&v2, &v1, 1).is_empty());
        assert!(Level::Forward.problems(&v2, &v1, 1).is_empty());
        assert_eq!(Level::Full.problems(&v2, &v1, 1).len(), 1);
        assert!(Level::None.problems(&v2, &v1, 1).is_empty());
    }

    #[test]
    fn a_new_field_with_default_is_fully_compatible() {
        let v1 = schema(r#"{"name":"a","type":"string"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int","default":0}"#);
        for level in Level::ALL {
            assert!(level.problems(&v2, &v1, 1).is_empty(), "{level}");
        }
    }

    #[test]
    fn removing_a_field_without_default_breaks_forward() {
        let v1 = schema(r#"{"name":"a","type":"string"},{"name":"b","type":"int"}"#);
        let v2 = schema(r#"{"name":"a","type":"string"}"#);
        assert!(Level::Backward.problems(&v2, &v1, 1).is_empty());
        assert!(!Level::Forward.problems(&v2, &v1, 1).is_empty());
    }

    #[test]
    fn levels_parse_in_any_case() {
        assert_eq!("full_transitive".parse(), Ok(Level::FullTransitive));
        assert_eq!("BACKWARD".parse(), Ok(Level::Backward));
        assert_eq!("sideways".parse::<Level>(), Err(()));
    }
}
