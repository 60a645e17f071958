//! Secrets (passwords, tokens) read from files, including systemd credentials.
//!
//! A path may start with `$CREDENTIALS_DIRECTORY/` (or `${CREDENTIALS_DIRECTORY}/`): it is
//! resolved against that environment variable, which systemd sets for a unit with
//! `LoadCredential=NAME:/etc/edge-broker/secret` — the service then reads its own private copy
//! (`$CREDENTIALS_DIRECTORY/NAME`, readable by the service only) and the original can stay
//! readable by root alone. A secret file holds the secret on its first line; one trailing
//! newline (`\n` or `\r\n`) is removed, anything else is part of the secret.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The environment variable systemd points at a unit's credentials.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";
/// Largest secret file read.
pub const MAX_SECRET_BYTES: u64 = 64 << 10;

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretError {
    /// The path uses `$CREDENTIALS_DIRECTORY` but the variable is not set.
    #[error(
        "{path} needs $CREDENTIALS_DIRECTORY, which is not set (systemd sets it for units with LoadCredential=)"
    )]
    NoCredentialsDirectory {
        /// The path as written.
        path: PathBuf,
    },
    /// The file cannot be read.
    #[error("cannot read secret file {path}: {reason}")]
    Read {
        /// The resolved path.
        path: PathBuf,
        /// The I/O error.
        reason: String,
    },
    /// The file is empty, too large or not UTF-8.
    #[error("secret file {path}: {reason}")]
    Invalid {
        /// The resolved path.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
}

/// Resolves a leading `$CREDENTIALS_DIRECTORY/` against the environment.
pub fn resolve(path: &Path) -> Result<PathBuf, SecretError> {
    resolve_with(
        path,
        std::env::var_os(CREDENTIALS_DIRECTORY).map(PathBuf::from),
    )
}

/// [`resolve`] with the credentials directory given.
pub fn resolve_with(path: &Path, credentials: Option<PathBuf>) -> Result<PathBuf, SecretError> {
    let text = path.to_string_lossy();
    let rest = text
        .strip_prefix("$CREDENTIALS_DIRECTORY/")
        .or_else(|| text.strip_prefix("${CREDENTIALS_DIRECTORY}/"));
    match (rest, credentials) {
        (None, _) => Ok(path.to_owned()),
        (Some(rest), Some(dir)) => Ok(dir.join(rest)),
        (Some(_), None) => Err(SecretError::NoCredentialsDirectory {
            path: path.to_owned(),
        }),
    }
}

/// Reads the secret in an (already resolved) file.
pub fn read(path: &Path) -> Result<String, SecretError> {
    let read_error = |e: std::io::Error| SecretError::Read {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let invalid = |reason: &str| SecretError::Invalid {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let len = std::fs::metadata(path).map_err(read_error)?.len();
    if len > MAX_SECRET_BYTES {
        return Err(invalid("larger than 64 KiB: not a password or token"));
    }
    let bytes = std::fs::read(path).map_err(read_error)?;
    let mut text = String::from_utf8(bytes).map_err(|_| invalid("not UTF-8"))?;
    if text.ends_with('\n') {
        text.pop();
        if text.ends_with('\r') {
            text.pop();
        }
    }
    if text.is_empty() {
        return Err(invalid("empty"));
    }
    Ok(text)
}

/// Whether other users may read the file (mode `o+r`): `check` warns about such secrets.
/// `false` when the file cannot be inspected (the read itself reports that).
pub fn world_readable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_directory_paths_resolve_or_say_why() {
        let creds = Some(PathBuf::from("/run/credentials/edge-broker.service"));
        assert_eq!(
            resolve_with(Path::new("$CREDENTIALS_DIRECTORY/kafka"), creds.clone()).unwrap(),
            PathBuf::from("/run/credentials/edge-broker.service/kafka")
        );
        assert_eq!(
            resolve_with(Path::new("${CREDENTIALS_DIRECTORY}/t"), creds.clone()).unwrap(),
            PathBuf::from("/run/credentials/edge-broker.service/t")
        );
        assert_eq!(
            resolve_with(Path::new("/etc/x"), creds).unwrap(),
            PathBuf::from("/etc/x")
        );
        let err = resolve_with(Path::new("$CREDENTIALS_DIRECTORY/k"), None).unwrap_err();
        assert!(err.to_string().contains("LoadCredential"), "{err}");
    }

    #[test]
    fn one_trailing_newline_is_dropped_and_empty_files_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("s");
        for (content, expected) in [
            ("pw\n", Some("pw")),
            ("pw\r\n", Some("pw")),
            ("pw", Some("pw")),
            (" p w \n\n", Some(" p w \n")),
            ("\n", None),
            ("", None),
        ] {
            std::fs::write(&file, content).unwrap();
            assert_eq!(read(&file).ok().as_deref(), expected, "{content:?}");
        }
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(!world_readable(&file));
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(world_readable(&file));
        assert!(read(&dir.path().join("missing")).is_err());
    }
}
