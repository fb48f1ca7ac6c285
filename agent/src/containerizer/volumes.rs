//! `ContainerInfo.volumes` as bind mounts of a libcontainer container, with Mesos's semantics (the `filesystem/linux`
//! isolator's host-path volumes and the `volume/sandbox_path` isolator's sandbox paths):
//!
//! - an absolute `host_path` is a directory or file of the agent, bound as it is (it must exist);
//! - a relative `host_path` is a path inside the task's sandbox, created as a directory when missing;
//! - an absolute `container_path` is that path in the container's filesystem;
//! - a relative `container_path` is inside the sandbox as the task sees it (`/mnt/sandbox/<path>`);
//! - `mode` RO binds read-only, RW read-write.
//!
//! [`plan`] decides (pure); the libcontainer containerizer checks and creates sources and adds the mounts. A volume
//! that cannot be honoured fails the launch with a message naming it.

use std::path::{Component, Path, PathBuf};

use agora_proto::model::{SandboxPath, SandboxPathError, Volume};

use super::spec::SANDBOX_MOUNT;

/// One bind mount to add to the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    /// On the agent.
    pub source: PathBuf,
    /// In the container.
    pub destination: PathBuf,
    pub read_only: bool,
    /// A sandbox path: created (as a directory) before the launch when missing.
    pub in_sandbox: bool,
}

/// Why a task's volumes cannot be given to it.
#[derive(Debug, thiserror::Error)]
pub enum VolumeError {
    /// One volume, named as [`describe`] names it.
    #[error("{volume}: {problem}")]
    Volume { volume: String, problem: Problem },
    #[error("sandbox {path}: {source}")]
    Sandbox { path: PathBuf, source: std::io::Error },
}

/// What is wrong with one volume.
#[derive(Debug, thiserror::Error)]
pub enum Problem {
    #[error("container_path is empty")]
    ContainerPathEmpty,
    #[error("host_path is empty (image, secret and other volume sources are not supported)")]
    HostPathEmpty,
    #[error("container_path cannot be the container's root")]
    ContainerRoot,
    /// A relative path that does not stay in the sandbox ([`SandboxPath`]).
    #[error("{field} '{path}' {error}")]
    NotInSandbox { field: &'static str, path: String, error: SandboxPathError },
    #[error("{field} '{path}' must not contain '..'")]
    ParentDir { field: &'static str, path: String },
    #[error("the host path does not exist on this agent")]
    HostPathMissing,
    #[error("not a sandbox path")]
    NotSandboxPath,
    #[error("cannot create {path}: {source}")]
    Create { path: PathBuf, source: std::io::Error },
    #[error("{path}: {source}")]
    Resolve { path: PathBuf, source: std::io::Error },
    #[error("{path} resolves outside the sandbox")]
    Escapes { path: PathBuf },
    /// `--isolation=process` cannot mount anything.
    #[error(
        "volumes need --isolation=libcontainer; with --isolation=process tasks share the agent's filesystem and \
         nothing can be mounted for them"
    )]
    NeedsIsolation,
}

impl VolumeError {
    /// `problem` of the volume `v`.
    pub fn of(v: &Volume, problem: Problem) -> VolumeError {
        VolumeError::Volume { volume: describe(v), problem }
    }
}

/// `volume 'data' (host_path '/srv/data')`, the way every volume error starts.
pub fn describe(v: &Volume) -> String {
    format!("volume '{}' (host_path '{}')", v.container_path, v.host_path)
}

/// The bind mounts of `volumes` for a task whose sandbox is `sandbox`. Pure.
pub fn plan(volumes: &[Volume], sandbox: &Path) -> Result<Vec<Bind>, VolumeError> {
    volumes.iter().map(|v| plan_one(v, sandbox).map_err(|problem| VolumeError::of(v, problem))).collect()
}

fn plan_one(v: &Volume, sandbox: &Path) -> Result<Bind, Problem> {
    if v.container_path.is_empty() {
        return Err(Problem::ContainerPathEmpty);
    }
    if v.host_path.is_empty() {
        return Err(Problem::HostPathEmpty);
    }
    let destination = if v.container_path.starts_with('/') {
        let p = absolute("container_path", &v.container_path)?;
        if p == Path::new("/") {
            return Err(Problem::ContainerRoot);
        }
        p
    } else {
        Path::new(SANDBOX_MOUNT).join(in_sandbox("container_path", &v.container_path)?.as_path())
    };
    let (source, in_sandbox) = if v.host_path.starts_with('/') {
        (absolute("host_path", &v.host_path)?, false)
    } else {
        (sandbox.join(in_sandbox("host_path", &v.host_path)?.as_path()), true)
    };
    Ok(Bind { source, destination, read_only: v.read_only, in_sandbox })
}

/// A relative path, inside the sandbox by the shared rule.
fn in_sandbox(field: &'static str, path: &str) -> Result<SandboxPath, Problem> {
    SandboxPath::parse(path).map_err(|error| Problem::NotInSandbox { field, path: path.to_string(), error })
}

/// An absolute path with `.` removed; `..` refused.
fn absolute(field: &'static str, path: &str) -> Result<PathBuf, Problem> {
    let mut out = PathBuf::from("/");
    for c in Path::new(path).components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
            Component::ParentDir => return Err(Problem::ParentDir { field, path: path.to_string() }),
        }
    }
    Ok(out)
}

/// Checks the sources on the agent: host paths must exist; sandbox paths are created, and must resolve inside the
/// sandbox. Returns the first problem, naming the volume.
pub fn prepare(volumes: &[Volume], binds: &[Bind], sandbox: &Path) -> Result<(), VolumeError> {
    let real_sandbox = std::fs::canonicalize(sandbox)
        .map_err(|source| VolumeError::Sandbox { path: sandbox.to_path_buf(), source })?;
    for (v, b) in volumes.iter().zip(binds) {
        prepare_one(b, sandbox, &real_sandbox).map_err(|problem| VolumeError::of(v, problem))?;
    }
    Ok(())
}

fn prepare_one(b: &Bind, sandbox: &Path, real_sandbox: &Path) -> Result<(), Problem> {
    if !b.in_sandbox {
        return match std::fs::metadata(&b.source) {
            Ok(_) => Ok(()),
            Err(_) => Err(Problem::HostPathMissing),
        };
    }
    // Walk down from the sandbox, so that no directory is created through a symlink that leaves it.
    let rel = b.source.strip_prefix(sandbox).map_err(|_| Problem::NotSandboxPath)?;
    let mut at = sandbox.to_path_buf();
    for part in rel.components() {
        at.push(part);
        if std::fs::symlink_metadata(&at).is_err() {
            std::fs::create_dir(&at).map_err(|source| Problem::Create { path: at.clone(), source })?;
        }
        let real = std::fs::canonicalize(&at).map_err(|source| Problem::Resolve { path: at.clone(), source })?;
        if !real.starts_with(real_sandbox) {
            return Err(Problem::Escapes { path: at });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(container: &str, host: &str, ro: bool) -> Volume {
        Volume { container_path: container.into(), host_path: host.into(), read_only: ro }
    }

    #[test]
    fn absolute_host_paths_bind_as_they_are_and_relative_ones_are_sandbox_paths() {
        let sb = Path::new("/w/sb");
        let binds = plan(&[vol("/data", "/srv/data/", true), vol("cache", "store/./c", false)], sb).unwrap();
        assert_eq!(
            binds[0],
            Bind { source: "/srv/data".into(), destination: "/data".into(), read_only: true, in_sandbox: false }
        );
        assert_eq!(
            binds[1],
            Bind {
                source: "/w/sb/store/c".into(),
                destination: Path::new(SANDBOX_MOUNT).join("cache"),
                read_only: false,
                in_sandbox: true
            }
        );
    }

    #[test]
    fn impossible_volumes_are_refused_naming_them() {
        let sb = Path::new("/w/sb");
        for (v, needle) in [
            (vol("", "/srv", false), "container_path is empty"),
            (vol("/x", "", false), "host_path is empty"),
            (vol("/", "/srv", false), "root"),
            (vol("../x", "/srv", false), "'..'"),
            (vol("/x", "../../etc", false), "'..'"),
            (vol("/x/../y", "/srv", false), "'..'"),
            (vol(".", "/srv", false), "sandbox itself"),
        ] {
            let e = plan(std::slice::from_ref(&v), sb).unwrap_err().to_string();
            assert!(e.starts_with(&describe(&v)), "{e}");
            assert!(e.contains(needle), "{e}");
        }
    }

    #[test]
    fn prepare_creates_sandbox_paths_and_requires_host_paths() {
        let dir = tempfile::tempdir().unwrap();
        let sb = dir.path().join("sb");
        std::fs::create_dir_all(&sb).unwrap();
        let vols = [vol("cache", "store", false), vol("/data", &dir.path().display().to_string(), true)];
        let binds = plan(&vols, &sb).unwrap();
        prepare(&vols, &binds, &sb).unwrap();
        assert!(sb.join("store").is_dir());

        let missing = [vol("/data", "/nonexistent/agora-volume", false)];
        let e = prepare(&missing, &plan(&missing, &sb).unwrap(), &sb).unwrap_err().to_string();
        assert!(e.contains("'/nonexistent/agora-volume'") && e.contains("does not exist"), "{e}");

        std::os::unix::fs::symlink(dir.path(), sb.join("out")).unwrap();
        let escaping = [vol("x", "out/y", false)];
        let e = prepare(&escaping, &plan(&escaping, &sb).unwrap(), &sb).unwrap_err().to_string();
        assert!(e.contains("outside the sandbox"), "{e}");
        assert!(!dir.path().join("y").exists(), "nothing is created outside");
    }
}
