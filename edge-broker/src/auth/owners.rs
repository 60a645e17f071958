//! Who owns an MQTT session: the user that created it. Another user connecting with the same
//! client id is refused (CONNACK 0x87 / 0x05) instead of taking the session over and receiving
//! its queued messages.
//!
//! The table maps client ids to user names (`None`: anonymous). A claim by a different user is
//! refused while the session exists; once it has ended (clean session closed, or expired) the
//! client id is free again, as in Mosquitto. Entries whose session is gone are pruned when the
//! MQTT state is snapshotted — never within [`CLAIM_GRACE`] of their claim, so an entry is not
//! lost between a claim and the session's creation — and the table is saved then too (`<data_dir>/mqtt/owners.bin`, crash-safe),
//! so ownership survives a restart along with the sessions. A damaged file is reported and
//! ignored: the broker starts, and the restored sessions belong to whoever claims them first.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::state_file::{self, StateFileError};

/// How long a fresh claim is kept by pruning even before its session exists.
pub const CLAIM_GRACE: Duration = Duration::from_secs(60);
const OWNERS_MAGIC: &[u8; 8] = b"EBOWNR01";

#[derive(Debug)]
struct Owner {
    user: Option<String>,
    claimed: Instant,
}

/// The session-ownership table (see the module docs).
#[derive(Debug)]
pub struct SessionOwners {
    path: Option<PathBuf>,
    /// By client id: the key is the connection's own `Arc` (shared with its session).
    owners: Mutex<HashMap<Arc<str>, Owner>>,
    dirty: AtomicBool,
}

/// A claim on a client id that another user owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedByAnother;

impl SessionOwners {
    /// An empty table kept in memory only.
    pub fn in_memory() -> SessionOwners {
        SessionOwners {
            path: None,
            owners: Mutex::new(HashMap::new()),
            dirty: AtomicBool::new(false),
        }
    }

    /// The table saved at `path`, read back if it exists (a damaged file is reported and
    /// ignored).
    pub fn open(path: PathBuf) -> SessionOwners {
        let owners = SessionOwners {
            path: Some(path.clone()),
            ..SessionOwners::in_memory()
        };
        match load(&path) {
            Ok(entries) => {
                let now = Instant::now();
                let mut map = owners.lock();
                for (client_id, user) in entries {
                    map.insert(client_id.into(), Owner { user, claimed: now });
                }
            }
            Err(err) => tracing::error!(
                "session owners not restored ({err}); restored sessions go to the first user that claims them"
            ),
        }
        owners
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Owner>> {
        self.owners.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Claims `client_id` for `user`; refused if another user owns it and its session exists
    /// (`session_exists`).
    pub fn claim(
        &self,
        client_id: &Arc<str>,
        user: Option<&str>,
        session_exists: bool,
        now: Instant,
    ) -> Result<(), OwnedByAnother> {
        let mut owners = self.lock();
        if let Some(owner) = owners.get(&**client_id) {
            if owner.user.as_deref() == user {
                return Ok(());
            }
            if session_exists {
                return Err(OwnedByAnother);
            }
        }
        owners.insert(
            Arc::clone(client_id),
            Owner {
                user: user.map(str::to_owned),
                claimed: now,
            },
        );
        self.dirty.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// The owner of `client_id`: `None` if unclaimed, `Some(None)` if anonymous.
    pub fn owner(&self, client_id: &str) -> Option<Option<String>> {
        self.lock().get(client_id).map(|o| o.user.clone())
    }

    /// Drops entries whose session is gone (past the grace period) and saves the table if it
    /// changed.
    pub fn save(
        &self,
        session_exists: impl Fn(&str) -> bool,
        now: Instant,
    ) -> Result<(), StateFileError> {
        let entries: Vec<(String, Option<String>)> = {
            let mut owners = self.lock();
            let before = owners.len();
            owners.retain(|client_id, owner| {
                session_exists(client_id) || now.duration_since(owner.claimed) < CLAIM_GRACE
            });
            if owners.len() != before {
                self.dirty.store(true, Ordering::Relaxed);
            }
            if !self.dirty.swap(false, Ordering::Relaxed) {
                return Ok(());
            }
            owners
                .iter()
                .map(|(id, o)| (id.to_string(), o.user.clone()))
                .collect()
        };
        let Some(path) = &self.path else {
            return Ok(());
        };
        let body = postcard::to_allocvec(&entries).unwrap_or_default();
        state_file::save(path, OWNERS_MAGIC, &body).inspect_err(|_| {
            self.dirty.store(true, Ordering::Relaxed);
        })
    }

    /// Client ids owned now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether no client id is owned.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn load(path: &Path) -> Result<Vec<(String, Option<String>)>, String> {
    match state_file::load(path, OWNERS_MAGIC) {
        Ok(None) => Ok(Vec::new()),
        Ok(Some(body)) => postcard::from_bytes(&body)
            .map_err(|e| format!("{}: cannot decode: {e}", path.display())),
        Err(err) => Err(err.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_user_cannot_claim_an_existing_session() {
        let owners = SessionOwners::in_memory();
        let now = Instant::now();
        owners
            .claim(&"c1".into(), Some("alice"), false, now)
            .unwrap();
        owners
            .claim(&"c1".into(), Some("alice"), true, now)
            .unwrap();
        assert_eq!(
            owners.claim(&"c1".into(), Some("bob"), true, now),
            Err(OwnedByAnother)
        );
        assert_eq!(
            owners.claim(&"c1".into(), None, true, now),
            Err(OwnedByAnother)
        );
        // The session ended: the id is free again.
        owners.claim(&"c1".into(), Some("bob"), false, now).unwrap();
        assert_eq!(owners.owner("c1"), Some(Some("bob".to_owned())));
    }

    #[test]
    fn ownership_survives_a_restart_and_gone_sessions_are_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("owners.bin");
        let owners = SessionOwners::open(path.clone());
        let now = Instant::now();
        owners
            .claim(&"kept".into(), Some("alice"), false, now)
            .unwrap();
        owners
            .claim(&"gone".into(), Some("bob"), false, now)
            .unwrap();
        owners.claim(&"anon".into(), None, false, now).unwrap();
        owners.save(|_| false, now).unwrap();
        assert_eq!(owners.len(), 3, "fresh claims survive pruning");
        owners.save(|id| id != "gone", now + CLAIM_GRACE).unwrap();
        let restored = SessionOwners::open(path.clone());
        assert_eq!(restored.owner("kept"), Some(Some("alice".to_owned())));
        assert_eq!(restored.owner("anon"), Some(None));
        assert_eq!(restored.owner("gone"), None);
        assert_eq!(
            restored.claim(&"kept".into(), Some("mallory"), true, Instant::now()),
            Err(OwnedByAnother)
        );
        std::fs::write(&path, b"garbage").unwrap();
        assert!(
            SessionOwners::open(path).is_empty(),
            "a damaged file is ignored"
        );
    }
}
