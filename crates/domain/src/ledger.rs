//! Double-entry postings for the movements of money (SPEC §5, distribution-recorder), with a
//! configurable chart of accounts. Every posting balances; lines of zero are left out.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Money;

/// Account codes (the defaults are SPEC §5's chart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Chart {
    pub cash: String,
    pub member_loans_receivable: String,
    pub patronage_dividends_payable: String,
    pub allocated_patronage: String,
    pub net_margin: String,
    pub interest_income: String,
}

impl Default for Chart {
    fn default() -> Self {
        Self {
            cash: "1010".to_owned(),
            member_loans_receivable: "1300".to_owned(),
            patronage_dividends_payable: "2300".to_owned(),
            allocated_patronage: "3100".to_owned(),
            net_margin: "3900".to_owned(),
            interest_income: "4200".to_owned(),
        }
    }
}

/// One line of a transaction: a debit or a credit to an account, maybe a member's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Line {
    pub account: String,
    pub member_id: Option<String>,
    pub debit: Money,
    pub credit: Money,
}

/// A balanced set of lines.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Posting {
    pub lines: Vec<Line>,
}

impl Posting {
    fn new(lines: Vec<Line>) -> Self {
        let lines = lines
            .into_iter()
            .filter(|l| l.debit != Money::ZERO || l.credit != Money::ZERO)
            .collect();
        Self { lines }
    }

    pub fn debits(&self) -> Money {
        Money::from_cents(self.lines.iter().map(|l| l.debit.cents()).sum())
    }

    pub fn credits(&self) -> Money {
        Money::from_cents(self.lines.iter().map(|l| l.credit.cents()).sum())
    }

    pub fn balances(&self) -> bool {
        self.debits() == self.credits()
    }
}

fn debit(account: &str, member: Option<&str>, amount: Money) -> Line {
    Line {
        account: account.to_owned(),
        member_id: member.map(str::to_owned),
        debit: amount,
        credit: Money::ZERO,
    }
}

fn credit(account: &str, member: Option<&str>, amount: Money) -> Line {
    Line {
        account: account.to_owned(),
        member_id: member.map(str::to_owned),
        debit: Money::ZERO,
        credit: amount,
    }
}

impl Chart {
    /// `AllocationApproved(m)`: Dr net margin amount / Cr payable(m) cash, Cr allocated(m) retained.
    pub fn allocation_approved(
        &self,
        member: &str,
        amount: Money,
        cash: Money,
        retained: Money,
    ) -> Posting {
        Posting::new(vec![
            debit(&self.net_margin, None, amount),
            credit(&self.patronage_dividends_payable, Some(member), cash),
            credit(&self.allocated_patronage, Some(member), retained),
        ])
    }

    /// A distribution payment settled: Dr payable(m) / Cr cash.
    pub fn distribution_settled(&self, member: &str, amount: Money) -> Posting {
        Posting::new(vec![
            debit(&self.patronage_dividends_payable, Some(member), amount),
            credit(&self.cash, None, amount),
        ])
    }

    /// `LoanFunded`: Dr loans receivable(m) principal / Cr cash.
    pub fn loan_funded(&self, member: &str, principal: Money) -> Posting {
        Posting::new(vec![
            debit(&self.member_loans_receivable, Some(member), principal),
            credit(&self.cash, None, principal),
        ])
    }

    /// A loan payment settled: Dr cash amount / Cr loans receivable(m) principal, Cr interest income.
    pub fn loan_payment_settled(&self, member: &str, principal: Money, interest: Money) -> Posting {
        Posting::new(vec![
            debit(
                &self.cash,
                None,
                Money::from_cents(principal.cents() + interest.cents()),
            ),
            credit(&self.member_loans_receivable, Some(member), principal),
            credit(&self.interest_income, None, interest),
        ])
    }
}

/// Balances per (account, member), debits positive.
pub fn trial_balance<'p>(
    postings: impl IntoIterator<Item = &'p Posting>,
) -> BTreeMap<(String, Option<String>), i128> {
    let mut balances = BTreeMap::new();
    for posting in postings {
        for line in &posting.lines {
            *balances
                .entry((line.account.clone(), line.member_id.clone()))
                .or_default() += line.debit.cents() - line.credit.cents();
        }
    }
    balances
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn an_allocation_paid_out_leaves_the_payable_at_zero() {
        let chart = Chart::default();
        let cents = Money::from_cents;
        let postings = [
            chart.allocation_approved("m1", cents(50_001), cents(15_001), cents(35_000)),
            chart.distribution_settled("m1", cents(7_501)),
            chart.distribution_settled("m1", cents(7_500)),
        ];
        assert!(postings.iter().all(Posting::balances));
        let balances = trial_balance(&postings);
        assert_eq!(
            balances.values().sum::<i128>(),
            0,
            "the trial balance is zero"
        );
        assert_eq!(balances[&("2300".to_owned(), Some("m1".to_owned()))], 0);
        assert_eq!(
            balances[&("3100".to_owned(), Some("m1".to_owned()))],
            -35_000
        );
    }

    #[test]
    fn zero_lines_are_left_out() {
        let posting = Chart::default().allocation_approved(
            "m1",
            Money::from_cents(100),
            Money::from_cents(100),
            Money::ZERO,
        );
        assert_eq!(posting.lines.len(), 2);
    }

    proptest! {
        #[test]
        fn every_posting_balances(amount in 0_i128..1_000_000_000_000, cash_share in 0_i128..=100, interest in 0_i128..1_000_000_000) {
            let chart = Chart::default();
            let cash = amount * cash_share / 100;
            let m = Money::from_cents;
            for posting in [
                chart.allocation_approved("m", m(amount), m(cash), m(amount - cash)),
                chart.distribution_settled("m", m(cash)),
                chart.loan_funded("m", m(amount)),
                chart.loan_payment_settled("m", m(amount), m(interest)),
            ] {
                prop_assert!(posting.balances());
                prop_assert!(posting.lines.iter().all(|l| l.debit != Money::ZERO || l.credit != Money::ZERO));
            }
        }
    }
}
