//! Each libcontainer container's own root filesystem: an overlay whose lower layer is the shared root (the image's
//! stored root filesystem, a registry directory, a `container.rootfs` or the host skeleton) and whose upper layer is
//! a small tmpfs of the container's, mounted at `<checkpoint dir>/root/merged`. What setting up the container
//! creates in its root — the mount points of the sandbox, `/tmp`, `/proc` and the volumes, an image's missing
//! `WorkingDir` — lands in that tmpfs and never in the shared root, as Mesos creates mount points in the container's
//! own root filesystem. The root stays read-only to the task. The root lives as long as the container: its monitor
//! unmounts both ([`unmount_under`]) when the container's init has ended — so a task that ends while its agent is
//! down (`kill -9`) or never comes back leaves no mount behind — and destroying the container unmounts whatever is
//! still there (a monitor that died, a container killed while starting), and with them everything that was created
//! for it.
//!
//! [`mounts_under`] (reading `/proc/self/mountinfo`) is pure; the rest is the IO the containerizer calls.

use std::path::{Component, Path, PathBuf};

use nix::mount::{MntFlags, MsFlags};

/// The directory of the container's root under its checkpoint directory: the tmpfs, holding `upper`, `work` and
/// `merged` (the root the container sees).
pub const ROOT_DIR: &str = "root";
/// The tmpfs's size: mount points and a few directories, nothing the task writes.
const TMPFS_OPTIONS: &str = "mode=0755,size=4m";

/// Why a container's root could not be set up or taken down; each names the path.
#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot use {0} as a container's root: its path holds ',', ':' or '\\'")]
    Lower(PathBuf),
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot mount a tmpfs at {path}: {source}")]
    Tmpfs { path: PathBuf, source: nix::Error },
    #[error("cannot mount the container's root (overlay of {lower}) at {merged}: {source}")]
    Overlay { lower: PathBuf, merged: PathBuf, source: nix::Error },
    #[error("the working directory '{0}' must not contain '..'")]
    WorkingDir(PathBuf),
    #[error("cannot unmount {path}: {source} (detaching: {detach})")]
    Unmount { path: PathBuf, source: nix::Error, detach: nix::Error },
}

/// The root the container sees, under its checkpoint directory `dir`.
pub fn merged(dir: &Path) -> PathBuf {
    dir.join(ROOT_DIR).join("merged")
}

/// Mounts the container's root over `lower` under `dir` and returns it.
pub fn mount(lower: &Path, dir: &Path) -> Result<PathBuf, RootfsError> {
    let lower_text = lower
        .to_str()
        .filter(|l| !l.contains([',', ':', '\\']))
        .ok_or_else(|| RootfsError::Lower(lower.to_path_buf()))?;
    let root = dir.join(ROOT_DIR);
    std::fs::create_dir_all(&root).map_err(|source| RootfsError::Create { path: root.clone(), source })?;
    nix::mount::mount(Some("tmpfs"), &root, Some("tmpfs"), MsFlags::MS_NOSUID | MsFlags::MS_NODEV, Some(TMPFS_OPTIONS))
        .map_err(|source| RootfsError::Tmpfs { path: root.clone(), source })?;
    let (upper, work, merged) = (root.join("upper"), root.join("work"), merged(dir));
    for d in [&upper, &work, &merged] {
        std::fs::create_dir(d).map_err(|source| RootfsError::Create { path: d.clone(), source })?;
    }
    let options = format!("lowerdir={lower_text},upperdir={},workdir={}", upper.display(), work.display());
    nix::mount::mount(Some("overlay"), &merged, Some("overlay"), MsFlags::empty(), Some(options.as_str()))
        .map_err(|source| RootfsError::Overlay { lower: lower.to_path_buf(), merged: merged.clone(), source })?;
    Ok(merged)
}

/// Creates `path` (absolute, inside the container) in the container's root `merged` when it is missing. A symlink
/// on the way is left alone (the container resolves it), so nothing is ever created outside the root.
pub fn make_dir(merged: &Path, path: &Path) -> Result<(), RootfsError> {
    let mut at = merged.to_path_buf();
    for c in path.components() {
        match c {
            Component::Normal(part) => at.push(part),
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir | Component::Prefix(_) => {
                return Err(RootfsError::WorkingDir(path.to_path_buf()));
            }
        }
        match std::fs::symlink_metadata(&at) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(()),
            Err(_) => std::fs::create_dir(&at).map_err(|source| RootfsError::Create { path: at.clone(), source })?,
        }
    }
    Ok(())
}

/// Unmounts everything mounted at or under `dir`, deepest first (a busy mount is detached lazily). Both the
/// container's monitor (when the container has ended) and the agent (when it destroys the container) call this, so
/// a mount that is gone by the time it is unmounted (`EINVAL`, `ENOENT`: the other one was first) is no error.
pub fn unmount_under(dir: &Path) -> Result<(), RootfsError> {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return Ok(()) };
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let gone = |e: nix::errno::Errno| matches!(e, nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT);
    for point in mounts_under(&text, &dir) {
        match nix::mount::umount2(&point, MntFlags::empty()) {
            Ok(()) => {}
            Err(e) if gone(e) => {}
            Err(e) => match nix::mount::umount2(&point, MntFlags::MNT_DETACH) {
                Ok(()) => {}
                Err(e2) if gone(e2) => {}
                Err(detach) => return Err(RootfsError::Unmount { path: point, source: e, detach }),
            },
        }
    }
    Ok(())
}

/// The mount points of `mountinfo` at or under `dir`, deepest (longest) first, octal escapes decoded.
pub fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut points: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|line| line.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape(p)))
        .filter(|p| p.starts_with(dir))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    points.dedup();
    points
}

/// mountinfo writes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = (b[i] == b'\\' && i + 4 <= b.len())
            .then(|| std::str::from_utf8(&b[i + 1..i + 4]).ok().and_then(|o| u8::from_str_radix(o, 8).ok()))
            .flatten();
        if let Some(v) = octal {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
101 27 0:50 / /w/containers/c1/root rw,nosuid,nodev - tmpfs tmpfs rw,size=4096k
102 101 0:51 / /w/containers/c1/root/merged rw - overlay overlay rw,lowerdir=/img
103 27 0:52 / /w/containers/c10/root rw - tmpfs tmpfs rw
104 27 0:53 / /w/containers/c\\0402/root rw - tmpfs tmpfs rw
";

    #[test]
    fn mounts_under_a_container_are_found_deepest_first_and_only_its_own() {
        assert_eq!(
            mounts_under(MOUNTINFO, Path::new("/w/containers/c1")),
            vec![PathBuf::from("/w/containers/c1/root/merged"), PathBuf::from("/w/containers/c1/root")]
        );
        assert_eq!(
            mounts_under(MOUNTINFO, Path::new("/w/containers/c 2")),
            vec![PathBuf::from("/w/containers/c 2/root")]
        );
        assert!(mounts_under(MOUNTINFO, Path::new("/w/containers/c3")).is_empty());
    }

    #[test]
    fn working_directories_are_made_inside_the_root_and_never_through_a_symlink() {
        let root = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        make_dir(root.path(), Path::new("/srv/app")).unwrap();
        assert!(root.path().join("srv/app").is_dir());
        std::os::unix::fs::symlink(outside.path(), root.path().join("link")).unwrap();
        make_dir(root.path(), Path::new("/link/inner")).unwrap();
        assert!(!outside.path().join("inner").exists(), "nothing is created through the symlink");
        assert!(make_dir(root.path(), Path::new("/a/../b")).is_err());
    }
}
