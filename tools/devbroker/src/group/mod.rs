//! The consumer group coordinator: JoinGroup, SyncGroup, Heartbeat and LeaveGroup with
//! Kafka's classic rebalance protocol; committed offsets go to Tansu's storage.
//!
//! Tansu's own coordinator keeps a member that stopped heartbeating in the assignment
//! of the group it already formed, so a killed consumer's partitions never move. This one
//! follows Kafka: a member silent for its session timeout is removed and the group
//! rebalances; a join starts a rebalance that completes when every member has rejoined
//! (or its rebalance timeout passes); a static member (`group.instance.id`) that joins
//! again takes its predecessor's place, and the predecessor is fenced.

mod state;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use tansu_broker::{
    Result,
    coordinator::group::{Coordinator, OffsetCommit, administrator::Controller},
};
use tansu_sans_io::{
    Body, ErrorCode,
    heartbeat_response::HeartbeatResponse,
    join_group_request::JoinGroupRequestProtocol,
    join_group_response::JoinGroupResponse,
    leave_group_request::MemberIdentity,
    leave_group_response::{LeaveGroupResponse, MemberResponse},
    offset_commit_response::{
        OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    },
    offset_fetch_request::{OffsetFetchRequestGroup, OffsetFetchRequestTopic},
    offset_fetch_response::{OffsetFetchResponse, OffsetFetchResponseGroup},
    sync_group_request::SyncGroupRequestAssignment,
    sync_group_response::SyncGroupResponse,
};
use tracing::{error, info, warn};

use crate::storage::DevStorage;
use state::{Group, Member, Phase};

/// How often a waiting JoinGroup or SyncGroup looks at the group again.
const POLL: Duration = Duration::from_millis(10);

/// Devbroker's group coordinator.
#[derive(Clone, Debug)]
pub struct DevCoordinator {
    groups: Arc<Mutex<BTreeMap<String, Group>>>,
    offsets: Controller<DevStorage>,
}

impl DevCoordinator {
    pub fn new(storage: DevStorage) -> Result<Self> {
        Ok(Self {
            groups: Arc::new(Mutex::new(BTreeMap::new())),
            offsets: Controller::with_storage(storage)?,
        })
    }

    fn with_group<T>(&self, group_id: &str, f: impl FnOnce(&mut Group) -> T) -> T {
        let mut groups = self.groups.lock().unwrap_or_else(|e| e.into_inner());
        let group = groups.entry(group_id.to_owned()).or_insert_with(Group::new);
        group.expire(group_id, Instant::now());
        f(group)
    }
}

fn join_error(code: ErrorCode, member_id: &str, generation: i32) -> Body {
    JoinGroupResponse::default()
        .throttle_time_ms(Some(0))
        .error_code(code.into())
        .generation_id(generation)
        .protocol_type(None)
        .protocol_name(Some(String::new()))
        .leader(String::new())
        .skip_assignment(Some(false))
        .member_id(member_id.to_owned())
        .members(Some(Vec::new()))
        .into()
}

fn sync_response(code: ErrorCode, group: Option<&Group>, assignment: Bytes) -> Body {
    SyncGroupResponse::default()
        .throttle_time_ms(Some(0))
        .error_code(code.into())
        .protocol_type(group.and_then(|g| g.protocol_type.clone()))
        .protocol_name(group.and_then(Group::protocol_name))
        .assignment(assignment)
        .into()
}

/// An offset fetch the storage could not answer: retriable for the client.
fn offset_fetch_failed(groups: Option<&[OffsetFetchRequestGroup]>) -> Body {
    let code = i16::from(ErrorCode::CoordinatorNotAvailable);
    OffsetFetchResponse::default()
        .throttle_time_ms(Some(0))
        .topics(Some(Vec::new()))
        .error_code(Some(code))
        .groups(groups.map(|groups| {
            groups
                .iter()
                .map(|group| {
                    OffsetFetchResponseGroup::default()
                        .group_id(group.group_id.clone())
                        .topics(Some(Vec::new()))
                        .error_code(code)
                })
                .collect()
        }))
        .into()
}

fn heartbeat_response(code: ErrorCode) -> Body {
    HeartbeatResponse::default()
        .throttle_time_ms(Some(0))
        .error_code(code.into())
        .into()
}

#[async_trait]
impl Coordinator for DevCoordinator {
    async fn join(
        &mut self,
        client_id: Option<&str>,
        group_id: &str,
        session_timeout_ms: i32,
        rebalance_timeout_ms: Option<i32>,
        member_id: &str,
        group_instance_id: Option<&str>,
        protocol_type: &str,
        protocols: Option<&[JoinGroupRequestProtocol]>,
        _reason: Option<&str>,
    ) -> Result<Body> {
        let protocols: Vec<(String, Bytes)> = protocols
            .unwrap_or_default()
            .iter()
            .map(|p| (p.name.clone(), p.metadata.clone()))
            .collect();
        if protocols.is_empty() {
            return Ok(join_error(
                ErrorCode::InconsistentGroupProtocol,
                member_id,
                -1,
            ));
        }
        let millis = |ms: i32| Duration::from_millis(u64::try_from(ms).unwrap_or(0));
        let session_timeout = millis(session_timeout_ms);
        let rebalance_timeout = millis(rebalance_timeout_ms.unwrap_or(session_timeout_ms));
        let fresh_id = || {
            let prefix = group_instance_id.or(client_id).unwrap_or("member");
            format!("{prefix}-{}", uuid::Uuid::new_v4())
        };

        let joined = self.with_group(group_id, |group| {
            let now = Instant::now();
            if group
                .protocol_type
                .as_deref()
                .is_some_and(|t| t != protocol_type)
                && !group.members.is_empty()
            {
                return Err((ErrorCode::InconsistentGroupProtocol, member_id.to_owned()));
            }
            let id = if member_id.is_empty() {
                match group_instance_id {
                    // A static member comes back: it replaces (and so fences) its predecessor.
                    Some(instance) => {
                        let previous = group
                            .members
                            .iter()
                            .find(|(_, m)| m.instance_id.as_deref() == Some(instance))
                            .map(|(id, _)| id.clone());
                        if let Some(previous) = previous {
                            info!(group = group_id, %previous, instance, "Static member replaced.");
                            _ = group.members.remove(&previous);
                            if group.leader.as_deref() == Some(previous.as_str()) {
                                group.leader = None;
                            }
                        }
                        fresh_id()
                    }
                    // KIP-394: a new dynamic member first gets its id, then joins with it.
                    None => return Err((ErrorCode::MemberIdRequired, fresh_id())),
                }
            } else {
                if let Some(instance) = group_instance_id
                    && group.members.iter().any(|(id, m)| {
                        m.instance_id.as_deref() == Some(instance) && id != member_id
                    })
                {
                    return Err((ErrorCode::FencedInstanceId, member_id.to_owned()));
                }
                member_id.to_owned()
            };
            group.protocol_type = Some(protocol_type.to_owned());
            let unchanged = group
                .members
                .get(&id)
                .is_some_and(|m| m.protocols == protocols);
            let member = group.members.entry(id.clone()).or_insert_with(|| Member {
                instance_id: group_instance_id.map(str::to_owned),
                protocols: protocols.clone(),
                session_timeout,
                rebalance_timeout,
                last_seen: now,
                joined: false,
                assignment: Bytes::new(),
            });
            member.protocols = protocols.clone();
            member.session_timeout = session_timeout;
            member.rebalance_timeout = rebalance_timeout;
            member.last_seen = now;
            // A known member rejoining a formed group with the same metadata gets the
            // current round back (Kafka does the same); anything else rebalances.
            if unchanged
                && group.phase == Phase::Completing
                && let Some(round) = &group.last_round
            {
                return Ok((id, round.generation - 1));
            }
            group.rebalance(now);
            if let Some(member) = group.members.get_mut(&id) {
                member.joined = true;
            }
            Ok((id, group.generation))
        });
        let (id, before) = match joined {
            Ok(joined) => joined,
            Err((code, id)) => return Ok(join_error(code, &id, -1)),
        };

        loop {
            let outcome = self.with_group(group_id, |group| {
                let now = Instant::now();
                let Some(member) = group.members.get_mut(&id) else {
                    return Some(join_error(ErrorCode::UnknownMemberId, &id, -1));
                };
                // Waiting in JoinGroup counts as being alive.
                member.last_seen = now;
                _ = group.try_complete(now);
                let round = group
                    .last_round
                    .as_ref()
                    .filter(|r| r.generation > before)?;
                let leader = round.leader == id;
                Some(
                    JoinGroupResponse::default()
                        .throttle_time_ms(Some(0))
                        .error_code(ErrorCode::None.into())
                        .generation_id(round.generation)
                        .protocol_type(group.protocol_type.clone())
                        .protocol_name(Some(round.protocol.clone()))
                        .leader(round.leader.clone())
                        .skip_assignment(Some(false))
                        .member_id(id.clone())
                        .members(Some(if leader {
                            round.members.clone()
                        } else {
                            Vec::new()
                        }))
                        .into(),
                )
            });
            if let Some(body) = outcome {
                return Ok(body);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn sync(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        _group_instance_id: Option<&str>,
        _protocol_type: Option<&str>,
        _protocol_name: Option<&str>,
        assignments: Option<&[SyncGroupRequestAssignment]>,
    ) -> Result<Body> {
        let started = Instant::now();
        loop {
            let outcome = self.with_group(group_id, |group| {
                let now = Instant::now();
                let Some(member) = group.members.get_mut(member_id) else {
                    return Some(sync_response(
                        ErrorCode::UnknownMemberId,
                        None,
                        Bytes::new(),
                    ));
                };
                member.last_seen = now;
                let timeout = member.rebalance_timeout;
                if matches!(group.phase, Phase::Preparing { .. }) {
                    return Some(sync_response(
                        ErrorCode::RebalanceInProgress,
                        Some(group),
                        Bytes::new(),
                    ));
                }
                if generation_id != group.generation {
                    return Some(sync_response(
                        ErrorCode::IllegalGeneration,
                        Some(group),
                        Bytes::new(),
                    ));
                }
                if group.phase == Phase::Completing
                    && group.leader.as_deref() == Some(member_id)
                    && let Some(assignments) = assignments
                {
                    for assignment in assignments {
                        if let Some(m) = group.members.get_mut(&assignment.member_id) {
                            m.assignment = assignment.assignment.clone();
                        }
                    }
                    group.phase = Phase::Stable;
                }
                if group.phase == Phase::Stable {
                    let assignment = group.members[member_id].assignment.clone();
                    return Some(sync_response(ErrorCode::None, Some(group), assignment));
                }
                if now.duration_since(started) > timeout {
                    // The leader never synced: start over.
                    group.rebalance(now);
                    return Some(sync_response(
                        ErrorCode::RebalanceInProgress,
                        Some(group),
                        Bytes::new(),
                    ));
                }
                None
            });
            if let Some(body) = outcome {
                return Ok(body);
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn heartbeat(
        &mut self,
        group_id: &str,
        generation_id: i32,
        member_id: &str,
        group_instance_id: Option<&str>,
    ) -> Result<Body> {
        Ok(self.with_group(group_id, |group| {
            let Some(member) = group.members.get_mut(member_id) else {
                let replaced = group_instance_id.is_some_and(|instance| {
                    group
                        .members
                        .values()
                        .any(|m| m.instance_id.as_deref() == Some(instance))
                });
                return heartbeat_response(if replaced {
                    ErrorCode::FencedInstanceId
                } else {
                    ErrorCode::UnknownMemberId
                });
            };
            member.last_seen = Instant::now();
            match group.phase {
                Phase::Preparing { .. } => heartbeat_response(ErrorCode::RebalanceInProgress),
                _ if generation_id != group.generation => {
                    heartbeat_response(ErrorCode::IllegalGeneration)
                }
                _ => heartbeat_response(ErrorCode::None),
            }
        }))
    }

    async fn leave(
        &mut self,
        group_id: &str,
        member_id: Option<&str>,
        members: Option<&[MemberIdentity]>,
    ) -> Result<Body> {
        let leaving: Vec<(String, Option<String>)> = match members {
            Some(members) => members
                .iter()
                .map(|m| (m.member_id.clone(), m.group_instance_id.clone()))
                .collect(),
            None => member_id
                .map(|id| (id.to_owned(), None))
                .into_iter()
                .collect(),
        };
        let responses = self.with_group(group_id, |group| {
            let now = Instant::now();
            let responses: Vec<MemberResponse> = leaving
                .into_iter()
                .map(|(id, instance)| {
                    let id = match (&instance, id.is_empty()) {
                        (Some(instance), true) => group
                            .members
                            .iter()
                            .find(|(_, m)| m.instance_id.as_ref() == Some(instance))
                            .map(|(id, _)| id.clone())
                            .unwrap_or_default(),
                        _ => id,
                    };
                    let removed = group.members.remove(&id).is_some();
                    if removed {
                        info!(group = group_id, member = %id, "Member left.");
                        if group.leader.as_deref() == Some(id.as_str()) {
                            group.leader = None;
                        }
                        group.rebalance(now);
                    }
                    MemberResponse::default()
                        .member_id(id)
                        .group_instance_id(instance)
                        .error_code(
                            if removed {
                                ErrorCode::None
                            } else {
                                ErrorCode::UnknownMemberId
                            }
                            .into(),
                        )
                })
                .collect();
            responses
        });
        Ok(LeaveGroupResponse::default()
            .throttle_time_ms(Some(0))
            .error_code(ErrorCode::None.into())
            .members(Some(responses))
            .into())
    }

    async fn offset_commit(&mut self, detail: OffsetCommit<'_>) -> Result<Body> {
        // A commit from a group member must come from the current generation.
        if let (Some(member_id), Some(generation)) =
            (detail.member_id, detail.generation_id_or_member_epoch)
            && generation >= 0
        {
            let refused = self.with_group(detail.group_id, |group| {
                if !group.members.contains_key(member_id) {
                    Some(ErrorCode::UnknownMemberId)
                } else if generation != group.generation {
                    Some(ErrorCode::IllegalGeneration)
                } else {
                    None
                }
            });
            if let Some(code) = refused {
                return Ok(OffsetCommitResponse::default()
                    .throttle_time_ms(Some(0))
                    .topics(detail.topics.map(|topics| {
                        topics
                            .iter()
                            .map(|topic| {
                                OffsetCommitResponseTopic::default()
                                    .name(topic.name.clone())
                                    .partitions(topic.partitions.as_ref().map(|partitions| {
                                        partitions
                                            .iter()
                                            .map(|p| {
                                                OffsetCommitResponsePartition::default()
                                                    .partition_index(p.partition_index)
                                                    .error_code(code.into())
                                            })
                                            .collect()
                                    }))
                            })
                            .collect()
                    }))
                    .into());
            }
        }
        self.offsets.offset_commit(detail).await
    }

    async fn offset_fetch(
        &mut self,
        group_id: Option<&str>,
        topics: Option<&[OffsetFetchRequestTopic]>,
        groups: Option<&[OffsetFetchRequestGroup]>,
        require_stable: Option<bool>,
    ) -> Result<Body> {
        // Tansu's offset fetch panics when the storage fails: it runs in a task of its
        // own, and a failure is answered with COORDINATOR_NOT_AVAILABLE, which clients
        // retry.
        let mut offsets = self.offsets.clone();
        let owned = (
            group_id.map(str::to_owned),
            topics.map(<[_]>::to_vec),
            groups.map(<[_]>::to_vec),
        );
        let fetched = tokio::spawn(async move {
            let (group_id, topics, groups) = owned;
            offsets
                .offset_fetch(
                    group_id.as_deref(),
                    topics.as_deref(),
                    groups.as_deref(),
                    require_stable,
                )
                .await
        })
        .await;
        match fetched {
            Ok(Ok(body)) => Ok(body),
            Ok(Err(error)) => {
                warn!(?error, group_id, "Offset fetch failed.");
                Ok(offset_fetch_failed(groups))
            }
            Err(error) => {
                error!(%error, group_id, "Offset fetch panicked.");
                Ok(offset_fetch_failed(groups))
            }
        }
    }
}
