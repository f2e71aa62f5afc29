//! Postgres' binary `COPY` format, for appending `event_log` rows.
//!
//! `COPY … FROM STDIN (FORMAT BINARY)` takes each row as its fields' binary forms, so the
//! server parses no array parameters and runs no executor node per row: appending the log
//! this way costs the server about a third less than `INSERT … SELECT FROM unnest(…)`
//! (docs/benchmarks.md). The format: a signature, flags and header extension, then per
//! row a field count and each field as a length (`-1` for NULL) and its bytes, then `-1`.

use chrono::{DateTime, Utc};

/// `PGCOPY\n\377\r\n\0`, no flags, no header extension.
const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";

/// Microseconds from the Unix epoch to Postgres' (2000-01-01 00:00:00 UTC).
const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;

/// A binary `COPY` stream being written.
#[derive(Debug)]
pub struct CopyWriter {
    buf: Vec<u8>,
}

impl Default for CopyWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyWriter {
    pub fn new() -> Self {
        Self::with_capacity(0)
    }

    /// A stream with room for `bytes` of rows after the header, so that a batch's stream
    /// is not copied over as it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        let mut buf = Vec::with_capacity(HEADER.len() + bytes + 2);
        buf.extend_from_slice(HEADER);
        Self { buf }
    }

    /// Starts a row of `fields` fields; each is then written in the table's column order.
    pub fn row(&mut self, fields: i16) -> &mut Self {
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self
    }

    fn field(&mut self, bytes: &[u8]) {
        let len = i32::try_from(bytes.len()).expect("a field under 2 GiB");
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    /// A `text` field (its binary form is the UTF-8 text).
    pub fn text(&mut self, value: Option<&str>) -> &mut Self {
        match value {
            Some(text) => self.field(text.as_bytes()),
            None => self.null(),
        }
        self
    }

    pub fn int4(&mut self, value: Option<i32>) -> &mut Self {
        match value {
            Some(n) => self.field(&n.to_be_bytes()),
            None => self.null(),
        }
        self
    }

    pub fn int8(&mut self, value: i64) -> &mut Self {
        self.field(&value.to_be_bytes());
        self
    }

    /// A `timestamptz` field: microseconds since 2000-01-01 UTC.
    pub fn timestamptz(&mut self, value: Option<DateTime<Utc>>) -> &mut Self {
        match value {
            Some(at) => {
                let micros = at.timestamp_micros() - POSTGRES_EPOCH_MICROS;
                self.field(&micros.to_be_bytes());
            }
            None => self.null(),
        }
        self
    }

    /// A `json` field: the text itself (the server checks that it is JSON).
    pub fn json(&mut self, json: Option<&str>) -> &mut Self {
        match json {
            Some(text) => self.field(text.as_bytes()),
            None => self.null(),
        }
        self
    }

    /// The whole stream, with its trailer.
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_rows_and_trailer() {
        let mut copy = CopyWriter::new();
        _ = copy.row(3).text(Some("ab")).int4(None).int8(7);
        let bytes = copy.finish();
        let mut expected = HEADER.to_vec();
        expected.extend_from_slice(&[0, 3]);
        expected.extend_from_slice(&[0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        expected.extend_from_slice(&[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 7]);
        expected.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(bytes, expected);
        assert_eq!(HEADER.len(), 19);
    }

    #[test]
    fn timestamps_count_from_2000_and_json_is_its_text() {
        let mut copy = CopyWriter::new();
        let at = DateTime::parse_from_rfc3339("2000-01-01T00:00:01.5Z")
            .expect("a time")
            .with_timezone(&Utc);
        _ = copy.row(2).timestamptz(Some(at)).json(Some("{}"));
        let bytes = copy.finish();
        let fields = &bytes[HEADER.len() + 2..bytes.len() - 2];
        let mut expected = vec![0, 0, 0, 8];
        expected.extend_from_slice(&1_500_000i64.to_be_bytes());
        expected.extend_from_slice(&[0, 0, 0, 2, b'{', b'}']);
        assert_eq!(fields, expected.as_slice());
    }
}
