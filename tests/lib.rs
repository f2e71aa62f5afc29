//! End-to-end scenarios live in this package's tests: the processors run as processes on
//! devbroker, with the schema registry on Postgres, and the tests post and read Avro events.
