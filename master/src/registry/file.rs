//! The standalone registry: one file under the work dir, replaced atomically (write a temporary file, fsync it,
//! rename it over the old one, fsync the directory).

use std::io::Write;
use std::path::{Path, PathBuf};

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

    fn write_atomically(&self, bytes: &[u8]) -> Result<(), RegistryError> {
        let dir = self.path.parent().unwrap_or(Path::new("."));
        let tmp = dir.join(format!(".{FILE_NAME}.tmp"));
        let mut f = std::fs::File::create(&tmp).map_err(|e| self.io(e))?;
        f.write_all(bytes).map_err(|e| self.io(e))?;
        f.sync_all().map_err(|e| self.io(e))?;
        drop(f);
        std::fs::rename(&tmp, &self.path).map_err(|e| self.io(e))?;
        std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(|e| self.io(e))?;
        Ok(())
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
            self.write_atomically(&encode(registry, expected + 1))?;
            self.known = Some(expected + 1);
            Ok(())
        })
    }

    fn location(&self) -> String {
        self.path.display().to_string()
    }
}
