//! payment-schedule-creator: approved allocations and funded loans become payment
//! schedules; each payment goes SCHEDULED → DUE (a durable timer) → SETTLED | FAILED.
//!
//! Reads `habitat.agreements` (`AllocationApproved`, `LoanFunded`) and `habitat.treasury`
//! (`PatronagePolicySet`, `PaymentSettled`, `PaymentFailed`). Keeps the policy in force, every
//! payment it scheduled with its state, and the schedules made. Writes
//! `DistributionScheduled`/`LoanScheduled` and `PaymentScheduled` per installment,
//! `PaymentDue` when a payment's due date comes on the processor's clock,
//! `PaymentStatusChanged` for a result, and `PaymentResultRejected` for a result that
//! conflicts or names an unknown payment (never dropped).
//!
//! State that ends: on `PeriodDistributed` the period's schedules and payments (all
//! settled) are forgotten and the period marked paid out; an approval of that period then
//! schedules nothing, and a result for one of its payments is reported as for an unknown
//! payment.

use chrono::{NaiveDate, TimeDelta};
use contracts::records::{
    AllocationApproved, DistributionScheduled, Event, InstallmentInterval, LoanFrequency,
    LoanFunded, LoanMethod, LoanScheduled, PaymentDue, PaymentPurpose, PaymentResultRejected,
    PaymentScheduled, PaymentStatus, PaymentStatusChanged, ScheduledPayment,
};
use habitat_domain::{
    Money,
    schedule::{
        Installment, Interval, LoanPayment, LoanTerms, PaymentState, Repayment, installments,
        loan_schedule,
    },
};
use habitat_runtime::{
    Context, ProcessError, Processor, Record, Store, StoreKey, TenantKey, Timer, amount, store_key,
};
use serde::{Deserialize, Serialize};

store_key! {
    /// A payment of a tenant; also the key of its due timer.
    pub struct PaymentKey { payment_id }
}
store_key! {
    /// A period of a tenant.
    pub struct PeriodKey { period_id }
}
store_key! {
    /// A schedule (of a distribution or a loan) of a tenant.
    pub struct ScheduleKey { schedule_id }
}

impl PaymentKey {
    /// The key a due timer carries (`<tenant>/<payment_id>`; tenant ids hold no `/`).
    fn of_timer(timer: &Timer) -> Option<Self> {
        let (tenant, payment_id) = timer.key.split_once('/')?;
        Some(Self::new(tenant, payment_id))
    }
}

/// Store: installments, interval and first-payment offset in force.
pub const POLICIES: Store<TenantKey, Policy> = Store::new("policies");
/// Store: every scheduled payment and its state.
pub const PAYMENTS: Store<PaymentKey, Payment> = Store::new("payments");
/// Store: schedules made.
pub const SCHEDULES: Store<ScheduleKey, bool> = Store::new("schedules");
/// Store: periods paid out (`PeriodDistributed`), whose payments are forgotten.
pub const PAID_OUT: Store<PeriodKey, bool> = Store::new("paid-out");
/// Invariant: a distribution's installments add up to its cash exactly.
pub const INSTALLMENTS_ADD_UP: &str = "installments-add-up-to-cash";
/// Invariant: a loan's payments repay its principal exactly (each payment its principal
/// plus interest) and leave a balance of zero.
pub const LOAN_REPAID: &str = "loan-payments-repay-principal";

/// Rejection class: a loan whose terms give no schedule.
pub const LOAN_TERMS: &str = "loan-terms";
/// Timer: a payment falls due.
pub const DUE: &str = "due";

/// How distributions are paid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub installments: u32,
    pub interval: Interval,
    pub first_payment_offset_days: i64,
}

impl Default for Policy {
    /// One payment, 30 days after the approval.
    fn default() -> Self {
        Self {
            installments: 1,
            interval: Interval::Monthly,
            first_payment_offset_days: 30,
        }
    }
}

/// A payment as kept.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payment {
    pub tenant_id: String,
    pub payment_id: String,
    pub schedule_id: String,
    pub loan: bool,
    pub member_id: String,
    pub seq: i32,
    pub due_on: NaiveDate,
    pub amount: Money,
    pub principal: Money,
    pub interest: Money,
    pub currency: String,
    pub state: PaymentState,
    /// The settlement's external reference, or the failure's reason.
    pub outcome: Option<String>,
}

impl Payment {
    fn status(&self) -> PaymentStatus {
        status(self.state)
    }

    fn purpose(&self) -> PaymentPurpose {
        if self.loan {
            PaymentPurpose::LoanRepayment
        } else {
            PaymentPurpose::Distribution
        }
    }
}

fn status(state: PaymentState) -> PaymentStatus {
    match state {
        PaymentState::Scheduled => PaymentStatus::Scheduled,
        PaymentState::Due => PaymentStatus::Due,
        PaymentState::Settled => PaymentStatus::Settled,
        PaymentState::Failed => PaymentStatus::Failed,
    }
}

/// A payment record of type `$ty` with the payment's fields and `$extra` ones.
macro_rules! payment_record {
    ($ty:ident, $ctx:expr, $p:expr, { $($field:ident: $value:expr),* $(,)? }) => {
        $ty {
            meta: $ctx.meta::<$ty>(&$p.tenant_id),
            payment_id: $p.payment_id.clone(),
            schedule_id: $p.schedule_id.clone(),
            purpose: $p.purpose(),
            member_id: $p.member_id.clone(),
            seq: $p.seq,
            due_on: $p.due_on,
            amount: $p.amount.to_decimal(),
            principal: $p.principal.to_decimal(),
            interest: $p.interest.to_decimal(),
            currency: $p.currency.clone(),
            $($field: $value),*
        }
    };
}

#[derive(Clone, Debug, Default)]
pub struct PaymentScheduleCreator;

impl Processor for PaymentScheduleCreator {
    type In = Event;
    type Out = Event;

    fn name(&self) -> &str {
        "payment-schedule-creator"
    }

    fn stores(&self) -> Vec<&'static str> {
        vec![
            POLICIES.name(),
            PAYMENTS.name(),
            SCHEDULES.name(),
            PAID_OUT.name(),
        ]
    }

    fn timers(&self) -> Vec<&'static str> {
        vec![DUE]
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
            Event::PatronagePolicySet(p) => {
                let policy = Policy {
                    installments: u32::try_from(p.installments.max(1)).unwrap_or(1),
                    interval: match p.installment_interval {
                        InstallmentInterval::Monthly => Interval::Monthly,
                        InstallmentInterval::Quarterly => Interval::Quarterly,
                    },
                    first_payment_offset_days: i64::from(p.first_payment_offset_days),
                };
                POLICIES.put(ctx, &TenantKey::new(&tenant), &policy)
            }
            Event::AllocationApproved(a) => distribution(ctx, &tenant, a),
            Event::PeriodDistributed(d) => {
                // Every payment of the period settled: nothing can move them any more.
                for paid in &d.distributions {
                    SCHEDULES.delete(ctx, &ScheduleKey::new(&tenant, &paid.distribution_id))?;
                    for payment in &paid.payments {
                        PAYMENTS.delete(ctx, &PaymentKey::new(&tenant, payment))?;
                    }
                }
                PAID_OUT.put(ctx, &PeriodKey::new(&tenant, &d.period_id), &true)
            }
            Event::LoanFunded(l) => loan(ctx, &tenant, l),
            Event::PaymentSettled(s) => result(
                ctx,
                &tenant,
                event,
                &s.payment_id,
                PaymentState::Settled,
                &s.external_ref,
                |p| {
                    (
                        Some(s.settled_at),
                        Some(s.method.clone()),
                        Some(s.external_ref.clone()),
                        None,
                        p,
                    )
                },
            ),
            Event::PaymentFailed(f) => result(
                ctx,
                &tenant,
                event,
                &f.payment_id,
                PaymentState::Failed,
                &f.reason,
                |p| (None, None, None, Some(f.reason.clone()), p),
            ),
            _ => Ok(()),
        }
    }

    fn on_timer(&self, ctx: &mut Context<'_, Event>, timer: &Timer) -> Result<(), ProcessError> {
        let Some(key) = PaymentKey::of_timer(timer) else {
            return Err(ProcessError::Fatal(format!(
                "timer {} {} names no payment",
                timer.name, timer.key
            )));
        };
        let Some(mut payment) = PAYMENTS.get(ctx, &key)? else {
            return Ok(());
        };
        if !payment.state.can_move_to(PaymentState::Due) {
            return Ok(());
        }
        payment.state = PaymentState::Due;
        ctx.emit(payment_record!(PaymentDue, ctx, payment, {
            status: PaymentStatus::Due,
        }));
        PAYMENTS.put(ctx, &key, &payment)
    }
}

/// Records a payment, emits `PaymentScheduled` and sets its due timer.
fn schedule_payment(ctx: &mut Context<'_, Event>, payment: Payment) -> Result<(), ProcessError> {
    ctx.emit(payment_record!(PaymentScheduled, ctx, payment, {
        status: PaymentStatus::Scheduled,
    }));
    let key = PaymentKey::new(&payment.tenant_id, &payment.payment_id);
    let due = payment
        .due_on
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc();
    ctx.schedule(DUE, &key.render(), due, None)?;
    PAYMENTS.put(ctx, &key, &payment)
}

/// Whether a schedule was made already (then nothing is made again).
fn made(
    ctx: &mut Context<'_, Event>,
    tenant: &str,
    schedule_id: &str,
) -> Result<bool, ProcessError> {
    let key = ScheduleKey::new(tenant, schedule_id);
    if SCHEDULES.get(ctx, &key)?.is_some() {
        return Ok(true);
    }
    SCHEDULES.put(ctx, &key, &true)?;
    Ok(false)
}

fn distribution(
    ctx: &mut Context<'_, Event>,
    tenant: &str,
    a: &AllocationApproved,
) -> Result<(), ProcessError> {
    let cash: Money = amount(a.cash, "cash")?;
    if cash.cents() <= 0 {
        return Ok(());
    }
    if PAID_OUT
        .get(ctx, &PeriodKey::new(tenant, &a.period_id))?
        .is_some()
    {
        return Ok(()); // scheduled and paid long ago
    }
    let schedule_id = format!("dist:{}:{}", a.period_id, a.member_id);
    if made(ctx, tenant, &schedule_id)? {
        return Ok(());
    }
    let policy = POLICIES
        .get(ctx, &TenantKey::new(tenant))?
        .unwrap_or_default();
    let first_due = a.approved_at.date_naive() + TimeDelta::days(policy.first_payment_offset_days);
    let parts = installments(cash, policy.installments, first_due, policy.interval);
    check_installments(&schedule_id, cash, &parts)?;
    ctx.emit(DistributionScheduled {
        meta: ctx.meta::<DistributionScheduled>(tenant),
        schedule_id: schedule_id.clone(),
        period_id: a.period_id.clone(),
        member_id: a.member_id.clone(),
        cash: cash.to_decimal(),
        currency: a.currency.clone(),
        installments: i32::try_from(parts.len()).unwrap_or(i32::MAX),
        first_due_on: first_due,
    });
    for part in parts {
        let seq = i32::try_from(part.index + 1).unwrap_or(i32::MAX);
        schedule_payment(
            ctx,
            Payment {
                tenant_id: tenant.to_owned(),
                payment_id: format!("{schedule_id}:{seq}"),
                schedule_id: schedule_id.clone(),
                loan: false,
                member_id: a.member_id.clone(),
                seq,
                due_on: part.due_on,
                amount: part.amount,
                principal: part.amount,
                interest: Money::ZERO,
                currency: a.currency.clone(),
                state: PaymentState::Scheduled,
                outcome: None,
            },
        )?;
    }
    Ok(())
}

fn loan(ctx: &mut Context<'_, Event>, tenant: &str, l: &LoanFunded) -> Result<(), ProcessError> {
    let schedule_id = format!("loan:{}", l.loan_id);
    let (frequency, repayment) = match (l.frequency, l.method) {
        (LoanFrequency::AtMaturity, _) => (Interval::Monthly, Repayment::AtMaturity),
        (LoanFrequency::Monthly, m) => (Interval::Monthly, method(m)),
        (LoanFrequency::Quarterly, m) => (Interval::Quarterly, method(m)),
    };
    let terms = LoanTerms {
        principal: amount(l.principal, "principal")?,
        annual_rate: l.annual_rate,
        term_months: u32::try_from(l.term_months).unwrap_or(0),
        frequency,
        repayment,
        funded_on: l.funded_on,
    };
    let payments =
        loan_schedule(&terms).map_err(|e| ProcessError::rejected(LOAN_TERMS, e.to_string()))?;
    check_loan(&schedule_id, terms.principal, &payments)?;
    if made(ctx, tenant, &schedule_id)? {
        return Ok(());
    }
    let payment_id = |n: u32| format!("{schedule_id}:{n}");
    ctx.emit(LoanScheduled {
        meta: ctx.meta::<LoanScheduled>(tenant),
        schedule_id: schedule_id.clone(),
        loan_id: l.loan_id.clone(),
        member_id: l.member_id.clone(),
        principal: terms.principal.to_decimal(),
        currency: l.currency.clone(),
        total_interest: Money::from_cents(payments.iter().map(|p| p.interest.cents()).sum())
            .to_decimal(),
        payments: payments
            .iter()
            .map(|p| ScheduledPayment {
                payment_id: payment_id(p.number),
                due_on: p.due_on,
                amount: p.payment.to_decimal(),
                principal: p.principal.to_decimal(),
                interest: p.interest.to_decimal(),
                balance_after: p.balance_after.to_decimal(),
            })
            .collect(),
    });
    for p in payments {
        schedule_payment(
            ctx,
            Payment {
                tenant_id: tenant.to_owned(),
                payment_id: payment_id(p.number),
                schedule_id: schedule_id.clone(),
                loan: true,
                member_id: l.member_id.clone(),
                seq: i32::try_from(p.number).unwrap_or(i32::MAX),
                due_on: p.due_on,
                amount: p.payment,
                principal: p.principal,
                interest: p.interest,
                currency: l.currency.clone(),
                state: PaymentState::Scheduled,
                outcome: None,
            },
        )?;
    }
    Ok(())
}

/// What the creator owns of a distribution, checked before its schedule is written.
pub fn check_installments(
    schedule_id: &str,
    cash: Money,
    parts: &[Installment],
) -> Result<(), ProcessError> {
    let sum = Money::from_cents(parts.iter().map(|p| p.amount.cents()).sum());
    ProcessError::ensure(
        sum == cash && parts.iter().all(|p| !p.amount.is_negative()),
        INSTALLMENTS_ADD_UP,
        || {
            let amounts: Vec<String> = parts.iter().map(|p| p.amount.to_string()).collect();
            format!(
                "schedule {schedule_id}: cash {cash}, installments [{}] summing to {sum}",
                amounts.join(", ")
            )
        },
    )
}

/// What the creator owns of a loan, checked before its schedule is written.
pub fn check_loan(
    schedule_id: &str,
    principal: Money,
    payments: &[LoanPayment],
) -> Result<(), ProcessError> {
    let repaid = Money::from_cents(payments.iter().map(|p| p.principal.cents()).sum());
    let last = payments.last().map_or(principal, |p| p.balance_after);
    ProcessError::ensure(
        repaid == principal
            && last == Money::ZERO
            && payments
                .iter()
                .all(|p| p.principal.checked_add(p.interest) == Some(p.payment)),
        LOAN_REPAID,
        || {
            format!(
                "schedule {schedule_id}: principal {principal}, {} payments repaying {repaid}, \
                 balance after the last {last}",
                payments.len()
            )
        },
    )
}

fn method(method: LoanMethod) -> Repayment {
    match method {
        LoanMethod::Amortized => Repayment::Amortized,
        LoanMethod::InterestOnly => Repayment::InterestOnly,
    }
}

type Details = (
    Option<chrono::DateTime<chrono::Utc>>,
    Option<String>,
    Option<String>,
    Option<String>,
    Payment,
);

/// A settlement or failure: moves the payment forward, or is reported as rejected.
fn result(
    ctx: &mut Context<'_, Event>,
    tenant: &str,
    event: &Event,
    payment_id: &str,
    next: PaymentState,
    outcome: &str,
    details: impl FnOnce(Payment) -> Details,
) -> Result<(), ProcessError> {
    let key = PaymentKey::new(tenant, payment_id);
    let payment = PAYMENTS.get(ctx, &key)?;
    let reject = |ctx: &mut Context<'_, Event>, state: Option<PaymentStatus>, reason: String| {
        ctx.emit(PaymentResultRejected {
            meta: ctx.meta::<PaymentResultRejected>(tenant),
            result_event_id: event.meta().event_id.clone(),
            result_type: event.event_type().to_owned(),
            payment_id: payment_id.to_owned(),
            payment_status: state,
            reason,
        });
        Ok(())
    };
    let Some(payment) = payment else {
        return reject(ctx, None, format!("no payment {payment_id} was scheduled"));
    };
    if payment.state == next && payment.outcome.as_deref() == Some(outcome) {
        return Ok(()); // the same result again
    }
    if !payment.state.can_move_to(next) {
        let reason = format!(
            "payment {payment_id} is already {}{}",
            payment.status(),
            payment
                .outcome
                .as_deref()
                .map(|o| format!(" ({o})"))
                .unwrap_or_default()
        );
        return reject(ctx, Some(payment.status()), reason);
    }
    let previous = payment.status();
    let (settled_at, method, external_ref, failure_reason, mut payment) = details(payment);
    payment.state = next;
    payment.outcome = Some(outcome.to_owned());
    ctx.cancel(DUE, &key.render())?;
    ctx.emit(PaymentStatusChanged {
        meta: ctx.meta::<PaymentStatusChanged>(tenant),
        payment_id: payment.payment_id.clone(),
        schedule_id: payment.schedule_id.clone(),
        purpose: payment.purpose(),
        member_id: payment.member_id.clone(),
        seq: payment.seq,
        due_on: payment.due_on,
        amount: payment.amount.to_decimal(),
        principal: payment.principal.to_decimal(),
        interest: payment.interest.to_decimal(),
        currency: payment.currency.clone(),
        status: payment.status(),
        previous_status: previous,
        settled_at,
        method,
        external_ref,
        failure_reason,
        result_event_id: event.meta().event_id.clone(),
    });
    PAYMENTS.put(ctx, &key, &payment)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invariant(result: Result<(), ProcessError>) -> String {
        match result {
            Err(ProcessError::Broken { invariant, .. }) => invariant,
            other => panic!("expected a broken invariant: {other:?}"),
        }
    }

    #[test]
    fn installments_that_do_not_add_up_to_the_cash_are_broken() {
        let first = NaiveDate::from_ymd_opt(2027, 1, 31).expect("date");
        let cash = Money::from_cents(10_001);
        let mut parts = installments(cash, 3, first, Interval::Monthly);
        assert_eq!(check_installments("dist:2026:m-1", cash, &parts), Ok(()));
        parts[2].amount = Money::from_cents(parts[2].amount.cents() - 1);
        assert_eq!(
            invariant(check_installments("dist:2026:m-1", cash, &parts)),
            INSTALLMENTS_ADD_UP
        );
    }

    #[test]
    fn loan_payments_that_leave_a_balance_are_broken() {
        let terms = LoanTerms {
            principal: Money::from_cents(1_000_000),
            annual_rate: "0.06".parse().expect("rate"),
            term_months: 12,
            frequency: Interval::Monthly,
            repayment: Repayment::Amortized,
            funded_on: NaiveDate::from_ymd_opt(2026, 1, 15).expect("date"),
        };
        let mut payments = loan_schedule(&terms).expect("schedule");
        assert_eq!(check_loan("loan:l-1", terms.principal, &payments), Ok(()));
        let last = payments.last_mut().expect("a payment");
        last.balance_after = Money::from_cents(1);
        assert_eq!(
            invariant(check_loan("loan:l-1", terms.principal, &payments)),
            LOAN_REPAID
        );
    }
}
