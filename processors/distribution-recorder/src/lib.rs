//! distribution-recorder: the single writer of the ledger and the member capital accounts.
//!
//! Reads `habitat.agreements`: `AllocationApproved`, `LoanFunded`, `DistributionScheduled`,
//! `PaymentStatusChanged`. Keeps what it posted (by deterministic transaction id, so a
//! redelivered record posts nothing twice), each member's allocated capital (account 3100)
//! and each distribution's settled installments. Writes `TransactionPosted` per movement of
//! money (SPEC §5's posting table over a configurable chart), `CapitalAccountUpdated` when a
//! member's allocated capital changes, and `DistributionCompleted` when every installment of
//! a distribution is settled.
//!
//! State that ends: once the approved set's cash of a period is paid out in full (every
//! distribution of it completed), it writes `PeriodDistributed` and forgets the period's
//! distributions and posted ids, keeping one marker per period; a record of a period so
//! marked posts nothing.

use chrono::{DateTime, NaiveDate, Utc};
use contracts::records::{
    AllocationSetStatus, CapitalAccountUpdated, DistributionCompleted, DistributionPaid, Event,
    LedgerLine, PaymentPurpose, PaymentStatus, PaymentStatusChanged, PeriodDistributed,
    TransactionPosted,
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
store_key! {
    /// A period of a tenant.
    pub struct PeriodKey { period_id }
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

/// Store: each period's payout, then the marker of a period paid out.
pub const PERIODS: Store<PeriodKey, Payout> = Store::new("periods");
/// Rejection class: a distribution's payment settled, but the distribution is not known
/// (never scheduled, or its period was paid out and forgotten).
pub const UNKNOWN_DISTRIBUTION: &str = "unknown-distribution";

/// A period's payout as kept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payout {
    pub currency: String,
    /// The approved set's total cash; none until the set is approved.
    pub cash: Option<Money>,
    /// Distributions of the period completed so far.
    pub paid: Vec<Paid>,
    /// Paid out in full: the period's state is forgotten, this marker remains.
    pub distributed: bool,
}

/// A completed distribution as kept until its period is paid out.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Paid {
    pub distribution_id: String,
    pub member_id: String,
    pub cash: Money,
    pub payments: Vec<String>,
}

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
            PERIODS.name(),
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
            Event::AllocationApproved(a) if paid_out(ctx, &tenant, &a.period_id)? => Ok(()),
            Event::AllocationApproved(a) => {
                let (amount, cash, retained) = (
                    amount(a.amount, "amount")?,
                    amount(a.cash, "cash")?,
                    amount(a.retained, "retained")?,
                );
                let id = allocation_transaction(&a.period_id, &a.member_id);
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
            Event::AllocationSetStatusChanged(s) if s.status == AllocationSetStatus::Approved => {
                let key = PeriodKey::new(&tenant, &s.period_id);
                let mut payout = PERIODS.get(ctx, &key)?.unwrap_or_default();
                if payout.distributed {
                    return Ok(());
                }
                payout.cash = Some(amount(s.total_cash, "total_cash")?);
                payout.currency.clone_from(&s.currency);
                self.pay_out_if_done(ctx, &tenant, &s.period_id, payout, s.meta.occurred_at)
            }
            Event::DistributionScheduled(d) if paid_out(ctx, &tenant, &d.period_id)? => Ok(()),
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
            if after == Money::ZERO {
                // Paid out: a member's zero balance is no entry (read back as zero).
                PAYABLE.delete(ctx, &key)?;
            } else {
                PAYABLE.put(ctx, &key, &after)?;
            }
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
        let id = payment_transaction(&p.payment_id);
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
                let key = ScheduleKey::new(tenant, &p.schedule_id);
                let Some(mut kept) = DISTRIBUTIONS.get(ctx, &key)? else {
                    return Err(ProcessError::rejected(
                        UNKNOWN_DISTRIBUTION,
                        format!(
                            "payment {} settled for distribution {}, which is not known: never \
                             scheduled, or its period was paid out and forgotten",
                            p.payment_id, p.schedule_id
                        ),
                    ));
                };
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
            DISTRIBUTIONS.put(ctx, &key, &kept)?;
            let period = PeriodKey::new(tenant, &kept.period_id);
            let mut payout = PERIODS.get(ctx, &period)?.unwrap_or_default();
            if payout.currency.is_empty() {
                payout.currency.clone_from(&kept.currency);
            }
            if !payout.paid.iter().any(|p| p.distribution_id == schedule_id) {
                payout.paid.push(Paid {
                    distribution_id: schedule_id.to_owned(),
                    member_id: kept.member_id.clone(),
                    cash: kept.cash,
                    payments: kept.settled.clone(),
                });
            }
            return self.pay_out_if_done(ctx, tenant, &kept.period_id, payout, at);
        }
        DISTRIBUTIONS.put(ctx, &key, &kept)
    }

    /// Stores the period's payout; once its distributions add up to the approved set's
    /// cash, emits `PeriodDistributed` and forgets the period's distributions and posted
    /// ids, keeping the marker.
    fn pay_out_if_done(
        &self,
        ctx: &mut Context<'_, Event>,
        tenant: &str,
        period_id: &str,
        mut payout: Payout,
        at: DateTime<Utc>,
    ) -> Result<(), ProcessError> {
        let key = PeriodKey::new(tenant, period_id);
        let paid = Money::from_cents(payout.paid.iter().map(|p| p.cash.cents()).sum());
        if payout.distributed || payout.cash != Some(paid) {
            return PERIODS.put(ctx, &key, &payout);
        }
        ctx.emit(PeriodDistributed {
            meta: ctx.meta::<PeriodDistributed>(tenant),
            period_id: period_id.to_owned(),
            currency: payout.currency.clone(),
            cash: paid.to_decimal(),
            distributions: payout
                .paid
                .iter()
                .map(|p| DistributionPaid {
                    distribution_id: p.distribution_id.clone(),
                    member_id: p.member_id.clone(),
                    cash: p.cash.to_decimal(),
                    payments: p.payments.clone(),
                })
                .collect(),
            distributed_at: at,
        });
        for p in std::mem::take(&mut payout.paid) {
            DISTRIBUTIONS.delete(ctx, &ScheduleKey::new(tenant, &p.distribution_id))?;
            let allocation = allocation_transaction(period_id, &p.member_id);
            POSTED.delete(ctx, &TransactionKey::new(tenant, &allocation))?;
            for payment in &p.payments {
                POSTED.delete(
                    ctx,
                    &TransactionKey::new(tenant, payment_transaction(payment)),
                )?;
            }
        }
        payout.distributed = true;
        PERIODS.put(ctx, &key, &payout)
    }
}

/// The deterministic id of a member's allocation posting of a period (SPEC §4).
fn allocation_transaction(period_id: &str, member_id: &str) -> String {
    format!("alloc:{period_id}:{member_id}")
}

/// The deterministic id of a settled payment's posting (SPEC §4).
fn payment_transaction(payment_id: &str) -> String {
    format!("pay:{payment_id}")
}

/// Whether a period is paid out and forgotten (its records then post nothing).
fn paid_out(ctx: &Context<'_, Event>, tenant: &str, period_id: &str) -> Result<bool, ProcessError> {
    Ok(PERIODS
        .get(ctx, &PeriodKey::new(tenant, period_id))?
        .is_some_and(|p| p.distributed))
}
