//! The template processor: copy this crate to start a new processor.
//!
//! It reads `habitat.people` and keeps, per member and period, the total value of the
//! member's approved contributions — as a function of the latest state of each
//! contribution: an approval counts its value, a later rejection (or a re-submission)
//! takes it out again, a correction replaces it, and a redelivery changes nothing. A
//! contribution with a negative value breaks a domain rule and is dead-lettered with the
//! class [`NEGATIVE_VALUE`]. (A processor that writes records of its own emits them with
//! `ctx.emit`; see `docs/adding-a-processor.md`.)

use contracts::records::{
    ContributionApproved, ContributionRejected, ContributionSubmitted, Event,
};
use habitat_runtime::{Context, ProcessError, Processor, Record, Store, store_key};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

store_key! {
    /// A contribution of a tenant.
    pub struct ContributionKey { contribution_id }
}
store_key! {
    /// A member's period of a tenant.
    pub struct MemberPeriodKey { member_id, period_id }
}

/// Store: the value last counted for each contribution (none while it is not approved).
pub const COUNTED: Store<ContributionKey, Decimal> = Store::new("counted");
/// Store: approved value per member and period.
pub const TOTALS: Store<MemberPeriodKey, Total> = Store::new("totals");

/// Rejection class: a contribution with a negative value (listed in the README).
pub const NEGATIVE_VALUE: &str = "negative-value";

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
        vec![COUNTED.name(), TOTALS.name()]
    }

    fn process(
        &self,
        ctx: &mut Context<'_, Event>,
        record: &Record<Event>,
    ) -> Result<(), ProcessError> {
        // One handler per record type the processor reads.
        match &record.value {
            Some(Event::ContributionApproved(c)) => approved(ctx, c),
            Some(Event::ContributionRejected(c)) => rejected(ctx, c),
            Some(Event::ContributionSubmitted(c)) => submitted(ctx, c),
            // Every other record of the topic is not this processor's business.
            _ => Ok(()),
        }
    }
}

/// An approval counts the contribution's value.
fn approved(ctx: &mut Context<'_, Event>, c: &ContributionApproved) -> Result<(), ProcessError> {
    let at = Counted::of(
        &c.meta.tenant_id,
        &c.contribution_id,
        &c.member_id,
        &c.period_id,
    );
    at.set(ctx, Some(non_negative(c.value, &c.contribution_id)?))
}

/// A rejection takes out what an earlier approval counted.
fn rejected(ctx: &mut Context<'_, Event>, c: &ContributionRejected) -> Result<(), ProcessError> {
    let at = Counted::of(
        &c.meta.tenant_id,
        &c.contribution_id,
        &c.member_id,
        &c.period_id,
    );
    at.set(ctx, None)
}

/// A (re-)submission is not approved (any more): nothing of it counts.
fn submitted(ctx: &mut Context<'_, Event>, c: &ContributionSubmitted) -> Result<(), ProcessError> {
    let at = Counted::of(
        &c.meta.tenant_id,
        &c.contribution_id,
        &c.member_id,
        &c.period_id,
    );
    at.set(ctx, None)
}

fn non_negative(value: Decimal, contribution_id: &str) -> Result<Decimal, ProcessError> {
    if value.is_sign_negative() {
        return Err(ProcessError::rejected(
            NEGATIVE_VALUE,
            format!("contribution {contribution_id} has a negative value {value}"),
        ));
    }
    Ok(value)
}

/// Where a contribution counts: its own entry and its member's period total.
struct Counted {
    contribution: ContributionKey,
    total: MemberPeriodKey,
}

impl Counted {
    fn of(tenant: &str, contribution_id: &str, member_id: &str, period_id: &str) -> Self {
        Self {
            contribution: ContributionKey::new(tenant, contribution_id),
            total: MemberPeriodKey::new(tenant, member_id, period_id),
        }
    }

    /// Makes `now` the contribution's counted value (`None`: it counts nothing), moving the
    /// total by the difference. The same value again changes nothing.
    fn set(&self, ctx: &mut Context<'_, Event>, now: Option<Decimal>) -> Result<(), ProcessError> {
        let before = COUNTED.get(ctx, &self.contribution)?;
        if before == now {
            return Ok(());
        }
        let mut total = TOTALS.get(ctx, &self.total)?.unwrap_or_default();
        if let Some(old) = before {
            total.value -= old;
            total.contributions -= 1;
        }
        if let Some(new) = now {
            total.value += new;
            total.contributions += 1;
        }
        TOTALS.put(ctx, &self.total, &total)?;
        match now {
            Some(value) => COUNTED.put(ctx, &self.contribution, &value),
            None => COUNTED.delete(ctx, &self.contribution),
        }
    }
}
