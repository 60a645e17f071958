//! Cursor files: loading every persisted position at open, writing one crash-safely, deleting.
//! Knows the file layout ([`crate::format`]) and the storage, nothing of readers or the writer.

use std::collections::BTreeMap;
use std::path::Path;

use crate::error::LogError;
use crate::format;
use crate::segment::io_err;
use crate::storage::{Storage, read_full_at, write_all_at};

/// Whether `name` maps safely to a file name.
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Loads every persisted cursor (`<name>.cur`), deleting leftover temp files.
pub(crate) fn load_all(
    storage: &dyn Storage,
    dir: &Path,
) -> Result<BTreeMap<String, u64>, LogError> {
    let mut out = BTreeMap::new();
    let names = storage.list(dir).map_err(io_err("list directory", dir))?;
    for name in names {
        let path = dir.join(&name);
        if name.ends_with(".cur.tmp") {
            let _ = storage.remove(&path);
            continue;
        }
        let Some(cursor) = name.strip_suffix(".cur") else {
            continue;
        };
        let file = storage.open(&path).map_err(io_err("open cursor", &path))?;
        let mut buf = [0u8; format::CURSOR_FILE_LEN + 1];
        let n = read_full_at(file.as_ref(), &mut buf, 0).map_err(io_err("read cursor", &path))?;
        let committed =
            format::parse_cursor_file(&buf[..n]).map_err(|reason| LogError::Corrupt {
                what: "cursor file",
                path: path.clone(),
                reason,
            })?;
        out.insert(cursor.to_owned(), committed);
    }
    Ok(out)
}

/// Writes a cursor file crash-safely: temp file, fdatasync, rename, fsync directory.
pub(crate) fn persist(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    committed: u64,
) -> Result<(), LogError> {
    let tmp = dir.join(format!("{name}.cur.tmp"));
    let dst = dir.join(format!("{name}.cur"));
    let file = storage
        .create(&tmp)
        .map_err(io_err("create cursor temp", &tmp))?;
    write_all_at(file.as_ref(), &format::cursor_file(committed), 0)
        .map_err(io_err("write cursor temp", &tmp))?;
    file.sync_data()
        .map_err(io_err("fdatasync cursor temp", &tmp))?;
    drop(file);
    storage
        .rename(&tmp, &dst)
        .map_err(io_err("rename cursor", &dst))?;
    storage
        .sync_dir(dir)
        .map_err(io_err("sync cursor directory", dir))?;
    Ok(())
}

/// Deletes a cursor's file durably.
pub(crate) fn remove(storage: &dyn Storage, dir: &Path, name: &str) -> Result<(), LogError> {
    let path = dir.join(format!("{name}.cur"));
    storage
        .remove(&path)
        .map_err(io_err("remove cursor", &path))?;
    storage
        .sync_dir(dir)
        .map_err(io_err("sync cursor directory", dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn cursor_names_map_safely_to_files() {
        assert!(valid_name("kafka-bridge.v1_a"));
        for bad in ["", ".hidden", "a/b", "..", "a b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }
}
