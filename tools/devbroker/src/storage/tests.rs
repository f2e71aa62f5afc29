//! DevStorage on Tansu's SQLite engine, as a durable devbroker runs: the requests a client
//! sends again when the broker was killed after doing them and before answering.

use std::path::{Path, PathBuf};

use tansu_sans_io::{
    ErrorCode,
    add_partitions_to_txn_request::AddPartitionsToTxnTopic,
    create_topics_request::CreatableTopic,
    txn_offset_commit_request::{TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic},
};
use tansu_storage::{
    BrokerRegistrationRequest, Storage, StorageContainer, TxnAddPartitionsRequest,
    TxnAddPartitionsResponse, TxnOffsetCommitRequest,
};
use url::Url;

use super::DevStorage;

const TOPIC: &str = "retried";
const TXN: &str = "retrying-producer";

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("devbroker-storage-{name}-{}", std::process::id()));
    _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A durable storage in `dir` with a three-partition topic and a transactional producer.
async fn durable(dir: &Path) -> (DevStorage, i64, i16) {
    let control =
        Url::parse(&format!("sqlite:///{}", dir.join("control.db").display())).expect("sqlite url");
    let inner = StorageContainer::builder()
        .cluster_id("storage-tests")
        .node_id(111)
        .advertised_listener(Url::parse("tcp://127.0.0.1:9092").expect("listener"))
        .storage(control)
        .silent(true)
        .build()
        .await
        .expect("Tansu's engine");
    let storage = DevStorage::durable(inner, dir).expect("durable storage");
    storage
        .register_broker(BrokerRegistrationRequest {
            broker_id: 111,
            cluster_id: "storage-tests".into(),
            incarnation_id: uuid::Uuid::new_v4(),
            rack: None,
        })
        .await
        .expect("broker registered");
    _ = storage
        .create_topic(
            CreatableTopic::default()
                .name(TOPIC.into())
                .num_partitions(3)
                .replication_factor(1),
            false,
        )
        .await
        .expect("topic created");
    let producer = storage
        .init_producer(Some(TXN), 30_000, None, None)
        .await
        .expect("producer id");
    assert_eq!(producer.error, ErrorCode::None);
    (storage, producer.id, producer.epoch)
}

fn add_partitions(id: i64, epoch: i16, partitions: &[i32]) -> TxnAddPartitionsRequest {
    TxnAddPartitionsRequest::VersionZeroToThree {
        transaction_id: TXN.into(),
        producer_id: id,
        producer_epoch: epoch,
        topics: vec![
            AddPartitionsToTxnTopic::default()
                .name(TOPIC.into())
                .partitions(Some(partitions.to_vec())),
        ],
    }
}

/// Every partition's answer, in order.
fn codes(response: &TxnAddPartitionsResponse) -> Vec<(i32, i16)> {
    let TxnAddPartitionsResponse::VersionZeroToThree(topics) = response else {
        panic!("a version 0-3 answer: {response:?}");
    };
    topics
        .iter()
        .flat_map(|topic| topic.results_by_partition.as_deref().unwrap_or_default())
        .map(|result| (result.partition_index, result.partition_error_code))
        .collect()
}

#[tokio::test]
async fn a_retried_add_partitions_succeeds_and_the_transaction_still_commits() {
    let dir = scratch("add-partitions");
    let (storage, id, epoch) = durable(&dir).await;
    let ok = i16::from(ErrorCode::None);

    let first = storage
        .txn_add_partitions(add_partitions(id, epoch, &[0, 1]))
        .await
        .expect("first add");
    assert_eq!(codes(&first), [(0, ok), (1, ok)]);
    // The answer was lost; the client sends the same request again, and one more
    // partition beside the ones it holds.
    let again = storage
        .txn_add_partitions(add_partitions(id, epoch, &[0, 1]))
        .await
        .expect("the same add again");
    assert_eq!(codes(&again), [(0, ok), (1, ok)]);
    let more = storage
        .txn_add_partitions(add_partitions(id, epoch, &[1, 2]))
        .await
        .expect("an add beside a held partition");
    assert_eq!(codes(&more), [(1, ok), (2, ok)]);

    let ended = storage.txn_end(TXN, id, epoch, true).await.expect("commit");
    assert_eq!(ended, ErrorCode::None);
    // The next transaction of the same epoch adds the same partitions afresh.
    let next = storage
        .txn_add_partitions(add_partitions(id, epoch, &[0]))
        .await
        .expect("next transaction's add");
    assert_eq!(codes(&next), [(0, ok)]);
    drop(storage);
    _ = std::fs::remove_dir_all(&dir);
}

fn offsets(id: i64, epoch: i16, offset: i64) -> TxnOffsetCommitRequest {
    TxnOffsetCommitRequest {
        transaction_id: TXN.into(),
        group_id: "retried-group".into(),
        producer_id: id,
        producer_epoch: epoch,
        generation_id: None,
        member_id: None,
        group_instance_id: None,
        topics: vec![
            TxnOffsetCommitRequestTopic::default()
                .name(TOPIC.into())
                .partitions(Some(vec![
                    TxnOffsetCommitRequestPartition::default()
                        .partition_index(0)
                        .committed_offset(offset),
                ])),
        ],
    }
}

/// AddOffsetsToTxn for the test's group.
async fn add_offsets(storage: &DevStorage, id: i64, epoch: i16) -> ErrorCode {
    storage
        .txn_add_offsets(TXN, id, epoch, "retried-group")
        .await
        .expect("add offsets")
}

/// TxnOffsetCommit of offset 10 for partition 0; each partition's answer.
async fn commit_offsets(storage: &DevStorage, id: i64, epoch: i16) -> Vec<i16> {
    storage
        .txn_offset_commit(offsets(id, epoch, 10))
        .await
        .expect("an answer, not an error that ends the connection")
        .iter()
        .flat_map(|topic| topic.partitions.as_deref().unwrap_or_default())
        .map(|partition| partition.error_code)
        .collect()
}

#[tokio::test]
async fn a_second_offset_commit_in_a_transaction_is_an_abortable_error_not_a_dropped_connection() {
    let dir = scratch("offsets");
    let (storage, id, epoch) = durable(&dir).await;
    assert_eq!(add_offsets(&storage, id, epoch).await, ErrorCode::None);
    assert_eq!(
        commit_offsets(&storage, id, epoch).await,
        [i16::from(ErrorCode::None)]
    );
    // Sent again (its answer lost): the engine cannot take the group's offsets twice in
    // one transaction, so the client is told to abort, which it can.
    assert_eq!(
        commit_offsets(&storage, id, epoch).await,
        [i16::from(ErrorCode::UnknownServerError)]
    );
    assert_eq!(
        storage.txn_end(TXN, id, epoch, false).await.expect("abort"),
        ErrorCode::None
    );
    // The transaction done again commits its offsets.
    assert_eq!(add_offsets(&storage, id, epoch).await, ErrorCode::None);
    assert_eq!(
        commit_offsets(&storage, id, epoch).await,
        [i16::from(ErrorCode::None)]
    );
    assert_eq!(
        storage.txn_end(TXN, id, epoch, true).await.expect("commit"),
        ErrorCode::None
    );
    drop(storage);
    _ = std::fs::remove_dir_all(&dir);
}
