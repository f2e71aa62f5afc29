//! The rules of patronage accounting as pure functions — no I/O, no Kafka, no clock.
//!
//! - [`money`]: `Money` (exact cents), `Ratio` and `Weighted` (four decimals), parsed at
//!   the edge so the rules below never see an invalid amount.
//! - [`tally`]: a member's patronage per kind as a function of the latest state of each
//!   contribution, and the weighted patronage of a seal.
//! - [`allocation`]: dividing a surplus among members exactly to the cent.
//! - [`schedule`]: installments, loan schedules, the payment state machine.
//! - [`ledger`]: balanced double-entry postings over a configurable chart of accounts.

pub mod allocation;
pub mod ledger;
pub mod money;
pub mod schedule;
pub mod tally;

pub use allocation::{Allocation, AllocationSet, MemberWeight, allocate, set_hash};
pub use money::{Money, MoneyError, Ratio, Weighted};
pub use tally::{ContributionState, Kind, Seal, SealedMember, Tally, TallyKey, Weights};
