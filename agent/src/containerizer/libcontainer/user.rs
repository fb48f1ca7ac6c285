//! Users inside a container: the uid and gid a task runs as, found in the container's own `/etc/passwd` and
//! `/etc/group` as Docker reads an image's `User`, and handing the sandbox to that user as Mesos does.

use std::path::{Path, PathBuf};

/// A user or group the container's root filesystem does not know, or a sandbox that cannot be handed over.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user '{name}' does not exist in {passwd}")]
    NoUser { name: String, passwd: PathBuf },
    #[error("group '{name}' does not exist in {group}")]
    NoGroup { name: String, group: PathBuf },
    #[error("cannot read {path}: {source}")]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("cannot give {path} to uid {uid}: {source}")]
    Chown { path: PathBuf, uid: u32, source: nix::Error },
}

/// `name`'s uid and gid in a passwd file.
pub fn lookup_user(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        (f.len() >= 4 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?))).flatten()
    })
}

/// The uid and gid of `user` in the root filesystem `root`: a name or a uid, optionally `:group` (a name or a gid),
/// as Docker's `User` is written. A name must be in `root`'s `/etc/passwd` (a group in its `/etc/group`); a uid
/// that is not takes gid 0, as Docker does.
pub fn resolve_user(root: &Path, user: &str) -> Result<(u32, u32), UserError> {
    let passwd_path = root.join("etc/passwd");
    let passwd = std::fs::read_to_string(&passwd_path).unwrap_or_default();
    let (name, group) = match user.split_once(':') {
        Some((n, g)) => (n, Some(g)),
        None => (user, None),
    };
    let (uid, primary) = match name.parse::<u32>() {
        Ok(uid) => {
            let gid = passwd.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.len() >= 4 && f[2] == name).then(|| f[3].parse().ok()).flatten()
            });
            (uid, gid.unwrap_or(0))
        }
        Err(_) => lookup_user(&passwd, name)
            .ok_or_else(|| UserError::NoUser { name: name.to_string(), passwd: passwd_path.clone() })?,
    };
    let gid = match group {
        None => primary,
        Some(g) => match g.parse::<u32>() {
            Ok(gid) => gid,
            Err(_) => {
                let group_path = root.join("etc/group");
                let groups = std::fs::read_to_string(&group_path).unwrap_or_default();
                groups
                    .lines()
                    .find_map(|l| {
                        let f: Vec<&str> = l.split(':').collect();
                        (f.len() >= 3 && f[0] == g).then(|| f[2].parse().ok()).flatten()
                    })
                    .ok_or_else(|| UserError::NoGroup { name: g.to_string(), group: group_path })?
            }
        },
    };
    Ok((uid, gid))
}

/// Gives the sandbox, its `stdout` and `stderr` (created when missing) and everything under it to `uid:gid`, as
/// Mesos chowns the sandbox: what the fetcher put there and the sandbox-path volumes belong to the task's user
/// (symlinks themselves, never what they point to).
pub fn give_sandbox(sandbox: &Path, uid: u32, gid: u32) -> Result<(), UserError> {
    for p in [sandbox.to_path_buf(), sandbox.join("stdout"), sandbox.join("stderr")] {
        if !p.exists() {
            std::fs::File::create(&p).map_err(|source| UserError::Create { path: p.clone(), source })?;
        }
        nix::unistd::chown(&p, Some(uid.into()), Some(gid.into())).map_err(|source| UserError::Chown {
            path: p.clone(),
            uid,
            source,
        })?;
    }
    chown_tree(sandbox, uid, gid)
}

/// Gives everything under `dir` to `uid:gid`, without following symlinks.
fn chown_tree(dir: &Path, uid: u32, gid: u32) -> Result<(), UserError> {
    let read_error = |source| UserError::ReadDir { path: dir.to_path_buf(), source };
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        nix::unistd::fchownat(
            None,
            &path,
            Some(uid.into()),
            Some(gid.into()),
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|source| UserError::Chown { path: path.clone(), uid, source })?;
        if std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
            chown_tree(&path, uid, gid)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_are_found_in_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n";
        assert_eq!(lookup_user(passwd, "nobody"), Some((65534, 65534)));
        assert_eq!(lookup_user(passwd, "root"), Some((0, 0)));
        assert_eq!(lookup_user(passwd, "ghost"), None);
        assert_eq!(lookup_user("broken:x\n", "broken"), None);
    }

    #[test]
    fn users_are_names_or_ids_with_an_optional_group() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("etc")).unwrap();
        std::fs::write(root.path().join("etc/passwd"), "app:x:1000:1001::/:/bin/sh\n").unwrap();
        std::fs::write(root.path().join("etc/group"), "staff:x:50:\n").unwrap();
        let resolve = |user: &str| resolve_user(root.path(), user).map_err(|e| e.to_string());
        assert_eq!(resolve("app"), Ok((1000, 1001)));
        assert_eq!(resolve("1000"), Ok((1000, 1001)));
        assert_eq!(resolve("4242"), Ok((4242, 0)));
        assert_eq!(resolve("app:staff"), Ok((1000, 50)));
        assert_eq!(resolve("7:8"), Ok((7, 8)));
        assert!(resolve("ghost").unwrap_err().contains("user 'ghost' does not exist"));
        assert!(resolve("app:nogroup").unwrap_err().contains("group 'nogroup' does not exist"));
    }
}
