//! The agent's local image registry (`--docker-registry DIR`), Mesos's local Docker puller: a task's
//! `container.image` (`NAME[:TAG]`, TAG `latest` by default) becomes the root filesystem it runs in, and the image's
//! runtime config (`Env`, `Entrypoint`, `Cmd`, `WorkingDir`, `User`) shapes how it runs ([`apply_config`]).
//!
//! Layout of the registry directory, looked up in this order:
//! - `DIR/NAME/TAG/` — a prepared root filesystem directory, used in place (read-only in the container); or, when it
//!   holds `index.json`, `manifest.json` or `repositories`, an unpacked image archive (below);
//! - `DIR/NAME/TAG.tar`, then `DIR/NAME:TAG.tar` (Mesos's naming, `docker save -o busybox:latest.tar busybox`) — an
//!   image archive: `docker save` output or an OCI image layout ([`archive`]), whose layers are applied in order
//!   with their whiteouts and digests checked ([`layers`]); or, holding none of `manifest.json`, `index.json` and
//!   `repositories`, a plain root filesystem tarball (plain or gzip-compressed tar, unpacked in process by
//!   [`crate::tarball`], confined to the store; bzip2- and xz-compressed tarballs are refused by name).
//!
//! An archive is unpacked once into the store `<work_dir>/store/docker/NAME/TAG/` (`rootfs/` and `config.json`, the
//! runtime config), built in a temporary directory and renamed into place, so a half-built image is never used, and
//! reused by every later task. To replace a stored image, delete its store directory. A corrupt archive, a missing
//! layer or a digest that does not match fails the task before launch, naming the image and the problem.
//!
//! NAME and TAG follow Docker's grammar ([`ImageRef::parse`], with the request types in
//! [`crate::containerizer::spec`]): nothing can leave DIR.
//!
//! [`ImageRef::parse`], the paths and [`apply_config`] are pure; [`provision`] is the thin IO shell the launcher
//! (`crate::launcher`) calls before launching.

mod archive;
mod layers;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::containerizer::spec::{ImageNameError, ImageRef, ImageRequest, LaunchSpec};
use crate::tarball::TarballError;

/// Why a task's image cannot be run; each names the image and the paths involved.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("cannot run image '{image}': this agent has no image registry (start it with --docker-registry DIR)")]
    NoRegistry { image: String },
    #[error(
        "cannot run image '{image}' from the registry {}: --isolation process runs tasks on the host's filesystem; \
         images need --isolation libcontainer",
        registry.display()
    )]
    ProcessIsolation { image: String, registry: PathBuf },
    #[error(transparent)]
    Name(#[from] ImageNameError),
    #[error(
        "image '{image}' is not in the registry {}: neither {} (a root filesystem directory) nor {} nor {} (an image \
         archive or root filesystem tarball) exists",
        registry.display(), dir.display(), tarball.display(), mesos_tarball.display()
    )]
    NotFound { image: String, registry: PathBuf, dir: PathBuf, tarball: PathBuf, mesos_tarball: PathBuf },
    #[error(
        "the stored image '{image}' is damaged ({}: {source}); delete {} to unpack it again",
        path.display(), stored.display()
    )]
    Damaged { image: String, path: PathBuf, stored: PathBuf, source: serde_json::Error },
    #[error("cannot unpack image '{image}' from {}: {source}", from.display())]
    Unpack { image: String, from: PathBuf, source: Box<UnpackError> },
    #[error("image '{image}' has neither an Entrypoint nor a Cmd, and the task gives no command to run")]
    NoCommand { image: String },
}

/// What went wrong building an image in the store (the image and its archive are named by [`ImageError::Unpack`]).
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Tarball(#[from] TarballError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error("layer {index} of {count} ({name}): {source}")]
    Layer { index: usize, count: usize, name: String, source: layers::LayerError },
    #[error("{} holds no index.json, manifest.json or repositories", .0.display())]
    NotAnArchive(PathBuf),
    #[error("cannot move it into place: {0}")]
    Move(#[source] std::io::Error),
    #[error("cannot encode its config: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(transparent)]
    Write(#[from] agora_runtime::WriteError),
    #[error("the unpacking thread failed: {0}")]
    Thread(#[source] tokio::task::JoinError),
    #[error(
        "cannot rename it into place at {}: {source} (delete that directory if it is left from an older agent)",
        stored.display()
    )]
    Rename { stored: PathBuf, source: std::io::Error },
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
    pub fn request(&self, image: &str, work_dir: &Path) -> Result<ImageRequest, ImageError> {
        match self {
            ImageSupport::NoRegistry => Err(ImageError::NoRegistry { image: image.to_string() }),
            ImageSupport::ProcessIsolation(dir) => {
                Err(ImageError::ProcessIsolation { image: image.to_string(), registry: dir.clone() })
            }
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

/// How an image asks to be run: the `config` object of its image config, with Docker's meaning.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageConfig {
    /// `KEY=VALUE`.
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    /// `user`, `uid`, `user:group` or `uid:gid`.
    #[serde(default)]
    pub user: Option<String>,
}

/// A resolved image: where its root filesystem is and how it asks to be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provisioned {
    pub rootfs: PathBuf,
    pub config: ImageConfig,
}

/// In a stored image: the root filesystem.
pub const STORED_ROOTFS: &str = "rootfs";
/// In a stored image: its [`ImageConfig`] as JSON, written last.
pub const STORED_CONFIG: &str = "config.json";

/// Applies the image's runtime config to a launch, as Mesos's `docker/runtime` isolator does:
/// - command: a shell command (`shell: true`) or one with a `value` runs as given. With `shell: false` and no
///   `value`, the image decides: `Entrypoint` followed by the task's `arguments` if it has any, else by `Cmd`;
///   without an `Entrypoint`, `Cmd[0]` followed by the task's `arguments` if any, else by the rest of `Cmd`. An image
///   with neither is an error naming it.
/// - environment: the image's `Env` is added beneath the task's: a variable the task (or the agent, e.g.
///   `MESOS_SANDBOX`) sets keeps its value; the image's `PATH` replaces the agent's default `PATH`.
/// - `WorkingDir` becomes the working directory (created in the container when missing); without it, the sandbox.
/// - `User` is the user when the task names none (CommandInfo's or FrameworkInfo's user wins).
pub fn apply_config(image: &str, config: &ImageConfig, spec: &mut LaunchSpec) -> Result<(), ImageError> {
    let command = &mut spec.command;
    if !command.shell && command.value.is_empty() {
        let (value, argv) = if let Some(first) = config.entrypoint.first() {
            let mut argv = config.entrypoint.clone();
            argv.extend(if command.arguments.is_empty() { config.cmd.clone() } else { command.arguments.clone() });
            (first.clone(), argv)
        } else if let Some(first) = config.cmd.first() {
            let mut argv = vec![first.clone()];
            argv.extend_from_slice(if command.arguments.is_empty() { &config.cmd[1..] } else { &command.arguments });
            (first.clone(), argv)
        } else {
            return Err(ImageError::NoCommand { image: image.to_string() });
        };
        command.value = value;
        command.arguments = argv;
    }
    for var in &config.env {
        let (key, value) = var.split_once('=').unwrap_or((var.as_str(), ""));
        if key.is_empty() {
            continue;
        }
        let task_sets = spec.command.environment.iter().any(|(k, _)| k == key);
        match spec.env.iter_mut().find(|(k, _)| k == key) {
            Some(slot) if key == "PATH" && !task_sets => slot.1 = value.to_string(),
            Some(_) => {}
            None => spec.env.push((key.to_string(), value.to_string())),
        }
    }
    if let Some(dir) = &config.working_dir {
        spec.working_dir = Some(Path::new("/").join(dir));
    }
    if spec.user.is_none() {
        spec.user = config.user.clone();
    }
    Ok(())
}

/// Where an image comes from in the registry.
enum Source {
    /// A tarball: an image archive or a root filesystem.
    Archive(PathBuf),
    /// A directory holding an unpacked image archive.
    Layout(PathBuf),
}

/// Resolves the image to a root filesystem directory and its runtime config: the registry's prepared directory, else
/// its archive unpacked into the store (once). The error names the image, the paths searched or the problem.
pub async fn provision(req: &ImageRequest) -> Result<Provisioned, ImageError> {
    let dir = req.reference.directory_in(&req.registry);
    let source = if tokio::fs::metadata(&dir).await.is_ok_and(|m| m.is_dir()) {
        let mut archive = false;
        for marker in ["index.json", "manifest.json", "repositories"] {
            archive |= is_file(&dir.join(marker)).await;
        }
        if !archive {
            return Ok(Provisioned { rootfs: dir, config: ImageConfig::default() });
        }
        Source::Layout(dir)
    } else {
        let ours = req.reference.tarball_in(&req.registry);
        let mesos = req.reference.mesos_tarball_in(&req.registry);
        if is_file(&ours).await {
            Source::Archive(ours)
        } else if is_file(&mesos).await {
            Source::Archive(mesos)
        } else {
            return Err(ImageError::NotFound {
                image: req.image.clone(),
                registry: req.registry.clone(),
                dir,
                tarball: ours,
                mesos_tarball: mesos,
            });
        }
    };
    let stored = req.reference.stored_in(&req.store);
    if let Some(config) = stored_config(&req.image, &stored).await? {
        return Ok(Provisioned { rootfs: stored.join(STORED_ROOTFS), config });
    }
    let from = match &source {
        Source::Archive(p) | Source::Layout(p) => p.clone(),
    };
    let fail = |source| ImageError::Unpack { image: req.image.clone(), from, source: Box::new(source) };
    let tmp = req.store.join(format!(".unpacking-{}", uuid::Uuid::new_v4()));
    let result = unpack(req, source, &tmp, &stored).await.map_err(fail);
    let _ = tokio::fs::remove_dir_all(&tmp).await;
    result?;
    let config = stored_config(&req.image, &stored).await?.unwrap_or_default();
    Ok(Provisioned { rootfs: stored.join(STORED_ROOTFS), config })
}

async fn is_file(p: &Path) -> bool {
    tokio::fs::metadata(p).await.is_ok_and(|m| m.is_file())
}

/// The config of an image already in the store, or `None` when it is not there yet.
async fn stored_config(image: &str, stored: &Path) -> Result<Option<ImageConfig>, ImageError> {
    let path = stored.join(STORED_CONFIG);
    match tokio::fs::read(&path).await {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| ImageError::Damaged {
            image: image.to_string(),
            path,
            stored: stored.to_path_buf(),
            source,
        }),
        Err(_) => Ok(None),
    }
}

/// Builds the image in `tmp` (the archive unpacked, then the layers applied) and renames it to `stored`.
async fn unpack(req: &ImageRequest, source: Source, tmp: &Path, stored: &Path) -> Result<(), UnpackError> {
    let image_dir = tmp.join("image");
    let create = |path: &Path| {
        let path = path.to_path_buf();
        async move { tokio::fs::create_dir_all(&path).await.map_err(|source| UnpackError::Create { path, source }) }
    };
    create(&image_dir).await?;
    let (archive_dir, tarball) = match source {
        Source::Layout(dir) => (dir, None),
        Source::Archive(tarball) => {
            let dir = tmp.join("archive");
            create(&dir).await?;
            (dir, Some(tarball))
        }
    };
    let reference = req.reference.clone();
    let build_dir = image_dir.clone();
    tokio::task::spawn_blocking(move || {
        if let Some(tarball) = &tarball {
            crate::tarball::unpack_file(tarball, &archive_dir, "the archive")?;
        }
        build(&archive_dir, tarball.is_some(), &build_dir, &reference)
    })
    .await
    .map_err(UnpackError::Thread)??;
    if let Some(parent) = stored.parent() {
        create(parent).await?;
    }
    match tokio::fs::rename(&image_dir, stored).await {
        Ok(()) => Ok(()),
        // Another launch of the same image won the race: use its copy.
        Err(_) if tokio::fs::metadata(stored.join(STORED_CONFIG)).await.is_ok() => Ok(()),
        Err(source) => Err(UnpackError::Rename { stored: stored.to_path_buf(), source }),
    }
}

/// Blocking: the root filesystem and config of the archive unpacked in `archive_dir`, built in `image_dir`. A
/// tarball that is no image archive is a root filesystem itself.
fn build(archive_dir: &Path, tarball: bool, image_dir: &Path, reference: &ImageRef) -> Result<(), UnpackError> {
    let rootfs = image_dir.join(STORED_ROOTFS);
    let config = match archive::plan(archive_dir, reference)? {
        Some(plan) => {
            std::fs::create_dir(&rootfs).map_err(|source| UnpackError::Create { path: rootfs.clone(), source })?;
            let count = plan.layers.len();
            for (i, layer) in plan.layers.iter().enumerate() {
                layers::apply(&rootfs, &layer.path, &layer.expected).map_err(|source| UnpackError::Layer {
                    index: i + 1,
                    count,
                    name: layer.name.clone(),
                    source,
                })?;
            }
            plan.config
        }
        None if tarball => {
            std::fs::rename(archive_dir, &rootfs).map_err(UnpackError::Move)?;
            ImageConfig::default()
        }
        None => return Err(UnpackError::NotAnArchive(archive_dir.to_path_buf())),
    };
    let text = serde_json::to_vec_pretty(&config).map_err(UnpackError::Encode)?;
    agora_runtime::write_atomically(&image_dir.join(STORED_CONFIG), &text, agora_runtime::Durability::ProcessCrash)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_agent_without_a_registry_or_with_process_isolation_cannot_run_images() {
        let w = Path::new("/w");
        let err = ImageSupport::new(None, true).request("busybox", w).unwrap_err().to_string();
        assert!(err.contains("image 'busybox'") && err.contains("--docker-registry"), "{err}");
        let err = ImageSupport::new(Some("/reg".into()), false).request("busybox", w).unwrap_err().to_string();
        assert!(err.contains("image 'busybox' from the registry /reg") && err.contains("--isolation"), "{err}");
        let err = ImageSupport::new(Some("/reg".into()), true).request("../x", w).unwrap_err().to_string();
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
    fn the_store_is_under_the_work_dir() {
        let r = ImageRef::parse("library/busybox").unwrap();
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
        let p = provision(&request("base:v1", reg.path(), work.path())).await.unwrap();
        assert_eq!(p, Provisioned { rootfs: reg.path().join("base/v1"), config: ImageConfig::default() });
        assert!(!store_dir(work.path()).exists(), "nothing is unpacked");
    }

    fn store_entries(work: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(store_dir(work))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_rootfs_tarball_is_unpacked_once_into_the_store_and_reused() {
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
        let p = provision(&req).await.unwrap();
        assert_eq!(p.rootfs, work.path().join("store/docker/base/latest/rootfs"));
        assert_eq!(p.config, ImageConfig::default());
        assert_eq!(std::fs::read_to_string(p.rootfs.join("etc/marker")).unwrap(), "one");
        // Reused: a marker written into the stored copy survives a second provision.
        std::fs::write(p.rootfs.join("etc/marker"), "kept").unwrap();
        assert_eq!(provision(&req).await.unwrap().rootfs, p.rootfs);
        assert_eq!(std::fs::read_to_string(p.rootfs.join("etc/marker")).unwrap(), "kept");
        assert_eq!(store_entries(work.path()), vec!["base".to_string()], "no temporary directory is left");
    }

    #[tokio::test]
    async fn a_broken_tarball_fails_naming_it_and_leaves_nothing() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(reg.path().join("base")).unwrap();
        std::fs::write(reg.path().join("base/latest.tar"), "not a tarball").unwrap();
        let err = provision(&request("base", reg.path(), work.path())).await.unwrap_err().to_string();
        assert!(err.contains("cannot unpack image 'base'") && err.contains("base/latest.tar"), "{err}");
        assert!(!work.path().join("store/docker/base/latest").exists());
        assert!(store_entries(work.path()).is_empty(), "no temporary directory is left");
    }

    #[tokio::test]
    async fn a_missing_image_names_the_image_and_the_paths_searched() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let err = provision(&request("nope:2", reg.path(), work.path())).await.unwrap_err().to_string();
        let r = reg.path().display();
        assert!(err.starts_with(&format!("image 'nope:2' is not in the registry {r}:")), "{err}");
        for searched in [format!("{r}/nope/2 "), format!("{r}/nope/2.tar"), format!("{r}/nope:2.tar")] {
            assert!(err.contains(&searched), "{err}");
        }
    }

    fn sha256(bytes: &[u8]) -> String {
        use sha2::Digest;
        let hex: String = sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// Two layers: the base has `/bin/tool`, `/etc/old` and `/data/{a,b}`; the top deletes `/etc/old` (whiteout),
    /// makes `/data` opaque with `/data/c`, and adds `/etc/new`.
    fn two_layers() -> (Vec<u8>, Vec<u8>) {
        let base = layers::tests::layer(&[
            ("bin/", None),
            ("bin/tool", Some("#!/bin/sh\n")),
            ("etc/", None),
            ("etc/old", Some("old")),
            ("data/", None),
            ("data/a", Some("a")),
            ("data/b", Some("b")),
        ]);
        let top = layers::tests::layer(&[
            ("etc/", None),
            ("etc/.wh.old", None),
            ("etc/new", Some("new")),
            ("data/", None),
            ("data/.wh..wh..opq", None),
            ("data/c", Some("c")),
        ]);
        (base, top)
    }

    fn run_config(diff_ids: &[String]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "architecture": "amd64", "os": "linux",
            "config": {"Env": ["PATH=/bin", "GREETING=hello"], "Entrypoint": ["/bin/tool"], "Cmd": ["--flag"],
                       "WorkingDir": "/work", "User": "nobody"},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }))
        .unwrap()
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, bytes) in files {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            h.set_mode(0o644);
            h.set_size(bytes.len() as u64);
            b.append_data(&mut h, path, *bytes).unwrap();
        }
        b.into_inner().unwrap()
    }

    /// `docker save` output (Docker's pre-25 layout: `<id>/layer.tar`, `<config digest>.json`).
    fn docker_save(base: &[u8], top: &[u8], tag: &str) -> Vec<u8> {
        let config = run_config(&[sha256(base), sha256(top)]);
        let config_name = format!("{}.json", &sha256(&config)[7..]);
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": config_name, "RepoTags": [tag], "Layers": ["l1/layer.tar", "l2/layer.tar"]
        }]))
        .unwrap();
        tar_of(&[("manifest.json", &manifest), (&config_name, &config), ("l1/layer.tar", base), ("l2/layer.tar", top)])
    }

    fn expected_config() -> ImageConfig {
        ImageConfig {
            env: vec!["PATH=/bin".into(), "GREETING=hello".into()],
            entrypoint: vec!["/bin/tool".into()],
            cmd: vec!["--flag".into()],
            working_dir: Some("/work".into()),
            user: Some("nobody".into()),
        }
    }

    fn assert_stacked(rootfs: &Path) {
        let read = |p: &str| std::fs::read_to_string(rootfs.join(p)).ok();
        assert_eq!(read("bin/tool").as_deref(), Some("#!/bin/sh\n"));
        assert_eq!(read("etc/new").as_deref(), Some("new"));
        assert_eq!(read("etc/old"), None, "whited out");
        assert_eq!((read("data/a"), read("data/b"), read("data/c").as_deref()), (None, None, Some("c")), "opaque");
    }

    #[tokio::test]
    async fn a_docker_save_archive_named_as_mesos_names_it_is_stacked_with_its_config() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let (base, top) = two_layers();
        std::fs::create_dir_all(reg.path().join("library")).unwrap();
        std::fs::write(reg.path().join("library/tool:1.0.tar"), docker_save(&base, &top, "library/tool:1.0")).unwrap();
        let p = provision(&request("library/tool:1.0", reg.path(), work.path())).await.unwrap();
        assert_eq!(p.rootfs, work.path().join("store/docker/library/tool/1.0/rootfs"));
        assert_eq!(p.config, expected_config());
        assert_stacked(&p.rootfs);
        // The second task reads the stored config.
        assert_eq!(provision(&request("library/tool:1.0", reg.path(), work.path())).await.unwrap(), p);
    }

    #[tokio::test]
    async fn an_oci_layout_with_gzip_layers_and_an_index_is_stacked_with_its_config() {
        use std::io::Write;
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let (base, top) = two_layers();
        let gz = |b: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(b).unwrap();
            e.finish().unwrap()
        };
        let (base_gz, top_gz) = (gz(&base), gz(&top));
        let config = run_config(&[sha256(&base), sha256(&top)]);
        let desc =
            |media: &str, b: &[u8]| serde_json::json!({"mediaType": media, "digest": sha256(b), "size": b.len()});
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": desc("application/vnd.oci.image.config.v1+json", &config),
            "layers": [desc("application/vnd.oci.image.layer.v1.tar+gzip", &base_gz),
                       desc("application/vnd.oci.image.layer.v1.tar+gzip", &top_gz)],
        }))
        .unwrap();
        let mut platform = desc("application/vnd.oci.image.manifest.v1+json", &manifest);
        platform["platform"] = serde_json::json!({"os": "linux", "architecture": host_architecture_for_tests()});
        let index = serde_json::to_vec(&serde_json::json!({"schemaVersion": 2, "manifests": [platform]})).unwrap();
        let mut top_index = desc("application/vnd.oci.image.index.v1+json", &index);
        top_index["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": "2"});
        let blob = |b: &[u8]| format!("blobs/sha256/{}", &sha256(b)[7..]);
        let files: Vec<(String, Vec<u8>)> = vec![
            ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec()),
            ("index.json".into(), serde_json::to_vec(&serde_json::json!({"manifests": [top_index]})).unwrap()),
            (blob(&index), index.clone()),
            (blob(&manifest), manifest.clone()),
            (blob(&config), config.clone()),
            (blob(&base_gz), base_gz.clone()),
            (blob(&top_gz), top_gz.clone()),
        ];
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
        std::fs::create_dir_all(reg.path().join("tool")).unwrap();
        std::fs::write(reg.path().join("tool/2.tar"), tar_of(&refs)).unwrap();
        let p = provision(&request("tool:2", reg.path(), work.path())).await.unwrap();
        assert_eq!(p.config, expected_config());
        assert_stacked(&p.rootfs);

        // A layer whose bytes do not match its digest (the same tar, compressed with another gzip header) fails
        // naming the image, the layer and the problem.
        let mut e = flate2::GzBuilder::new().filename("other").write(Vec::new(), flate2::Compression::fast());
        e.write_all(&top).unwrap();
        let bad_top = e.finish().unwrap();
        let mut files = files;
        files[6].1 = bad_top.clone();
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
        std::fs::write(reg.path().join("tool/3.tar"), tar_of(&refs)).unwrap();
        let err = provision(&request("tool:3", reg.path(), work.path())).await.unwrap_err().to_string();
        assert!(err.starts_with("cannot unpack image 'tool:3' from "), "{err}");
        assert!(err.contains(&format!("layer 2 of 2 ({})", sha256(&top_gz))), "{err}");
        let problem = format!(
            "its digest is {}, not {} as the image says: the archive is corrupt",
            sha256(&bad_top),
            sha256(&top_gz)
        );
        assert!(err.ends_with(&problem), "{err}");
        assert!(!work.path().join("store/docker/tool/3").exists());
    }

    #[tokio::test]
    async fn a_pre_1_10_docker_save_archive_follows_its_layers_parents() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let (base, top) = two_layers();
        let repositories = serde_json::to_vec(&serde_json::json!({"old": {"v1": "topid"}})).unwrap();
        let top_json = serde_json::to_vec(&serde_json::json!({"id": "topid", "parent": "baseid",
            "config": {"Env": ["A=1"], "Cmd": ["/bin/tool"]}}))
        .unwrap();
        let base_json = serde_json::to_vec(&serde_json::json!({"id": "baseid"})).unwrap();
        let archive = tar_of(&[
            ("repositories", &repositories),
            ("topid/json", &top_json),
            ("topid/layer.tar", &top),
            ("baseid/json", &base_json),
            ("baseid/layer.tar", &base),
        ]);
        std::fs::write(reg.path().join("old:v1.tar"), archive).unwrap();
        let p = provision(&request("old:v1", reg.path(), work.path())).await.unwrap();
        assert_eq!(p.config, ImageConfig { env: v(&["A=1"]), cmd: v(&["/bin/tool"]), ..Default::default() });
        assert_stacked(&p.rootfs);
    }

    #[tokio::test]
    async fn an_unpacked_archive_directory_is_stacked_into_the_store() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let (base, top) = two_layers();
        let dir = reg.path().join("tool/unpacked");
        std::fs::create_dir_all(&dir).unwrap();
        tar::Archive::new(docker_save(&base, &top, "tool:unpacked").as_slice()).unpack(&dir).unwrap();
        let p = provision(&request("tool:unpacked", reg.path(), work.path())).await.unwrap();
        assert_eq!(p.rootfs, work.path().join("store/docker/tool/unpacked/rootfs"));
        assert_eq!(p.config, expected_config());
        assert_stacked(&p.rootfs);
    }

    fn host_architecture_for_tests() -> &'static str {
        archive::tests_host_architecture()
    }

    #[tokio::test]
    async fn a_missing_layer_or_a_corrupt_archive_fails_naming_the_image_and_the_problem() {
        let reg = tempfile::tempdir().unwrap();
        let work = tempfile::tempdir().unwrap();
        let (base, top) = two_layers();
        std::fs::create_dir_all(reg.path().join("img")).unwrap();
        // The manifest names a layer the archive lacks.
        let config = run_config(&[sha256(&base), sha256(&top)]);
        let manifest = serde_json::to_vec(&serde_json::json!([{
            "Config": "c.json", "RepoTags": ["img:gap"], "Layers": ["l1/layer.tar", "l2/layer.tar"]
        }]))
        .unwrap();
        let gap = tar_of(&[("manifest.json", &manifest), ("c.json", &config), ("l1/layer.tar", &base)]);
        std::fs::write(reg.path().join("img/gap.tar"), gap).unwrap();
        let err = provision(&request("img:gap", reg.path(), work.path())).await.unwrap_err().to_string();
        assert!(err.starts_with("cannot unpack image 'img:gap' from "), "{err}");
        assert!(err.contains("layer 'l2/layer.tar' listed in manifest.json is missing from the archive"), "{err}");
        // A layer swapped for another: its uncompressed digest is not the config's diff id.
        let swapped = tar_of(&[
            ("manifest.json", &manifest),
            ("c.json", &config),
            ("l1/layer.tar", &base),
            ("l2/layer.tar", &base),
        ]);
        std::fs::write(reg.path().join("img/swapped.tar"), swapped).unwrap();
        let err = provision(&request("img:swapped", reg.path(), work.path())).await.unwrap_err().to_string();
        assert!(err.contains("layer 2 of 2 (l2/layer.tar)") && err.contains("rootfs.diff_ids"), "{err}");
        assert!(err.contains(&sha256(&top)) && err.contains("corrupt"), "{err}");
        // A config named by its digest whose bytes changed.
        let renamed = docker_save(&base, &top, "img:renamed");
        let mut archive = tar::Archive::new(renamed.as_slice());
        let mut files = vec![];
        for e in archive.entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().display().to_string();
            let mut bytes = vec![];
            std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
            if path.ends_with(".json") && path != "manifest.json" {
                bytes.push(b' ');
            }
            files.push((path, bytes));
        }
        let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), b.as_slice())).collect();
        std::fs::write(reg.path().join("img/renamed.tar"), tar_of(&refs)).unwrap();
        let err = provision(&request("img:renamed", reg.path(), work.path())).await.unwrap_err().to_string();
        assert!(err.contains("the image config") && err.contains("the archive is corrupt"), "{err}");
        // A truncated archive.
        let whole = docker_save(&base, &top, "img:cut");
        std::fs::write(reg.path().join("img/cut.tar"), &whole[..whole.len() / 2]).unwrap();
        let err = provision(&request("img:cut", reg.path(), work.path())).await.unwrap_err().to_string();
        assert!(err.starts_with("cannot unpack image 'img:cut' from "), "{err}");
        assert!(store_entries(work.path()).is_empty(), "nothing is stored: {:?}", store_entries(work.path()));
    }

    fn spec_with(command: agora_proto::model::CommandInfo, user: Option<&str>) -> LaunchSpec {
        LaunchSpec {
            container_id: "c".into(),
            task_id: "t".into(),
            framework_id: "f".into(),
            env: vec![("PATH".into(), "/agent/bin".into()), ("MESOS_SANDBOX".into(), "/s".into())],
            command,
            sandbox: "/s".into(),
            limits: Default::default(),
            user: user.map(Into::into),
            rootfs: None,
            image: None,
            volumes: vec![],
            working_dir: None,
            network: None,
        }
    }

    fn exec(value: &str, args: &[&str]) -> agora_proto::model::CommandInfo {
        agora_proto::model::CommandInfo {
            shell: false,
            value: value.into(),
            arguments: args.iter().map(|a| a.to_string()).collect(),
            ..agora_proto::model::CommandInfo::shell("")
        }
    }

    type ValueAndArgv = (String, Vec<String>);

    /// (value, argv) after applying an image with `entrypoint` and `cmd` to a task command.
    fn launched(
        entrypoint: &[&str],
        cmd: &[&str],
        command: agora_proto::model::CommandInfo,
    ) -> Result<ValueAndArgv, ImageError> {
        let config = ImageConfig {
            entrypoint: entrypoint.iter().map(|s| s.to_string()).collect(),
            cmd: cmd.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        let mut spec = spec_with(command, None);
        apply_config("img", &config, &mut spec)?;
        Ok((spec.command.value, spec.command.arguments))
    }

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn the_command_follows_mesos_docker_runtime_table() {
        let none = exec("", &[]);
        let args = exec("", &["a1", "a2"]);
        // sh=0 value=0 argv=0
        assert!(launched(&[], &[], none.clone()).unwrap_err().to_string().contains("image 'img' has neither"));
        assert_eq!(launched(&[], &["c0", "c1"], none.clone()).unwrap(), ("c0".into(), v(&["c0", "c1"])));
        assert_eq!(launched(&["e0", "e1"], &[], none.clone()).unwrap(), ("e0".into(), v(&["e0", "e1"])));
        assert_eq!(launched(&["e0", "e1"], &["c0"], none).unwrap(), ("e0".into(), v(&["e0", "e1", "c0"])));
        // sh=0 value=0 argv=1
        assert!(launched(&[], &[], args.clone()).is_err());
        assert_eq!(launched(&[], &["c0", "c1"], args.clone()).unwrap(), ("c0".into(), v(&["c0", "a1", "a2"])));
        assert_eq!(launched(&["e0"], &["c0"], args).unwrap(), ("e0".into(), v(&["e0", "a1", "a2"])));
        // value=1: the task's command, whatever the image says.
        assert_eq!(launched(&["e0"], &["c0"], exec("/x", &["x", "y"])).unwrap(), ("/x".into(), v(&["x", "y"])));
        let shell = agora_proto::model::CommandInfo::shell("echo hi");
        assert_eq!(launched(&["e0"], &["c0"], shell).unwrap(), ("echo hi".into(), vec![]));
    }

    #[test]
    fn the_image_env_lies_beneath_the_task_and_its_workdir_and_user_apply() {
        let config = ImageConfig {
            env: v(&["PATH=/image/bin", "LANG=C", "MESOS_SANDBOX=/nope", "TASKVAR=image", "NOVALUE"]),
            working_dir: Some("srv".into()),
            user: Some("1000:1000".into()),
            ..Default::default()
        };
        let mut command = agora_proto::model::CommandInfo::shell("true");
        command.environment = vec![("TASKVAR".into(), "task".into())];
        let mut spec = spec_with(command.clone(), None);
        spec.env.push(("TASKVAR".into(), "task".into()));
        apply_config("img", &config, &mut spec).unwrap();
        let get = |k: &str| spec.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("PATH"), Some("/image/bin"), "the image's PATH replaces the agent's default");
        assert_eq!(get("LANG"), Some("C"));
        assert_eq!(get("MESOS_SANDBOX"), Some("/s"), "the agent's variables win");
        assert_eq!(get("TASKVAR"), Some("task"), "the task's variables win");
        assert_eq!(get("NOVALUE"), Some(""));
        assert_eq!(spec.working_dir, Some(PathBuf::from("/srv")));
        assert_eq!(spec.user.as_deref(), Some("1000:1000"));

        // A task that sets PATH keeps it; a task user beats the image's.
        command.environment.push(("PATH".into(), "/task/bin".into()));
        let mut spec = spec_with(command, Some("root"));
        spec.env[0].1 = "/task/bin".into();
        apply_config("img", &config, &mut spec).unwrap();
        assert_eq!(spec.env[0], ("PATH".to_string(), "/task/bin".to_string()));
        assert_eq!(spec.user.as_deref(), Some("root"));
    }
}
