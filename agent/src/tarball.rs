//! Tar archives read in process with the `tar` and `flate2` crates, confined to the directory they are unpacked
//! into: the one home of that rule for image layers ([`crate::image`]), image archives and the fetcher's archives
//! ([`crate::fetcher`]). No `tar` or `gzip` process is run for these.
//!
//! The rule: an entry path is normalised and one holding `..` is refused ([`normal`]); the tar crate's `unpack_in`
//! then resolves every parent directory, symlinks included, and refuses to write anywhere that resolves outside the
//! directory, and checks that a hard link's target lies inside it; an existing file is replaced, never written
//! through (a symlink in the way is removed, not followed). A symlink entry may point anywhere (an image's root
//! filesystem has absolute symlinks); nothing is ever written through it. Plain tar and gzip-compressed streams are
//! read ([`compression`] tells them by their first bytes); zstd, xz and bzip2 are refused by name.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

/// Why an archive could not be unpacked. Messages do not name the archive (the caller does), but name its entries.
#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    #[error("cannot open it: {0}")]
    Open(#[source] std::io::Error),
    #[error("cannot read it: {0}")]
    Read(#[source] std::io::Error),
    #[error("the {what} is {format}-compressed, which this agent cannot read")]
    Compressed { what: &'static str, format: &'static str },
    #[error("it is not a tar archive: {0}")]
    NotTar(#[source] std::io::Error),
    #[error("it is not a valid tar archive: {0}")]
    Invalid(#[source] std::io::Error),
    #[error("an entry has a bad path: {0}")]
    BadPath(#[source] std::io::Error),
    #[error("entry '{}' leaves {root}", entry.display())]
    Escapes { entry: PathBuf, root: &'static str },
    #[error("cannot unpack '{}': {}", entry.display(), chain(source))]
    Unpack { entry: PathBuf, source: std::io::Error },
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
}

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Plain,
    Gzip,
}

/// What a stream's first bytes say it is; `what` names it in the error ("layer", "archive").
pub fn compression(head: &[u8], what: &'static str) -> Result<Compression, TarballError> {
    let refused = |format| Err(TarballError::Compressed { what, format });
    match head {
        [0x1f, 0x8b, ..] => Ok(Compression::Gzip),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => refused("zstd"),
        [0xfd, b'7', b'z', b'X', b'Z', 0x00, ..] => refused("xz"),
        [b'B', b'Z', b'h', ..] => refused("bzip2"),
        _ => Ok(Compression::Plain),
    }
}

/// An error with its causes: the tar crate puts the reason in the source.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(&format!(": {c}"));
        cause = c.source();
    }
    out
}

/// `path` relative, without `.`; `None` for the root itself; an error for `..` (`root` names what it would leave).
pub fn normal(path: &Path, root: &'static str) -> Result<Option<PathBuf>, TarballError> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => {
                return Err(TarballError::Escapes { entry: path.to_path_buf(), root });
            }
        }
    }
    Ok((!out.as_os_str().is_empty()).then_some(out))
}

/// An archive reader set up as every unpacking here wants it: modes and times kept, owners kept where the agent
/// may set them (as root), existing files replaced.
pub fn archive<R: Read>(reader: R) -> tar::Archive<R> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(nix::unistd::Uid::effective().is_root());
    archive.set_preserve_mtime(true);
    archive.set_overwrite(true);
    archive
}

/// Unpacks one entry (whose normalised path is `rel`) under `dir`, confined to it (see the module doc).
pub fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dir: &Path,
    rel: &Path,
    root: &'static str,
) -> Result<(), TarballError> {
    let unpacked = entry.unpack_in(dir).map_err(|source| TarballError::Unpack { entry: rel.to_path_buf(), source })?;
    if !unpacked {
        return Err(TarballError::Escapes { entry: rel.to_path_buf(), root });
    }
    Ok(())
}

/// Unpacks the tar archive (plain or gzip-compressed) at `file` into the existing directory `into`; `root` names
/// `into` in errors ("the sandbox"). Blocking.
pub fn unpack_file(file: &Path, into: &Path, root: &'static str) -> Result<(), TarballError> {
    let mut reader = BufReader::new(std::fs::File::open(file).map_err(TarballError::Open)?);
    match compression(reader.fill_buf().map_err(TarballError::Read)?, "archive")? {
        Compression::Gzip => unpack(flate2::read::MultiGzDecoder::new(reader), into, root),
        Compression::Plain => unpack(reader, into, root),
    }
}

/// Unpacks every entry of the tar stream `reader` into `into`.
fn unpack(reader: impl Read, into: &Path, root: &'static str) -> Result<(), TarballError> {
    let mut archive = archive(reader);
    for entry in archive.entries().map_err(TarballError::NotTar)? {
        let mut entry = entry.map_err(TarballError::Invalid)?;
        let path = entry.path().map_err(TarballError::BadPath)?.into_owned();
        let Some(rel) = normal(&path, root)? else { continue };
        unpack_entry(&mut entry, into, &rel, root)?;
    }
    Ok(())
}

/// Decompresses the gzip file `from` into `to` (replaced if it exists, never written through a symlink). Blocking.
pub fn gunzip(from: &Path, to: &Path) -> Result<(), TarballError> {
    let input = std::fs::File::open(from).map_err(TarballError::Open)?;
    if std::fs::symlink_metadata(to).is_ok() {
        std::fs::remove_file(to).map_err(|source| TarballError::Create { path: to.to_path_buf(), source })?;
    }
    let mut output = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)
        .map_err(|source| TarballError::Create { path: to.to_path_buf(), source })?;
    let mut decoder = flate2::read::MultiGzDecoder::new(BufReader::new(input));
    std::io::copy(&mut decoder, &mut output).map_err(TarballError::Read)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use std::io::Write;

    use super::*;

    /// A tar of `(path, Some(content))` files, `(path/, None)` directories and `(path, Some("->target"))` symlinks.
    pub(crate) fn tar_of(entries: &[(&str, Option<&str>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(1);
            match content {
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_mode(0o755);
                    h.set_size(0);
                    b.append_data(&mut h, path, std::io::empty()).unwrap();
                }
                Some(target) if target.starts_with("->") => {
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_size(0);
                    b.append_link(&mut h, path, &target[2..]).unwrap();
                }
                Some(text) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(0o644);
                    h.set_size(text.len() as u64);
                    b.append_data(&mut h, path, text.as_bytes()).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    /// `tar` with its first entry's name replaced by `name` (which the tar crate's builder would refuse).
    pub(crate) fn with_first_name(mut tar: Vec<u8>, name: &[u8]) -> Vec<u8> {
        tar[..100].fill(0);
        tar[..name.len()].copy_from_slice(name);
        let mut h = tar::Header::from_byte_slice(&tar[..512]).clone();
        h.set_cksum();
        tar[..512].copy_from_slice(h.as_bytes());
        tar
    }

    /// A hard link entry `path` to `target`.
    fn hard_link(path: &str, target: &str) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Link);
        h.set_size(0);
        h.set_mode(0o644);
        b.append_link(&mut h, path, target).unwrap();
        b.into_inner().unwrap()
    }

    pub(crate) fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn unpack_bytes(bytes: &[u8], into: &Path) -> Result<(), TarballError> {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), bytes).unwrap();
        unpack_file(file.path(), into, "the sandbox")
    }

    #[test]
    fn plain_and_gzip_archives_unpack() {
        let tar = tar_of(&[("pkg/", None), ("pkg/hello.txt", Some("hello\n")), ("pkg/link", Some("->hello.txt"))]);
        for bytes in [tar.clone(), gzip(&tar)] {
            let dir = tempfile::tempdir().unwrap();
            unpack_bytes(&bytes, dir.path()).unwrap();
            assert_eq!(std::fs::read_to_string(dir.path().join("pkg/hello.txt")).unwrap(), "hello\n");
            assert_eq!(std::fs::read_to_string(dir.path().join("pkg/link")).unwrap(), "hello\n");
        }
    }

    #[test]
    fn entries_that_leave_the_directory_are_refused_and_write_nothing_outside() {
        let outside = tempfile::tempdir().unwrap();
        let out = outside.path().display().to_string();
        let dir = tempfile::tempdir().unwrap();
        // `..` in an entry path.
        let e = unpack_bytes(&with_first_name(tar_of(&[("x", Some("evil"))]), b"../evil"), dir.path()).unwrap_err();
        assert!(matches!(e, TarballError::Escapes { .. }), "{e}");
        assert_eq!(e.to_string(), "entry '../evil' leaves the sandbox");
        // A symlink to the outside, then a file written through it.
        let through = tar_of(&[("esc", Some(&format!("->{out}"))), ("esc/planted", Some("x"))]);
        let e = unpack_bytes(&through, dir.path()).unwrap_err();
        assert!(e.to_string().contains("esc/planted"), "{e}");
        assert!(!outside.path().join("planted").exists());
        // A hard link to a file outside.
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let e = unpack_bytes(&hard_link("linked", &format!("{out}/secret")), dir.path()).unwrap_err();
        assert!(e.to_string().contains("linked"), "{e}");
        assert!(!dir.path().join("linked").exists());
        // An absolute path lands inside.
        unpack_bytes(&with_first_name(tar_of(&[("x", Some("in"))]), b"/abs.txt"), dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("abs.txt")).unwrap(), "in");
    }

    #[test]
    fn other_compressions_and_garbage_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let e = unpack_bytes(b"BZh91AY&SY", dir.path()).unwrap_err().to_string();
        assert_eq!(e, "the archive is bzip2-compressed, which this agent cannot read");
        let e = unpack_bytes(&[0xfd, b'7', b'z', b'X', b'Z', 0, 1], dir.path()).unwrap_err().to_string();
        assert!(e.contains("xz"), "{e}");
        let e = unpack_bytes(&[b'x'; 700], dir.path()).unwrap_err().to_string();
        assert!(e.contains("tar archive"), "{e}");
    }

    #[test]
    fn gunzip_replaces_the_output_without_following_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let gz = dir.path().join("notes.txt.gz");
        std::fs::write(&gz, gzip(b"notes\n")).unwrap();
        let out = dir.path().join("notes.txt");
        std::os::unix::fs::symlink(outside.path().join("victim"), &out).unwrap();
        gunzip(&gz, &out).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "notes\n");
        assert!(!std::fs::symlink_metadata(&out).unwrap().file_type().is_symlink());
        assert!(!outside.path().join("victim").exists());
        let e = gunzip(&dir.path().join("missing.gz"), &out).unwrap_err().to_string();
        assert!(e.starts_with("cannot open it"), "{e}");
    }
}
