//! Mosquitto's password file, read as it is, and written by `edge-broker passwd`.
//!
//! # Format
//!
//! One `user:hash` per line; lines that are empty or start with `#` are ignored (and kept when
//! the file is rewritten). The user name is everything before the first `:`. Two hash forms are
//! read, exactly as Mosquitto 2.0 (`mosquitto_passwd`) writes them:
//!
//! | form | meaning |
//! |---|---|
//! | `$7$<iterations>$<salt>$<hash>` | PBKDF2-HMAC-SHA512 over the password, `iterations` rounds, 64-byte hash (what `mosquitto_passwd` writes by default, 101 rounds, 12-byte salt) |
//! | `$6$<salt>$<hash>` | SHA-512(password ‖ salt), Mosquitto 1.6 and earlier (`mosquitto_passwd -H sha512`) |
//!
//! Salt and hash are standard base64 with padding. Plain-text passwords (Mosquitto's
//! pre-`-U` files) are refused: the file names the line.
//!
//! Limits, so a hostile or broken file cannot take the broker down: at most
//! [`MAX_FILE_BYTES`] bytes, user names up to 65535 bytes (MQTT's limit), and iteration counts
//! up to [`MAX_ITERATIONS`] (a huge count would make every login a denial of service).
//! Comparisons run in constant time (ring's PBKDF2 verify; a constant-time compare of the
//! SHA-512 digest for `$6$`).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use ring::{digest, pbkdf2};

/// Largest password file read (a million users at ~130 bytes a line).
pub const MAX_FILE_BYTES: u64 = 128 << 20;
/// Highest PBKDF2 iteration count accepted in a `$7$` entry.
pub const MAX_ITERATIONS: u32 = 1_000_000;
/// Iterations of the entries `edge-broker passwd` writes: Mosquitto 2.0's `mosquitto_passwd`
/// default, so files stay interchangeable and a Pi verifies a login in about a millisecond.
pub const DEFAULT_ITERATIONS: u32 = 101;
/// Salt length of new entries (Mosquitto's).
const SALT_BYTES: usize = 12;
/// PBKDF2-SHA512 output length (Mosquitto's).
const HASH_BYTES: usize = 64;

/// Why a password file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PasswordFileError {
    /// The file cannot be read.
    #[error("password file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is larger than [`MAX_FILE_BYTES`].
    #[error("password file {path}: {bytes} bytes is more than the {max} accepted")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A line is not `user:$7$...` or `user:$6$...`.
    #[error("password file {path}, line {line}: {reason}")]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with it (never the hash or password itself).
        reason: String,
    },
    /// The file could not be written (`edge-broker passwd`).
    #[error("password file {path}: cannot write: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A verifier for one user's password.
#[derive(Clone, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$7$`: PBKDF2-HMAC-SHA512.
    Pbkdf2Sha512 {
        /// Rounds.
        iterations: NonZeroU32,
        /// Salt bytes.
        salt: Vec<u8>,
        /// Derived key.
        hash: Vec<u8>,
    },
    /// `$6$`: SHA-512(password ‖ salt).
    Sha512 {
        /// Salt bytes.
        salt: Vec<u8>,
        /// Digest.
        hash: Vec<u8>,
    },
}

impl std::fmt::Debug for PasswordHash {
    // Never print hashes (they are offline-crackable); only their kind.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => {
                write!(f, "PasswordHash($7$, {iterations} iterations)")
            }
            PasswordHash::Sha512 { .. } => write!(f, "PasswordHash($6$)"),
        }
    }
}

impl PasswordHash {
    /// Parses the part after `user:`.
    pub fn parse(text: &str) -> Result<PasswordHash, String> {
        let decode = |what: &str, b64: &str| {
            B64.decode(b64)
                .map_err(|e| format!("{what} is not valid base64: {e}"))
        };
        if let Some(rest) = text.strip_prefix("$7$") {
            let mut parts = rest.split('$');
            let (Some(iterations), Some(salt), Some(hash), None) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err("a $7$ entry is $7$<iterations>$<salt>$<hash>".to_owned());
            };
            let iterations: u32 = iterations
                .parse()
                .map_err(|_| format!("iteration count {iterations:?} is not a number"))?;
            let iterations = NonZeroU32::new(iterations)
                .filter(|n| n.get() <= MAX_ITERATIONS)
                .ok_or_else(|| format!("iteration count must be 1 to {MAX_ITERATIONS}"))?;
            let salt = decode("salt", salt)?;
            let hash = decode("hash", hash)?;
            if hash.is_empty() || hash.len() > 64 {
                return Err(format!(
                    "hash of {} bytes: PBKDF2-SHA512 gives 1 to 64",
                    hash.len()
                ));
            }
            return Ok(PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            });
        }
        if let Some(rest) = text.strip_prefix("$6$") {
            let Some((salt, hash)) = rest.split_once('$') else {
                return Err("a $6$ entry is $6$<salt>$<hash>".to_owned());
            };
            let salt = decode("salt", salt)?;
            let hash = decode("hash", hash)?;
            if hash.len() != 64 {
                return Err(format!("hash of {} bytes: SHA-512 gives 64", hash.len()));
            }
            return Ok(PasswordHash::Sha512 { salt, hash });
        }
        Err(
            "not a $7$ (PBKDF2-SHA512) or $6$ (SHA-512) hash; plain-text entries are refused: \
             hash them with `edge-broker passwd` or `mosquitto_passwd -U`"
                .to_owned(),
        )
    }

    /// A new `$7$` hash of `password` with a fresh random salt.
    pub fn new_pbkdf2(password: &[u8]) -> Result<PasswordHash, ring::error::Unspecified> {
        let mut salt = vec![0u8; SALT_BYTES];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)?;
        let iterations = NonZeroU32::new(DEFAULT_ITERATIONS).ok_or(ring::error::Unspecified)?;
        let mut hash = vec![0u8; HASH_BYTES];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA512,
            iterations,
            &salt,
            password,
            &mut hash,
        );
        Ok(PasswordHash::Pbkdf2Sha512 {
            iterations,
            salt,
            hash,
        })
    }

    /// Whether `password` matches, in constant time with respect to the hash.
    pub fn verify(&self, password: &[u8]) -> bool {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password,
                hash,
            )
            .is_ok(),
            PasswordHash::Sha512 { salt, hash } => {
                let mut context = digest::Context::new(&digest::SHA512);
                context.update(password);
                context.update(salt);
                constant_time_eq(context.finish().as_ref(), hash)
            }
        }
    }

    /// The iteration count (1 for `$6$`): what a verification costs.
    pub fn iterations(&self) -> u32 {
        match self {
            PasswordHash::Pbkdf2Sha512 { iterations, .. } => iterations.get(),
            PasswordHash::Sha512 { .. } => 1,
        }
    }

    /// The text after `user:` in Mosquitto's format.
    pub fn encode(&self) -> String {
        match self {
            PasswordHash::Pbkdf2Sha512 {
                iterations,
                salt,
                hash,
            } => format!("$7${iterations}${}${}", B64.encode(salt), B64.encode(hash)),
            PasswordHash::Sha512 { salt, hash } => {
                format!("$6${}${}", B64.encode(salt), B64.encode(hash))
            }
        }
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The users of a password file.
#[derive(Debug, Clone, Default)]
pub struct PasswordFile {
    users: HashMap<String, PasswordHash>,
}

impl PasswordFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let text = read_limited(path)?;
        PasswordFile::parse(&text, path)
    }

    /// Parses file text; `path` names it in errors.
    pub fn parse(text: &str, path: &Path) -> Result<PasswordFile, PasswordFileError> {
        let mut users = HashMap::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            let error = |reason: String| PasswordFileError::Line {
                path: path.to_owned(),
                line: index + 1,
                reason,
            };
            let Some((user, hash)) = line.split_once(':') else {
                return Err(error("expected user:hash".to_owned()));
            };
            if user.is_empty() || user.len() > usize::from(u16::MAX) {
                return Err(error("user name must be 1 to 65535 bytes".to_owned()));
            }
            let hash = PasswordHash::parse(hash.trim_end()).map_err(error)?;
            // Mosquitto keeps the last entry of a user that appears twice; so do we.
            users.insert(user.to_owned(), hash);
        }
        Ok(PasswordFile { users })
    }

    /// The verifier of `user`, if the file has one.
    pub fn get(&self, user: &str) -> Option<&PasswordHash> {
        self.users.get(user)
    }

    /// Number of users.
    pub fn len(&self) -> usize {
        self.users.len()
    }

    /// Whether the file has no users.
    pub fn is_empty(&self) -> bool {
        self.users.is_empty()
    }
}

/// Reads a whole file of at most [`MAX_FILE_BYTES`].
fn read_limited(path: &Path) -> Result<String, PasswordFileError> {
    let read_error = |source| PasswordFileError::Read {
        path: path.to_owned(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(read_error)?.len();
    if bytes > MAX_FILE_BYTES {
        return Err(PasswordFileError::TooLarge {
            path: path.to_owned(),
            bytes,
            max: MAX_FILE_BYTES,
        });
    }
    std::fs::read_to_string(path).map_err(read_error)
}

/// Sets `user`'s password in the file text: replaces the user's line (every one, keeping the
/// position of the first) or appends one; every other line is kept as it was.
pub fn set_user_line(text: &str, user: &str, hash: &PasswordHash) -> String {
    let new_line = format!("{user}:{}", hash.encode());
    let mut out = String::with_capacity(text.len() + new_line.len() + 1);
    let mut placed = false;
    for line in text.lines() {
        let is_user =
            !line.starts_with('#') && line.split_once(':').is_some_and(|(name, _)| name == user);
        if is_user {
            if !placed {
                out.push_str(&new_line);
                out.push('\n');
                placed = true;
            }
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !placed {
        out.push_str(&new_line);
        out.push('\n');
    }
    out
}

/// `edge-broker passwd FILE USER`: creates or updates `user` in `path` with a new `$7$` hash
/// of `password`, keeping the file's other lines and its permissions (a new file is 0600).
/// The file is replaced crash-safely (temp file, fsync, rename).
pub fn update_file(path: &Path, user: &str, password: &[u8]) -> Result<(), PasswordFileError> {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

    let write_error = |source| PasswordFileError::Write {
        path: path.to_owned(),
        source,
    };
    if user.is_empty() || user.contains(':') || user.contains('\n') || user.len() > 65535 {
        return Err(PasswordFileError::Line {
            path: path.to_owned(),
            line: 0,
            reason: format!("user name {user:?} must be 1 to 65535 bytes without ':' or newlines"),
        });
    }
    let (text, mode) = match std::fs::metadata(path) {
        Ok(meta) => (read_limited(path)?, meta.permissions().mode() & 0o7777),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o600),
        Err(source) => {
            return Err(PasswordFileError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    // Refuse to rewrite a file we could not read back: a bad line elsewhere is reported first.
    PasswordFile::parse(&text, path)?;
    let hash = PasswordHash::new_pbkdf2(password)
        .map_err(|_| write_error(std::io::Error::other("no system randomness for the salt")))?;
    let new_text = set_user_line(&text, user, &hash);
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "passwd".to_owned());
    let tmp = path.with_file_name(format!(".{file_name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)
        .map_err(write_error)?;
    let result = (|| {
        file.write_all(new_text.as_bytes())?;
        // The umask may have narrowed the mode; set the file's exact permissions.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result.map_err(write_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Written by Debian's mosquitto_passwd 2.0.11 (`-b`, default `$7$`, and `-H sha512`).
    const ALICE_7: &str = "$7$101$Ty2B5dne4GOeB1Z1$TV7gFg/2/0wQ+nYkMrUFHrfkpM4zIOdeWk5GbTvYgIg5xlAvrChtKpRItVRNrhaOEYNYAYlpZDDRbXwxy1hzUw==";

    #[test]
    fn mosquitto_passwd_pbkdf2_entries_verify() {
        let hash = PasswordHash::parse(ALICE_7).unwrap();
        assert!(hash.verify(b"secret1"));
        assert!(!hash.verify(b"secret2"));
        assert!(!hash.verify(b""));
        assert_eq!(hash.encode(), ALICE_7, "re-encodes to the same text");
    }

    #[test]
    fn sha512_entries_verify() {
        // SHA-512(password ‖ salt), as mosquitto_passwd -H sha512 writes.
        let salt = b"0123456789ab".to_vec();
        let mut context = digest::Context::new(&digest::SHA512);
        context.update(b"pw");
        context.update(&salt);
        let text = format!(
            "$6${}${}",
            B64.encode(&salt),
            B64.encode(context.finish().as_ref())
        );
        let hash = PasswordHash::parse(&text).unwrap();
        assert!(hash.verify(b"pw"));
        assert!(!hash.verify(b"pW"));
    }

    #[test]
    fn new_entries_verify_and_round_trip() {
        let hash = PasswordHash::new_pbkdf2(b"hunter2").unwrap();
        let text = hash.encode();
        assert!(text.starts_with("$7$101$"), "{text}");
        let parsed = PasswordHash::parse(&text).unwrap();
        assert!(parsed.verify(b"hunter2"));
        assert!(!parsed.verify(b"hunter3"));
        let other = PasswordHash::new_pbkdf2(b"hunter2").unwrap();
        assert_ne!(other.encode(), text, "a fresh salt every time");
    }

    #[test]
    fn bad_lines_are_named_without_their_secret() {
        let path = Path::new("pw");
        for (text, reason) in [
            ("alice:plain", "plain-text"),
            ("alice", "user:hash"),
            (":$7$101$AAAA$AAAA", "user name"),
            ("alice:$7$0$AAAA$AAAA", "iteration count"),
            ("alice:$7$99999999$AAAA$AAAA", "iteration count"),
            ("alice:$7$101$!!$AAAA", "base64"),
            ("alice:$6$AAAA$AAAA", "SHA-512 gives 64"),
        ] {
            let err = PasswordFile::parse(&format!("# users\n\n{text}\n"), path).unwrap_err();
            let message = err.to_string();
            assert!(message.contains("line 3"), "{text}: {message}");
            assert!(message.contains(reason), "{text}: {message}");
        }
    }

    #[test]
    fn files_parse_with_comments_and_crlf() {
        let text = format!("# c\r\nalice:{ALICE_7}\r\n\r\n");
        let file = PasswordFile::parse(&text, Path::new("pw")).unwrap();
        assert_eq!(file.len(), 1);
        assert!(file.get("alice").unwrap().verify(b"secret1"));
        assert!(file.get("bob").is_none());
    }

    #[test]
    fn setting_a_user_keeps_the_other_lines() {
        let hash = PasswordHash::parse(ALICE_7).unwrap();
        let text = "# header\nbob:$6$x$y\nalice:old\n# alice:comment\nalice:older\n";
        let out = set_user_line(text, "alice", &hash);
        assert_eq!(
            out,
            format!("# header\nbob:$6$x$y\nalice:{ALICE_7}\n# alice:comment\n")
        );
        let out = set_user_line("bob:x", "carol", &hash);
        assert_eq!(out, format!("bob:x\ncarol:{ALICE_7}\n"));
    }

    #[test]
    fn update_file_keeps_mode_and_lines() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("passwd");
        update_file(&path, "alice", b"one").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "a new file is private");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.insert_str(0, "# kept\n");
        std::fs::write(&path, text).unwrap();
        update_file(&path, "bob", b"two").unwrap();
        update_file(&path, "alice", b"three").unwrap();
        let file = PasswordFile::load(&path).unwrap();
        assert!(file.get("alice").unwrap().verify(b"three"));
        assert!(file.get("bob").unwrap().verify(b"two"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("# kept\nalice:"), "{text}");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640, "the file's mode is kept");
        assert!(update_file(&path, "a:b", b"x").is_err());
    }
}
