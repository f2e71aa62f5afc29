//! A topic's log settings: the Kafka topic configs that decide when segments roll and what
//! the cleaner removes, with Kafka's defaults.

use std::fmt;

/// The topic configs the log acts on, and Kafka's default for each.
pub const DEFAULTS: [(&str, &str); 8] = [
    ("cleanup.policy", "delete"),
    ("segment.bytes", "1073741824"),
    ("segment.ms", "604800000"),
    ("min.compaction.lag.ms", "0"),
    ("min.cleanable.dirty.ratio", "0.5"),
    ("delete.retention.ms", "86400000"),
    ("retention.ms", "604800000"),
    ("retention.bytes", "-1"),
];

/// How one topic's partitions roll, compact and expire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Settings {
    /// `cleanup.policy` holds `compact`: keep the latest record per key.
    pub compact: bool,
    /// `cleanup.policy` holds `delete`: drop whole segments past retention.
    pub delete: bool,
    pub segment_bytes: u64,
    pub segment_ms: i64,
    pub min_compaction_lag_ms: i64,
    pub min_cleanable_dirty_ratio: f64,
    pub delete_retention_ms: i64,
    /// Negative: no time limit.
    pub retention_ms: i64,
    /// Negative: no size limit.
    pub retention_bytes: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self::parse(std::iter::empty::<(&str, Option<&str>)>())
            .expect("Kafka's defaults are valid settings")
    }
}

/// A topic config with a value the log cannot use.
#[derive(Clone, Debug, Eq, PartialEq)]
pub struct InvalidSetting {
    pub name: String,
    pub value: String,
    pub expected: &'static str,
}

impl fmt::Display for InvalidSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid value {:?} for configuration {}: {}",
            self.value, self.name, self.expected
        )
    }
}

impl Settings {
    /// Settings from a topic's configs; a config absent (or `None`) takes Kafka's default,
    /// configs the log does not act on are ignored.
    pub fn parse<'a>(
        configs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Self, InvalidSetting> {
        let mut values: Vec<(&str, &str)> = DEFAULTS.to_vec();
        for (name, value) in configs {
            if let (Some(slot), Some(value)) =
                (values.iter_mut().find(|(known, _)| *known == name), value)
            {
                slot.1 = value;
            }
        }
        let get = |name: &str| {
            values
                .iter()
                .find(|(known, _)| *known == name)
                .map_or("", |(_, value)| value.trim())
        };
        let invalid = |name: &str, expected: &'static str| InvalidSetting {
            name: name.to_owned(),
            value: get(name).to_owned(),
            expected,
        };
        let int = |name: &str, min: i64| -> Result<i64, InvalidSetting> {
            get(name)
                .parse::<i64>()
                .ok()
                .filter(|v| *v >= min)
                .ok_or_else(|| {
                    invalid(
                        name,
                        if min < 0 {
                            "a whole number, -1 for no limit"
                        } else if min == 0 {
                            "a whole number, 0 or more"
                        } else {
                            "a whole number, 1 or more"
                        },
                    )
                })
        };
        let mut compact = false;
        let mut delete = false;
        for policy in get("cleanup.policy").split(',') {
            match policy.trim() {
                "compact" => compact = true,
                "delete" => delete = true,
                _ => {
                    return Err(invalid(
                        "cleanup.policy",
                        "compact, delete, or both separated by a comma",
                    ));
                }
            }
        }
        let ratio = get("min.cleanable.dirty.ratio")
            .parse::<f64>()
            .ok()
            .filter(|r| (0.0..=1.0).contains(r))
            .ok_or_else(|| invalid("min.cleanable.dirty.ratio", "a number from 0 to 1"))?;
        // Kafka's lower bound: a segment holds at least a batch header and one record.
        let segment_bytes = int("segment.bytes", 14)?;
        Ok(Self {
            compact,
            delete,
            segment_bytes: segment_bytes as u64,
            segment_ms: int("segment.ms", 1)?,
            min_compaction_lag_ms: int("min.compaction.lag.ms", 0)?,
            min_cleanable_dirty_ratio: ratio,
            delete_retention_ms: int("delete.retention.ms", 0)?,
            retention_ms: int("retention.ms", -1)?,
            retention_bytes: int("retention.bytes", -1)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_configs_take_kafkas_defaults() {
        let settings = Settings::default();
        assert!(settings.delete && !settings.compact);
        assert_eq!(settings.segment_bytes, 1 << 30);
        assert_eq!(settings.retention_ms, 7 * 24 * 3_600_000);
        assert_eq!(settings.retention_bytes, -1);
    }

    #[test]
    fn both_policies_and_overrides_are_read() {
        let settings = Settings::parse([
            ("cleanup.policy", Some("compact, delete")),
            ("segment.ms", Some("100")),
            ("min.cleanable.dirty.ratio", Some("0")),
            ("unrelated", Some("x")),
        ])
        .unwrap();
        assert!(settings.compact && settings.delete);
        assert_eq!(settings.segment_ms, 100);
        assert_eq!(settings.min_cleanable_dirty_ratio, 0.0);
    }

    #[test]
    fn unusable_values_are_named() {
        let error = Settings::parse([("cleanup.policy", Some("forever"))]).unwrap_err();
        assert_eq!(error.name, "cleanup.policy");
        let error = Settings::parse([("min.cleanable.dirty.ratio", Some("2"))]).unwrap_err();
        assert!(error.to_string().contains("from 0 to 1"), "{error}");
        let error = Settings::parse([("segment.ms", Some("0"))]).unwrap_err();
        assert!(error.to_string().contains("segment.ms"), "{error}");
    }
}
