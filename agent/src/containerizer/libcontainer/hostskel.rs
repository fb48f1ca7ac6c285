//! The skeleton root of containers that run on the host's filesystem (no image, no `container.rootfs`):
//! `<work dir>/hostskel` holds the mount points and the host's merged-usr symlinks (`bin -> usr/bin`, ...); the
//! host's `/usr`, `/etc` and any real top-level binary and library directories are bound into it read-only.

use std::path::{Path, PathBuf};

/// The skeleton cannot be created.
#[derive(Debug, thiserror::Error)]
#[error("cannot prepare host skeleton {path}: {source}")]
pub struct HostskelError {
    pub path: PathBuf,
    pub source: std::io::Error,
}

/// The host directories bound read-only into the skeleton: `/usr`, `/etc`, and the top-level library and binary
/// directories that are real directories rather than merged-usr symlinks.
pub fn binds() -> Vec<String> {
    let mut dirs = vec!["/usr".to_string(), "/etc".to_string()];
    for top in ["/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"] {
        if std::fs::symlink_metadata(top).is_ok_and(|m| m.is_dir()) {
            dirs.push(top.to_string());
        }
    }
    dirs
}

/// Creates the skeleton root: mount points, and the host's merged-usr symlinks (`bin -> usr/bin`, ...).
pub fn prepare(skel: &Path) -> Result<(), HostskelError> {
    let fail = |p: &Path, source: std::io::Error| HostskelError { path: p.to_path_buf(), source };
    for dir in ["usr", "etc", "proc", "dev", "sys", "tmp", "mnt/sandbox", "root", "home", "var/tmp", "run"] {
        let p = skel.join(dir);
        std::fs::create_dir_all(&p).map_err(|e| fail(&p, e))?;
    }
    for top in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(top);
        let p = skel.join(top);
        match std::fs::read_link(&host) {
            Ok(target) => {
                if std::fs::symlink_metadata(&p).is_err() {
                    std::os::unix::fs::symlink(&target, &p).map_err(|e| fail(&p, e))?;
                }
            }
            Err(_) if host.is_dir() => std::fs::create_dir_all(&p).map_err(|e| fail(&p, e))?,
            Err(_) => {}
        }
    }
    Ok(())
}
