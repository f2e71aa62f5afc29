//! A consumer group's state: its members, the phase of its rebalance and the last join
//! round, with the rules that expire silent members and complete a round.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use bytes::Bytes;
use tansu_sans_io::join_group_response::JoinGroupResponseMember;
use tracing::info;

#[derive(Clone, Debug)]
pub(super) struct Member {
    pub(super) instance_id: Option<String>,
    pub(super) protocols: Vec<(String, Bytes)>,
    pub(super) session_timeout: Duration,
    pub(super) rebalance_timeout: Duration,
    pub(super) last_seen: Instant,
    /// Joined the rebalance in progress.
    pub(super) joined: bool,
    pub(super) assignment: Bytes,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Phase {
    Empty,
    Preparing { deadline: Instant },
    Completing,
    Stable,
}

/// What a completed join round told its members.
#[derive(Clone, Debug)]
pub(super) struct Round {
    pub(super) generation: i32,
    pub(super) protocol: String,
    pub(super) leader: String,
    pub(super) members: Vec<JoinGroupResponseMember>,
}

#[derive(Debug)]
pub(super) struct Group {
    pub(super) generation: i32,
    pub(super) protocol_type: Option<String>,
    pub(super) phase: Phase,
    pub(super) leader: Option<String>,
    pub(super) members: BTreeMap<String, Member>,
    pub(super) last_round: Option<Round>,
}

impl Group {
    pub(super) fn new() -> Self {
        Self {
            generation: 0,
            protocol_type: None,
            phase: Phase::Empty,
            leader: None,
            members: BTreeMap::new(),
            last_round: None,
        }
    }

    /// Removes members silent for longer than their session timeout.
    pub(super) fn expire(&mut self, group_id: &str, now: Instant) {
        let expired: Vec<String> = self
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.last_seen) > m.session_timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            info!(group = group_id, member = %id, "Member expired: no heartbeat within its session timeout.");
            _ = self.members.remove(&id);
            self.rebalance(now);
        }
    }

    /// Starts a rebalance (or keeps the one in progress).
    pub(super) fn rebalance(&mut self, now: Instant) {
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            self.leader = None;
            return;
        }
        if matches!(self.phase, Phase::Preparing { .. }) {
            return;
        }
        let timeout = self
            .members
            .values()
            .map(|m| m.rebalance_timeout)
            .max()
            .unwrap_or(Duration::from_secs(60));
        for member in self.members.values_mut() {
            member.joined = false;
        }
        self.phase = Phase::Preparing {
            deadline: now + timeout,
        };
    }

    /// Completes the join round when every member has joined or the deadline passed.
    pub(super) fn try_complete(&mut self, now: Instant) -> bool {
        let Phase::Preparing { deadline } = self.phase else {
            return false;
        };
        let all_joined = self.members.values().all(|m| m.joined);
        if !all_joined && now < deadline {
            return false;
        }
        self.members.retain(|_, m| m.joined);
        if self.members.is_empty() {
            self.phase = Phase::Empty;
            return false;
        }
        // The first protocol of the leader's preference every member supports.
        let leader = self
            .leader
            .clone()
            .filter(|l| self.members.contains_key(l))
            .or_else(|| self.members.keys().next().cloned())
            .expect("a member");
        let protocol = self.members[&leader]
            .protocols
            .iter()
            .map(|(name, _)| name.clone())
            .find(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == name))
            })
            .unwrap_or_default();
        self.generation += 1;
        self.leader = Some(leader.clone());
        self.phase = Phase::Completing;
        let members = self
            .members
            .iter_mut()
            .map(|(id, m)| {
                m.assignment = Bytes::new();
                let metadata = m
                    .protocols
                    .iter()
                    .find(|(n, _)| *n == protocol)
                    .map(|(_, meta)| meta.clone())
                    .unwrap_or_default();
                JoinGroupResponseMember::default()
                    .member_id(id.clone())
                    .group_instance_id(m.instance_id.clone())
                    .metadata(metadata)
            })
            .collect();
        self.last_round = Some(Round {
            generation: self.generation,
            protocol,
            leader,
            members,
        });
        true
    }

    pub(super) fn protocol_name(&self) -> Option<String> {
        self.last_round.as_ref().map(|r| r.protocol.clone())
    }
}
