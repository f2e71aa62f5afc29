//! allocation-calculator: a sealed period's surplus divided among its members, proposed as
//! a set with a hash, approved only by a decision that names that hash (SPEC §5).
//!
//! Reads `habitat.agreements`: `PeriodPatronageSealed`, `AllocationSetApproved`. Keeps the
//! proposed set of every period. Writes `AllocationProposed` per member and
//! `AllocationSetProposed`; on a matching approval `AllocationApproved` per member and
//! `AllocationSetStatusChanged(APPROVED)`; on a stale or unknown hash
//! `AllocationSetStatusChanged(APPROVAL_REJECTED)` with the reason. A repeated approval is
//! a no-op.

use contracts::records::{
    AllocationApproved, AllocationProposed, AllocationSetApproved, AllocationSetProposed,
    AllocationSetStatus, AllocationSetStatusChanged, AllocationStatus, Event,
    PeriodPatronageSealed,
};
use habitat_domain::{AllocationSet, MemberWeight, Money, Ratio, Weighted, allocate};
use habitat_runtime::{Context, ProcessError, Processor, Record, Store, amount, ratio, store_key};
use serde::{Deserialize, Serialize};

store_key! {
    /// A period of a tenant.
    pub struct PeriodKey { period_id }
}

/// Rejection class: the seal cannot be allocated (its figures contradict each other).
pub const ALLOCATION: &str = "allocation";

/// Store: the proposed (or approved) set of each period.
pub const SETS: Store<PeriodKey, KeptSet> = Store::new("sets");

/// A period's set as kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptSet {
    pub currency: String,
    pub net_surplus: Money,
    pub set: AllocationSet,
    pub approved: bool,
}

#[derive(Clone, Debug, Default)]
pub struct AllocationCalculator;

impl Processor for AllocationCalculator {
    type In = Event;
    type Out = Event;

    fn name(&self) -> &str {
        "allocation-calculator"
    }

    fn stores(&self) -> Vec<&'static str> {
        vec![SETS.name()]
    }

    fn process(
        &self,
        ctx: &mut Context<'_, Event>,
        record: &Record<Event>,
    ) -> Result<(), ProcessError> {
        match &record.value {
            Some(Event::PeriodPatronageSealed(seal)) => sealed(ctx, seal),
            Some(Event::AllocationSetApproved(decision)) => approval(ctx, decision),
            _ => Ok(()),
        }
    }
}

fn allocation_id(period_id: &str, member_id: &str) -> String {
    format!("{period_id}:{member_id}")
}

fn sealed(ctx: &mut Context<'_, Event>, seal: &PeriodPatronageSealed) -> Result<(), ProcessError> {
    let tenant = seal.meta.tenant_id.clone();
    let key = PeriodKey::new(&tenant, &seal.period_id);
    let surplus: Money = amount(seal.net_surplus, "net_surplus")?;
    let cash_ratio: Ratio = ratio(seal.cash_ratio, "cash_ratio")?;
    let members = seal
        .members
        .iter()
        .map(|m| {
            amount::<Weighted, _>(m.weighted, "weighted").map(|weighted| MemberWeight {
                member_id: m.member_id.clone(),
                weighted,
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let set = allocate(surplus, &members, cash_ratio)
        .map_err(|e| ProcessError::rejected(ALLOCATION, e.to_string()))?;
    let existing = SETS.get(ctx, &key)?;
    if existing
        .as_ref()
        .is_some_and(|k| k.set.set_hash == set.set_hash || k.approved)
    {
        // The same seal again, or a set already approved: nothing changes.
        return Ok(());
    }
    for a in &set.allocations {
        ctx.emit(AllocationProposed {
            meta: ctx.meta::<AllocationProposed>(&tenant),
            period_id: seal.period_id.clone(),
            member_id: a.member_id.clone(),
            allocation_id: allocation_id(&seal.period_id, &a.member_id),
            amount: a.amount.to_decimal(),
            cash: a.cash.to_decimal(),
            retained: a.retained.to_decimal(),
            currency: seal.currency.clone(),
            status: AllocationStatus::Proposed,
            set_hash: set.set_hash.clone(),
        });
    }
    ctx.emit(AllocationSetProposed {
        meta: ctx.meta::<AllocationSetProposed>(&tenant),
        period_id: seal.period_id.clone(),
        currency: seal.currency.clone(),
        net_surplus: surplus.to_decimal(),
        total_amount: set.total_amount.to_decimal(),
        total_cash: set.total_cash.to_decimal(),
        total_retained: set.total_retained.to_decimal(),
        members: i32::try_from(set.allocations.len()).unwrap_or(i32::MAX),
        set_hash: set.set_hash.clone(),
        status: AllocationSetStatus::Proposed,
    });
    SETS.put(
        ctx,
        &key,
        &KeptSet {
            currency: seal.currency.clone(),
            net_surplus: surplus,
            set,
            approved: false,
        },
    )
}

fn approval(
    ctx: &mut Context<'_, Event>,
    decision: &AllocationSetApproved,
) -> Result<(), ProcessError> {
    let tenant = decision.meta.tenant_id.clone();
    let key = PeriodKey::new(&tenant, &decision.period_id);
    let kept = SETS.get(ctx, &key)?;
    let rejection = match &kept {
        None => Some(format!(
            "no allocation set was proposed for period {}",
            decision.period_id
        )),
        Some(k) if k.set.set_hash == decision.set_hash && k.approved => return Ok(()),
        Some(k) if k.set.set_hash != decision.set_hash => Some(format!(
            "set hash {} does not match the proposed set {}",
            decision.set_hash, k.set.set_hash
        )),
        Some(_) => None,
    };
    let status = if rejection.is_some() {
        AllocationSetStatus::ApprovalRejected
    } else {
        AllocationSetStatus::Approved
    };
    if let (None, Some(k)) = (&rejection, &kept) {
        for a in &k.set.allocations {
            ctx.emit(AllocationApproved {
                meta: ctx.meta::<AllocationApproved>(&tenant),
                period_id: decision.period_id.clone(),
                member_id: a.member_id.clone(),
                allocation_id: allocation_id(&decision.period_id, &a.member_id),
                amount: a.amount.to_decimal(),
                cash: a.cash.to_decimal(),
                retained: a.retained.to_decimal(),
                currency: k.currency.clone(),
                status: AllocationStatus::Approved,
                set_hash: k.set.set_hash.clone(),
                approved_by: decision.approved_by.clone(),
                approved_at: decision.approved_at,
            });
        }
    }
    let zero = Money::ZERO;
    let set = kept.as_ref().map(|k| &k.set);
    ctx.emit(AllocationSetStatusChanged {
        meta: ctx.meta::<AllocationSetStatusChanged>(&tenant),
        period_id: decision.period_id.clone(),
        // XXX: the ISO 4217 code for "no currency", when no set exists.
        currency: kept
            .as_ref()
            .map_or_else(|| "XXX".to_owned(), |k| k.currency.clone()),
        net_surplus: kept.as_ref().map_or(zero, |k| k.net_surplus).to_decimal(),
        total_amount: set.map_or(zero, |s| s.total_amount).to_decimal(),
        total_cash: set.map_or(zero, |s| s.total_cash).to_decimal(),
        total_retained: set.map_or(zero, |s| s.total_retained).to_decimal(),
        members: set.map_or(0, |s| {
            i32::try_from(s.allocations.len()).unwrap_or(i32::MAX)
        }),
        set_hash: decision.set_hash.clone(),
        status,
        reason: rejection.clone(),
        decision_event_id: decision.meta.event_id.clone(),
        approved_by: rejection.is_none().then(|| decision.approved_by.clone()),
    });
    if rejection.is_none()
        && let Some(mut k) = kept
    {
        k.approved = true;
        SETS.put(ctx, &key, &k)?;
    }
    Ok(())
}
