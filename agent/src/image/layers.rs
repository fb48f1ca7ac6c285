//! Applying one image layer to a root filesystem being built, as Docker's image spec and the OCI image spec define
//! it: the layer's tar entries are written over what the lower layers left, a `.wh.NAME` entry deletes `NAME` of the
//! lower layers, a `.wh..wh..opq` entry empties its directory of what the lower layers put there (whiteouts only
//! hide lower layers, never entries of their own layer), and other `.wh..wh.*` entries (aufs's bookkeeping) are
//! skipped. A layer may be a plain tar or gzip-compressed; its sha256 is checked as stored (an OCI blob digest) and
//! uncompressed (the config's `rootfs.diff_ids`) where the image gives them, in the same pass that unpacks it.
//!
//! Nothing is written or deleted outside the root: entry paths are normalised (`..` refused), and every parent
//! directory is resolved, symlinks included, inside the root before anything is done under it. Called by
//! [`super::provision`] on a blocking thread, into a staging directory that is thrown away on any error.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::tarball::{self, Compression, TarballError};

/// The whiteout prefix of a deleted entry.
const WHITEOUT: &str = ".wh.";
/// The entry that makes its directory opaque.
const OPAQUE: &str = ".wh..wh..opq";
/// What an entry that leaves the root is said to leave.
const ROOT: &str = "the root filesystem";

/// Why a layer could not be applied; messages say what is wrong without naming the layer (the caller does).
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error(transparent)]
    Tarball(#[from] TarballError),
    #[error("its digest is {got}, not {want} as the image says: the archive is corrupt")]
    Digest { got: String, want: String },
    #[error("its uncompressed digest is {got}, not {want} as the image's rootfs.diff_ids say: the archive is corrupt")]
    DiffId { got: String, want: String },
    #[error("'{}' resolves to {} outside the root filesystem", rel.display(), real.display())]
    Outside { rel: PathBuf, real: PathBuf },
    #[error("cannot resolve '{}': {source}", path.display())]
    Resolve { path: PathBuf, source: std::io::Error },
    #[error("cannot read {}: {source}", path.display())]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error("cannot remove {}: {source}", path.display())]
    Remove { path: PathBuf, source: std::io::Error },
}

/// What the image says a layer's digests are (`sha256:<hex>`), where it says it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expected {
    /// Of the layer as stored (an OCI descriptor's `digest`, a `blobs/sha256/<hex>` file name).
    pub blob: Option<String>,
    /// Of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Option<String>,
}

/// Reads through, hashing what it reads.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing { inner, hash: Sha256::new() }
    }
}

fn hex_digest(hash: Sha256) -> String {
    let bytes = hash.finalize();
    let mut s = String::with_capacity(7 + 64);
    s.push_str("sha256:");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Applies the layer at `layer` to `root` (an existing directory) and checks its digests.
pub fn apply(root: &Path, layer: &Path, expected: &Expected) -> Result<(), LayerError> {
    let file = std::fs::File::open(layer).map_err(TarballError::Open)?;
    let mut raw = BufReader::new(Hashing::new(file));
    let head = raw.fill_buf().map_err(TarballError::Read)?;
    let (raw_hash, diff_hash) = match tarball::compression(head, "layer")? {
        Compression::Gzip => {
            let mut tar = Hashing::new(flate2::read::MultiGzDecoder::new(raw));
            apply_tar(root, &mut tar)?;
            drain(&mut tar)?;
            let mut raw = tar.inner.into_inner();
            drain(&mut raw)?;
            (raw.into_inner().hash, tar.hash)
        }
        Compression::Plain => {
            let mut tar = Hashing::new(raw);
            apply_tar(root, &mut tar)?;
            drain(&mut tar)?;
            let hash = tar.hash.clone();
            (tar.inner.into_inner().hash, hash)
        }
    };
    let (blob, diff_id) = (hex_digest(raw_hash), hex_digest(diff_hash));
    if let Some(want) = expected.blob.as_deref().filter(|w| *w != blob) {
        return Err(LayerError::Digest { got: blob, want: want.to_string() });
    }
    if let Some(want) = expected.diff_id.as_deref().filter(|w| *w != diff_id) {
        return Err(LayerError::DiffId { got: diff_id, want: want.to_string() });
    }
    Ok(())
}

/// Reads what the tar reader left (its end padding), so that the digests cover the whole stream.
fn drain(r: &mut impl Read) -> Result<(), TarballError> {
    std::io::copy(r, &mut std::io::sink()).map(|_| ()).map_err(TarballError::Read)
}

/// Whether `rel`'s parent exists and resolves (symlinks followed) inside `root`; `Ok(false)` when it does not exist.
fn parent_inside(real_root: &Path, root: &Path, rel: &Path) -> Result<bool, LayerError> {
    let parent = rel.parent().map_or_else(|| root.to_path_buf(), |p| root.join(p));
    match std::fs::canonicalize(&parent) {
        Ok(real) if real.starts_with(real_root) => Ok(true),
        Ok(real) => Err(LayerError::Outside { rel: rel.to_path_buf(), real }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTDIR) => Ok(false),
        Err(source) => Err(LayerError::Resolve { path: parent, source }),
    }
}

/// Removes `path` itself (a symlink is removed, never followed); nothing when it does not exist.
fn remove(path: &Path) -> Result<(), LayerError> {
    let result = match std::fs::symlink_metadata(path) {
        Err(_) => return Ok(()),
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    result.map_err(|source| LayerError::Remove { path: path.to_path_buf(), source })
}

fn apply_tar(root: &Path, reader: &mut impl Read) -> Result<(), LayerError> {
    let real_root =
        std::fs::canonicalize(root).map_err(|source| LayerError::Resolve { path: root.to_path_buf(), source })?;
    let mut archive = tarball::archive(reader);
    // Paths written by this layer, which its own whiteouts leave alone.
    let mut written: HashSet<PathBuf> = HashSet::new();
    for entry in archive.entries().map_err(TarballError::NotTar)? {
        let mut entry = entry.map_err(TarballError::Invalid)?;
        let path = entry.path().map_err(TarballError::BadPath)?.into_owned();
        let Some(rel) = tarball::normal(&path, ROOT)? else { continue };
        let name = rel.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if name == OPAQUE {
            let dir_rel = rel.parent().map(Path::to_path_buf).unwrap_or_default();
            if !parent_inside(&real_root, root, &rel)? {
                continue;
            }
            let dir = root.join(&dir_rel);
            let read_error = |source| LayerError::ReadDir { path: dir.clone(), source };
            for child in std::fs::read_dir(&dir).map_err(read_error)? {
                let child = child.map_err(read_error)?;
                if !written.contains(&dir_rel.join(child.file_name())) {
                    remove(&child.path())?;
                }
            }
            continue;
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            // `.wh..wh.*` other than the opaque marker is aufs's own bookkeeping.
            if hidden.starts_with(WHITEOUT) || hidden.is_empty() {
                continue;
            }
            let target = rel.with_file_name(hidden);
            if !written.contains(&target) && parent_inside(&real_root, root, &target)? {
                remove(&root.join(&target))?;
            }
            continue;
        }
        // What the lower layers have here is replaced, unless both are directories (then they merge).
        if parent_inside(&real_root, root, &rel)? {
            let dst = root.join(&rel);
            let keep = entry.header().entry_type().is_dir()
                && std::fs::symlink_metadata(&dst).is_ok_and(|m| m.file_type().is_dir());
            if !keep {
                remove(&dst)?;
            }
        }
        tarball::unpack_entry(&mut entry, root, &rel, ROOT)?;
        written.insert(rel);
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) use crate::tarball::tests::tar_of as layer;
    use crate::tarball::tests::{gzip, with_first_name};

    fn sha256(bytes: &[u8]) -> String {
        let mut h = Sha256::new();
        h.update(bytes);
        hex_digest(h)
    }

    fn apply_bytes(root: &Path, bytes: &[u8], expected: &Expected) -> Result<(), LayerError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        apply(root, file.path(), expected)
    }

    /// Every path under `root`, sorted, directories with a trailing '/', symlinks as `path -> target`.
    fn tree(root: &Path) -> Vec<String> {
        fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                let m = std::fs::symlink_metadata(&p).unwrap();
                if m.file_type().is_symlink() {
                    out.push(format!("{rel} -> {}", std::fs::read_link(&p).unwrap().display()));
                } else if m.is_dir() {
                    out.push(format!("{rel}/"));
                    walk(root, &p, out);
                } else {
                    out.push(format!("{rel}={}", std::fs::read_to_string(&p).unwrap()));
                }
            }
        }
        let mut out = vec![];
        walk(root, root, &mut out);
        out.sort();
        out
    }

    #[test]
    fn layers_stack_and_whiteouts_delete_what_lower_layers_put_there() {
        let root = tempfile::tempdir().unwrap();
        let base = layer(&[
            ("etc/", None),
            ("etc/keep", Some("base")),
            ("etc/gone", Some("base")),
            ("opt/", None),
            ("opt/old/", None),
            ("opt/old/a", Some("a")),
            ("opt/b", Some("b")),
            ("var/", None),
            ("var/dir/", None),
            ("var/dir/x", Some("x")),
            ("lib", Some("->usr/lib")),
        ]);
        apply_bytes(root.path(), &base, &Expected { diff_id: Some(sha256(&base)), blob: None }).unwrap();
        let top = layer(&[
            ("etc/", None),
            ("etc/.wh.gone", None),
            ("etc/keep", Some("top")),
            ("opt/", None),
            ("opt/.wh..wh..opq", None),
            ("opt/new", Some("new")),
            ("var/.wh.dir", None),
            ("var/dir", Some("now a file")),
            ("lib/", None),
            ("lib/libc", Some("c")),
            (".wh..wh.plnk/", None),
            ("etc/.wh.never-there", None),
        ]);
        let packed = gzip(&top);
        let expected = Expected { blob: Some(sha256(&packed)), diff_id: Some(sha256(&top)) };
        apply_bytes(root.path(), &packed, &expected).unwrap();
        assert_eq!(
            tree(root.path()),
            vec!["etc/", "etc/keep=top", "lib/", "lib/libc=c", "opt/", "opt/new=new", "var/", "var/dir=now a file",]
        );
    }

    #[test]
    fn an_opaque_directory_keeps_what_its_own_layer_wrote() {
        let root = tempfile::tempdir().unwrap();
        apply_bytes(root.path(), &layer(&[("d/", None), ("d/lower", Some("l"))]), &Expected::default()).unwrap();
        let top = layer(&[("d/", None), ("d/mine", Some("m")), ("d/.wh..wh..opq", None), ("d/.wh.mine", None)]);
        apply_bytes(root.path(), &top, &Expected::default()).unwrap();
        assert_eq!(tree(root.path()), vec!["d/", "d/mine=m"]);
    }

    #[test]
    fn a_wrong_digest_or_a_broken_layer_is_refused_naming_the_problem() {
        let root = tempfile::tempdir().unwrap();
        let bytes = layer(&[("f", Some("x"))]);
        let wrong = format!("sha256:{}", "0".repeat(64));
        let e = apply_bytes(root.path(), &bytes, &Expected { blob: Some(wrong.clone()), diff_id: None })
            .unwrap_err()
            .to_string();
        assert!(e.contains(&sha256(&bytes)) && e.contains(&wrong) && e.contains("corrupt"), "{e}");
        let e =
            apply_bytes(root.path(), &bytes, &Expected { blob: None, diff_id: Some(wrong) }).unwrap_err().to_string();
        assert!(e.contains("rootfs.diff_ids"), "{e}");
        let e = apply_bytes(root.path(), &bytes[..700], &Expected::default()).unwrap_err().to_string();
        assert!(e.contains("tar") || e.contains("read"), "{e}");
        let e =
            apply_bytes(root.path(), &[0x28, 0xb5, 0x2f, 0xfd, 0, 0], &Expected::default()).unwrap_err().to_string();
        assert!(e.contains("zstd"), "{e}");
    }

    #[test]
    fn nothing_is_written_or_deleted_outside_the_root() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("victim"), "safe").unwrap();
        let root = tempfile::tempdir().unwrap();
        let out = outside.path().display().to_string();
        let escape = layer(&[("esc", Some(&format!("->{out}")))]);
        apply_bytes(root.path(), &escape, &Expected::default()).unwrap();
        let through = layer(&[("esc/.wh.victim", None)]);
        assert!(apply_bytes(root.path(), &through, &Expected::default()).unwrap_err().to_string().contains("outside"));
        let through = layer(&[("esc/planted", Some("x"))]);
        assert!(apply_bytes(root.path(), &through, &Expected::default()).is_err());
        assert_eq!(std::fs::read_to_string(outside.path().join("victim")).unwrap(), "safe");
        assert!(!outside.path().join("planted").exists());
        // A path with '..' cannot be built through the tar crate's checks; write it into the header by hand.
        let raw = with_first_name(layer(&[("placeholder", Some("x"))]), b"../../evil");
        assert!(
            apply_bytes(root.path(), &raw, &Expected::default()).unwrap_err().to_string().contains("leaves the root")
        );
    }
}
