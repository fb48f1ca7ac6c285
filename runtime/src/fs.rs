//! Atomic file replacement: the one way Agora writes a file that must never be seen half written (the master's
//! registry, Marathon's snapshot, a container's launch record, a monitor's pid file).
//!
//! [`write_atomically`] writes the bytes beside the target as `.<name>.tmp` and renames that over the target, so a
//! process killed at any moment leaves the old or the new content. [`Durability`] says whether it must also survive
//! the machine going down (fsync of the data before the rename and of the directory after).

use std::io::Write;
use std::path::{Path, PathBuf};

/// How much a write must survive before [`write_atomically`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The process being killed (`kill -9`): the rename alone. For files whose readers die with the machine too
    /// (a container's own records).
    ProcessCrash,
    /// The machine crashing or losing power: the data is fsynced before the rename, and the directory after it.
    /// For what was acknowledged to others (the registry, a framework's state).
    MachineCrash,
}

/// Why a file could not be written; each names the path it failed on.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The temporary file could not be created, written or fsynced.
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rename {from} to {to}: {source}")]
    Rename {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot fsync directory {path}: {source}")]
    SyncDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl WriteError {
    /// The underlying I/O error.
    pub fn io(&self) -> &std::io::Error {
        match self {
            WriteError::Write { source, .. }
            | WriteError::Rename { source, .. }
            | WriteError::SyncDir { source, .. } => source,
        }
    }
}

/// For callers that speak `std::io::Error`: the kind is kept and the message still names the path.
impl From<WriteError> for std::io::Error {
    fn from(e: WriteError) -> std::io::Error {
        std::io::Error::new(e.io().kind(), e.to_string())
    }
}

/// The temporary file [`write_atomically`] writes before renaming it over `path`: `.<name>.tmp` beside it.
pub fn temporary_path(path: &Path) -> PathBuf {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    path.with_file_name(format!(".{name}.tmp"))
}

/// Replaces the file at `path` with `bytes` so that readers, and a restarted process, see the old content or the
/// new, never a mix (see the module doc). The directory must exist: a work dir that vanished is not silently
/// recreated. On error the old file is left as it was (a leftover temporary file is replaced by the next write).
pub fn write_atomically(path: &Path, bytes: &[u8], durability: Durability) -> Result<(), WriteError> {
    let tmp = temporary_path(path);
    let write_error = |source| WriteError::Write { path: tmp.clone(), source };
    let mut f = std::fs::File::create(&tmp).map_err(write_error)?;
    f.write_all(bytes).map_err(write_error)?;
    if durability == Durability::MachineCrash {
        f.sync_data().map_err(write_error)?;
    }
    drop(f);
    std::fs::rename(&tmp, path).map_err(|source| WriteError::Rename {
        from: tmp.clone(),
        to: path.to_path_buf(),
        source,
    })?;
    if durability == Durability::MachineCrash {
        sync_dir(path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?;
    }
    Ok(())
}

/// Makes the renames, creations and removals in `dir` durable (fsync of the directory).
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| WriteError::SyncDir { path: dir.to_path_buf(), source })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.json");
        for durability in [Durability::ProcessCrash, Durability::MachineCrash] {
            write_atomically(&path, b"old", durability).unwrap();
            write_atomically(&path, b"new", durability).unwrap();
            assert_eq!(std::fs::read(&path).unwrap(), b"new");
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![std::ffi::OsString::from("registry.json")], "{durability:?}");
        }
    }

    #[test]
    fn a_missing_directory_is_an_error_naming_the_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone").join("launch.json");
        let e = write_atomically(&path, b"x", Durability::ProcessCrash).unwrap_err();
        assert!(matches!(e, WriteError::Write { .. }), "{e:?}");
        assert_eq!(e.to_string(), format!("cannot write {}/gone/.launch.json.tmp: {}", dir.path().display(), e.io()));
        assert_eq!(e.io().kind(), std::io::ErrorKind::NotFound);
        let io: std::io::Error = e.into();
        assert_eq!(io.kind(), std::io::ErrorKind::NotFound);
        assert!(io.to_string().contains("gone/.launch.json.tmp"), "{io}");
    }

    #[test]
    fn a_failed_rename_keeps_the_old_content_and_names_both_paths() {
        let dir = tempfile::tempdir().unwrap();
        // A directory in the way: the rename of a file over it fails.
        let path = dir.path().join("state");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"kept").unwrap();
        let e = write_atomically(&path, b"x", Durability::MachineCrash).unwrap_err();
        let WriteError::Rename { from, to, .. } = &e else { panic!("{e:?}") };
        assert_eq!((from.as_path(), to.as_path()), (dir.path().join(".state.tmp").as_path(), path.as_path()));
        assert_eq!(std::fs::read(path.join("inside")).unwrap(), b"kept");
    }

    #[test]
    fn a_relative_path_in_the_current_directory_is_written() {
        // `Path::new("x").parent()` is `Some("")`: the directory to fsync is then the current one.
        assert_eq!(temporary_path(Path::new("x")), Path::new(".x.tmp"));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x");
        write_atomically(&path, b"1", Durability::MachineCrash).unwrap();
        assert_eq!(std::fs::read(path).unwrap(), b"1");
    }

    proptest! {
        /// Whatever was written last is what is read, for any content and any sequence of writes.
        #[test]
        fn the_last_write_wins(
            writes in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 1..6),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("f");
            for w in &writes {
                write_atomically(&path, w, Durability::ProcessCrash).unwrap();
            }
            prop_assert_eq!(&std::fs::read(&path).unwrap(), writes.last().unwrap());
        }
    }
}
