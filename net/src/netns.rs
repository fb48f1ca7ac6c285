//! Network namespaces pinned by a bind mount, as `ip netns` pins them but at a path of the agent's choosing
//! (`/run/agora/netns/<container id>`): a namespace lives as long as its pin (or a process in it), so a task's
//! network outlives an agent restart and is handed to libcontainer by path.
//!
//! Namespaces are per thread: [`create`] and [`run_in`] do their work on a short-lived thread of their own, so the
//! caller's thread never changes namespace.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};
use nix::sched::CloneFlags;

/// Why a namespace could not be created, entered or removed; names the path.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot create the directory of {path}: {source}")]
    Dir { path: PathBuf, source: std::io::Error },
    #[error("cannot create a network namespace for {path}: {source}")]
    Unshare { path: PathBuf, source: nix::Error },
    #[error("cannot pin the network namespace at {path}: {source}")]
    Pin { path: PathBuf, source: nix::Error },
    #[error("cannot open the network namespace {path}: {source}")]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot enter the network namespace {path}: {source}")]
    Enter { path: PathBuf, source: nix::Error },
    #[error("cannot unpin the network namespace {path}: {source}")]
    Unpin { path: PathBuf, source: nix::Error },
    #[error("cannot remove {path}: {source}")]
    Remove { path: PathBuf, source: std::io::Error },
    #[error("the namespace thread for {0} panicked")]
    Thread(PathBuf),
}

/// The filesystem magic of nsfs, which a pinned namespace's file shows.
const NSFS_MAGIC: i64 = 0x6e73_6673;

/// True when `path` is a pinned namespace (not merely a file left behind).
pub fn is_pinned(path: &Path) -> bool {
    nix::sys::statfs::statfs(path).is_ok_and(|s| s.filesystem_type().0 == NSFS_MAGIC)
}

/// Creates a new network namespace pinned at `path` (with only a loopback, down). An existing pin is kept.
pub fn create(path: &Path) -> Result<(), NetnsError> {
    if is_pinned(path) {
        return Ok(());
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| NetnsError::Dir { path: path.to_path_buf(), source })?;
    }
    File::create(path).map_err(|source| NetnsError::Open { path: path.to_path_buf(), source })?;
    let target = path.to_path_buf();
    let pinned = std::thread::spawn(move || -> Result<(), NetnsError> {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|source| NetnsError::Unshare { path: target.clone(), source })?;
        nix::mount::mount(Some("/proc/thread-self/ns/net"), &target, None::<&str>, MsFlags::MS_BIND, None::<&str>)
            .map_err(|source| NetnsError::Pin { path: target.clone(), source })
    })
    .join()
    .map_err(|_| NetnsError::Thread(path.to_path_buf()))?;
    if pinned.is_err() {
        let _ = std::fs::remove_file(path);
    }
    pinned
}

/// Runs `f` on a thread inside the namespace pinned at `path` (sockets it opens belong to that namespace).
pub fn run_in<T: Send>(path: &Path, f: impl FnOnce() -> T + Send) -> Result<T, NetnsError> {
    let ns = File::open(path).map_err(|source| NetnsError::Open { path: path.to_path_buf(), source })?;
    std::thread::scope(|s| {
        s.spawn(|| {
            nix::sched::setns(&ns, CloneFlags::CLONE_NEWNET)
                .map_err(|source| NetnsError::Enter { path: path.to_path_buf(), source })?;
            Ok(f())
        })
        .join()
        .map_err(|_| NetnsError::Thread(path.to_path_buf()))?
    })
}

/// Unpins and removes the namespace at `path` (it ends once no process is left in it); a missing one is fine.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    if is_pinned(path) {
        nix::mount::umount2(path, MntFlags::MNT_DETACH)
            .map_err(|source| NetnsError::Unpin { path: path.to_path_buf(), source })?;
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(NetnsError::Remove { path: path.to_path_buf(), source: e })
        }
        _ => Ok(()),
    }
}

/// The namespace files under `dir` (pinned or left behind), by name.
pub fn list(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return vec![] };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| !n.starts_with('.'))
        .collect();
    names.sort();
    names
}
