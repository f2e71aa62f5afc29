//! Dividing a period's surplus among members in proportion to weighted patronage.
//!
//! With surplus `S` (cents) and weighted patronage `W(m)` (members with `W = 0` left out),
//! `T = Σ W(m)`:
//! 1. the exact share is `S × W(m) / T`; each allocation is that floored to the cent;
//! 2. the cents left over go one each to the largest remainders, ties by member id
//!    ascending — so `Σ allocations = S` exactly and every allocation is within one cent
//!    of its exact share;
//! 3. `cash = ceil_to_cent(allocation × cash_ratio)`, `retained = allocation − cash`.
//!
//! Everything is integer arithmetic on cents and ten-thousandths in `i128`, so the result
//! is the same on every run and machine, and does not depend on the order of the input.

use std::{cmp::Ordering, collections::BTreeSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Money, Ratio, Weighted};

/// The smallest cash share that keeps a written notice of allocation qualified
/// (IRC §1388(c)): 20 %.
pub const MIN_CASH_RATIO: Ratio = Ratio::from_units(2_000);

/// One member's weighted patronage of a sealed period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberWeight {
    pub member_id: String,
    pub weighted: Weighted,
}

/// One member's allocation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub member_id: String,
    pub amount: Money,
    pub cash: Money,
    pub retained: Money,
}

/// Every member's allocation of a period, by member id, with totals and hash.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationSet {
    pub allocations: Vec<Allocation>,
    pub total_amount: Money,
    pub total_cash: Money,
    pub total_retained: Money,
    pub set_hash: String,
}

/// Why a surplus cannot be allocated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AllocationError {
    #[error("the surplus {0} is negative")]
    NegativeSurplus(Money),
    #[error("the cash ratio {0} is outside 0.2000..=1.0000")]
    CashRatio(Ratio),
    #[error("member {0} has a negative weighted patronage")]
    NegativeWeight(String),
    #[error("member {0} appears twice")]
    DuplicateMember(String),
}

/// Allocates `surplus` among `members` (see the module documentation).
pub fn allocate(
    surplus: Money,
    members: &[MemberWeight],
    cash_ratio: Ratio,
) -> Result<AllocationSet, AllocationError> {
    if surplus.is_negative() {
        return Err(AllocationError::NegativeSurplus(surplus));
    }
    if cash_ratio < MIN_CASH_RATIO || cash_ratio.units() > 10_000 {
        return Err(AllocationError::CashRatio(cash_ratio));
    }
    let mut seen = BTreeSet::new();
    for member in members {
        if member.weighted.units() < 0 {
            return Err(AllocationError::NegativeWeight(member.member_id.clone()));
        }
        if !seen.insert(member.member_id.as_str()) {
            return Err(AllocationError::DuplicateMember(member.member_id.clone()));
        }
    }
    let mut weighted: Vec<&MemberWeight> =
        members.iter().filter(|m| m.weighted.units() > 0).collect();
    weighted.sort_by(|a, b| a.member_id.as_bytes().cmp(b.member_id.as_bytes()));
    let total: i128 = weighted.iter().map(|m| m.weighted.units()).sum();
    let s = surplus.cents();
    if s == 0 || total == 0 {
        return Ok(finish(Vec::new()));
    }

    // Exact share = s × w / total = floor + remainder / total.
    let mut shares: Vec<(usize, i128, i128)> = weighted
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let numerator = s * m.weighted.units();
            (i, numerator / total, numerator % total)
        })
        .collect();
    let floored: i128 = shares.iter().map(|(_, floor, _)| floor).sum();
    let leftover = usize::try_from(s - floored).expect("fewer leftover cents than members");
    // Largest remainder first; ties by member id (the index, as the list is sorted by id).
    let mut order: Vec<usize> = (0..shares.len()).collect();
    order.sort_by(|a, b| match shares[*b].2.cmp(&shares[*a].2) {
        Ordering::Equal => a.cmp(b),
        other => other,
    });
    for &i in order.iter().take(leftover) {
        shares[i].1 += 1;
    }

    let allocations = shares
        .into_iter()
        .map(|(i, cents, _)| {
            let amount = Money::from_cents(cents);
            // ceil(cents × ratio / 10_000), all non-negative.
            let cash = Money::from_cents((cents * cash_ratio.units() + 9_999) / 10_000);
            Allocation {
                member_id: weighted[i].member_id.clone(),
                amount,
                cash,
                retained: Money::from_cents(cents - cash.cents()),
            }
        })
        .collect();
    Ok(finish(allocations))
}

fn finish(allocations: Vec<Allocation>) -> AllocationSet {
    let sum = |f: fn(&Allocation) -> Money| {
        Money::from_cents(allocations.iter().map(|a| f(a).cents()).sum())
    };
    AllocationSet {
        total_amount: sum(|a| a.amount),
        total_cash: sum(|a| a.cash),
        total_retained: sum(|a| a.retained),
        set_hash: set_hash(&allocations),
        allocations,
    }
}

/// Lowercase SHA-256 hex of the lines `member_id|amount|cash|retained`, sorted by member id
/// (byte order), joined by `\n` without a trailing newline; amounts with two decimals.
pub fn set_hash(allocations: &[Allocation]) -> String {
    let mut lines: Vec<String> = allocations
        .iter()
        .map(|a| format!("{}|{}|{}|{}", a.member_id, a.amount, a.cash, a.retained))
        .collect();
    lines.sort_unstable_by(|a, b| {
        let id = |line: &str| {
            line.split('|')
                .next()
                .unwrap_or_default()
                .as_bytes()
                .to_vec()
        };
        id(a).cmp(&id(b))
    });
    let digest = Sha256::digest(lines.join("\n").as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn member(id: &str, weighted: &str) -> MemberWeight {
        MemberWeight {
            member_id: id.to_owned(),
            weighted: weighted.parse().expect("valid"),
        }
    }

    fn ratio(text: &str) -> Ratio {
        text.parse().expect("valid")
    }

    #[test]
    fn three_equal_members_share_ten_thousand_and_the_lowest_id_gets_the_cent() {
        let members = [
            member("m-b", "10"),
            member("m-a", "10"),
            member("m-c", "10"),
        ];
        let set = allocate("10000.00".parse().expect("valid"), &members, ratio("0.2"))
            .expect("allocated");
        let amounts: Vec<(String, String)> = set
            .allocations
            .iter()
            .map(|a| (a.member_id.clone(), a.amount.to_string()))
            .collect();
        assert_eq!(
            amounts,
            [
                ("m-a".into(), "3333.34".into()),
                ("m-b".into(), "3333.33".into()),
                ("m-c".into(), "3333.33".into())
            ]
        );
        // cash = ceil(3333.34 × 0.2) = 666.67; retained = 2666.67.
        assert_eq!(set.allocations[0].cash.to_string(), "666.67");
        assert_eq!(set.allocations[0].retained.to_string(), "2666.67");
        assert_eq!(set.total_amount.to_string(), "10000.00");
        let lines =
            "m-a|3333.34|666.67|2666.67\nm-b|3333.33|666.67|2666.66\nm-c|3333.33|666.67|2666.66";
        let expected: String = Sha256::digest(lines.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(set.set_hash, expected);
    }

    #[test]
    fn zero_surplus_or_zero_patronage_allocates_nothing() {
        let members = [member("m-1", "5")];
        let none = allocate(Money::ZERO, &members, ratio("0.2")).expect("allocated");
        assert!(none.allocations.is_empty());
        assert_eq!(none.total_amount, Money::ZERO);
        let nobody = allocate(Money::from_cents(100), &[member("m-1", "0")], ratio("0.2"))
            .expect("allocated");
        assert!(nobody.allocations.is_empty());
        assert_eq!(none.set_hash, set_hash(&[]));
    }

    #[test]
    fn bad_inputs_are_refused() {
        let members = [member("m-1", "5")];
        assert!(matches!(
            allocate(Money::from_cents(-1), &members, ratio("0.2")),
            Err(AllocationError::NegativeSurplus(_))
        ));
        assert!(matches!(
            allocate(Money::from_cents(1), &members, ratio("0.1999")),
            Err(AllocationError::CashRatio(_))
        ));
        assert!(matches!(
            allocate(
                Money::from_cents(1),
                &[member("m-1", "1"), member("m-1", "2")],
                ratio("0.2")
            ),
            Err(AllocationError::DuplicateMember(_))
        ));
        assert!(matches!(
            allocate(Money::from_cents(1), &[member("m-1", "-1")], ratio("0.2")),
            Err(AllocationError::NegativeWeight(_))
        ));
    }

    fn weights() -> impl Strategy<Value = Vec<i128>> {
        prop_oneof![
            // Many members, some with nothing.
            prop::collection::vec(prop_oneof![Just(0_i128), 1_i128..5_000_000], 1..200),
            // Many ties.
            (1_usize..300, 1_i128..1_000).prop_map(|(n, w)| vec![w; n]),
            // One member.
            (1_i128..1_000_000_000_000).prop_map(|w| vec![w]),
        ]
    }

    fn surplus() -> impl Strategy<Value = i128> {
        prop_oneof![
            Just(0_i128),
            Just(1_i128),
            1_i128..10_000_000,
            Just(999_999_999_999_999_999_i128)
        ]
    }

    fn members_of(weights: &[i128]) -> Vec<MemberWeight> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| MemberWeight {
                member_id: format!("m-{i:05}"),
                weighted: Weighted::from_units(*w),
            })
            .collect()
    }

    fn check(s: i128, weights: &[i128], ratio_units: i128) -> Result<(), TestCaseError> {
        let members = members_of(weights);
        let ratio = Ratio::from_units(ratio_units);
        let set = allocate(Money::from_cents(s), &members, ratio).expect("allocated");
        let total: i128 = weights.iter().sum();
        if total == 0 || s == 0 {
            prop_assert!(set.allocations.is_empty());
            return Ok(());
        }
        prop_assert_eq!(
            set.total_amount.cents(),
            s,
            "the sum is the surplus exactly"
        );
        prop_assert_eq!(set.total_cash.cents() + set.total_retained.cents(), s);
        for a in &set.allocations {
            let w = members
                .iter()
                .find(|m| m.member_id == a.member_id)
                .expect("a member")
                .weighted
                .units();
            prop_assert!(w > 0, "members with no patronage get nothing");
            // |amount − s × w / total| < 1 cent  ⇔  |amount × total − s × w| < total.
            prop_assert!((a.amount.cents() * total - s * w).abs() < total);
            // cash ≥ ratio × amount, and by less than a cent.
            prop_assert!(a.cash.cents() * 10_000 >= a.amount.cents() * ratio_units);
            prop_assert!((a.cash.cents() - 1) * 10_000 < a.amount.cents() * ratio_units);
            prop_assert!(a.retained.cents() >= 0);
        }
        // The input order does not matter.
        let mut reversed = members.clone();
        reversed.reverse();
        prop_assert_eq!(
            allocate(Money::from_cents(s), &reversed, ratio).expect("allocated"),
            set
        );
        Ok(())
    }

    proptest! {
        #[test]
        fn allocations_sum_to_the_surplus_and_stay_within_a_cent(
            s in surplus(),
            weights in weights(),
            ratio_units in 2_000_i128..=10_000,
        ) {
            check(s, &weights, ratio_units)?;
        }
    }

    #[test]
    fn ten_thousand_members() {
        let weights: Vec<i128> = (0..10_000).map(|i| (i * 7_919) % 100_003 + 1).collect();
        for s in [1, 999_999, 123_456_789_012_345] {
            check(s, &weights, 2_000).expect("holds");
        }
    }

    #[test]
    fn one_cent_among_many_goes_to_the_lowest_id() {
        let set = allocate(Money::from_cents(1), &members_of(&[5, 5, 5]), ratio("0.2"))
            .expect("allocated");
        assert_eq!(set.allocations[0].amount.cents(), 1);
        assert_eq!(
            set.allocations[0].cash.cents(),
            1,
            "ceil(0.01 × 0.2) = 0.01"
        );
        assert!(set.allocations[1..].iter().all(|a| a.amount == Money::ZERO));
    }
}
