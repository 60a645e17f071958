//! Model test of the state journal: random session and retained changes, checkpoints that
//! overlap with changes (as the running broker writes them), restarts and power cuts on
//! edge-log's `MemStorage` fake (the only way to cut power on demand). After every cut the
//! replayed state must be the state after some prefix of the changes that includes every
//! change acknowledged as durable; the model is an independent in-memory state built from
//! the same operations.

#![allow(clippy::unwrap_used, clippy::expect_used)]
// The model's operations change state and then record it; as match guards they would hide
// the change.
#![allow(clippy::collapsible_match)]

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use edge_broker::hub::Delivery;
use edge_broker::message::{Message, MessageProperties, Origin};
use edge_broker::state::journal::Encoder;
use edge_broker::state::record::{Record, SessionImage, StoredDelivery, StoredSubscription};
use edge_broker::state::{Journal, ModelSession, StateModel, replay};
use edge_log::testing::{CrashMode, MemStorage};
use edge_log::{FsyncPolicy, Storage, StorageFile};
use edge_proto::mqtt::QoS;
use proptest::prelude::*;

const CLIENTS: u8 = 4;
const MESSAGES: u8 = 5;

#[derive(Debug, Clone)]
enum Op {
    Open(u8, u32),
    End(u8),
    Subscribe(u8, u8, u8),
    Unsubscribe(u8, u8),
    Enqueue(u8, u8),
    Dequeue(u8),
    InFlight(u8, u16, u8),
    Release(u8, u16),
    Complete(u8, u16),
    Offline(u8, u64),
    Online(u8),
    Qos2In(u8, u16),
    Qos2Done(u8, u16),
    RetainSet(u8),
    RetainClear(u8),
    /// Wait until everything so far is durable: those changes are acknowledged.
    Flush,
    /// Start a checkpoint; its images are written one per following operation.
    Checkpoint,
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0..CLIENTS;
    let m = 0..MESSAGES;
    let pid = 1..6u16;
    prop_oneof![
        1 => (c.clone(), prop_oneof![Just(60u32), Just(u32::MAX)]).prop_map(|(c, e)| Op::Open(c, e)),
        1 => c.clone().prop_map(Op::End),
        1 => (c.clone(), 0..3u8, 0..3u8).prop_map(|(c, f, q)| Op::Subscribe(c, f, q)),
        1 => (c.clone(), 0..3u8).prop_map(|(c, f)| Op::Unsubscribe(c, f)),
        3 => (c.clone(), m.clone()).prop_map(|(c, m)| Op::Enqueue(c, m)),
        2 => c.clone().prop_map(Op::Dequeue),
        1 => (c.clone(), pid.clone(), m.clone()).prop_map(|(c, p, m)| Op::InFlight(c, p, m)),
        1 => (c.clone(), pid.clone()).prop_map(|(c, p)| Op::Release(c, p)),
        1 => (c.clone(), pid.clone()).prop_map(|(c, p)| Op::Complete(c, p)),
        1 => (c.clone(), 1..1000u64).prop_map(|(c, at)| Op::Offline(c, at)),
        1 => c.clone().prop_map(Op::Online),
        1 => (c.clone(), pid.clone()).prop_map(|(c, p)| Op::Qos2In(c, p)),
        1 => (c.clone(), pid).prop_map(|(c, p)| Op::Qos2Done(c, p)),
        2 => m.clone().prop_map(Op::RetainSet),
        1 => m.prop_map(Op::RetainClear),
        2 => Just(Op::Flush),
        1 => Just(Op::Checkpoint),
    ]
}

fn crash_mode() -> impl Strategy<Value = CrashMode> {
    prop_oneof![
        Just(CrashMode::DropUnsynced),
        (1..200usize).prop_map(CrashMode::TornTail),
        Just(CrashMode::ZeroFill),
    ]
}

/// Named fake: `MemStorage` behind a switch that cuts power. Operations in progress finish
/// first (the write lock waits for them); after the cut every operation of the old process
/// fails, so its writer thread cannot touch the files the next process reads.
#[derive(Debug)]
struct PowerSwitch {
    inner: Arc<MemStorage>,
    cut: Arc<RwLock<bool>>,
}

#[derive(Debug)]
struct SwitchedFile {
    inner: Arc<dyn StorageFile>,
    cut: Arc<RwLock<bool>>,
}

fn live<T>(cut: &RwLock<bool>, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let cut = cut.read().unwrap();
    if *cut {
        return Err(io::Error::from_raw_os_error(5));
    }
    f()
}

impl PowerSwitch {
    fn new(inner: &Arc<MemStorage>) -> Arc<PowerSwitch> {
        Arc::new(PowerSwitch {
            inner: Arc::clone(inner),
            cut: Arc::new(RwLock::new(false)),
        })
    }

    /// Cuts the power: nothing of this process reaches the storage any more, and what was
    /// not synced is lost per `mode`.
    fn cut(&self, mode: CrashMode) {
        *self.cut.write().unwrap() = true;
        self.inner.crash(mode);
    }

    fn file(&self, inner: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(SwitchedFile {
            inner,
            cut: Arc::clone(&self.cut),
        })
    }
}

impl StorageFile for SwitchedFile {
    fn size(&self) -> io::Result<u64> {
        live(&self.cut, || self.inner.size())
    }
    fn read_at(&self, buf: &mut [u8], pos: u64) -> io::Result<usize> {
        live(&self.cut, || self.inner.read_at(buf, pos))
    }
    fn write_at(&self, buf: &[u8], pos: u64) -> io::Result<usize> {
        live(&self.cut, || self.inner.write_at(buf, pos))
    }
    fn sync_data(&self) -> io::Result<()> {
        live(&self.cut, || self.inner.sync_data())
    }
    fn truncate(&self, len: u64) -> io::Result<()> {
        live(&self.cut, || self.inner.truncate(len))
    }
}

impl Storage for PowerSwitch {
    fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        live(&self.cut, || self.inner.create_dir_all(dir))
    }
    fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        live(&self.cut, || self.inner.list(dir))
    }
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        live(&self.cut, || self.inner.open(path)).map(|f| self.file(f))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        live(&self.cut, || self.inner.create(path)).map(|f| self.file(f))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        live(&self.cut, || self.inner.rename(from, to))
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        live(&self.cut, || self.inner.remove(path))
    }
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        live(&self.cut, || self.inner.sync_dir(dir))
    }
}

fn messages() -> Vec<Arc<Message>> {
    (0..MESSAGES)
        .map(|i| {
            Arc::new(Message {
                topic: format!("t/{}", i % 3).into(),
                payload: Bytes::from(vec![i; 1 + usize::from(i) * 50]),
                qos: QoS::AtLeastOnce,
                retain: false,
                properties: MessageProperties {
                    user_properties: vec![("k".into(), format!("v{i}"))],
                    ..MessageProperties::default()
                },
                received_ms: u64::from(i),
                origin: Origin::Mqtt,
                publisher: None,
                nats_subject: None,
            })
        })
        .collect()
}

fn client(c: u8) -> String {
    format!("client-{c}")
}

fn filter(f: u8) -> String {
    ["a/#", "$share/g/t/+", "t/1"][usize::from(f)].to_owned()
}

/// Something a checkpoint still has to write an image of.
enum Pending {
    Session(String),
    Retained(String),
}

/// One "process": a journal, the model it should match, and the keys it gave sessions.
struct Process {
    journal: Journal,
    model: StateModel,
    sids: HashMap<String, u64>,
    next_sid: u64,
    pending: Vec<Pending>,
    messages: Vec<Arc<Message>>,
}

fn stored(enc: &mut Encoder<'_>, d: &Delivery) -> StoredDelivery {
    StoredDelivery::new(d, enc.message(&d.message))
}

fn image(enc: &mut Encoder<'_>, sid: u64, client_id: &str, s: &ModelSession) {
    let queue = s.queue.iter().map(|d| stored(enc, d)).collect();
    let inflight = s
        .inflight
        .iter()
        .map(|(id, (released, d))| (*id, *released, stored(enc, d)))
        .collect();
    enc.record(&Record::SessionImage(SessionImage {
        sid,
        client_id: client_id.to_owned(),
        expiry_secs: s.expiry_secs,
        disconnected_at_ms: s.disconnected_at_ms,
        subscriptions: s
            .subscriptions
            .iter()
            .map(|(f, r)| (f.clone(), *r))
            .collect(),
        queue,
        inflight,
        inbound_qos2: s.inbound_qos2.iter().copied().collect(),
    }));
}

impl Process {
    /// Starts on `model` (replayed, or empty) with a startup checkpoint, like the broker.
    fn start(storage: Arc<dyn Storage>, dir: &Path, model: StateModel, generation: u64) -> Process {
        let journal = Journal::create(
            storage,
            dir,
            FsyncPolicy::Always,
            generation,
            generation * 7919,
        )
        .unwrap();
        let mut p = Process {
            journal,
            model,
            sids: HashMap::new(),
            next_sid: 1,
            pending: Vec::new(),
            messages: messages(),
        };
        let clients: Vec<String> = p.model.sessions.keys().cloned().collect();
        for c in clients {
            let sid = p.sid(&c);
            let s = &p.model.sessions[&c];
            p.journal.append(|enc| image(enc, sid, &c, s));
        }
        p.retained_images(p.model.retained.keys().cloned().collect());
        p.journal.end_checkpoint();
        p.journal.flush_blocking().unwrap();
        p
    }

    fn sid(&mut self, client_id: &str) -> u64 {
        if let Some(sid) = self.sids.get(client_id) {
            return *sid;
        }
        let sid = self.next_sid;
        self.next_sid += 1;
        self.sids.insert(client_id.to_owned(), sid);
        sid
    }

    fn retained_images(&self, topics: Vec<String>) {
        for topic in topics {
            if let Some(m) = self.model.retained.get(&topic) {
                self.journal.append(|enc| {
                    let id = enc.message(m);
                    enc.record(&Record::RetainSet { id });
                });
            }
        }
    }

    /// Writes one pending checkpoint image, or ends the checkpoint.
    fn checkpoint_step(&mut self) {
        match self.pending.pop() {
            Some(Pending::Session(c)) => {
                if let Some(s) = self.model.sessions.get(&c) {
                    let sid = self.sids[&c];
                    self.journal.append(|enc| image(enc, sid, &c, s));
                }
                if self.pending.is_empty() {
                    self.journal.end_checkpoint();
                }
            }
            Some(Pending::Retained(t)) => {
                self.retained_images(vec![t]);
                if self.pending.is_empty() {
                    self.journal.end_checkpoint();
                }
            }
            None => {}
        }
    }

    fn delivery(&self, m: u8) -> Delivery {
        Delivery {
            message: Arc::clone(&self.messages[usize::from(m)]),
            qos: QoS::from_u8(1 + m % 2).unwrap(),
            retain: m.is_multiple_of(3),
            subscription_ids: vec![u32::from(m)],
        }
    }

    /// Applies `op` to the model and appends its record(s); returns whether it was a flush.
    fn run(&mut self, op: &Op) -> bool {
        self.checkpoint_step();
        match op {
            Op::Open(c, expiry) => {
                let c = client(*c);
                self.sids.remove(&c);
                let sid = self.sid(&c);
                self.model.sessions.insert(
                    c.clone(),
                    ModelSession {
                        expiry_secs: *expiry,
                        ..ModelSession::default()
                    },
                );
                self.journal.append(|enc| {
                    enc.record(&Record::SessionOpen {
                        sid,
                        client_id: c,
                        expiry_secs: *expiry,
                    })
                });
            }
            Op::Flush => {
                self.journal.flush_blocking().unwrap();
                return true;
            }
            Op::Checkpoint => {
                let j = &self.journal;
                if self.pending.is_empty() && j.begin_checkpoint().is_some() {
                    self.pending = self
                        .model
                        .sessions
                        .keys()
                        .map(|c| Pending::Session(c.clone()))
                        .chain(
                            self.model
                                .retained
                                .keys()
                                .map(|t| Pending::Retained(t.clone())),
                        )
                        .collect();
                    if self.pending.is_empty() {
                        j.end_checkpoint();
                    }
                }
            }
            Op::RetainSet(m) => {
                let msg = Arc::clone(&self.messages[usize::from(*m)]);
                self.model
                    .retained
                    .insert(msg.topic.to_string(), Arc::clone(&msg));
                self.journal.append(|enc| {
                    let id = enc.message(&msg);
                    enc.record(&Record::RetainSet { id });
                });
            }
            Op::RetainClear(m) => {
                let topic = self.messages[usize::from(*m)].topic.to_string();
                if self.model.retained.remove(&topic).is_some() {
                    self.journal
                        .append(|enc| enc.record(&Record::RetainClear { topic }));
                }
            }
            other => self.session_op(other),
        }
        false
    }

    fn session_op(&mut self, op: &Op) {
        let c = match op {
            Op::End(c)
            | Op::Subscribe(c, ..)
            | Op::Unsubscribe(c, _)
            | Op::Enqueue(c, _)
            | Op::Dequeue(c)
            | Op::InFlight(c, ..)
            | Op::Release(c, _)
            | Op::Complete(c, _)
            | Op::Offline(c, _)
            | Op::Online(c)
            | Op::Qos2In(c, _)
            | Op::Qos2Done(c, _) => client(*c),
            _ => return,
        };
        let Some(sid) = self.sids.get(&c).copied() else {
            return;
        };
        if !self.model.sessions.contains_key(&c) {
            return;
        }
        let delivery = match op {
            Op::Enqueue(_, m) | Op::InFlight(_, _, m) => Some(self.delivery(*m)),
            _ => None,
        };
        let s = self.model.sessions.get_mut(&c).unwrap();
        let record = |f: &dyn Fn(&mut Encoder<'_>)| self.journal.append(f);
        match op {
            Op::End(_) => {
                self.model.sessions.remove(&c);
                record(&|enc| enc.record(&Record::SessionEnd { sid }));
            }
            Op::Subscribe(_, f, q) => {
                let options = StoredSubscription {
                    qos: QoS::from_u8(*q).unwrap(),
                    no_local: *f == 2,
                    retain_as_published: false,
                    id: Some(u32::from(*f)),
                };
                s.subscriptions.insert(filter(*f), options);
                record(&|enc| {
                    enc.record(&Record::Subscribe {
                        sid,
                        filter: filter(*f),
                        options,
                    })
                });
            }
            Op::Unsubscribe(_, f) => {
                if s.subscriptions.remove(&filter(*f)).is_some() {
                    record(&|enc| {
                        enc.record(&Record::Unsubscribe {
                            sid,
                            filter: filter(*f),
                        })
                    });
                }
            }
            Op::Enqueue(..) => {
                let d = delivery.unwrap();
                s.queue.push_back(d.clone());
                record(&|enc| {
                    let delivery = stored(enc, &d);
                    enc.record(&Record::Enqueue { sid, delivery });
                });
            }
            Op::Dequeue(_) => {
                if s.queue.pop_front().is_some() {
                    record(&|enc| enc.record(&Record::Dequeue { sid }));
                }
            }
            Op::InFlight(_, pid, _) => {
                let d = delivery.unwrap();
                s.inflight.insert(*pid, (false, d.clone()));
                record(&|enc| {
                    let delivery = stored(enc, &d);
                    enc.record(&Record::InFlight {
                        sid,
                        packet_id: *pid,
                        released: false,
                        delivery,
                    });
                });
            }
            Op::Release(_, pid) => {
                if let Some((released, _)) = s.inflight.get_mut(pid) {
                    *released = true;
                    record(&|enc| {
                        enc.record(&Record::Released {
                            sid,
                            packet_id: *pid,
                        })
                    });
                }
            }
            Op::Complete(_, pid) => {
                if s.inflight.remove(pid).is_some() {
                    record(&|enc| {
                        enc.record(&Record::Completed {
                            sid,
                            packet_id: *pid,
                        })
                    });
                }
            }
            Op::Offline(_, at) => {
                s.disconnected_at_ms = Some(*at);
                let expiry_secs = s.expiry_secs;
                record(&|enc| {
                    enc.record(&Record::Offline {
                        sid,
                        at_ms: *at,
                        expiry_secs,
                    })
                });
            }
            Op::Online(_) => {
                s.disconnected_at_ms = None;
                s.expiry_secs = 600;
                record(&|enc| {
                    enc.record(&Record::Online {
                        sid,
                        expiry_secs: 600,
                    })
                });
            }
            Op::Qos2In(_, pid) => {
                if s.inbound_qos2.insert(*pid) {
                    record(&|enc| {
                        enc.record(&Record::InboundQos2 {
                            sid,
                            packet_id: *pid,
                        })
                    });
                }
            }
            Op::Qos2Done(_, pid) => {
                if s.inbound_qos2.remove(pid) {
                    record(&|enc| {
                        enc.record(&Record::InboundQos2Done {
                            sid,
                            packet_id: *pid,
                        })
                    });
                }
            }
            _ => {}
        }
    }
}

/// What must match between the model and a replay.
fn digest(m: &StateModel) -> String {
    format!("{:?}\n{:?}", m.sessions, m.retained)
}

/// Runs `ops` in a process, cuts power, replays; returns the replayed model and report.
fn run_until_power_cut(
    storage: &Arc<MemStorage>,
    dir: &Path,
    start: StateModel,
    generation: u64,
    ops: &[Op],
    mode: CrashMode,
) -> (StateModel, replay::LoadReport) {
    let switch = PowerSwitch::new(storage);
    let mut p = Process::start(
        Arc::clone(&switch) as Arc<dyn Storage>,
        dir,
        start,
        generation,
    );
    let mut digests = vec![digest(&p.model)];
    let mut acked = 0;
    for op in ops {
        if p.run(op) {
            acked = digests.len() - 1;
        }
        digests.push(digest(&p.model));
    }
    switch.cut(mode);
    drop(p); // the dead process's writer fails on every operation and stops
    let (replayed, report) = replay::load(storage.as_ref(), dir);
    let got = digest(&replayed);
    let k = digests.iter().rposition(|d| *d == got);
    assert!(
        k.is_some_and(|k| k >= acked),
        "replayed state is not the state after a prefix that includes every acknowledged change \
         (acked {acked} of {} ops; matching prefix {k:?}); report {report:?}\nreplayed:\n{got}\nlast:\n{}",
        ops.len(),
        digests.last().unwrap()
    );
    assert!(
        report.quarantined.is_empty(),
        "a power cut damages nothing: {report:?}"
    );
    (replayed, report)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn acknowledged_changes_survive_power_cuts_and_restarts(
        first in prop::collection::vec(op(), 0..120),
        second in prop::collection::vec(op(), 0..120),
        mode1 in crash_mode(),
        mode2 in crash_mode(),
    ) {
        let storage = MemStorage::new();
        let dir = PathBuf::from("/data/mqtt");
        let (model, report) =
            run_until_power_cut(&storage, &dir, StateModel::new(), 1, &first, mode1);
        // The next start continues from what was replayed, in a new generation.
        run_until_power_cut(&storage, &dir, model, report.next_generation, &second, mode2);
    }
}

#[test]
fn compaction_deletes_older_generations_once_its_checkpoint_is_durable() {
    let storage = MemStorage::new();
    let dir = PathBuf::from("/data/mqtt");
    let mut p = Process::start(
        Arc::clone(&storage) as Arc<dyn Storage>,
        &dir,
        StateModel::new(),
        1,
    );
    let names = |s: &MemStorage| {
        let mut n = s.list(&dir).unwrap();
        n.sort();
        n
    };
    assert_eq!(names(&storage), vec!["00000000000000000001.journal"]);
    for op in [
        Op::Open(0, 60),
        Op::Enqueue(0, 4),
        Op::RetainSet(1),
        Op::Checkpoint,
    ] {
        p.run(&op);
    }
    p.journal.flush_blocking().unwrap();
    // The writer creates the new generation's file when it takes the rotation, which nothing
    // durable waits for: wait until it has (a loaded machine may take a moment).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while names(&storage).len() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    assert_eq!(
        names(&storage),
        vec![
            "00000000000000000001.journal",
            "00000000000000000002.journal"
        ],
        "the old generation stays until the checkpoint is complete"
    );
    p.run(&Op::Flush); // writes the session image
    p.run(&Op::Flush); // the retained image, then the checkpoint ends
    p.journal.flush_blocking().unwrap();
    assert_eq!(names(&storage), vec!["00000000000000000002.journal"]);
    let expected = digest(&p.model);
    drop(p);
    let (replayed, report) = replay::load(storage.as_ref(), &dir);
    assert_eq!(report.generations, vec![2]);
    assert_eq!(digest(&replayed), expected);
}
