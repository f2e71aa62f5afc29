//! Patronage tallies: per (period, member), the value of approved contributions per kind —
//! a function of the latest state of each contribution, never of how many records came.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::{Money, Ratio, Weighted};

/// The kinds of patronage a member contributes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Labor,
    Expertise,
    Capital,
    Relationship,
}

impl Kind {
    pub const ALL: [Kind; 4] = [
        Kind::Labor,
        Kind::Expertise,
        Kind::Capital,
        Kind::Relationship,
    ];
}

/// The weight of each kind; kinds without one weigh nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Weights(pub BTreeMap<Kind, Ratio>);

impl Default for Weights {
    /// LABOR 1.0, EXPERTISE 1.5, CAPITAL 1.0, RELATIONSHIP 0.5.
    fn default() -> Self {
        Self(BTreeMap::from([
            (Kind::Labor, Ratio::from_units(10_000)),
            (Kind::Expertise, Ratio::from_units(15_000)),
            (Kind::Capital, Ratio::from_units(10_000)),
            (Kind::Relationship, Ratio::from_units(5_000)),
        ]))
    }
}

/// What a tally is kept for.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TallyKey {
    pub period_id: String,
    pub member_id: String,
}

/// The facts of a contribution's latest state that tallies depend on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContributionState {
    pub period_id: String,
    pub member_id: String,
    pub kind: Kind,
    pub value: Money,
    /// Only approved contributions count.
    pub approved: bool,
}

impl ContributionState {
    fn counted(&self) -> Option<(TallyKey, Kind, Money)> {
        self.approved.then(|| {
            (
                TallyKey {
                    period_id: self.period_id.clone(),
                    member_id: self.member_id.clone(),
                },
                self.kind,
                self.value,
            )
        })
    }

    /// The changes to tallies when a contribution goes from `old` to `new` (either may be
    /// absent): the old state's value taken out, the new one's put in. The same state twice
    /// changes nothing.
    pub fn effect(old: Option<&Self>, new: Option<&Self>) -> Vec<(TallyKey, Kind, Money)> {
        if old == new {
            return Vec::new();
        }
        let mut changes: BTreeMap<(TallyKey, Kind), i128> = BTreeMap::new();
        if let Some((key, kind, value)) = old.and_then(Self::counted) {
            *changes.entry((key, kind)).or_default() -= value.cents();
        }
        if let Some((key, kind, value)) = new.and_then(Self::counted) {
            *changes.entry((key, kind)).or_default() += value.cents();
        }
        changes
            .into_iter()
            .filter(|(_, cents)| *cents != 0)
            .map(|((key, kind), cents)| (key, kind, Money::from_cents(cents)))
            .collect()
    }
}

/// One member's patronage in one period, per kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally(pub BTreeMap<Kind, Money>);

impl Tally {
    /// Adds a (signed) change to a kind; kinds at zero are dropped.
    pub fn add(&mut self, kind: Kind, change: Money) {
        let value = self.0.get(&kind).copied().unwrap_or_default().cents() + change.cents();
        if value == 0 {
            _ = self.0.remove(&kind);
        } else {
            _ = self.0.insert(kind, Money::from_cents(value));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `W = Σ weight × value`, to four decimals (half away from zero).
    pub fn weighted(&self, weights: &Weights) -> Weighted {
        // weight (1e-4) × cents (1e-2) = 1e-6 units; to 1e-4, rounding half away from zero.
        let micro: i128 = self
            .0
            .iter()
            .map(|(kind, value)| weights.0.get(kind).map_or(0, |w| w.units()) * value.cents())
            .sum();
        let quotient = micro / 100;
        let remainder = micro % 100;
        let rounded = if remainder.abs() >= 50 {
            quotient + micro.signum()
        } else {
            quotient
        };
        Weighted::from_units(rounded)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn state(member: &str, kind: Kind, cents: i128, approved: bool) -> ContributionState {
        ContributionState {
            period_id: "2026".to_owned(),
            member_id: member.to_owned(),
            kind,
            value: Money::from_cents(cents),
            approved,
        }
    }

    #[test]
    fn a_corrected_value_replaces_the_old_one_and_a_reversal_takes_it_out() {
        let approved = state("m1", Kind::Labor, 10_000, true);
        let corrected = state("m1", Kind::Labor, 12_500, true);
        let reversed = state("m1", Kind::Labor, 12_500, false);
        let mut tally = Tally::default();
        for (old, new) in [(None, Some(&approved)), (Some(&approved), Some(&corrected))] {
            for (_, kind, change) in ContributionState::effect(old, new) {
                tally.add(kind, change);
            }
        }
        assert_eq!(tally.0[&Kind::Labor], Money::from_cents(12_500));
        assert!(ContributionState::effect(Some(&corrected), Some(&corrected)).is_empty());
        for (_, kind, change) in ContributionState::effect(Some(&corrected), Some(&reversed)) {
            tally.add(kind, change);
        }
        assert!(tally.is_empty());
    }

    #[test]
    fn weighted_patronage_uses_the_weights() {
        let mut tally = Tally::default();
        tally.add(Kind::Labor, Money::from_cents(10_000)); // 100.00 × 1.0
        tally.add(Kind::Expertise, Money::from_cents(1_001)); // 10.01 × 1.5 = 15.015
        tally.add(Kind::Relationship, Money::from_cents(3)); // 0.03 × 0.5 = 0.015
        assert_eq!(tally.weighted(&Weights::default()).to_string(), "115.0300");
        let odd = Weights(BTreeMap::from([(Kind::Labor, Ratio::from_units(3_333))]));
        let mut small = Tally::default();
        small.add(Kind::Labor, Money::from_cents(15)); // 0.15 × 0.3333 = 0.049995 → 0.0500
        assert_eq!(small.weighted(&odd).units(), 500);
    }

    fn kind() -> impl Strategy<Value = Kind> {
        prop::sample::select(Kind::ALL.to_vec())
    }

    proptest! {
        /// Whatever sequence of states a contribution goes through, the tally equals the value
        /// of its latest state if approved — a function of the latest state alone.
        #[test]
        fn tallies_follow_the_latest_state(
            states in prop::collection::vec((kind(), 0_i128..1_000_000, any::<bool>()), 1..30)
        ) {
            let mut tally: BTreeMap<(TallyKey, Kind), i128> = BTreeMap::new();
            let mut previous: Option<ContributionState> = None;
            for (kind, cents, approved) in &states {
                let next = state("m1", *kind, *cents, *approved);
                for (key, kind, change) in ContributionState::effect(previous.as_ref(), Some(&next)) {
                    *tally.entry((key, kind)).or_default() += change.cents();
                }
                // Re-delivery of the same state changes nothing.
                prop_assert!(ContributionState::effect(Some(&next), Some(&next)).is_empty());
                previous = Some(next);
            }
            tally.retain(|_, cents| *cents != 0);
            let last = previous.expect("one state at least");
            let expected: BTreeMap<(TallyKey, Kind), i128> = if last.approved && last.value.cents() != 0 {
                BTreeMap::from([((TallyKey { period_id: "2026".into(), member_id: "m1".into() }, last.kind), last.value.cents())])
            } else {
                BTreeMap::new()
            };
            prop_assert_eq!(tally, expected);
        }
    }
}

/// One member in a sealed period.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedMember {
    pub member_id: String,
    pub tally: Tally,
    pub weighted: Weighted,
}

/// A period's patronage at its close: every member with a tally, their weighted patronage
/// under the weights in force, and the total.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seal {
    pub members: Vec<SealedMember>,
    pub total_weighted: Weighted,
}

impl Seal {
    /// Seals `tallies` (by member id) under `weights`; members in id order.
    pub fn new(tallies: &BTreeMap<String, Tally>, weights: &Weights) -> Self {
        let members: Vec<SealedMember> = tallies
            .iter()
            .filter(|(_, tally)| !tally.is_empty())
            .map(|(member_id, tally)| SealedMember {
                member_id: member_id.clone(),
                tally: tally.clone(),
                weighted: tally.weighted(weights),
            })
            .collect();
        let total = members.iter().map(|m| m.weighted.units()).sum();
        Self {
            members,
            total_weighted: Weighted::from_units(total),
        }
    }

    /// The members' weights, as the allocation takes them.
    pub fn member_weights(&self) -> Vec<crate::MemberWeight> {
        self.members
            .iter()
            .map(|m| crate::MemberWeight {
                member_id: m.member_id.clone(),
                weighted: m.weighted,
            })
            .collect()
    }
}

#[cfg(test)]
mod seal_tests {
    use super::*;

    #[test]
    fn a_seal_weighs_every_member_and_totals_them() {
        let mut a = Tally::default();
        a.add(Kind::Labor, Money::from_cents(10_000));
        let mut b = Tally::default();
        b.add(Kind::Expertise, Money::from_cents(10_000));
        let tallies = BTreeMap::from([
            ("m-b".to_owned(), b),
            ("m-a".to_owned(), a),
            ("m-c".to_owned(), Tally::default()),
        ]);
        let seal = Seal::new(&tallies, &Weights::default());
        let ids: Vec<&str> = seal.members.iter().map(|m| m.member_id.as_str()).collect();
        assert_eq!(
            ids,
            ["m-a", "m-b"],
            "members without patronage are left out"
        );
        assert_eq!(seal.members[1].weighted.to_string(), "150.0000");
        assert_eq!(seal.total_weighted.to_string(), "250.0000");
        assert_eq!(seal.member_weights().len(), 2);
    }
}
