//! The standalone registry: one file under the work dir, replaced atomically so that it survives a machine crash
//! ([`agora_runtime::write_atomically`] with [`Durability::MachineCrash`]).

use std::path::{Path, PathBuf};

use agora_runtime::Durability;

use super::{Registry, RegistryError, StateStore, StoreFuture, decode, encode};

/// The registry's file name under the master's work dir.
pub const FILE_NAME: &str = "registry.json";

pub struct FileStore {
    path: PathBuf,
    /// The version this store last read or wrote (`Some(0)`: known to be absent).
    known: Option<u64>,
}

impl FileStore {
    pub fn new(work_dir: &Path) -> FileStore {
        FileStore { path: work_dir.join(FILE_NAME), known: None }
    }

    fn io(&self, source: std::io::Error) -> RegistryError {
        RegistryError::Io { location: self.location(), source }
    }

    fn read(&self) -> Result<Option<(Registry, u64)>, RegistryError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => decode(&bytes, &self.location()).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(self.io(e)),
        }
    }
}

impl StateStore for FileStore {
    fn fetch(&mut self) -> StoreFuture<'_, Registry> {
        Box::pin(async move {
            let cur = self.read()?;
            self.known = Some(cur.as_ref().map_or(0, |(_, v)| *v));
            Ok(cur.map(|(r, _)| r).unwrap_or_default())
        })
    }

    fn store<'a>(&'a mut self, registry: &'a Registry) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            let found = self.read()?.map_or(0, |(_, v)| v);
            let expected = self.known.unwrap_or(0);
            if found != expected {
                return Err(RegistryError::Conflict {
                    location: self.location(),
                    expected: expected.to_string(),
                    found: found.to_string(),
                });
            }
            agora_runtime::write_atomically(&self.path, &encode(registry, expected + 1), Durability::MachineCrash)
                .map_err(|e| self.io(e.into()))?;
            self.known = Some(expected + 1);
            Ok(())
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}
