//! The snapshot files of the first release (`sessions.bin`, `retained.bin`), read once to
//! migrate them into the journal.
//!
//! ```text
//! 0..8    magic "EBSESS01" (sessions) | "EBRETN01" (retained)
//! 8..12   crc32c of the body, u32 LE
//! 12..20  body length, u64 LE
//! 20..    body, postcard:
//!   sessions: Vec<Session { client_id str, expiry_secs u32, disconnected_at_ms Option<u64>,
//!             subscriptions Vec<(filter str, StoredSubscription)>,
//!             inflight Vec<(packet_id u16, released bool, Delivery)>, queue Vec<Delivery>,
//!             inbound_qos2 Vec<u16> }>
//!   Delivery = { message StoredMessage, qos u8, retain bool, subscription_ids Vec<u32> }
//!   retained: Vec<StoredMessage>
//! ```
//!
//! The types below are frozen copies of what that release serialized; the checked-in samples
//! in `tests/data/legacy/` (written by that release) hold them to it.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use edge_log::{Storage, storage::read_full_at};
use serde::Deserialize;

use super::model::{ModelSession, StateModel};
use super::record::{StoredMessage, StoredSubscription};
use crate::hub::Delivery;
use crate::message::Message;

/// File name of the legacy session snapshot.
pub const SESSIONS_FILE: &str = "sessions.bin";
/// File name of the legacy retained-message snapshot.
pub const RETAINED_FILE: &str = "retained.bin";
const SESSIONS_MAGIC: &[u8; 8] = b"EBSESS01";
const RETAINED_MAGIC: &[u8; 8] = b"EBRETN01";
const HEADER: usize = 8 + 4 + 8;
/// Larger legacy files are moved aside instead of loaded: decoding one takes about twice its
/// size in memory, and the unit's memory limit is 256 MiB. (Only a gateway flooded by the
/// unbounded first release writes such a file.)
pub const MAX_LEGACY_BYTES: u64 = 64 << 20;

/// Why a legacy file cannot be migrated.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    /// The file system refused.
    #[error("cannot read it: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not what that release wrote.
    #[error("damaged: {0}")]
    Damaged(&'static str),
    /// The body does not decode.
    #[error("cannot decode it: {0}")]
    Decode(#[from] postcard::Error),
}

#[derive(Deserialize)]
struct SessionsFile {
    sessions: Vec<Session>,
}

#[derive(Deserialize)]
struct Session {
    client_id: String,
    expiry_secs: u32,
    disconnected_at_ms: Option<u64>,
    subscriptions: Vec<(String, StoredSubscription)>,
    inflight: Vec<(u16, bool, LegacyDelivery)>,
    queue: Vec<LegacyDelivery>,
    inbound_qos2: Vec<u16>,
}

#[derive(Deserialize)]
struct LegacyDelivery {
    message: StoredMessage,
    #[serde(with = "crate::message::qos_byte")]
    qos: edge_proto::mqtt::QoS,
    retain: bool,
    subscription_ids: Vec<u32>,
}

impl LegacyDelivery {
    /// The live delivery; the release that wrote the file stored a copy of a message per
    /// delivery, `shared` makes equal copies one message again.
    fn into_delivery(self, shared: &mut HashMap<StoredMessage, Arc<Message>>) -> Delivery {
        let message = shared
            .entry(self.message)
            .or_insert_with_key(|m| Arc::new(m.clone().into()));
        Delivery {
            message: Arc::clone(message),
            qos: self.qos,
            retain: self.retain,
            subscription_ids: self.subscription_ids,
        }
    }
}

#[derive(Deserialize)]
struct RetainedFile {
    messages: Vec<StoredMessage>,
}

/// Reads a whole legacy file and checks its header; `Ok(None)` if it does not exist.
fn read(
    storage: &dyn Storage,
    path: &Path,
    magic: &[u8; 8],
) -> Result<Option<Vec<u8>>, LegacyError> {
    let file = match storage.open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let size = file.size()?;
    if size > MAX_LEGACY_BYTES {
        return Err(LegacyError::Damaged(
            "larger than 64 MiB: cannot be loaded within the memory budget",
        ));
    }
    if size < HEADER as u64 {
        return Err(LegacyError::Damaged("shorter than its header"));
    }
    let mut header = [0u8; HEADER];
    read_full_at(file.as_ref(), &mut header, 0)?;
    if &header[..8] != magic {
        return Err(LegacyError::Damaged(
            "wrong magic: not a file of this kind or version",
        ));
    }
    let mut len = [0u8; 8];
    len.copy_from_slice(&header[12..20]);
    // Checked against the file's size before anything is allocated for the body.
    if u64::from_le_bytes(len) != size - HEADER as u64 {
        return Err(LegacyError::Damaged("length does not match its header"));
    }
    let body_len = usize::try_from(size - HEADER as u64)
        .map_err(|_| LegacyError::Damaged("too large for this machine"))?;
    let mut body = vec![0u8; body_len];
    if read_full_at(file.as_ref(), &mut body, HEADER as u64)? != body_len {
        return Err(LegacyError::Damaged("shorter than its header says"));
    }
    let crc = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
    if crc32c::crc32c(&body) != crc {
        return Err(LegacyError::Damaged("checksum mismatch"));
    }
    Ok(Some(body))
}

/// Adds the sessions of a legacy `sessions.bin` to `model`; returns how many (`None`: no file).
pub fn load_sessions(
    storage: &dyn Storage,
    path: &Path,
    model: &mut StateModel,
) -> Result<Option<usize>, LegacyError> {
    let Some(body) = read(storage, path, SESSIONS_MAGIC)? else {
        return Ok(None);
    };
    let file: SessionsFile = postcard::from_bytes(&body)?;
    let count = file.sessions.len();
    let mut shared = HashMap::new();
    for s in file.sessions {
        let session = ModelSession {
            expiry_secs: s.expiry_secs,
            disconnected_at_ms: s.disconnected_at_ms,
            subscriptions: s.subscriptions.into_iter().collect(),
            queue: s
                .queue
                .into_iter()
                .map(|d| d.into_delivery(&mut shared))
                .collect(),
            inflight: s
                .inflight
                .into_iter()
                .map(|(id, released, d)| (id, (released, d.into_delivery(&mut shared))))
                .collect(),
            inbound_qos2: s.inbound_qos2.into_iter().collect(),
        };
        model.sessions.insert(s.client_id, session);
    }
    Ok(Some(count))
}

/// Adds the messages of a legacy `retained.bin` to `model`; returns how many.
pub fn load_retained(
    storage: &dyn Storage,
    path: &Path,
    model: &mut StateModel,
) -> Result<Option<usize>, LegacyError> {
    let Some(body) = read(storage, path, RETAINED_MAGIC)? else {
        return Ok(None);
    };
    let file: RetainedFile = postcard::from_bytes(&body)?;
    let count = file.messages.len();
    for message in file.messages {
        model
            .retained
            .insert(message.topic.clone(), Arc::new(message.into()));
    }
    Ok(Some(count))
}
