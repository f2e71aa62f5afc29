//! distribution-recorder: the single writer of the ledger and the member capital accounts.
//!
//! Reads `habitat.agreements`: `AllocationApproved`, `LoanFunded`, `DistributionScheduled`,
//! `PaymentStatusChanged`. Keeps what it posted (by deterministic transaction id, so a
//! redelivered record posts nothing twice), each member's allocated capital (account 3100)
//! and each distribution's settled installments. Writes `TransactionPosted` per movement of
//! money (SPEC §5's posting table over a configurable chart), `CapitalAccountUpdated` when a
//! member's allocated capital changes, and `DistributionCompleted` when every installment of
//! a distribution is settled.

use chrono::{DateTime, NaiveDate, Utc};
use contracts::records::{
    CapitalAccountUpdated, DistributionCompleted, Event, LedgerLine, PaymentPurpose, PaymentStatus,
    PaymentStatusChanged, TransactionPosted,
};
use habitat_domain::{
    Money,
    ledger::{Chart, Posting},
};
use habitat_runtime::{Context, ProcessError, Processor, Record, Store, amount, store_key};
use serde::{Deserialize, Serialize};

store_key! {
    /// A ledger transaction of a tenant.
    pub struct TransactionKey { transaction_id }
}
store_key! {
    /// A member of a tenant.
    pub struct MemberKey { member_id }
}
store_key! {
    /// A member's balance in one currency, of a tenant.
    pub struct MemberCurrencyKey { member_id, currency }
}
store_key! {
    /// A distribution (its schedule) of a tenant.
    pub struct ScheduleKey { schedule_id }
}

/// Store: transaction ids posted.
pub const POSTED: Store<TransactionKey, bool> = Store::new("posted");
/// Names a YAML file of account codes (see `habitat_domain::ledger::Chart`).
pub const CHART_VARIABLE: &str = "HABITAT_CHART";
/// Store: each member's allocated capital balance.
pub const CAPITAL: Store<MemberKey, Money> = Store::new("capital");
/// Store: each member's patronage dividends payable (account 2300), per currency.
pub const PAYABLE: Store<MemberCurrencyKey, Money> = Store::new("payable");
/// Invariant: every transaction posted balances (debits = credits).
pub const BALANCED: &str = "posting-balances";
/// Invariant: no member's patronage dividends payable goes below zero.
pub const PAYABLE_NOT_NEGATIVE: &str = "payable-not-negative";
/// Store: each distribution's installments and settlements.
pub const DISTRIBUTIONS: Store<ScheduleKey, Distribution> = Store::new("distributions");

/// A distribution being paid out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Distribution {
    pub period_id: String,
    pub member_id: String,
    pub cash: Money,
    pub currency: String,
    pub installments: i32,
    pub settled: Vec<String>,
    pub completed: bool,
}

#[derive(Clone, Debug, Default)]
pub struct DistributionRecorder {
    pub chart: Chart,
}

impl Processor for DistributionRecorder {
    type In = Event;
    type Out = Event;

    fn name(&self) -> &str {
        "distribution-recorder"
    }

    fn variables(&self) -> Vec<&'static str> {
        vec![CHART_VARIABLE]
    }

    fn stores(&self) -> Vec<&'static str> {
        vec![
            POSTED.name(),
            CAPITAL.name(),
            PAYABLE.name(),
            DISTRIBUTIONS.name(),
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
            Event::AllocationApproved(a) => {
                let (amount, cash, retained) = (
                    amount(a.amount, "amount")?,
                    amount(a.cash, "cash")?,
                    amount(a.retained, "retained")?,
                );
                let id = format!("alloc:{}:{}", a.period_id, a.member_id);
                let posting = self
                    .chart
                    .allocation_approved(&a.member_id, amount, cash, retained);
                let description =
                    format!("Patronage allocation {} for {}", a.period_id, a.member_id);
                if self.post(
                    ctx,
                    &tenant,
                    event,
                    &id,
                    a.approved_at.date_naive(),
                    &a.currency,
                    &description,
                    &posting,
                )? {
                    self.capital(ctx, &tenant, &a.member_id, &a.currency, retained, &id)?;
                }
                Ok(())
            }
            Event::LoanFunded(l) => {
                let posting = self
                    .chart
                    .loan_funded(&l.member_id, amount(l.principal, "principal")?);
                let description = format!("Loan {} funded for {}", l.loan_id, l.member_id);
                self.post(
                    ctx,
                    &tenant,
                    event,
                    &format!("loan:{}", l.loan_id),
                    l.funded_on,
                    &l.currency,
                    &description,
                    &posting,
                )
                .map(drop)
            }
            Event::DistributionScheduled(d) => {
                let key = ScheduleKey::new(&tenant, &d.schedule_id);
                let mut kept = DISTRIBUTIONS.get(ctx, &key)?.unwrap_or_default();
                kept.period_id.clone_from(&d.period_id);
                kept.member_id.clone_from(&d.member_id);
                kept.cash = amount(d.cash, "cash")?;
                kept.currency.clone_from(&d.currency);
                kept.installments = d.installments;
                self.complete_if_paid(ctx, &tenant, &d.schedule_id, kept, ctx.now())
            }
            Event::PaymentStatusChanged(p) if p.status == PaymentStatus::Settled => {
                self.settled(ctx, &tenant, event, p)
            }
            _ => Ok(()),
        }
    }
}

impl DistributionRecorder {
    /// Posts a transaction once; returns whether it was new.
    #[allow(clippy::too_many_arguments)]
    fn post(
        &self,
        ctx: &mut Context<'_, Event>,
        tenant: &str,
        source: &Event,
        transaction_id: &str,
        posted_on: NaiveDate,
        currency: &str,
        description: &str,
        posting: &Posting,
    ) -> Result<bool, ProcessError> {
        let key = TransactionKey::new(tenant, transaction_id);
        if POSTED.get(ctx, &key)?.is_some() || posting.lines.is_empty() {
            return Ok(false);
        }
        ProcessError::ensure(posting.balances(), BALANCED, || {
            format!(
                "transaction {transaction_id}: debits {}, credits {}",
                posting.debits(),
                posting.credits()
            )
        })?;
        self.move_payable(ctx, tenant, transaction_id, currency, posting)?;
        ctx.emit(TransactionPosted {
            meta: ctx.meta::<TransactionPosted>(tenant),
            transaction_id: transaction_id.to_owned(),
            posted_on,
            currency: currency.to_owned(),
            description: description.to_owned(),
            source_event_id: source.meta().event_id.clone(),
            lines: posting
                .lines
                .iter()
                .map(|l| LedgerLine {
                    account: l.account.clone(),
                    member_id: l.member_id.clone(),
                    debit: l.debit.to_decimal(),
                    credit: l.credit.to_decimal(),
                    memo: description.to_owned(),
                })
                .collect(),
        });
        POSTED.put(ctx, &key, &true)?;
        Ok(true)
    }

    /// Moves each member's payable by the posting's lines on account 2300; none may go
    /// below zero.
    fn move_payable(
        &self,
        ctx: &mut Context<'_, Event>,
        tenant: &str,
        transaction_id: &str,
        currency: &str,
        posting: &Posting,
    ) -> Result<(), ProcessError> {
        let payable = &self.chart.patronage_dividends_payable;
        for line in posting.lines.iter().filter(|l| &l.account == payable) {
            let member = line.member_id.as_deref().unwrap_or_default();
            let key = MemberCurrencyKey::new(tenant, member, currency);
            let before = PAYABLE.get(ctx, &key)?.unwrap_or_default();
            let after =
                Money::from_cents(before.cents() + line.credit.cents() - line.debit.cents());
            ProcessError::ensure(!after.is_negative(), PAYABLE_NOT_NEGATIVE, || {
                format!(
                    "transaction {transaction_id}: member {member}'s payable {before} {currency} \
                     would become {after} (debit {}, credit {})",
                    line.debit, line.credit
                )
            })?;
            PAYABLE.put(ctx, &key, &after)?;
        }
        Ok(())
    }

    fn capital(
        &self,
        ctx: &mut Context<'_, Event>,
        tenant: &str,
        member: &str,
        currency: &str,
        change: Money,
        transaction_id: &str,
    ) -> Result<(), ProcessError> {
        if change == Money::ZERO {
            return Ok(());
        }
        let key = MemberKey::new(tenant, member);
        let balance =
            Money::from_cents(CAPITAL.get(ctx, &key)?.unwrap_or_default().cents() + change.cents());
        CAPITAL.put(ctx, &key, &balance)?;
        ctx.emit(CapitalAccountUpdated {
            meta: ctx.meta::<CapitalAccountUpdated>(tenant),
            member_id: member.to_owned(),
            currency: currency.to_owned(),
            balance: balance.to_decimal(),
            change: change.to_decimal(),
            transaction_id: transaction_id.to_owned(),
        });
        Ok(())
    }

    fn settled(
        &self,
        ctx: &mut Context<'_, Event>,
        tenant: &str,
        event: &Event,
        p: &PaymentStatusChanged,
    ) -> Result<(), ProcessError> {
        let id = format!("pay:{}", p.payment_id);
        let posted_on = p.settled_at.unwrap_or_else(|| ctx.now()).date_naive();
        match p.purpose {
            PaymentPurpose::LoanRepayment => {
                let posting = self.chart.loan_payment_settled(
                    &p.member_id,
                    amount(p.principal, "principal")?,
                    amount(p.interest, "interest")?,
                );
                let description = format!("Loan payment {} settled", p.payment_id);
                self.post(
                    ctx,
                    tenant,
                    event,
                    &id,
                    posted_on,
                    &p.currency,
                    &description,
                    &posting,
                )
                .map(drop)
            }
            PaymentPurpose::Distribution => {
                let posting = self
                    .chart
                    .distribution_settled(&p.member_id, amount(p.amount, "amount")?);
                let description = format!("Patronage dividend payment {} settled", p.payment_id);
                if !self.post(
                    ctx,
                    tenant,
                    event,
                    &id,
                    posted_on,
                    &p.currency,
                    &description,
                    &posting,
                )? {
                    return Ok(());
                }
                let key = ScheduleKey::new(tenant, &p.schedule_id);
                let mut kept = DISTRIBUTIONS.get(ctx, &key)?.unwrap_or_default();
                if !kept.settled.contains(&p.payment_id) {
                    kept.settled.push(p.payment_id.clone());
                }
                self.complete_if_paid(
                    ctx,
                    tenant,
                    &p.schedule_id,
                    kept,
                    p.settled_at.unwrap_or_else(|| ctx.now()),
                )
            }
        }
    }

    /// Stores the distribution; emits `DistributionCompleted` once every installment is settled.
    fn complete_if_paid(
        &self,
        ctx: &mut Context<'_, Event>,
        tenant: &str,
        schedule_id: &str,
        mut kept: Distribution,
        at: DateTime<Utc>,
    ) -> Result<(), ProcessError> {
        let key = ScheduleKey::new(tenant, schedule_id);
        let done = kept.installments > 0
            && kept.settled.len() == usize::try_from(kept.installments).unwrap_or(usize::MAX);
        if done && !kept.completed {
            kept.completed = true;
            ctx.emit(DistributionCompleted {
                meta: ctx.meta::<DistributionCompleted>(tenant),
                distribution_id: schedule_id.to_owned(),
                period_id: kept.period_id.clone(),
                member_id: kept.member_id.clone(),
                cash: kept.cash.to_decimal(),
                currency: kept.currency.clone(),
                completed_at: at,
            });
        }
        DISTRIBUTIONS.put(ctx, &key, &kept)
    }
}
