//! allocation-calculator: a sealed period's surplus divided among its members, proposed as
//! a set with a hash, approved only by a decision that names that hash (SPEC §5).
//!
//! Reads `habitat.agreements`: `PeriodPatronageSealed`, `AllocationSetApproved`. Keeps the
//! proposed set of every period. Writes `AllocationProposed` per member and
//! `AllocationSetProposed`; on a matching approval `AllocationApproved` per member and
//! `AllocationSetStatusChanged(APPROVED)`; on a stale or unknown hash
//! `AllocationApprovalRejected` with the reason, keyed by the decision — the set's own
//! record is never replaced by a refusal. A repeated approval is a no-op. An approved set
//! is kept without its lines (they were emitted; the hash and totals are what a later
//! approval is checked against).

use contracts::records::{
    AllocationApprovalRejected, AllocationApproved, AllocationProposed, AllocationSetApproved,
    AllocationSetProposed, AllocationSetStatus, AllocationSetStatusChanged, AllocationStatus,
    Event, PeriodPatronageSealed,
};
use habitat_domain::{Allocation, AllocationSet, MemberWeight, Money, Ratio, Weighted, allocate};
use habitat_runtime::{Context, ProcessError, Processor, Record, Store, amount, ratio, store_key};
use serde::{Deserialize, Serialize};

store_key! {
    /// A period of a tenant.
    pub struct PeriodKey { period_id }
}

/// Rejection class: the seal cannot be allocated (its figures contradict each other).
pub const ALLOCATION: &str = "allocation";

/// Invariant: the allocations of a set add up to the surplus exactly (a set with no
/// allocations — no patronage, or no surplus — allocates nothing), and its totals are the
/// sums of its lines.
pub const ALLOCATIONS_ADD_UP: &str = "allocations-add-up-to-surplus";
/// Invariant: each allocation's cash is at least `cash_ratio` × its amount, and cash plus
/// retained is the amount.
pub const CASH_SHARE: &str = "cash-at-least-ratio";

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
    check_set(&seal.period_id, surplus, cash_ratio, &set)?;
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

/// What the calculator owns, checked before anything of a set is written.
pub fn check_set(
    period_id: &str,
    surplus: Money,
    cash_ratio: Ratio,
    set: &AllocationSet,
) -> Result<(), ProcessError> {
    let sum = |part: fn(&Allocation) -> Money| {
        Money::from_cents(set.allocations.iter().map(|a| part(a).cents()).sum())
    };
    let (amount, cash, retained) = (sum(|a| a.amount), sum(|a| a.cash), sum(|a| a.retained));
    ProcessError::ensure(
        (set.allocations.is_empty() || amount == surplus)
            && (amount, cash, retained) == (set.total_amount, set.total_cash, set.total_retained),
        ALLOCATIONS_ADD_UP,
        || {
            format!(
                "period {period_id}: surplus {surplus}, {} allocations summing to {amount} \
                 (cash {cash}, retained {retained}); the set's totals say {} ({} + {})",
                set.allocations.len(),
                set.total_amount,
                set.total_cash,
                set.total_retained
            )
        },
    )?;
    for a in &set.allocations {
        ProcessError::ensure(
            a.cash.checked_add(a.retained) == Some(a.amount)
                && a.cash.to_decimal() >= a.amount.to_decimal() * cash_ratio.to_decimal(),
            CASH_SHARE,
            || {
                format!(
                    "period {period_id}, member {}: amount {}, cash {}, retained {}, cash ratio {}",
                    a.member_id, a.amount, a.cash, a.retained, cash_ratio
                )
            },
        )?;
    }
    Ok(())
}

fn approval(
    ctx: &mut Context<'_, Event>,
    decision: &AllocationSetApproved,
) -> Result<(), ProcessError> {
    let tenant = decision.meta.tenant_id.clone();
    let key = PeriodKey::new(&tenant, &decision.period_id);
    let Some(mut kept) = SETS.get(ctx, &key)? else {
        let reason = format!(
            "no allocation set was proposed for period {}",
            decision.period_id
        );
        return refuse(ctx, decision, None, reason);
    };
    if kept.set.set_hash != decision.set_hash {
        let reason = format!(
            "set hash {} does not match the proposed set {}",
            decision.set_hash, kept.set.set_hash
        );
        return refuse(ctx, decision, Some(&kept), reason);
    }
    if kept.approved {
        return Ok(()); // the same approval again
    }
    for a in &kept.set.allocations {
        ctx.emit(AllocationApproved {
            meta: ctx.meta::<AllocationApproved>(&tenant),
            period_id: decision.period_id.clone(),
            member_id: a.member_id.clone(),
            allocation_id: allocation_id(&decision.period_id, &a.member_id),
            amount: a.amount.to_decimal(),
            cash: a.cash.to_decimal(),
            retained: a.retained.to_decimal(),
            currency: kept.currency.clone(),
            status: AllocationStatus::Approved,
            set_hash: kept.set.set_hash.clone(),
            approved_by: decision.approved_by.clone(),
            approved_at: decision.approved_at,
        });
    }
    let set = &kept.set;
    ctx.emit(AllocationSetStatusChanged {
        meta: ctx.meta::<AllocationSetStatusChanged>(&tenant),
        period_id: decision.period_id.clone(),
        currency: kept.currency.clone(),
        net_surplus: kept.net_surplus.to_decimal(),
        total_amount: set.total_amount.to_decimal(),
        total_cash: set.total_cash.to_decimal(),
        total_retained: set.total_retained.to_decimal(),
        members: i32::try_from(set.allocations.len()).unwrap_or(i32::MAX),
        set_hash: set.set_hash.clone(),
        status: AllocationSetStatus::Approved,
        reason: None,
        decision_event_id: decision.meta.event_id.clone(),
        approved_by: Some(decision.approved_by.clone()),
    });
    kept.approved = true;
    // An approved set is final: its lines were emitted and are never read again; the
    // hash and totals answer a repeated or stale approval.
    kept.set.allocations.clear();
    SETS.put(ctx, &key, &kept)
}

/// An approval that cannot be applied is a fact of its own, keyed by the decision: the
/// set's record (its key's latest value, what compaction keeps) is never replaced by a
/// refusal.
fn refuse(
    ctx: &mut Context<'_, Event>,
    decision: &AllocationSetApproved,
    kept: Option<&KeptSet>,
    reason: String,
) -> Result<(), ProcessError> {
    ctx.emit(AllocationApprovalRejected {
        meta: ctx.meta::<AllocationApprovalRejected>(&decision.meta.tenant_id),
        period_id: decision.period_id.clone(),
        decision_event_id: decision.meta.event_id.clone(),
        set_hash: decision.set_hash.clone(),
        approved_by: decision.approved_by.clone(),
        proposed_set_hash: kept.map(|k| k.set.set_hash.clone()),
        set_status: kept.map(|k| {
            if k.approved {
                AllocationSetStatus::Approved
            } else {
                AllocationSetStatus::Proposed
            }
        }),
        reason,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set() -> (Money, Ratio, AllocationSet) {
        let surplus = Money::from_cents(100_000);
        let ratio: Ratio = "0.3000".parse().expect("ratio");
        let members = ["m-a", "m-b", "m-c"].map(|m| MemberWeight {
            member_id: m.to_owned(),
            weighted: "1.0000".parse().expect("weight"),
        });
        let set = allocate(surplus, &members, ratio).expect("allocated");
        (surplus, ratio, set)
    }

    fn broken(result: Result<(), ProcessError>) -> (String, String) {
        match result {
            Err(ProcessError::Broken {
                invariant,
                evidence,
            }) => (invariant, evidence),
            other => panic!("expected a broken invariant: {other:?}"),
        }
    }

    #[test]
    fn a_set_the_domain_makes_keeps_both_invariants() {
        let (surplus, ratio, set) = set();
        assert_eq!(check_set("2026", surplus, ratio, &set), Ok(()));
    }

    #[test]
    fn a_set_that_does_not_add_up_to_the_surplus_is_broken_with_its_figures() {
        let (surplus, ratio, mut set) = set();
        set.allocations[0].amount = Money::from_cents(set.allocations[0].amount.cents() + 1);
        set.allocations[0].retained = Money::from_cents(set.allocations[0].retained.cents() + 1);
        let (invariant, evidence) = broken(check_set("2026", surplus, ratio, &set));
        assert_eq!(invariant, ALLOCATIONS_ADD_UP);
        assert!(
            evidence.contains("surplus 1000.00, 3 allocations summing to 1000.01"),
            "{evidence}"
        );
    }

    #[test]
    fn cash_below_the_ratio_is_broken_with_the_member() {
        let (surplus, ratio, mut set) = set();
        // Same totals, but m-a's cash moved to retained: below 30 %.
        let a = &mut set.allocations[0];
        a.retained = a.amount;
        a.cash = Money::ZERO;
        set.total_cash = Money::from_cents(set.allocations.iter().map(|a| a.cash.cents()).sum());
        set.total_retained =
            Money::from_cents(set.allocations.iter().map(|a| a.retained.cents()).sum());
        let (invariant, evidence) = broken(check_set("2026", surplus, ratio, &set));
        assert_eq!(invariant, CASH_SHARE);
        assert!(evidence.contains("member m-a"), "{evidence}");
    }
}
