//! Reading an image archive once it is unpacked in a directory: `docker save` output (`manifest.json` naming a
//! config and the layer tarballs, oldest first; both Docker's old `<id>/layer.tar` and its newer `blobs/sha256/<hex>`
//! form; before Docker 1.10 only `repositories` and each layer's `<id>/json` parent, as Mesos reads it) or an OCI
//! image layout (`index.json`, `blobs/sha256/<hex>`, image indexes followed to this machine's
//! platform). The result is the ordered layers with the digests the image gives for them, and the runtime config
//! (`Env`, `Entrypoint`, `Cmd`, `WorkingDir`, `User`). Blobs named by digest (manifests, configs) are checked against
//! it here; layers are checked while they are applied ([`super::layers`]). Paths from the archive are confined to
//! it. A directory holding none of `manifest.json`, `index.json` and `repositories` is no image archive: a plain
//! root filesystem.

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::layers::Expected;
use super::{ImageConfig, ImageRef};

/// What is wrong with an image archive; each names the file, blob or entry.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("{what} is missing from the archive")]
    Missing { what: String },
    #[error("cannot read {what}: {source}")]
    Read { what: String, source: std::io::Error },
    #[error("{what} is not valid: {source}")]
    Invalid { what: String, source: serde_json::Error },
    #[error("{what} '{path}' is not a path inside the archive")]
    Outside { what: &'static str, path: String },
    #[error("{what}: digest '{digest}' is not a sha256 digest")]
    NotSha256 { what: String, digest: String },
    #[error("{what} has digest {got}, not {want}: the archive is corrupt")]
    Digest { what: String, got: String, want: String },
    #[error("{what} has {got} bytes, not {want}: the archive is corrupt")]
    Size { what: String, got: usize, want: u64 },
    /// The archive does not name one image for this task and machine; the message says how.
    #[error("{0}")]
    Structure(String),
}

/// Each layer's uncompressed digest, where the image config gives them.
type DiffIds = Vec<Option<String>>;

/// What to stack, oldest first, and how to run the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImagePlan {
    pub layers: Vec<Layer>,
    pub config: ImageConfig,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    /// Inside the unpacked archive.
    pub path: PathBuf,
    /// How the archive names it (for messages).
    pub name: String,
    pub expected: Expected,
}

/// The plan of the image archive unpacked in `dir`, or `None` when `dir` is no image archive.
pub fn plan(dir: &Path, reference: &ImageRef) -> Result<Option<ImagePlan>, ArchiveError> {
    if dir.join("manifest.json").is_file() {
        return docker_plan(dir, reference).map(Some);
    }
    if dir.join("index.json").is_file() {
        return oci_plan(dir, reference).map(Some);
    }
    if dir.join("repositories").is_file() {
        return legacy_plan(dir, reference).map(Some);
    }
    Ok(None)
}

/// Docker's output before 1.10, as Mesos's local puller reads it: `repositories` names the top layer of
/// `NAME:TAG`, each `<id>/json` its `parent`, and the top one's `config` the runtime config. Layer ids are no
/// content digests, so nothing is checked.
fn legacy_plan(dir: &Path, reference: &ImageRef) -> Result<ImagePlan, ArchiveError> {
    #[derive(Deserialize)]
    struct V1 {
        #[serde(default)]
        parent: Option<String>,
        #[serde(default)]
        config: Option<RunConfig>,
    }
    let repositories: std::collections::HashMap<String, std::collections::HashMap<String, String>> =
        parse(&read(&dir.join("repositories"), "repositories")?, "repositories")?;
    let tags = repositories
        .iter()
        .find(|(repo, _)| **repo == reference.name || repo.ends_with(&format!("/{}", reference.name)))
        .map(|(_, tags)| tags)
        .ok_or_else(|| ArchiveError::Structure(format!("repository '{}' is not in 'repositories'", reference.name)))?;
    let top = tags
        .get(&reference.tag)
        .ok_or_else(|| ArchiveError::Structure(format!("tag '{}' is not in 'repositories'", reference.tag)))?;
    let mut ids: Vec<String> = vec![];
    let mut next = Some(top.clone());
    let mut config = None;
    while let Some(id) = next.take().filter(|id| !id.is_empty()) {
        if ids.len() > 1000 || ids.contains(&id) {
            return Err(ArchiveError::Structure(format!("the layers' parents of '{top}' loop or go on too long")));
        }
        let what = format!("the manifest of layer '{id}'");
        let v1: V1 = parse(&read(&inside(dir, &format!("{id}/json"), "layer")?, &what)?, &what)?;
        if config.is_none() {
            config = Some(ConfigFile { config: v1.config, rootfs: None });
        }
        next = v1.parent;
        ids.push(id);
    }
    let mut layers = Vec::new();
    for id in ids.iter().rev() {
        let name = format!("{id}/layer.tar");
        let path = inside(dir, &name, "layer")?;
        if !path.is_file() {
            return Err(ArchiveError::Missing { what: format!("layer '{name}' named in 'repositories'") });
        }
        layers.push(Layer { path, name, expected: Expected::default() });
    }
    Ok(ImagePlan { layers, config: config.unwrap_or_default().image_config() })
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// The image config file: `config` (how to run) and `rootfs.diff_ids` (the uncompressed layers' digests).
#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<RunConfig>,
    #[serde(default)]
    rootfs: Option<RootFs>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase")]
struct RunConfig {
    env: Option<Vec<String>>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    working_dir: Option<String>,
    user: Option<String>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

impl ConfigFile {
    fn image_config(&self) -> ImageConfig {
        let c = self.config.as_ref();
        let list = |f: fn(&RunConfig) -> &Option<Vec<String>>| c.and_then(|c| f(c).clone()).unwrap_or_default();
        let text = |f: fn(&RunConfig) -> &Option<String>| c.and_then(|c| f(c).clone()).filter(|s| !s.is_empty());
        ImageConfig {
            env: list(|c| &c.env),
            entrypoint: list(|c| &c.entrypoint),
            cmd: list(|c| &c.cmd),
            working_dir: text(|c| &c.working_dir),
            user: text(|c| &c.user),
        }
    }

    /// The diff id of each of `layers` layers, if the config lists them.
    fn diff_ids(&self, layers: usize) -> Result<DiffIds, ArchiveError> {
        match &self.rootfs {
            None => Ok(vec![None; layers]),
            Some(r) if r.diff_ids.len() == layers => Ok(r.diff_ids.iter().cloned().map(Some).collect()),
            Some(r) => Err(ArchiveError::Structure(format!(
                "the image config lists {} rootfs.diff_ids for {layers} layers",
                r.diff_ids.len()
            ))),
        }
    }
}

/// Whether a `RepoTags` entry or a `ref.name` annotation names `reference` (with or without a registry host).
fn names(tag: &str, reference: &ImageRef) -> bool {
    let full = format!("{}:{}", reference.name, reference.tag);
    tag == full || tag.ends_with(&format!("/{full}")) || tag == reference.tag
}

/// A relative path inside the archive; `..` and absolute paths refused.
fn inside(dir: &Path, path: &str, what: &'static str) -> Result<PathBuf, ArchiveError> {
    let p = Path::new(path);
    if p.as_os_str().is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(ArchiveError::Outside { what, path: path.to_string() });
    }
    Ok(dir.join(p))
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>, ArchiveError> {
    std::fs::read(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => ArchiveError::Missing { what: what.to_string() },
        _ => ArchiveError::Read { what: what.to_string(), source },
    })
}

fn parse<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ArchiveError> {
    serde_json::from_slice(bytes).map_err(|source| ArchiveError::Invalid { what: what.to_string(), source })
}

fn sha256(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// The hex of a `sha256:<hex>` digest; other algorithms and malformed digests refused (naming `what` has it).
fn sha256_hex<'a>(digest: &'a str, what: &str) -> Result<&'a str, ArchiveError> {
    match digest.strip_prefix("sha256:") {
        Some(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => {
            Ok(hex)
        }
        _ => Err(ArchiveError::NotSha256 { what: what.to_string(), digest: digest.to_string() }),
    }
}

/// The digest a `blobs/sha256/<hex>` or `<hex>.json` path names, if it names one.
fn digest_in_name(path: &str) -> Option<String> {
    let file = Path::new(path).file_name()?.to_str()?;
    let hex = file.strip_suffix(".json").unwrap_or(file);
    let digest = format!("sha256:{hex}");
    sha256_hex(&digest, "").is_ok().then_some(digest)
}

fn check_digest(bytes: &[u8], want: &str, what: &str) -> Result<(), ArchiveError> {
    let got = sha256(bytes);
    if got != want {
        return Err(ArchiveError::Digest { what: what.to_string(), got, want: want.to_string() });
    }
    Ok(())
}

fn docker_plan(dir: &Path, reference: &ImageRef) -> Result<ImagePlan, ArchiveError> {
    let entries: Vec<DockerEntry> = parse(&read(&dir.join("manifest.json"), "manifest.json")?, "manifest.json")?;
    let entry = match entries.len() {
        0 => return Err(ArchiveError::Structure("manifest.json lists no image".into())),
        1 => &entries[0],
        n => entries.iter().find(|e| e.repo_tags.iter().flatten().any(|t| names(t, reference))).ok_or_else(|| {
            let tags: Vec<&str> =
                entries.iter().flat_map(|e| e.repo_tags.iter().flatten()).map(String::as_str).collect();
            ArchiveError::Structure(format!(
                "manifest.json holds {n} images and none is tagged {}:{} (tags: {})",
                reference.name,
                reference.tag,
                tags.join(", ")
            ))
        })?,
    };
    let what = format!("the image config '{}'", entry.config);
    let bytes = read(&inside(dir, &entry.config, "the image config")?, &what)?;
    if let Some(want) = digest_in_name(&entry.config) {
        check_digest(&bytes, &want, &what)?;
    }
    let config: ConfigFile = parse(&bytes, &what)?;
    let diff_ids = config.diff_ids(entry.layers.len())?;
    let mut layers = Vec::new();
    for (name, diff_id) in entry.layers.iter().zip(diff_ids) {
        let path = inside(dir, name, "layer")?;
        if !path.is_file() {
            return Err(ArchiveError::Missing { what: format!("layer '{name}' listed in manifest.json") });
        }
        let blob = name.starts_with("blobs/").then(|| digest_in_name(name)).flatten();
        layers.push(Layer { path, name: name.clone(), expected: Expected { blob, diff_id } });
    }
    Ok(ImagePlan { layers, config: config.image_config() })
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(default, rename = "mediaType")]
    media_type: String,
    digest: String,
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    annotations: std::collections::HashMap<String, String>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Deserialize)]
struct Platform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
}

/// A blob of the layout, checked against its descriptor's digest and size.
fn blob(dir: &Path, d: &Descriptor, what: &str) -> Result<Vec<u8>, ArchiveError> {
    let hex = sha256_hex(&d.digest, what)?;
    let what = format!("{what} {}", d.digest);
    let bytes = read(&dir.join("blobs/sha256").join(hex), &what)?;
    if let Some(size) = d.size.filter(|s| *s != bytes.len() as u64) {
        return Err(ArchiveError::Size { what, got: bytes.len(), want: size });
    }
    check_digest(&bytes, &d.digest, &what)?;
    Ok(bytes)
}

/// Docker's name for this machine's architecture.
fn host_architecture() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn oci_plan(dir: &Path, reference: &ImageRef) -> Result<ImagePlan, ArchiveError> {
    #[derive(Deserialize)]
    struct Index {
        manifests: Vec<Descriptor>,
    }
    let index: Index = parse(&read(&dir.join("index.json"), "index.json")?, "index.json")?;
    let mut chosen = match index.manifests.len() {
        0 => return Err(ArchiveError::Structure("index.json lists no manifest".into())),
        1 => {
            index.manifests.into_iter().next().ok_or(ArchiveError::Structure("index.json lists no manifest".into()))?
        }
        n => {
            let named = |d: &Descriptor| {
                ["org.opencontainers.image.ref.name", "io.containerd.image.name"]
                    .iter()
                    .any(|k| d.annotations.get(*k).is_some_and(|t| names(t, reference)))
            };
            index.manifests.into_iter().find(named).ok_or_else(|| {
                ArchiveError::Structure(format!(
                    "index.json lists {n} manifests and none is named {}:{} (annotation \
                     org.opencontainers.image.ref.name)",
                    reference.name, reference.tag
                ))
            })?
        }
    };
    // Image indexes (multi-platform images) are followed down to this machine's manifest.
    for _ in 0..4 {
        let bytes = blob(dir, &chosen, "the manifest")?;
        let doc: Value = parse(&bytes, &format!("the manifest {}", chosen.digest))?;
        let Some(list) = doc.get("manifests") else { return manifest_plan(dir, doc) };
        let what = format!("the image index {}", chosen.digest);
        let inner: Vec<Descriptor> = serde_json::from_value(list.clone())
            .map_err(|source| ArchiveError::Invalid { what: what.clone(), source })?;
        let arch = host_architecture();
        let platforms: Vec<String> =
            inner.iter().filter_map(|d| d.platform.as_ref()).map(|p| format!("{}/{}", p.os, p.architecture)).collect();
        chosen = inner
            .into_iter()
            .find(|d| d.platform.as_ref().is_some_and(|p| p.os == "linux" && p.architecture == arch))
            .ok_or_else(|| {
                ArchiveError::Structure(format!(
                    "{what} has no manifest for linux/{arch} (it has {})",
                    platforms.join(", ")
                ))
            })?;
    }
    Err(ArchiveError::Structure("index.json nests image indexes too deeply".into()))
}

fn manifest_plan(dir: &Path, doc: Value) -> Result<ImagePlan, ArchiveError> {
    #[derive(Deserialize)]
    struct Manifest {
        config: Descriptor,
        #[serde(default)]
        layers: Vec<Descriptor>,
    }
    let m: Manifest =
        serde_json::from_value(doc).map_err(|source| ArchiveError::Invalid { what: "the manifest".into(), source })?;
    let bytes = blob(dir, &m.config, "the image config")?;
    let config: ConfigFile = parse(&bytes, &format!("the image config {}", m.config.digest))?;
    let diff_ids = config.diff_ids(m.layers.len())?;
    let mut layers = Vec::new();
    for (l, diff_id) in m.layers.iter().zip(diff_ids) {
        let hex = sha256_hex(&l.digest, "layer")?;
        let path = dir.join("blobs/sha256").join(hex);
        if !path.is_file() {
            return Err(ArchiveError::Missing { what: format!("layer {} ({})", l.digest, l.media_type) });
        }
        layers.push(Layer {
            path,
            name: l.digest.clone(),
            expected: Expected { blob: Some(l.digest.clone()), diff_id },
        });
    }
    Ok(ImagePlan { layers, config: config.image_config() })
}

/// [`host_architecture`], for the image tests that build a multi-platform index.
#[cfg(test)]
pub fn tests_host_architecture() -> &'static str {
    host_architecture()
}
