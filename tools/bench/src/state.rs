//! `habitat bench state`: how many entries the processors' state stores hold after one
//! year of a cooperative and after several.
//!
//! No broker: the four processors run in their in-memory drivers (the same task state,
//! stores and changelog semantics as the engine), wired as `topics.yaml` wires them —
//! every record a processor emits is offered to every processor, and each takes the types
//! it reads. Each year runs the synthetic workload of the topology bench (policy,
//! members, an opened period, contributions submitted and approved, the close with a
//! surplus), then the stewards' approval of the proposed set and the bank's settlement of
//! every installment. The figure is the number of live keys per store after each year:
//! what a fully distributed period no longer needs is deleted, so a store either stays
//! flat or grows by one marker per period.

use std::collections::{BTreeMap, VecDeque};

use anyhow::{Result, bail};
use chrono::{DateTime, Utc};
use clap::Args;
use contracts::records::{Event, PaymentPurpose};
use habitat_runtime::{Processor, Produced, TestDriver};

use allocation_calculator::AllocationCalculator;
use distribution_recorder::DistributionRecorder;
use patronage_aggregator::PatronageAggregator;
use payment_schedule_creator::PaymentScheduleCreator;

use crate::load::{Poster, Shape, approval_of, post_period, settlement};

#[derive(Clone, Debug, Args)]
pub struct StateBench {
    /// Fiscal years run one after the other.
    #[arg(long, default_value_t = 3)]
    pub years: u32,
    /// Cooperatives.
    #[arg(long, default_value_t = 10)]
    pub tenants: usize,
    /// Members per cooperative.
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// Contributions per member and year.
    #[arg(long, default_value_t = 10)]
    pub contributions: usize,
}

/// Live keys per store (`processor/store`) after a year.
pub type Entries = BTreeMap<String, usize>;

/// The four processors in memory, wired by the types they read.
pub struct Topology {
    aggregator: TestDriver<PatronageAggregator>,
    calculator: TestDriver<AllocationCalculator>,
    scheduler: TestDriver<PaymentScheduleCreator>,
    recorder: TestDriver<DistributionRecorder>,
    /// Records (topic, key, value) not yet offered to the processors.
    queue: VecDeque<(String, String, Event)>,
    /// Every record a processor emitted, in order.
    pub emitted: Vec<Event>,
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

impl Topology {
    pub fn new() -> Self {
        Self {
            aggregator: TestDriver::new(PatronageAggregator),
            calculator: TestDriver::new(AllocationCalculator),
            scheduler: TestDriver::new(PaymentScheduleCreator),
            recorder: TestDriver::new(DistributionRecorder::default()),
            queue: VecDeque::new(),
            emitted: Vec::new(),
        }
    }

    /// Sets every processor's clock.
    pub fn set_time(&mut self, now: DateTime<Utc>) -> Result<()> {
        self.aggregator.set_time(now)?;
        self.calculator.set_time(now)?;
        self.scheduler.set_time(now)?;
        self.recorder.set_time(now)?;
        self.route_outputs();
        self.drain()
    }

    /// Offers `events` (written by producers) to every processor, and what they emit in
    /// turn, until nothing is left.
    pub fn feed(&mut self, events: Vec<Event>) -> Result<()> {
        self.queue.extend(
            events
                .into_iter()
                .map(|e| (e.topic().to_owned(), e.key(), e)),
        );
        self.drain()
    }

    /// Dead letters of all four processors.
    pub fn dead_letters(&self) -> usize {
        self.aggregator.dead_letters().len()
            + self.calculator.dead_letters().len()
            + self.scheduler.dead_letters().len()
            + self.recorder.dead_letters().len()
    }

    /// Live keys per store of every processor.
    pub fn entries(&self) -> Entries {
        let mut entries = Entries::new();
        count(&mut entries, &self.aggregator);
        count(&mut entries, &self.calculator);
        count(&mut entries, &self.scheduler);
        count(&mut entries, &self.recorder);
        entries
    }

    fn drain(&mut self) -> Result<()> {
        while let Some((topic, key, event)) = self.queue.pop_front() {
            self.aggregator.pipe(&topic, &key, event.clone())?;
            self.calculator.pipe(&topic, &key, event.clone())?;
            self.scheduler.pipe(&topic, &key, event.clone())?;
            self.recorder.pipe(&topic, &key, event)?;
            self.route_outputs();
        }
        Ok(())
    }

    fn route_outputs(&mut self) {
        let outputs: Vec<Produced<Event>> = [
            self.aggregator.take_outputs(),
            self.calculator.take_outputs(),
            self.scheduler.take_outputs(),
            self.recorder.take_outputs(),
        ]
        .into_iter()
        .flatten()
        .collect();
        for output in outputs {
            if let Some(event) = output.value {
                self.emitted.push(event.clone());
                self.queue.push_back((output.topic, output.key, event));
            }
        }
    }
}

fn count<P: Processor>(entries: &mut Entries, driver: &TestDriver<P>) {
    let name = driver.processor().name().to_owned();
    for store in driver.processor().stores() {
        let live = driver.entries::<serde_json::Value>(store).len();
        _ = entries.insert(format!("{name}/{store}"), live);
    }
}

/// Runs `bench.years` years; the store entries after each.
pub fn simulate(bench: &StateBench) -> Result<Vec<Entries>> {
    let shape = Shape {
        prefix: "state",
        tenants: bench.tenants,
        members: bench.members,
        contributions: bench.contributions,
    };
    let mut topology = Topology::new();
    topology.set_time(Utc::now())?;
    let mut after = Vec::new();
    for y in 0..bench.years {
        let year = 2025 + i32::try_from(y)?;
        let period = year.to_string();
        let mut poster = Poster::in_memory();
        post_period(&mut poster, shape, year)?;
        let from = topology.emitted.len();
        topology.feed(poster.collected())?;
        let approvals: Vec<Event> = topology.emitted[from..]
            .iter()
            .filter_map(|e| match e {
                Event::AllocationSetProposed(s) if s.period_id == period => {
                    Some(approval_of(&s.meta.tenant_id, &period, &s.set_hash))
                }
                _ => None,
            })
            .collect();
        if approvals.len() != shape.tenants {
            bail!(
                "{} of {} cooperatives had a set proposed for {period}",
                approvals.len(),
                shape.tenants
            );
        }
        let from = topology.emitted.len();
        topology.feed(approvals)?;
        let settlements: Vec<Event> = topology.emitted[from..]
            .iter()
            .filter_map(|e| match e {
                Event::PaymentScheduled(p) if p.purpose == PaymentPurpose::Distribution => {
                    Some(settlement(&p.meta.tenant_id, &p.payment_id))
                }
                _ => None,
            })
            .collect();
        topology.feed(settlements)?;
        let paid_out = topology
            .emitted
            .iter()
            .filter(|e| matches!(e, Event::PeriodDistributed(d) if d.period_id == period))
            .count();
        if paid_out != shape.tenants {
            bail!(
                "{paid_out} of {} cooperatives had {period} paid out",
                shape.tenants
            );
        }
        if topology.dead_letters() > 0 {
            bail!("{} records were dead-lettered", topology.dead_letters());
        }
        after.push(topology.entries());
    }
    Ok(after)
}

pub fn run(bench: &StateBench) -> Result<()> {
    let after = simulate(bench)?;
    println!(
        "State stores after each year: {} cooperatives × {} members × {} contributions a year",
        bench.tenants, bench.members, bench.contributions
    );
    let stores: Vec<&String> = after
        .first()
        .map(|e| e.keys().collect())
        .unwrap_or_default();
    print!("{:<45}", "store");
    for y in 1..=after.len() {
        print!(" {:>9}", format!("year {y}"));
    }
    println!();
    for store in stores {
        print!("{store:<45}");
        for entries in &after {
            print!(" {:>9}", entries.get(store).copied().unwrap_or_default());
        }
        println!();
    }
    print!("{:<45}", "total");
    for entries in &after {
        print!(" {:>9}", entries.values().sum::<usize>());
    }
    println!();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three years leave what one year leaves, plus one marker per cooperative and period
    /// in the period-keyed stores: nothing else grows with history.
    #[test]
    fn three_years_hold_what_one_year_holds_plus_a_marker_per_period() {
        let bench = StateBench {
            years: 3,
            tenants: 3,
            members: 12,
            contributions: 3,
        };
        let after = simulate(&bench).expect("three years run");
        let (one, three) = (&after[0], &after[2]);
        let markers = [
            "patronage-aggregator/periods",
            "allocation-calculator/sets",
            "payment-schedule-creator/paid-out",
            "distribution-recorder/periods",
        ];
        for (store, &live) in three {
            let expected = if markers.contains(&store.as_str()) {
                one[store] + 2 * bench.tenants
            } else {
                one[store]
            };
            assert_eq!(
                live, expected,
                "{store}: {one:?} after one year, {three:?} after three"
            );
        }
        // What a paid-out period needed is gone, not merely flat.
        for store in [
            "patronage-aggregator/contributions",
            "patronage-aggregator/tallies",
            "payment-schedule-creator/payments",
            "payment-schedule-creator/schedules",
            "distribution-recorder/distributions",
            "distribution-recorder/posted",
            "distribution-recorder/payable",
        ] {
            assert_eq!(three[store], 0, "{store}: {three:?}");
        }
        // Members' balances stay, one per member.
        assert_eq!(
            three["distribution-recorder/capital"],
            bench.tenants * bench.members
        );
    }
}
