//! The template processor: copy this crate to start a new processor.
//!
//! It reads `habitat.people` and keeps, per member and period, the total value of the
//! member's approved contributions — as a function of the latest state of each
//! contribution: an approval counts its value, a later rejection (or a re-submission)
//! takes it out again, a correction replaces it, and a redelivery changes nothing. A
//! contribution with a negative value breaks a domain rule and is dead-lettered with the
//! class [`NEGATIVE_VALUE`].
//!
//! It publishes each total on a topic of its own, [`TOTALS_TOPIC`] (a compacted view,
//! JSON), once the total has been quiet for [`QUIET`]: every change (re)schedules the
//! [`PUBLISH`] timer of its member and period, so a burst of changes is published once.
//! A total that drops to no contribution is published as a tombstone.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use contracts::records::{
    ContributionApproved, ContributionRejected, ContributionSubmitted, Event, Meta,
};
use habitat_runtime::{
    Context, Payload, ProcessError, Processor, Record, Routed, Store, StoreKey, Timer, store_key,
};
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

/// Timer: a member's period total is published (its key: the total's store key).
pub const PUBLISH: &str = "publish";
/// How long a total must stay unchanged before it is published, by default.
pub const QUIET: Duration = Duration::from_secs(60);
/// The variable that sets the quiet period in seconds (read by `main`).
pub const QUIET_VARIABLE: &str = "HABITAT_TEMPLATE_QUIET_SECONDS";
/// The topic the totals are published on (the processor's own, created at its start).
pub const TOTALS_TOPIC: &str = "template.member-period-totals";

/// Rejection class: a contribution with a negative value (listed in the README).
pub const NEGATIVE_VALUE: &str = "negative-value";

/// What the template keeps per member and period.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Total {
    pub contributions: u32,
    pub value: Decimal,
}

/// What the template publishes: a member's period total, as of when it was published.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberPeriodTotal {
    pub tenant_id: String,
    pub member_id: String,
    pub period_id: String,
    pub contributions: u32,
    /// Money as a decimal string (`"170.50"`), never a float.
    pub value: Decimal,
    pub as_of: DateTime<Utc>,
}

/// A plain value: no envelope, so no trace headers.
impl Payload for MemberPeriodTotal {}

/// Published on the template's own topic under the total's key.
impl Routed for MemberPeriodTotal {
    fn topic(&self) -> &str {
        TOTALS_TOPIC
    }

    fn key(&self) -> String {
        MemberPeriodKey::new(&self.tenant_id, &self.member_id, &self.period_id).render()
    }
}

/// The processor. It holds configuration only: state lives in its stores.
#[derive(Clone, Debug)]
pub struct Template {
    /// How long a total stays unchanged before it is published.
    pub quiet: Duration,
}

impl Default for Template {
    fn default() -> Self {
        Self { quiet: QUIET }
    }
}

impl Processor for Template {
    type In = Event;
    type Out = MemberPeriodTotal;

    fn name(&self) -> &str {
        "template"
    }

    fn stores(&self) -> Vec<&'static str> {
        vec![COUNTED.name(), TOTALS.name()]
    }

    fn variables(&self) -> Vec<&'static str> {
        vec![QUIET_VARIABLE]
    }

    fn timers(&self) -> Vec<&'static str> {
        vec![PUBLISH]
    }

    fn output_topics(&self) -> Vec<&'static str> {
        vec![TOTALS_TOPIC]
    }

    fn process(&self, ctx: &mut Ctx<'_>, record: &Record<Event>) -> Result<(), ProcessError> {
        // One handler per record type the processor reads.
        match &record.value {
            Some(Event::ContributionApproved(c)) => self.approved(ctx, c),
            Some(Event::ContributionRejected(c)) => self.rejected(ctx, c),
            Some(Event::ContributionSubmitted(c)) => self.submitted(ctx, c),
            // Every other record of the topic is not this processor's business.
            _ => Ok(()),
        }
    }

    fn on_timer(&self, ctx: &mut Ctx<'_>, timer: &Timer) -> Result<(), ProcessError> {
        match timer.name.as_str() {
            PUBLISH => publish(ctx, &timer.key),
            other => Err(ProcessError::Fatal(format!("no such timer {other}"))),
        }
    }
}

/// The context the template's handlers get: it emits [`MemberPeriodTotal`]s.
pub type Ctx<'a> = Context<'a, MemberPeriodTotal>;

/// One handler per record type.
impl Template {
    /// An approval counts the contribution's value.
    fn approved(&self, ctx: &mut Ctx<'_>, c: &ContributionApproved) -> Result<(), ProcessError> {
        let at = Counted::of(&c.meta, &c.contribution_id, &c.member_id, &c.period_id);
        at.set(
            ctx,
            self.quiet,
            Some(non_negative(c.value, &c.contribution_id)?),
        )
    }

    /// A rejection takes out what an earlier approval counted.
    fn rejected(&self, ctx: &mut Ctx<'_>, c: &ContributionRejected) -> Result<(), ProcessError> {
        let at = Counted::of(&c.meta, &c.contribution_id, &c.member_id, &c.period_id);
        at.set(ctx, self.quiet, None)
    }

    /// A (re-)submission is not approved (any more): nothing of it counts.
    fn submitted(&self, ctx: &mut Ctx<'_>, c: &ContributionSubmitted) -> Result<(), ProcessError> {
        let at = Counted::of(&c.meta, &c.contribution_id, &c.member_id, &c.period_id);
        at.set(ctx, self.quiet, None)
    }
}

/// The quiet period is over: the total as it stands now is published (a tombstone when
/// nothing counts any more).
fn publish(ctx: &mut Ctx<'_>, rendered: &str) -> Result<(), ProcessError> {
    let key = MemberPeriodKey::parse(rendered)
        .ok_or_else(|| ProcessError::Fatal(format!("timer key {rendered} is not a total's")))?;
    match TOTALS.get(ctx, &key)? {
        Some(total) => {
            let now = ctx.now();
            ctx.emit(MemberPeriodTotal {
                tenant_id: key.tenant,
                member_id: key.member_id,
                period_id: key.period_id,
                contributions: total.contributions,
                value: total.value,
                as_of: now,
            });
        }
        None => ctx.send(TOTALS_TOPIC, rendered, None),
    }
    Ok(())
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
    fn of(meta: &Meta, contribution_id: &str, member_id: &str, period_id: &str) -> Self {
        let tenant = &meta.tenant_id;
        Self {
            contribution: ContributionKey::new(tenant, contribution_id),
            total: MemberPeriodKey::new(tenant, member_id, period_id),
        }
    }

    /// Makes `now` the contribution's counted value (`None`: it counts nothing), moving the
    /// total by the difference and scheduling its publication. The same value again
    /// changes nothing.
    fn set(
        &self,
        ctx: &mut Ctx<'_>,
        quiet: Duration,
        now: Option<Decimal>,
    ) -> Result<(), ProcessError> {
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
        if total.contributions == 0 {
            TOTALS.delete(ctx, &self.total)?;
        } else {
            TOTALS.put(ctx, &self.total, &total)?;
        }
        match now {
            Some(value) => COUNTED.put(ctx, &self.contribution, &value)?,
            None => COUNTED.delete(ctx, &self.contribution)?,
        }
        // A later change moves the publication on: a burst is published once.
        let due = ctx.now() + TimeDelta::from_std(quiet).unwrap_or(TimeDelta::MAX);
        ctx.schedule(PUBLISH, &self.total.render(), due, None)
    }
}
