//! The agent's local image registry (`--docker-registry DIR`), in the spirit of Mesos's local Docker puller: a
//! task's `container.image` (`NAME[:TAG]`, TAG `latest` by default) becomes the root filesystem it runs in.
//!
//! Layout of the registry directory, looked up in this order:
//! - `DIR/NAME/TAG/` — a prepared root filesystem directory, used in place (read-only in the container);
//! - `DIR/NAME/TAG.tar` — a root filesystem tarball (plain or compressed, whatever GNU `tar -xf` reads), unpacked
//!   once into the store `<work_dir>/store/docker/NAME/TAG` (into a temporary directory, then renamed, so a half
//!   unpacked image is never used) and reused by every later task. To replace a stored image, delete its store
//!   directory.
//!
//! Unlike Mesos's puller, a tarball is a root filesystem, not `docker save` output (no layers, no manifest).
//! NAME is one or more `/`-separated components of `[a-z0-9]` runs joined by single `.`, `_`, `__` or `-`
//! separators, TAG is `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}` (Docker's grammar): nothing can leave DIR. Digests
//! (`@sha256:...`) and registry hosts with ports are refused.
//!
//! [`ImageRef::parse`] and the paths are pure; [`provision`] is the thin IO shell the agent's shell calls before
//! launching.

use std::path::{Path, PathBuf};

/// A validated image reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRef {
    pub name: String,
    pub tag: String,
}

/// Where to find an image and where to unpack it: the core's request, resolved by [`provision`] in the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageRequest {
    /// The image as the task named it.
    pub image: String,
    pub reference: ImageRef,
    /// `--docker-registry`.
    pub registry: PathBuf,
    /// `<work_dir>/store/docker`.
    pub store: PathBuf,
}

/// What an agent can do with `container.image`, from its flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ImageSupport {
    /// No `--docker-registry`.
    NoRegistry,
    /// `--docker-registry DIR` with `--isolation process`, which cannot change a task's root filesystem.
    ProcessIsolation(PathBuf),
    /// `--docker-registry DIR` with an isolation that runs tasks in a root filesystem.
    Registry(PathBuf),
}

impl ImageSupport {
    /// From `--docker-registry` and whether the isolation can run a task in a root filesystem.
    pub fn new(registry: Option<PathBuf>, isolates_filesystem: bool) -> ImageSupport {
        match registry {
            None => ImageSupport::NoRegistry,
            Some(dir) if isolates_filesystem => ImageSupport::Registry(dir),
            Some(dir) => ImageSupport::ProcessIsolation(dir),
        }
    }

    /// The request to resolve `image` before a launch, or why this agent cannot run it (a TASK_FAILED message).
    pub fn request(&self, image: &str, work_dir: &Path) -> Result<ImageRequest, String> {
        match self {
            ImageSupport::NoRegistry => Err(format!(
                "cannot run image '{image}': this agent has no image registry (start it with --docker-registry DIR)"
            )),
            ImageSupport::ProcessIsolation(dir) => Err(format!(
                "cannot run image '{image}' from the registry {}: --isolation process runs tasks on the host's \
                 filesystem; images need --isolation libcontainer",
                dir.display()
            )),
            ImageSupport::Registry(dir) => Ok(ImageRequest {
                image: image.to_string(),
                reference: ImageRef::parse(image)?,
                registry: dir.clone(),
                store: store_dir(work_dir),
            }),
        }
    }
}

/// The store of unpacked tarballs under an agent's work dir.
pub fn store_dir(work_dir: &Path) -> PathBuf {
    work_dir.join("store").join("docker")
}

impl ImageRef {
    /// Validates `NAME[:TAG]`.
    pub fn parse(image: &str) -> Result<ImageRef, String> {
        let bad = |why: &str| Err(format!("image '{image}' is not a valid image name: {why}"));
        if image.contains('@') {
            return bad("digests are not supported; name a tag");
        }
        // The tag follows the last ':' that comes after the last '/'.
        let last_slash = image.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match image[last_slash..].rfind(':') {
            Some(i) => (&image[..last_slash + i], &image[last_slash + i + 1..]),
            None => (image, "latest"),
        };
        if name.is_empty() {
            return bad("the name is empty");
        }
        if let Some(c) = name.split('/').find(|c| !valid_component(c)) {
            return bad(&format!(
                "'{c}' is not a name component (lowercase letters and digits, separated by '.', '_', '__' or '-')"
            ));
        }
        if !valid_tag(tag) {
            return bad(&format!("'{tag}' is not a tag ([A-Za-z0-9_][A-Za-z0-9_.-]*, at most 128 characters)"));
        }
        Ok(ImageRef { name: name.to_string(), tag: tag.to_string() })
    }

    /// `DIR/NAME/TAG`: a prepared root filesystem directory.
    pub fn directory_in(&self, registry: &Path) -> PathBuf {
        registry.join(&self.name).join(&self.tag)
    }

    /// `DIR/NAME/TAG.tar`: a root filesystem tarball.
    pub fn tarball_in(&self, registry: &Path) -> PathBuf {
        registry.join(&self.name).join(format!("{}.tar", self.tag))
    }

    /// `STORE/NAME/TAG`: where the tarball is unpacked.
    pub fn stored_in(&self, store: &Path) -> PathBuf {
        store.join(&self.name).join(&self.tag)
    }
}

fn valid_component(c: &str) -> bool {
    let b = c.as_bytes();
    let alnum = |x: u8| x.is_ascii_lowercase() || x.is_ascii_digit();
    if b.is_empty() || !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return false;
    }
    // Separators: '.', '_', '__' or one or more '-', always between alphanumerics.
    let mut i = 0;
    while i < b.len() {
        if alnum(b[i]) {
            i += 1;
            continue;
        }
        let start = i;
        while i < b.len() && !alnum(b[i]) {
            i += 1;
        }
        let sep = &c[start..i];
        let ok = matches!(sep, "." | "_" | "__") || sep.bytes().all(|x| x == b'-');
        if !ok {
            return false;
        }
    }
    true
}

fn valid_tag(t: &str) -> bool {
    let ok = |x: u8| x.is_ascii_alphanumeric() || x == b'_' || x == b'.' || x == b'-';
    !t.is_empty()
        && t.len() <= 128
        && (t.as_bytes()[0].is_ascii_alphanumeric() || t.as_bytes()[0] == b'_')
        && t.bytes().all(ok)
}

/// Resolves the image to a root filesystem directory: the registry's prepared directory, else its tarball unpacked
/// into the store (once). The error names the image and the paths searched.
pub async fn provision(req: &ImageRequest) -> Result<PathBuf, String> {
    let dir = req.reference.directory_in(&req.registry);
    if tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
        return Ok(dir);
    }
    let tarball = req.reference.tarball_in(&req.registry);
    if !tokio::fs::metadata(&tarball).await.is_ok_and(|m| m.is_file()) {
        return Err(format!(
            "image '{}' is not in the registry {}: neither {} (a root filesystem directory) nor {} (a tarball) exists",
            req.image,
            req.registry.display(),
            dir.display(),
            tarball.display()
        ));
    }
    let stored = req.reference.stored_in(&req.store);
    if tokio::fs::metadata(&stored).await.is_ok_and(|m| m.is_dir()) {
        return Ok(stored);
    }
    unpack(&req.image, &tarball, &req.store, &stored).await?;
    Ok(stored)
}

/// Unpacks `tarball` into a temporary directory of the store, then renames it to `stored`.
async fn unpack(image: &str, tarball: &Path, store: &Path, stored: &Path) -> Result<(), String> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        format!("cannot unpack image '{image}' from {} into {}: {what}: {e}", tarball.display(), stored.display())
    };
    let parent = stored.parent().unwrap_or(store);
    tokio::fs::create_dir_all(parent).await.map_err(|e| fail("creating the store", &e))?;
    let tmp = store.join(format!(".unpacking-{}", uuid::Uuid::new_v4()));
    tokio::fs::create_dir_all(&tmp).await.map_err(|e| fail("creating a temporary directory", &e))?;
    let out = tokio::process::Command::new("tar")
        .arg("-C")
        .arg(&tmp)
        .arg("-xf")
        .arg(tarball)
        .output()
        .await
        .map_err(|e| fail("running tar (is GNU tar installed? apt-get install tar)", &e));
    let result = match out {
        Ok(o) if o.status.success() => match tokio::fs::rename(&tmp, stored).await {
            Ok(()) => Ok(()),
            // Another launch of the same image won the race: use its copy.
            Err(_) if tokio::fs::metadata(stored).await.is_ok_and(|m| m.is_dir()) => Ok(()),
            Err(e) => Err(fail("renaming it into place", &e)),
        },
        Ok(o) => Err(fail(&format!("tar exited with {}", o.status), &String::from_utf8_lossy(&o.stderr).trim())),
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(s: &str) -> (String, String) {
        let r = ImageRef::parse(s).unwrap();
        (r.name, r.tag)
    }

    #[test]
    fn names_and_tags_parse_with_latest_by_default() {
        assert_eq!(parsed("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(parsed("busybox:1.36"), ("busybox".into(), "1.36".into()));
        assert_eq!(parsed("library/busy_box-x.y:v1_2-rc.3"), ("library/busy_box-x.y".into(), "v1_2-rc.3".into()));
        assert_eq!(parsed("a__b--c/d:_T"), ("a__b--c/d".into(), "_T".into()));
    }

    #[test]
    fn nothing_that_could_leave_the_registry_parses() {
        for bad in [
            "",
            ":tag",
            "..",
            "../etc",
            "a/../b",
            "/abs",
            "a//b",
            "a/",
            "./a",
            "Busybox",
            "a:..",
            "a:.x",
            "a:-x",
            "a:",
            "a:b/c",
            "a@sha256:abc",
            "host:5000/a",
            "a b",
            "a\0b",
            "a..b",
            "a_-b",
            "a:t\n",
        ] {
            let err = ImageRef::parse(bad).expect_err(bad);
            assert!(err.starts_with(&format!("image '{bad}' is not a valid image name")), "{err}");
        }
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(129))).is_err());
        assert!(ImageRef::parse(&format!("a:{}", "t".repeat(128))).is_ok());
    }

    #[test]
    fn an_agent_without_a_registry_or_with_process_isolation_cannot_run_images() {
        let w = Path::new("/w");
        let err = ImageSupport::new(None, true).request("busybox", w).unwrap_err();
        assert!(err.contains("image 'busybox'") && err.contains("--docker-registry"), "{err}");
        let err = ImageSupport::new(Some("/reg".into()), false).request("busybox", w).unwrap_err();
        assert!(err.contains("image 'busybox' from the registry /reg") && err.contains("--isolation"), "{err}");
        let err = ImageSupport::new(Some("/reg".into()), true).request("../x", w).unwrap_err();
        assert!(err.contains("image '../x' is not a valid image name"), "{err}");
        let req = ImageSupport::new(Some("/reg".into()), true).request("busybox:1", w).unwrap();
        assert_eq!(
            req,
            ImageRequest {
                image: "busybox:1".into(),
                reference: ImageRef { name: "busybox".into(), tag: "1".into() },
                registry: "/reg".into(),
                store: "/w/store/docker".into(),
            }
        );
    }

    #[test]
    fn the_layout_is_name_then_tag() {
        let r = ImageRef::parse("library/busybox").unwrap();
        assert_eq!(r.directory_in(Path::new("/reg")), Path::new("/reg/library/busybox/latest"));
        assert_eq!(r.tarball_in(Path::new("/reg")), Path::new("/reg/library/busybox/latest.tar"));
        assert_eq!(r.stored_in(&store_dir(Path::new("/w"))), Path::new("/w/store/docker/library/busybox/latest"));
    }

    fn request(image: &str, registry: &Path, work: &Path) -> ImageRequest {
        ImageRequest {
            image: image.into(),
            reference: ImageRef::parse(image).unwrap(),
            registry: registry.into(),
            store: store_dir(work),
        }
    }

    #[tokio::test]
    async fn a_directory_is_used_in_place() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(reg.path().join("base/v1/etc")).unwrap();
        let root = provision(&request("base:v1", reg.path(), work.path())).await.unwrap();
        assert_eq!(root, reg.path().join("base/v1"));
        assert!(!store_dir(work.path()).exists(), "nothing is unpacked");
    }

    #[tokio::test]
    async fn a_tarball_is_unpacked_once_into_the_store_and_reused() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let src = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(src.path().join("etc")).unwrap();
        std::fs::write(src.path().join("etc/marker"), "one").unwrap();
        std::fs::create_dir_all(reg.path().join("base")).unwrap();
        let tarball = reg.path().join("base/latest.tar");
        let status =
            std::process::Command::new("tar").arg("-C").arg(src.path()).arg("-cf").arg(&tarball).arg(".").status();
        assert!(status.expect("GNU tar must be installed (apt-get install tar)").success());

        let req = request("base", reg.path(), work.path());
        let root = provision(&req).await.unwrap();
        assert_eq!(root, work.path().join("store/docker/base/latest"));
        assert_eq!(std::fs::read_to_string(root.join("etc/marker")).unwrap(), "one");
        // Reused: a marker written into the stored copy survives a second provision.
        std::fs::write(root.join("etc/marker"), "kept").unwrap();
        assert_eq!(provision(&req).await.unwrap(), root);
        assert_eq!(std::fs::read_to_string(root.join("etc/marker")).unwrap(), "kept");
        // No temporary directory is left behind.
        let leftovers: Vec<_> = std::fs::read_dir(store_dir(work.path()))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(leftovers, vec!["base".to_string()]);
    }

    #[tokio::test]
    async fn a_broken_tarball_fails_naming_it_and_leaves_nothing() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(reg.path().join("base")).unwrap();
        std::fs::write(reg.path().join("base/latest.tar"), "not a tarball").unwrap();
        let err = provision(&request("base", reg.path(), work.path())).await.unwrap_err();
        assert!(err.contains("cannot unpack image 'base'") && err.contains("base/latest.tar"), "{err}");
        assert!(!work.path().join("store/docker/base/latest").exists());
        let entries = std::fs::read_dir(store_dir(work.path())).unwrap().count();
        assert_eq!(entries, 1, "only the image's parent directory remains, no temporary directory");
    }

    #[tokio::test]
    async fn a_missing_image_names_the_image_and_the_paths_searched() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let err = provision(&request("nope:2", reg.path(), work.path())).await.unwrap_err();
        let r = reg.path().display();
        assert!(err.starts_with(&format!("image 'nope:2' is not in the registry {r}:")), "{err}");
        assert!(err.contains(&format!("{r}/nope/2 ")) && err.contains(&format!("{r}/nope/2.tar")), "{err}");
    }
}
