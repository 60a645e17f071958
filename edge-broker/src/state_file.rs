//! Small state files (sessions, retained messages) written crash-safely.
//!
//! Layout: `[magic 8 bytes][crc32c of body u32 LE][body length u64 LE][body]`. A save writes a
//! temporary file, `fdatasync`s it, renames it over the old one and syncs the directory, so a
//! crash leaves either the old or the new file, never a mix. A load that finds a damaged file
//! reports it instead of guessing.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

/// Why a state file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    /// The file system refused.
    #[error("state file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file exists but is not what we wrote.
    #[error("state file {path} is damaged: {detail}")]
    Damaged {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: &'static str,
    },
}

const HEADER: usize = 8 + 4 + 8;

/// Atomically replaces `path` with `body`, tagged with `magic`.
pub fn save(path: &Path, magic: &[u8; 8], body: &[u8]) -> Result<(), StateFileError> {
    let io = |source| StateFileError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("tmp");
    {
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&tmp)
            .map_err(io)?;
        let mut header = [0u8; HEADER];
        header[..8].copy_from_slice(magic);
        header[8..12].copy_from_slice(&crc32c::crc32c(body).to_le_bytes());
        header[12..20].copy_from_slice(&(body.len() as u64).to_le_bytes());
        file.write_all(&header).map_err(io)?;
        file.write_all(body).map_err(io)?;
        file.sync_data().map_err(io)?;
    }
    fs::rename(&tmp, path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}

/// Reads the body saved under `magic`; `Ok(None)` when the file does not exist.
pub fn load(path: &Path, magic: &[u8; 8]) -> Result<Option<Vec<u8>>, StateFileError> {
    let damaged = |detail| StateFileError::Damaged {
        path: path.to_owned(),
        detail,
    };
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StateFileError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| StateFileError::Io {
            path: path.to_owned(),
            source,
        })?;
    if bytes.len() < HEADER {
        return Err(damaged("shorter than its header"));
    }
    if &bytes[..8] != magic {
        return Err(damaged("wrong magic: not a file of this kind or version"));
    }
    let crc = u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
    let mut len = [0u8; 8];
    len.copy_from_slice(&bytes[12..20]);
    let len = u64::from_le_bytes(len);
    let body = &bytes[HEADER..];
    if body.len() as u64 != len {
        return Err(damaged("length does not match its header"));
    }
    if crc32c::crc32c(body) != crc {
        return Err(damaged("checksum mismatch"));
    }
    Ok(Some(body.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAGIC: &[u8; 8] = b"EBTEST01";

    #[test]
    fn save_then_load_round_trips_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        assert!(load(&path, MAGIC).unwrap().is_none());
        save(&path, MAGIC, b"first").unwrap();
        save(&path, MAGIC, b"second").unwrap();
        assert_eq!(load(&path, MAGIC).unwrap().unwrap(), b"second");
        assert!(!path.with_extension("tmp").exists());
    }

    #[test]
    fn damage_is_reported_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.bin");
        save(&path, MAGIC, b"payload").unwrap();
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            load(&path, MAGIC),
            Err(StateFileError::Damaged {
                detail: "checksum mismatch",
                ..
            })
        ));
        assert!(matches!(
            load(&path, b"OTHERMAG"),
            Err(StateFileError::Damaged { .. })
        ));
        fs::write(&path, b"short").unwrap();
        assert!(matches!(
            load(&path, MAGIC),
            Err(StateFileError::Damaged { .. })
        ));
    }
}
