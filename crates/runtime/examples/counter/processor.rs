//! A stateful example processor: counts records per key.
//!
//! - any value: `counts[key] += 1`, emits `<key>=<count>` under the key;
//! - `poison`: rejected as a domain error (dead-lettered);
//! - `broken`: breaks the counter's invariant (`count-positive`): nothing is written and the
//!   process halts;
//! - `unavailable-once` (decoded by `main.rs`'s codec): fails to decode once, as if the
//!   schema registry were down, then counts like any other value;
//! - `echo:<text>`: emits `<topic>:<text>`, counting nothing (shows the merge order);
//! - `timer:<seconds>`: schedules timer `remind` for the key at the record's timestamp
//!   plus `<seconds>` and emits `scheduled:<key>`; when due it emits `fired:<key>`.

use chrono::TimeDelta;
use habitat_runtime::{Context, ProcessError, Processor, Record, Timer};

pub const COUNTS: &str = "counts";
pub const REMIND: &str = "remind";

pub struct Counter {
    pub name: String,
    pub output: String,
}

impl Processor for Counter {
    type In = String;
    type Out = String;

    fn name(&self) -> &str {
        &self.name
    }

    fn stores(&self) -> Vec<&'static str> {
        vec![COUNTS]
    }

    fn timers(&self) -> Vec<&'static str> {
        vec![REMIND]
    }

    fn process(
        &self,
        ctx: &mut Context<'_, String>,
        record: &Record<String>,
    ) -> Result<(), ProcessError> {
        let key = record.key.clone().unwrap_or_default();
        let value = record.value.as_deref().unwrap_or_default();
        ProcessError::ensure(value != "broken", "count-positive", || {
            format!("{key} would count below one")
        })?;
        if value == "poison" {
            return Err(ProcessError::rejected(
                "poison",
                format!("{key} carries poison"),
            ));
        }
        if let Some(text) = value.strip_prefix("echo:") {
            ctx.send(&self.output, key, Some(format!("{}:{text}", record.topic)));
            return Ok(());
        }
        if let Some(seconds) = value.strip_prefix("timer:") {
            let seconds: i64 = seconds.parse().map_err(|_| {
                ProcessError::rejected("bad-timer", format!("{value} is not timer:<seconds>"))
            })?;
            ctx.schedule(
                REMIND,
                &key,
                record.timestamp + TimeDelta::seconds(seconds),
                None,
            )?;
            ctx.send(&self.output, key.clone(), Some(format!("scheduled:{key}")));
            return Ok(());
        }
        let count = ctx.get::<u64>(COUNTS, &key)?.unwrap_or(0) + 1;
        ctx.put(COUNTS, &key, &count)?;
        ctx.send(&self.output, key.clone(), Some(format!("{key}={count}")));
        Ok(())
    }

    fn on_timer(&self, ctx: &mut Context<'_, String>, timer: &Timer) -> Result<(), ProcessError> {
        ctx.send(
            &self.output,
            timer.key.clone(),
            Some(format!("fired:{}", timer.key)),
        );
        Ok(())
    }
}
