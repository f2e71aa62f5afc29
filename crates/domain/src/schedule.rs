//! Payment schedules: installments of a distribution's cash, and loan schedules
//! (AMORTIZED, INTEREST_ONLY, AT_MATURITY; monthly or quarterly), exact to the cent.

use chrono::{Months, NaiveDate};
use rust_decimal::{Decimal, MathematicalOps, RoundingStrategy};
use serde::{Deserialize, Serialize};

use crate::Money;

/// How far apart payments are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interval {
    Monthly,
    Quarterly,
}

impl Interval {
    pub fn months(self) -> u32 {
        match self {
            Interval::Monthly => 1,
            Interval::Quarterly => 3,
        }
    }
}

/// `date` plus `months`, clamped to the end of the target month (Jan 31 + 1 month = Feb 28/29).
pub fn add_months(date: NaiveDate, months: u32) -> NaiveDate {
    // chrono's checked_add_months clamps to the last day of the month.
    date.checked_add_months(Months::new(months))
        .unwrap_or(NaiveDate::MAX)
}

/// One installment of a distribution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installment {
    /// 0-based.
    pub index: u32,
    pub due_on: NaiveDate,
    pub amount: Money,
}

/// `count` installments of `cash`: equal amounts floored to the cent, the leftover cents on
/// the first; the k-th due k intervals after `first_due` (clamped to month end). Σ = cash.
pub fn installments(
    cash: Money,
    count: u32,
    first_due: NaiveDate,
    interval: Interval,
) -> Vec<Installment> {
    let count = count.max(1);
    let share = cash.cents() / i128::from(count);
    let leftover = cash.cents() - share * i128::from(count);
    (0..count)
        .map(|k| Installment {
            index: k,
            due_on: add_months(first_due, k * interval.months()),
            amount: Money::from_cents(if k == 0 { share + leftover } else { share }),
        })
        .collect()
}

/// How a loan is repaid.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Repayment {
    Amortized,
    InterestOnly,
    AtMaturity,
}

/// The terms of a funded loan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoanTerms {
    pub principal: Money,
    /// Annual rate as a fraction (0.075 for 7.5 %).
    pub annual_rate: Decimal,
    pub term_months: u32,
    pub frequency: Interval,
    pub repayment: Repayment,
    pub funded_on: NaiveDate,
}

/// One scheduled loan payment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoanPayment {
    /// 1-based.
    pub number: u32,
    pub due_on: NaiveDate,
    pub payment: Money,
    pub principal: Money,
    pub interest: Money,
    pub balance_after: Money,
}

/// Why a loan cannot be scheduled.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("the principal {0} is not positive")]
    Principal(Money),
    #[error("the annual rate {0} is negative")]
    Rate(Decimal),
    #[error("a term of {0} months does not fit the payment frequency")]
    Term(u32),
    #[error("the amounts overflow")]
    Overflow,
}

fn to_cents(value: Decimal) -> Result<Money, ScheduleError> {
    let rounded = value.round_dp_with_strategy(2, RoundingStrategy::MidpointAwayFromZero);
    Money::try_from(rounded).map_err(|_| ScheduleError::Overflow)
}

/// The payments of a loan (SPEC §5): the level payment of an amortized loan is
/// `P·i / (1 − (1+i)^−n)` rounded half away from zero to the cent (`P/n` when `i = 0`), each
/// interest is `balance × i` rounded the same way, and the last payment absorbs the rounding
/// so the balance ends at exactly zero.
pub fn loan_schedule(terms: &LoanTerms) -> Result<Vec<LoanPayment>, ScheduleError> {
    if terms.principal.cents() <= 0 {
        return Err(ScheduleError::Principal(terms.principal));
    }
    if terms.annual_rate.is_sign_negative() {
        return Err(ScheduleError::Rate(terms.annual_rate));
    }
    let step = terms.frequency.months();
    if terms.term_months == 0 || !terms.term_months.is_multiple_of(step) {
        return Err(ScheduleError::Term(terms.term_months));
    }
    let principal = terms.principal.to_decimal();
    if terms.repayment == Repayment::AtMaturity {
        let interest = to_cents(
            principal * terms.annual_rate * Decimal::from(terms.term_months) / Decimal::from(12),
        )?;
        return Ok(vec![LoanPayment {
            number: 1,
            due_on: add_months(terms.funded_on, terms.term_months),
            payment: Money::from_cents(terms.principal.cents() + interest.cents()),
            principal: terms.principal,
            interest,
            balance_after: Money::ZERO,
        }]);
    }
    let n = terms.term_months / step;
    let rate = terms.annual_rate / Decimal::from(12 / step);
    let level = match terms.repayment {
        Repayment::Amortized if rate.is_zero() => to_cents(principal / Decimal::from(n))?,
        Repayment::Amortized => {
            let growth = (Decimal::ONE + rate)
                .checked_powu(u64::from(n))
                .ok_or(ScheduleError::Overflow)?;
            to_cents(principal * rate * growth / (growth - Decimal::ONE))?
        }
        _ => Money::ZERO,
    };
    let mut balance = terms.principal.cents();
    let mut payments = Vec::new();
    for number in 1..=n {
        let interest = to_cents(Decimal::from_i128_with_scale(balance, 2) * rate)?.cents();
        let principal_part = if number == n {
            balance
        } else {
            match terms.repayment {
                Repayment::Amortized => (level.cents() - interest).min(balance),
                _ => 0,
            }
        };
        balance -= principal_part;
        payments.push(LoanPayment {
            number,
            due_on: add_months(terms.funded_on, number * step),
            payment: Money::from_cents(principal_part + interest),
            principal: Money::from_cents(principal_part),
            interest: Money::from_cents(interest),
            balance_after: Money::from_cents(balance),
        });
    }
    Ok(payments)
}

/// A payment's lifecycle: SCHEDULED → DUE → SETTLED | FAILED, forward only.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PaymentState {
    Scheduled,
    Due,
    Settled,
    Failed,
}

impl PaymentState {
    fn rank(self) -> u8 {
        match self {
            PaymentState::Scheduled => 0,
            PaymentState::Due => 1,
            PaymentState::Settled | PaymentState::Failed => 2,
        }
    }

    pub fn is_terminal(self) -> bool {
        self.rank() == 2
    }

    /// Whether the state may move to `next` (strictly forward; terminal states stay).
    pub fn can_move_to(self, next: PaymentState) -> bool {
        next.rank() > self.rank()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn date(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).expect("valid")
    }

    #[test]
    fn months_are_added_from_the_first_date_and_clamped() {
        assert_eq!(add_months(date(2026, 1, 31), 1), date(2026, 2, 28));
        assert_eq!(add_months(date(2028, 1, 31), 1), date(2028, 2, 29));
        assert_eq!(add_months(date(2026, 1, 31), 2), date(2026, 3, 31));
        let dates: Vec<_> = installments(
            Money::from_cents(1_000),
            4,
            date(2026, 1, 31),
            Interval::Monthly,
        )
        .into_iter()
        .map(|i| i.due_on)
        .collect();
        assert_eq!(
            dates,
            [
                date(2026, 1, 31),
                date(2026, 2, 28),
                date(2026, 3, 31),
                date(2026, 4, 30)
            ]
        );
    }

    #[test]
    fn leftover_cents_go_on_the_first_installment() {
        let parts: Vec<i128> = installments(
            Money::from_cents(1_000),
            3,
            date(2026, 1, 1),
            Interval::Quarterly,
        )
        .iter()
        .map(|i| i.amount.cents())
        .collect();
        assert_eq!(parts, [334, 333, 333]);
    }

    #[test]
    fn a_hundred_thousand_at_seven_and_a_half_percent_over_twelve_months() {
        let terms = LoanTerms {
            principal: "100000.00".parse().expect("valid"),
            annual_rate: "0.075".parse().expect("valid"),
            term_months: 12,
            frequency: Interval::Monthly,
            repayment: Repayment::Amortized,
            funded_on: date(2026, 1, 31),
        };
        let payments = loan_schedule(&terms).expect("scheduled");
        assert_eq!(payments.len(), 12);
        // The annuity formula, as a spreadsheet's PMT(0.075/12, 12, -100000) gives.
        assert_eq!(payments[0].payment.to_string(), "8675.74");
        // First interest: 100,000.00 × 0.00625 = 625.00.
        assert_eq!(payments[0].interest.to_string(), "625.00");
        assert_eq!(payments[0].principal.to_string(), "8050.74");
        assert_eq!(payments[0].due_on, date(2026, 2, 28));
        assert!(
            payments[..11]
                .iter()
                .all(|p| p.payment.to_string() == "8675.74")
        );
        assert_eq!(payments[11].balance_after, Money::ZERO);
        let principal: i128 = payments.iter().map(|p| p.principal.cents()).sum();
        assert_eq!(principal, 10_000_000);
    }

    #[test]
    fn a_quarterly_interest_only_loan() {
        // 12,000.00 at 6 % a year, 12 months, quarterly: 4 payments, i = 0.015.
        // Interest each quarter 12,000 × 0.015 = 180.00; the principal with the last.
        let terms = LoanTerms {
            principal: "12000.00".parse().expect("valid"),
            annual_rate: "0.06".parse().expect("valid"),
            term_months: 12,
            frequency: Interval::Quarterly,
            repayment: Repayment::InterestOnly,
            funded_on: date(2026, 3, 15),
        };
        let rows: Vec<(NaiveDate, String, String, String, String)> = loan_schedule(&terms)
            .expect("scheduled")
            .into_iter()
            .map(|p| {
                (
                    p.due_on,
                    p.payment.to_string(),
                    p.principal.to_string(),
                    p.interest.to_string(),
                    p.balance_after.to_string(),
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                (
                    date(2026, 6, 15),
                    "180.00".into(),
                    "0.00".into(),
                    "180.00".into(),
                    "12000.00".into()
                ),
                (
                    date(2026, 9, 15),
                    "180.00".into(),
                    "0.00".into(),
                    "180.00".into(),
                    "12000.00".into()
                ),
                (
                    date(2026, 12, 15),
                    "180.00".into(),
                    "0.00".into(),
                    "180.00".into(),
                    "12000.00".into()
                ),
                (
                    date(2027, 3, 15),
                    "12180.00".into(),
                    "12000.00".into(),
                    "180.00".into(),
                    "0.00".into()
                ),
            ]
        );
        let mut bad = terms.clone();
        bad.term_months = 10;
        assert!(matches!(loan_schedule(&bad), Err(ScheduleError::Term(10))));
    }

    #[test]
    fn an_at_maturity_loan() {
        // 5,000.00 at 4 % for 18 months: simple interest 5,000 × 0.04 × 18/12 = 300.00,
        // one payment of 5,300.00 on 2027-07-31 (funded 2026-01-31).
        let terms = LoanTerms {
            principal: "5000.00".parse().expect("valid"),
            annual_rate: "0.04".parse().expect("valid"),
            term_months: 18,
            frequency: Interval::Monthly,
            repayment: Repayment::AtMaturity,
            funded_on: date(2026, 1, 31),
        };
        let payments = loan_schedule(&terms).expect("scheduled");
        assert_eq!(payments.len(), 1);
        assert_eq!(payments[0].due_on, date(2027, 7, 31));
        assert_eq!(payments[0].payment.to_string(), "5300.00");
        assert_eq!(payments[0].interest.to_string(), "300.00");
    }

    proptest! {
        #[test]
        fn installments_sum_to_the_cash(cents in 0_i128..10_000_000_000, count in 1_u32..60) {
            let parts = installments(Money::from_cents(cents), count, date(2026, 1, 31), Interval::Monthly);
            prop_assert_eq!(parts.len(), count as usize);
            prop_assert_eq!(parts.iter().map(|p| p.amount.cents()).sum::<i128>(), cents);
            prop_assert!(parts.windows(2).all(|w| w[0].due_on < w[1].due_on));
        }

        #[test]
        fn loan_principal_parts_sum_to_the_principal_and_the_balance_ends_at_zero(
            cents in 100_i128..100_000_000_000,
            rate_bp in 0_i64..3_000,
            periods in 1_u32..60,
            quarterly in any::<bool>(),
            repayment in prop::sample::select(vec![Repayment::Amortized, Repayment::InterestOnly, Repayment::AtMaturity]),
        ) {
            let frequency = if quarterly { Interval::Quarterly } else { Interval::Monthly };
            let terms = LoanTerms {
                principal: Money::from_cents(cents),
                annual_rate: Decimal::new(rate_bp, 4),
                term_months: periods * frequency.months(),
                frequency,
                repayment,
                funded_on: date(2026, 1, 31),
            };
            let payments = loan_schedule(&terms).expect("scheduled");
            prop_assert_eq!(payments.iter().map(|p| p.principal.cents()).sum::<i128>(), cents);
            prop_assert_eq!(payments.last().expect("a payment").balance_after, Money::ZERO);
            for p in &payments {
                prop_assert_eq!(p.payment.cents(), p.principal.cents() + p.interest.cents());
                prop_assert!(p.principal.cents() >= 0 && p.interest.cents() >= 0);
            }
        }

        #[test]
        fn no_path_goes_backward(path in prop::collection::vec(prop::sample::select(vec![
            PaymentState::Scheduled, PaymentState::Due, PaymentState::Settled, PaymentState::Failed,
        ]), 1..10)) {
            let mut state = PaymentState::Scheduled;
            for next in path {
                if state.can_move_to(next) {
                    prop_assert!(next.rank() > state.rank());
                    prop_assert!(!state.is_terminal());
                    state = next;
                }
            }
        }
    }

    #[test]
    fn terminal_states_stay() {
        for end in [PaymentState::Settled, PaymentState::Failed] {
            for next in [
                PaymentState::Scheduled,
                PaymentState::Due,
                PaymentState::Settled,
                PaymentState::Failed,
            ] {
                assert!(!end.can_move_to(next));
            }
        }
        assert!(PaymentState::Scheduled.can_move_to(PaymentState::Due));
        assert!(PaymentState::Due.can_move_to(PaymentState::Failed));
        assert!(!PaymentState::Due.can_move_to(PaymentState::Scheduled));
    }
}
