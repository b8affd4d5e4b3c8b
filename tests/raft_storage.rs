//! The raft log store and state machine against openraft's own storage test suite, plus
//! what the suite does not cover: durability across close and reopen.

use std::sync::Arc;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{EntryPayload, LogId, RaftLogReader, RaftSnapshotBuilder};
use synod::core::clock::SystemClock;
use synod::core::command::Command;
use synod::core::preservation::PreservationConfig;
use synod::core::registry::Registry;
use synod::core::state::CoreConfig;
use synod::replication::raft::log_store::{LogGrowth, LogStore};
use synod::replication::raft::state_machine::StateMachine;
use synod::replication::raft::types::{Entry, Proposal, StorageError, TypeConfig};
use synod::store::{StoreError, SyncedDb};

fn registry() -> Arc<Registry> {
    Arc::new(Registry::new(CoreConfig::default(), PreservationConfig::default(), Arc::new(SystemClock)))
}

/// Opens the sled database in `dir`. One just dropped in this process may hold sled's file
/// lock a moment longer (sled's I/O pool finishes its last job), so a reopen waits for it.
fn open_db(dir: &std::path::Path) -> SyncedDb {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match SyncedDb::open(dir) {
            Ok(db) => return db,
            Err(StoreError::Locked(_)) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            Err(e) => panic!("open sled: {e}"),
        }
    }
}

fn open(dir: &std::path::Path) -> (LogStore, StateMachine, Arc<Registry>) {
    let db = Arc::new(open_db(dir));
    let reg = registry();
    let growth = Arc::new(LogGrowth::new(32 << 20));
    (
        LogStore::open(db.clone(), growth.clone()).expect("log"),
        StateMachine::open(&db, dir, reg.clone(), growth).expect("sm"),
        reg,
    )
}

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(&self) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let (log, sm, _) = open(dir.path());
        Ok((dir, log, sm))
    }
}

#[test]
fn passes_openraft_storage_suite() {
    // The suite builds its own runtimes: it must run outside tokio.
    Suite::test_all(Builder).expect("storage suite");
}

fn register_entry(index: u64, id: &str) -> Entry {
    let body = serde_json::json!({"instance": {
        "instanceId": id, "hostName": "h", "app": "SVC", "ipAddr": "127.0.0.1", "status": "UP",
        "dataCenterInfo": {"@class": "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo", "name": "MyOwn"}
    }});
    let info = synod::codec::decode::registration(&body, 1).expect("valid instance");
    Entry {
        log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Proposal::from(vec![Command::Register {
            instance: Box::new(info),
            now: 1_000 + index,
            from_peer: false,
        }])),
    }
}

/// Vote, commit pointer and snapshot come back after a reopen, and the registry is rebuilt
/// from the snapshot. (Appends are covered by the suite and by the kill -9 cluster test:
/// openraft does not let code outside it build an append callback.)
#[tokio::test]
async fn vote_committed_and_snapshot_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let vote = openraft::Vote::new_committed(3, 2);
    let committed = LogId::new(openraft::CommittedLeaderId::new(1, 1), 5);
    {
        let (mut log, mut sm, _) = open(dir.path());
        log.save_vote(&vote).await.unwrap();
        log.save_committed(Some(committed)).await.unwrap();
        let entries: Vec<Entry> = (1..=3).map(|i| register_entry(i, &format!("i{i}"))).collect();
        sm.apply(entries).await.unwrap();
        let mut builder = sm.get_snapshot_builder().await;
        let snap = builder.build_snapshot().await.unwrap();
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(3));
    }
    let (mut log, mut sm, reg) = open(dir.path());
    assert_eq!(log.read_vote().await.unwrap(), Some(vote));
    assert_eq!(log.read_committed().await.unwrap(), Some(committed));
    assert!(log.try_get_log_entries(0..10).await.unwrap().is_empty());
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(3));
    assert_eq!(reg.read(|st| st.len()), 3);
    assert!(sm.get_current_snapshot().await.unwrap().is_some());
}

/// A vote with a term near overflow (accepted from the network by earlier versions) makes
/// openraft panic at every start; the store refuses to open with one line saying what to do.
#[tokio::test]
async fn an_unusable_persisted_vote_stops_the_start_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _, _) = open(dir.path());
        log.save_vote(&openraft::Vote::new_committed(u64::MAX, 99)).await.unwrap();
    }
    let db = Arc::new(open_db(dir.path()));
    let err = LogStore::open(db, Arc::new(LogGrowth::new(32 << 20))).err().expect("must refuse");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::Unusable(_)), "{msg}");
    assert!(msg.contains("beyond any real election") && msg.contains("--raft-join"), "{msg}");
    assert!(!msg.contains('\n'), "one line: {msg}");
}

/// An unreadable vote record is reported the same way, not as a panic or a bare decode error.
#[tokio::test]
async fn an_unreadable_persisted_vote_stops_the_start_with_a_reason() {
    let dir = tempfile::tempdir().unwrap();
    {
        let db = open_db(dir.path());
        db.db.open_tree("raft_meta").unwrap().insert(b"vote", &b"\xfd\xff\xff"[..]).unwrap();
        db.sync().unwrap();
    }
    let db = Arc::new(open_db(dir.path()));
    let err = LogStore::open(db, Arc::new(LogGrowth::new(32 << 20))).err().expect("must refuse");
    let msg = err.to_string();
    assert!(msg.contains("vote is unreadable") && msg.contains("--raft-join"), "{msg}");
}
