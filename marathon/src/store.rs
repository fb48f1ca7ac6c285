//! Persistence behind the [`StateStore`] seam: a JSON file under `--work-dir` standalone ([`FileStore`]), ZooKeeper
//! with `--zk` ([`zk::ZkStore`]), memory in tests ([`MemoryStore`]).

pub mod zk;

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::core::Persisted;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("{path} is not a valid Marathon state file: {source}")]
    Corrupt { path: PathBuf, source: serde_json::Error },
    #[error("ZooKeeper failed at {path}: {message}")]
    Zk { path: String, message: String },
    #[error("{path} was changed by another Marathon (a newer leader?); this one must stop")]
    Conflict { path: String },
    #[error("{path} would hold {bytes} bytes, over ZooKeeper's node limit")]
    TooLarge { path: String, bytes: usize },
}

/// Where Marathon keeps apps, versions, instances, deployments and its framework id.
pub trait StateStore: Send + Sync + 'static {
    /// The saved state, or `None` when nothing was saved yet.
    fn load(&self) -> Result<Option<Persisted>, StoreError>;
    /// Replaces the saved state atomically: after a crash either the old or the new state is there.
    fn save(&self, state: &Persisted) -> Result<(), StoreError>;
}

/// `<dir>/marathon-state.json`, written to a temporary file, synced, then renamed over the old one.
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    pub fn new(dir: &Path) -> Result<FileStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Write { path: dir.to_path_buf(), source })?;
        Ok(FileStore { path: dir.join("marathon-state.json") })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl StateStore for FileStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|source| StoreError::Corrupt { path: self.path.clone(), source }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read { path: self.path.clone(), source }),
        }
    }

    fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("json.tmp");
        let write = |path: &Path| -> std::io::Result<()> {
            let mut f = std::fs::File::create(path)?;
            let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            std::fs::rename(path, &self.path)?;
            if let Some(dir) = self.path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write(&tmp).map_err(|source| StoreError::Write { path: self.path.clone(), source })
    }
}

/// A store in memory, for tests.
#[derive(Default)]
pub struct MemoryStore(pub std::sync::Mutex<Option<Persisted>>);

impl StateStore for MemoryStore {
    fn load(&self) -> Result<Option<Persisted>, StoreError> {
        Ok(self.0.lock().map(|s| s.clone()).unwrap_or_default())
    }
    fn save(&self, state: &Persisted) -> Result<(), StoreError> {
        if let Ok(mut s) = self.0.lock() {
            *s = Some(state.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_store_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(&dir.path().join("m")).unwrap();
        assert!(store.load().unwrap().is_none());
        let state = Persisted { framework_id: Some("fw-1".into()), ..Persisted::default() };
        store.save(&state).unwrap();
        assert_eq!(store.load().unwrap(), Some(state));
        assert!(!store.path().with_extension("json.tmp").exists());
    }

    #[test]
    fn a_corrupt_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path()).unwrap();
        std::fs::write(store.path(), b"{not json").unwrap();
        let err = store.load().unwrap_err().to_string();
        assert!(err.contains("marathon-state.json"), "{err}");
    }
}
