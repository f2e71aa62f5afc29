//! The template processor: copy this crate to start a new processor.
//!
//! It reads `habitat.people` and keeps, per member and period, the total value of the
//! member's approved contributions — as a function of the latest state of each
//! contribution, so a correction replaces the old value and a redelivery changes nothing.
//! An approved contribution with a negative value breaks a domain rule and is
//! dead-lettered. (A real processor emits its own records with `ctx.emit`; see
//! `docs/adding-a-processor.md`.)

use contracts::records::{ContributionApproved, ContributionStatus, Event};
use habitat_runtime::{Context, ProcessError, Processor, Record};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Store: the value last counted for each contribution, by `<tenant>/<contribution>`.
pub const COUNTED: &str = "counted";
/// Store: approved value per member and period, by `<tenant>/<member>/<period>`.
pub const TOTALS: &str = "totals";

/// What the template keeps per member and period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Total {
    pub contributions: u32,
    pub value: Decimal,
}

/// The processor. It holds configuration only: state lives in its stores.
#[derive(Clone, Debug, Default)]
pub struct Template;

impl Processor for Template {
    type In = Event;
    type Out = Event;

    fn name(&self) -> &str {
        "template"
    }

    fn stores(&self) -> Vec<&'static str> {
        vec![COUNTED, TOTALS]
    }

    fn process(
        &self,
        ctx: &mut Context<'_, Event>,
        record: &Record<Event>,
    ) -> Result<(), ProcessError> {
        match &record.value {
            Some(Event::ContributionApproved(approved)) => self.approved(ctx, approved),
            // Every other record of the topic is not this processor's business.
            _ => Ok(()),
        }
    }
}

impl Template {
    fn approved(
        &self,
        ctx: &mut Context<'_, Event>,
        c: &ContributionApproved,
    ) -> Result<(), ProcessError> {
        if c.value.is_sign_negative() {
            return Err(ProcessError::rejected(
                "negative-value",
                format!(
                    "contribution {} has a negative value {}",
                    c.contribution_id, c.value
                ),
            ));
        }
        let tenant = &c.meta.tenant_id;
        let counted_key = format!("{tenant}/{}", c.contribution_id);
        let now = (c.status == ContributionStatus::Approved).then_some(c.value);
        let before: Option<Decimal> = ctx.get(COUNTED, &counted_key)?;
        if before == now {
            return Ok(());
        }
        let total_key = format!("{tenant}/{}/{}", c.member_id, c.period_id);
        let mut total: Total = ctx.get(TOTALS, &total_key)?.unwrap_or_default();
        if let Some(old) = before {
            total.value -= old;
            total.contributions -= 1;
        }
        if let Some(new) = now {
            total.value += new;
            total.contributions += 1;
        }
        ctx.put(TOTALS, &total_key, &total)?;
        match now {
            Some(value) => ctx.put(COUNTED, &counted_key, &value),
            None => ctx.delete(COUNTED, &counted_key),
        }
    }
}
