//! Which paths stay inside a task's sandbox, decided once: a fetched URI's output file (Mesos's
//! `CommandInfo.URI.output_file`, Marathon's `fetch[].destPath`) and a sandbox-path volume (a relative
//! `host_path`/`container_path`, Marathon's `containerPath`/`hostPath`) must be relative, hold no `..`, and name
//! something in the sandbox rather than the sandbox itself; a file must not end in `/`. Marathon checks them when an
//! app is submitted, the agent before a launch, with the same rule. Symlinks on the agent are a separate check,
//! made where the paths are created (a path this rule accepts can still resolve outside through a symlink).

use std::path::{Component, Path, PathBuf};

/// A path relative to a sandbox that stays inside it, normalised (`.` and empty segments dropped).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SandboxPath(PathBuf);

/// Why a path does not stay inside the sandbox. Messages complete a sentence naming the path: "output_file 'x' …".
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SandboxPathError {
    #[error("must be relative to the sandbox")]
    Absolute,
    #[error("must not contain '..': it would leave the sandbox")]
    ParentDir,
    #[error("names the sandbox itself")]
    SandboxItself,
    /// Only from [`SandboxPath::parse_file`].
    #[error("names a directory, not a file")]
    Directory,
}

impl SandboxPath {
    /// A file or directory inside the sandbox (a sandbox-path volume): relative, without `..`, not the sandbox.
    pub fn parse(path: &str) -> Result<SandboxPath, SandboxPathError> {
        let mut out = PathBuf::new();
        for c in Path::new(path).components() {
            match c {
                Component::Normal(part) => out.push(part),
                Component::CurDir => {}
                Component::ParentDir => return Err(SandboxPathError::ParentDir),
                Component::RootDir | Component::Prefix(_) => return Err(SandboxPathError::Absolute),
            }
        }
        if out.as_os_str().is_empty() {
            return Err(SandboxPathError::SandboxItself);
        }
        Ok(SandboxPath(out))
    }

    /// A file inside the sandbox (where a fetched URI is written): as [`SandboxPath::parse`], and not ending in `/`.
    pub fn parse_file(path: &str) -> Result<SandboxPath, SandboxPathError> {
        let parsed = SandboxPath::parse(path)?;
        if path.ends_with('/') {
            return Err(SandboxPathError::Directory);
        }
        Ok(parsed)
    }

    /// The path, relative to the sandbox.
    pub fn as_path(&self) -> &Path {
        &self.0
    }
}

impl AsRef<Path> for SandboxPath {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn paths_inside_the_sandbox_are_normalised() {
        for (path, normal) in [
            ("a", "a"),
            ("bin/tool", "bin/tool"),
            ("./pkg.tar.gz", "pkg.tar.gz"),
            ("store/./c", "store/c"),
            ("a//b", "a/b"),
        ] {
            assert_eq!(SandboxPath::parse(path).unwrap().as_path(), Path::new(normal), "{path}");
            assert_eq!(SandboxPath::parse_file(path).unwrap().as_path(), Path::new(normal), "{path}");
        }
        // A directory is a fine volume, not a file to write.
        assert_eq!(SandboxPath::parse("dir/").unwrap().as_path(), Path::new("dir"));
        assert_eq!(SandboxPath::parse_file("dir/"), Err(SandboxPathError::Directory));
    }

    #[test]
    fn paths_that_leave_the_sandbox_or_name_it_are_refused() {
        for (path, error) in [
            ("../escape", SandboxPathError::ParentDir),
            ("a/../../b", SandboxPathError::ParentDir),
            ("a/..", SandboxPathError::ParentDir),
            ("/etc/passwd", SandboxPathError::Absolute),
            ("/", SandboxPathError::Absolute),
            ("", SandboxPathError::SandboxItself),
            (".", SandboxPathError::SandboxItself),
            ("./", SandboxPathError::SandboxItself),
        ] {
            assert_eq!(SandboxPath::parse(path), Err(error), "{path}");
            assert_eq!(SandboxPath::parse_file(path), Err(error), "{path}");
        }
        assert_eq!(SandboxPathError::ParentDir.to_string(), "must not contain '..': it would leave the sandbox");
    }

    proptest! {
        /// Whatever is accepted, joined to a sandbox, stays under it without `..` and names more than the sandbox.
        #[test]
        fn accepted_paths_stay_inside(
            segments in proptest::collection::vec("(\\.{1,3}|[a-z]{1,3}|)", 0..6),
            lead in proptest::bool::ANY,
        ) {
            let path = format!("{}{}", if lead { "/" } else { "" }, segments.join("/"));
            if let Ok(p) = SandboxPath::parse(&path) {
                let joined = Path::new("/sandbox").join(p.as_path());
                prop_assert!(joined.starts_with("/sandbox") && joined != Path::new("/sandbox"));
                prop_assert!(p.as_path().components().all(|c| matches!(c, Component::Normal(_))));
                prop_assert!(!path.starts_with('/'));
            }
        }
    }
}
