//! patronage-aggregator: approved contributions become patronage tallies per member and
//! period; when a period closes, its patronage is sealed (SPEC §5).
//!
//! Reads `habitat.people` (contribution states) and `habitat.treasury` (periods, policy),
//! merged in timestamp order by the runtime. Keeps, per tenant, the latest state of every
//! contribution, a tally per (period, member), the periods and the policy in force. Writes
//! `PatronageTallied` when a tally changes, `PeriodPatronageSealed` when a period closes and
//! `LateContributionChange` when a contribution of a sealed period changes.
//!
//! State that ends: a period's tallies are deleted when it is sealed (the seal is their
//! last use), and its contributions when `PeriodDistributed` says its cash is paid out;
//! the period's sealed marker stays, so a later change is still reported as late (its
//! previous state then unknown).

use std::collections::BTreeMap;

use contracts::records::{
    ContributionKind, ContributionStatus, Event, KindTally, KindWeight, LateContributionChange,
    MemberPatronage, PatronageTallied, PeriodPatronageSealed,
};
use habitat_domain::{ContributionState, Kind, Money, Ratio, Seal, Tally, TallyKey, Weights};
use habitat_runtime::{
    Context, ProcessError, Processor, Record, Store, TenantKey, amount, ratio, store_key,
};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

store_key! {
    /// A contribution of a tenant.
    pub struct ContributionKey { contribution_id }
}
store_key! {
    /// A period of a tenant.
    pub struct PeriodKey { period_id }
}
store_key! {
    /// A (period, member) tally of a tenant.
    pub struct MemberTallyKey { period_id, member_id }
}

/// Store: the latest state of each contribution.
pub const CONTRIBUTIONS: Store<ContributionKey, Kept> = Store::new("contributions");
/// Store: the tally of each (period, member).
pub const TALLIES: Store<MemberTallyKey, KeptTally> = Store::new("tallies");
/// Store: each period's currency and whether it is sealed.
pub const PERIODS: Store<PeriodKey, Period> = Store::new("periods");
/// Store: the patronage policy in force.
pub const POLICIES: Store<TenantKey, Policy> = Store::new("policies");

/// Rejection class: a period closed with a negative surplus.
pub const NEGATIVE_SURPLUS: &str = "negative-surplus";
/// Rejection class: a contribution with a negative value.
pub const NEGATIVE_VALUE: &str = "negative-value";

/// The cash ratio sealed when a tenant never set a policy.
pub const DEFAULT_CASH_RATIO: Ratio = Ratio::from_units(2_000);

/// A contribution's latest state as kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Kept {
    pub state: ContributionState,
    pub status: String,
}

/// A (period, member) tally as kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptTally {
    pub tally: Tally,
    /// Approved contributions counted in it.
    pub contributions: i32,
}

/// A period as kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    pub currency: String,
    pub sealed: bool,
}

/// The policy in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub weights: Weights,
    pub cash_ratio: Ratio,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            weights: Weights::default(),
            cash_ratio: DEFAULT_CASH_RATIO,
        }
    }
}

/// The contribution state of any of the three contribution records (same fields).
macro_rules! state_of {
    ($c:expr) => {
        Contribution::of(
            $c.contribution_id.clone(),
            $c.member_id.clone(),
            $c.period_id.clone(),
            $c.kind,
            $c.value,
            $c.status,
        )?
    };
}

#[derive(Clone, Debug, Default)]
pub struct PatronageAggregator;

impl Processor for PatronageAggregator {
    type In = Event;
    type Out = Event;

    fn name(&self) -> &str {
        "patronage-aggregator"
    }

    fn stores(&self) -> Vec<&'static str> {
        vec![
            CONTRIBUTIONS.name(),
            TALLIES.name(),
            PERIODS.name(),
            POLICIES.name(),
        ]
    }

    fn process(
        &self,
        ctx: &mut Context<'_, Event>,
        record: &Record<Event>,
    ) -> Result<(), ProcessError> {
        let Some(event) = &record.value else {
            return Ok(());
        };
        let tenant = event.meta().tenant_id.clone();
        match event {
            Event::ContributionSubmitted(c) => contribution(ctx, &tenant, event, state_of!(c)),
            Event::ContributionApproved(c) => contribution(ctx, &tenant, event, state_of!(c)),
            Event::ContributionRejected(c) => contribution(ctx, &tenant, event, state_of!(c)),
            Event::PeriodOpened(p) => {
                let key = PeriodKey::new(&tenant, &p.period_id);
                let mut period = PERIODS.get(ctx, &key)?.unwrap_or_default();
                period.currency.clone_from(&p.currency);
                PERIODS.put(ctx, &key, &period)
            }
            Event::PatronagePolicySet(p) => {
                let mut weights = BTreeMap::new();
                for w in &p.weights {
                    _ = weights.insert(kind(w.kind), ratio(w.weight, "weight")?);
                }
                let policy = Policy {
                    weights: Weights(weights),
                    cash_ratio: ratio(p.cash_ratio, "cash_ratio")?,
                };
                POLICIES.put(ctx, &TenantKey::new(&tenant), &policy)
            }
            Event::PeriodClosed(p) => {
                let key = PeriodKey::new(&tenant, &p.period_id);
                let mut period = PERIODS.get(ctx, &key)?.unwrap_or_default();
                if period.sealed {
                    return Ok(());
                }
                let surplus: Money = amount(p.net_surplus, "net_surplus")?;
                if surplus.is_negative() {
                    return Err(ProcessError::rejected(
                        NEGATIVE_SURPLUS,
                        format!("period {} closed with surplus {surplus}", p.period_id),
                    ));
                }
                let policy = POLICIES
                    .get(ctx, &TenantKey::new(&tenant))?
                    .unwrap_or_default();
                let prefix_len = tenant.len() + p.period_id.len() + 2;
                let tallies: BTreeMap<String, Tally> = TALLIES
                    .scan(ctx, &[&tenant, &p.period_id])?
                    .into_iter()
                    .map(|(k, kept)| (k[prefix_len..].to_owned(), kept.tally))
                    .collect();
                let seal = Seal::new(&tallies, &policy.weights);
                for member in tallies.keys() {
                    TALLIES.delete(ctx, &MemberTallyKey::new(&tenant, &p.period_id, member))?;
                }
                ctx.emit(PeriodPatronageSealed {
                    meta: ctx.meta::<PeriodPatronageSealed>(&tenant),
                    period_id: p.period_id.clone(),
                    currency: p.currency.clone(),
                    net_surplus: surplus.to_decimal(),
                    weights: policy
                        .weights
                        .0
                        .iter()
                        .map(|(k, w)| KindWeight {
                            kind: contribution_kind(*k),
                            weight: w.to_decimal(),
                        })
                        .collect(),
                    cash_ratio: policy.cash_ratio.to_decimal(),
                    members: seal
                        .members
                        .iter()
                        .map(|m| MemberPatronage {
                            member_id: m.member_id.clone(),
                            by_kind: by_kind(&m.tally),
                            weighted: m.weighted.to_decimal(),
                        })
                        .collect(),
                    total_weighted: seal.total_weighted.to_decimal(),
                    sealed_at: p.meta.occurred_at,
                });
                period.sealed = true;
                period.currency.clone_from(&p.currency);
                PERIODS.put(ctx, &key, &period)
            }
            Event::PeriodDistributed(d) => {
                let sealed = PERIODS
                    .get(ctx, &PeriodKey::new(&tenant, &d.period_id))?
                    .is_some_and(|p| p.sealed);
                if !sealed {
                    return Ok(());
                }
                let prefix_len = tenant.len() + 1;
                for (key, kept) in CONTRIBUTIONS.scan(ctx, &[&tenant])? {
                    if kept.state.period_id == d.period_id {
                        let id = &key[prefix_len..];
                        CONTRIBUTIONS.delete(ctx, &ContributionKey::new(&tenant, id))?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// A contribution record, whichever its type.
struct Contribution {
    id: String,
    status: ContributionStatus,
    state: ContributionState,
}

impl Contribution {
    fn of(
        id: String,
        member_id: String,
        period_id: String,
        kind_of: ContributionKind,
        value: Decimal,
        status: ContributionStatus,
    ) -> Result<Self, ProcessError> {
        let value: Money = amount(value, "value")?;
        if value.is_negative() {
            return Err(ProcessError::rejected(
                NEGATIVE_VALUE,
                format!("contribution {id} has value {value}"),
            ));
        }
        Ok(Self {
            state: ContributionState {
                period_id,
                member_id,
                kind: kind(kind_of),
                value,
                approved: status == ContributionStatus::Approved,
            },
            status,
            id,
        })
    }
}

fn contribution(
    ctx: &mut Context<'_, Event>,
    tenant: &str,
    event: &Event,
    new: Contribution,
) -> Result<(), ProcessError> {
    let key = ContributionKey::new(tenant, &new.id);
    let old = CONTRIBUTIONS.get(ctx, &key)?;
    if old
        .as_ref()
        .is_some_and(|o| o.state == new.state && o.status == new.status.as_str())
    {
        return Ok(());
    }
    let period = PERIODS
        .get(ctx, &PeriodKey::new(tenant, &new.state.period_id))?
        .unwrap_or_default();
    CONTRIBUTIONS.put(
        ctx,
        &key,
        &Kept {
            state: new.state.clone(),
            status: new.status.as_str().to_owned(),
        },
    )?;
    if period.sealed {
        // The seal stands; finance sees the change as an exception.
        ctx.emit(LateContributionChange {
            meta: ctx.meta::<LateContributionChange>(tenant),
            contribution_id: new.id.clone(),
            member_id: new.state.member_id.clone(),
            period_id: new.state.period_id.clone(),
            previous_status: old
                .as_ref()
                .and_then(|o| ContributionStatus::from_symbol(&o.status)),
            previous_value: old.as_ref().map(|o| o.state.value.to_decimal()),
            new_status: new.status,
            new_value: new.state.value.to_decimal(),
            source_event_id: event.meta().event_id.clone(),
        });
        return Ok(());
    }
    let mut changed: BTreeMap<TallyKey, KeptTally> = BTreeMap::new();
    let old_state = old.as_ref().map(|o| &o.state);
    for (tally_key, kind, change) in ContributionState::effect(old_state, Some(&new.state)) {
        let slot = tally_slot(ctx, tenant, &mut changed, &tally_key)?;
        slot.tally.add(kind, change);
    }
    // Counted contributions: one out of the old tally, one into the new.
    for (state, delta) in [(old_state, -1), (Some(&new.state), 1)] {
        if let Some(state) = state.filter(|s| s.approved) {
            let tally_key = TallyKey {
                period_id: state.period_id.clone(),
                member_id: state.member_id.clone(),
            };
            tally_slot(ctx, tenant, &mut changed, &tally_key)?.contributions += delta;
        }
    }
    for (tally_key, kept) in changed {
        let store_key = MemberTallyKey::new(tenant, &tally_key.period_id, &tally_key.member_id);
        let before = TALLIES.get(ctx, &store_key)?.unwrap_or_default();
        if before == kept {
            continue;
        }
        if kept.tally.is_empty() && kept.contributions == 0 {
            TALLIES.delete(ctx, &store_key)?;
        } else {
            TALLIES.put(ctx, &store_key, &kept)?;
        }
        let total: i128 = kept.tally.0.values().map(|m| m.cents()).sum();
        ctx.emit(PatronageTallied {
            meta: ctx.meta::<PatronageTallied>(tenant),
            period_id: tally_key.period_id.clone(),
            member_id: tally_key.member_id.clone(),
            by_kind: by_kind(&kept.tally),
            total: Money::from_cents(total).to_decimal(),
            contributions: kept.contributions,
        });
    }
    Ok(())
}

fn tally_slot<'m>(
    ctx: &Context<'_, Event>,
    tenant: &str,
    changed: &'m mut BTreeMap<TallyKey, KeptTally>,
    key: &TallyKey,
) -> Result<&'m mut KeptTally, ProcessError> {
    if !changed.contains_key(key) {
        let stored = TALLIES
            .get(
                ctx,
                &MemberTallyKey::new(tenant, &key.period_id, &key.member_id),
            )?
            .unwrap_or_default();
        _ = changed.insert(key.clone(), stored);
    }
    Ok(changed.get_mut(key).expect("inserted above"))
}

fn by_kind(tally: &Tally) -> Vec<KindTally> {
    tally
        .0
        .iter()
        .map(|(k, v)| KindTally {
            kind: contribution_kind(*k),
            value: v.to_decimal(),
        })
        .collect()
}

/// The domain's kind of a contract's kind.
pub fn kind(kind: ContributionKind) -> Kind {
    match kind {
        ContributionKind::Labor => Kind::Labor,
        ContributionKind::Expertise => Kind::Expertise,
        ContributionKind::Capital => Kind::Capital,
        ContributionKind::Relationship => Kind::Relationship,
    }
}

/// The contract's kind of a domain kind.
pub fn contribution_kind(kind: Kind) -> ContributionKind {
    match kind {
        Kind::Labor => ContributionKind::Labor,
        Kind::Expertise => ContributionKind::Expertise,
        Kind::Capital => ContributionKind::Capital,
        Kind::Relationship => ContributionKind::Relationship,
    }
}
