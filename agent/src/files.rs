//! Sandbox file access in Mesos's style: `GET /files/browse?path=`, `GET /files/read?path=&offset=&length=`
//! (`{"data", "offset"}`; offset -1 answers the file's size) and `GET /files/download?path=`, plus
//! `GET /files/sandbox?framework_id=&task_id=`, which names the latest sandbox of a task.
//!
//! Every path is confined to task sandboxes: it must be absolute, contain no `..`, and once every symlink is
//! resolved lie inside `<work_dir>/slaves/<agent>/frameworks/<framework>/executors/<task>/runs/<container>`.
//! Anything else is refused (403), and a path that does not exist is 404; neither ever returns the file.

use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::sandbox::is_path_component;

/// The most bytes one `/files/read` returns (Mesos pages logs the same way).
pub const MAX_READ: usize = 1024 * 1024;

/// Why a file request was refused.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("path '{0}' is outside the task sandboxes")]
    Forbidden(String),
    #[error("path '{0}' does not exist")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("cannot read '{path}': {source}")]
    Io { path: String, source: std::io::Error },
}

impl FilesError {
    fn status(&self) -> StatusCode {
        match self {
            FilesError::Forbidden(_) => StatusCode::FORBIDDEN,
            FilesError::NotFound(_) => StatusCode::NOT_FOUND,
            FilesError::BadRequest(_) => StatusCode::BAD_REQUEST,
            FilesError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for FilesError {
    fn into_response(self) -> Response {
        (self.status(), Json(json!({"error": self.to_string()}))).into_response()
    }
}

/// The directory under which all sandboxes live: `<work_dir>/slaves`.
pub fn sandboxes_root(work_dir: &Path) -> PathBuf {
    work_dir.join("slaves")
}

/// Resolves `requested` to a real path inside a task sandbox under `root`, or says why not.
pub fn resolve(root: &Path, requested: &str) -> Result<PathBuf, FilesError> {
    if requested.is_empty() {
        return Err(FilesError::BadRequest("missing 'path'".into()));
    }
    if requested.contains('\0') {
        return Err(FilesError::Forbidden(requested.escape_default().to_string()));
    }
    let path = Path::new(requested);
    if !path.is_absolute() || path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(FilesError::Forbidden(requested.into()));
    }
    let given = root;
    let root = root.canonicalize().map_err(|_| FilesError::NotFound(requested.into()))?;
    // Refuse before touching the file system when the path does not even claim to be under the root, so nothing
    // is learnt about files elsewhere (not even whether they exist).
    if !path.starts_with(given) && !path.starts_with(&root) {
        return Err(FilesError::Forbidden(requested.into()));
    }
    let real = path.canonicalize().map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => FilesError::NotFound(requested.into()),
        _ => FilesError::Forbidden(requested.into()),
    })?;
    let rel = real.strip_prefix(&root).map_err(|_| FilesError::Forbidden(requested.into()))?;
    let parts: Vec<&str> = rel.iter().filter_map(|c| c.to_str()).collect();
    // <agent>/frameworks/<framework>/executors/<task>/runs/<container>[/...]
    let in_sandbox = parts.len() >= 7 && parts[1] == "frameworks" && parts[3] == "executors" && parts[5] == "runs";
    if !in_sandbox {
        return Err(FilesError::Forbidden(requested.into()));
    }
    Ok(real)
}

/// `st_mode` as `ls -l` writes it: `drwxr-xr-x`.
fn mode_string(mode: u32) -> String {
    let kind = match mode & 0o170000 {
        0o040000 => 'd',
        0o120000 => 'l',
        _ => '-',
    };
    let mut s = String::from(kind);
    for shift in [6, 3, 0] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

/// One file or directory, as `/files/browse` and the v1 `LIST_FILES` describe it.
#[derive(Clone, Debug, PartialEq)]
pub struct FileEntry {
    /// The path as the client named it (joined with the entry's name for a directory's entries).
    pub path: String,
    pub nlink: u64,
    pub size: u64,
    /// Unix seconds.
    pub mtime: f64,
    /// `st_mode`: type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl FileEntry {
    fn new(path: &Path, meta: &fs::Metadata) -> FileEntry {
        let mtime = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_secs_f64());
        FileEntry {
            path: path.display().to_string(),
            nlink: meta.nlink(),
            size: meta.len(),
            mtime: mtime.unwrap_or_default(),
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
        }
    }

    /// Mesos's `/files/browse` entry (the mode as `ls -l` writes it).
    pub fn json(&self) -> Value {
        json!({
            "path": self.path,
            "nlink": self.nlink,
            "size": self.size,
            "mtime": self.mtime,
            "mode": mode_string(self.mode),
            "uid": self.uid.to_string(),
            "gid": self.gid.to_string(),
        })
    }
}

/// The entries of a sandbox directory (or the one file named), sorted by name. Entry paths are `requested` joined
/// with the name, so they can be passed back as they are.
pub fn list(root: &Path, requested: &str) -> Result<Vec<FileEntry>, FilesError> {
    let real = resolve(root, requested)?;
    let io = |source| FilesError::Io { path: requested.into(), source };
    let meta = fs::metadata(&real).map_err(io)?;
    if !meta.is_dir() {
        return Ok(vec![FileEntry::new(Path::new(requested), &meta)]);
    }
    let mut out: Vec<(String, FileEntry)> = Vec::new();
    for e in fs::read_dir(&real).map_err(io)? {
        let e = e.map_err(io)?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Ok(meta) = e.metadata() else { continue };
        out.push((name.clone(), FileEntry::new(&Path::new(requested).join(&name), &meta)));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out.into_iter().map(|(_, v)| v).collect())
}

/// `/files/browse`: [`list`] in Mesos's JSON.
pub fn browse(root: &Path, requested: &str) -> Result<Vec<Value>, FilesError> {
    Ok(list(root, requested)?.iter().map(FileEntry::json).collect())
}

/// The file's size and up to `length` bytes (at most [`MAX_READ`]) from `offset`; none at or past the end.
pub fn read_bytes(
    root: &Path,
    requested: &str,
    offset: u64,
    length: Option<usize>,
) -> Result<(u64, Vec<u8>), FilesError> {
    let real = resolve(root, requested)?;
    let io = |source| FilesError::Io { path: requested.into(), source };
    let meta = fs::metadata(&real).map_err(io)?;
    if meta.is_dir() {
        return Err(FilesError::BadRequest(format!("'{requested}' is a directory")));
    }
    let size = meta.len();
    if offset >= size {
        return Ok((size, Vec::new()));
    }
    let want = length.unwrap_or(MAX_READ).min(MAX_READ).min((size - offset) as usize);
    let mut file = fs::File::open(&real).map_err(io)?;
    file.seek(SeekFrom::Start(offset)).map_err(io)?;
    let mut buf = Vec::with_capacity(want);
    file.take(want as u64).read_to_end(&mut buf).map_err(io)?;
    Ok((size, buf))
}

/// `/files/read`: up to `length` bytes (at most [`MAX_READ`]) from `offset`, as `{"data", "offset"}`. Offset -1
/// answers `{"data": "", "offset": <size>}`. Data ends on a whole UTF-8 character, so a reader that advances by
/// the byte length of `data` never splits one.
pub fn read(root: &Path, requested: &str, offset: i64, length: Option<usize>) -> Result<Value, FilesError> {
    if offset == -1 {
        let (size, _) = read_bytes(root, requested, u64::MAX, Some(0))?;
        return Ok(json!({"data": "", "offset": size}));
    }
    let offset = u64::try_from(offset).map_err(|_| FilesError::BadRequest(format!("bad offset {offset}")))?;
    let (_, buf) = read_bytes(root, requested, offset, length)?;
    let data = match std::str::from_utf8(&buf) {
        Ok(s) => s.to_string(),
        // Cut an incomplete character at the end; the next read starts with it.
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            String::from_utf8_lossy(&buf[..e.valid_up_to()]).into_owned()
        }
        Err(_) => String::from_utf8_lossy(&buf).into_owned(),
    };
    Ok(json!({"data": data, "offset": offset}))
}

/// The latest sandbox (by modification time) of `task_id` of `framework_id` under `root`.
pub fn find_sandbox(root: &Path, framework_id: &str, task_id: &str) -> Result<PathBuf, FilesError> {
    if !is_path_component(framework_id) || !is_path_component(task_id) {
        return Err(FilesError::BadRequest(format!("bad framework id '{framework_id}' or task id '{task_id}'")));
    }
    let missing = || FilesError::NotFound(format!("sandbox of task '{task_id}' of framework '{framework_id}'"));
    let mut best: Option<(std::time::SystemTime, PathBuf)> = None;
    for agent in fs::read_dir(root).map_err(|_| missing())?.flatten() {
        let runs = agent.path().join("frameworks").join(framework_id).join("executors").join(task_id).join("runs");
        let Ok(entries) = fs::read_dir(&runs) else { continue };
        for run in entries.flatten() {
            let Ok(meta) = run.metadata() else { continue };
            if !meta.is_dir() {
                continue;
            }
            let mtime = meta.modified().unwrap_or(UNIX_EPOCH);
            if best.as_ref().is_none_or(|(t, _)| mtime > *t) {
                best = Some((mtime, run.path()));
            }
        }
    }
    best.map(|(_, p)| p).ok_or_else(missing)
}

#[derive(Debug, Deserialize)]
struct PathQuery {
    #[serde(default)]
    path: String,
    offset: Option<i64>,
    length: Option<usize>,
}

#[derive(Debug, Deserialize)]
struct TaskQuery {
    #[serde(default)]
    framework_id: String,
    #[serde(default)]
    task_id: String,
}

/// The `/files/*` routes, serving sandboxes under `<work_dir>/slaves`.
pub fn router(work_dir: PathBuf) -> Router {
    Router::new()
        .route("/files/browse", get(browse_handler))
        .route("/files/read", get(read_handler))
        .route("/files/download", get(download_handler))
        .route("/files/sandbox", get(sandbox_handler))
        .with_state(sandboxes_root(&work_dir))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, FilesError> + Send + 'static,
) -> Result<T, FilesError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(FilesError::Io { path: String::new(), source: std::io::Error::other(e) }))
}

async fn browse_handler(State(root): State<PathBuf>, Query(q): Query<PathQuery>) -> Result<Json<Value>, FilesError> {
    Ok(Json(Value::Array(blocking(move || browse(&root, &q.path)).await?)))
}

async fn read_handler(State(root): State<PathBuf>, Query(q): Query<PathQuery>) -> Result<Json<Value>, FilesError> {
    Ok(Json(blocking(move || read(&root, &q.path, q.offset.unwrap_or(0), q.length)).await?))
}

async fn download_handler(State(root): State<PathBuf>, Query(q): Query<PathQuery>) -> Result<Response, FilesError> {
    let (name, bytes) = blocking(move || {
        let real = resolve(&root, &q.path)?;
        if real.is_dir() {
            return Err(FilesError::BadRequest(format!("'{}' is a directory", q.path)));
        }
        let bytes = fs::read(&real).map_err(|source| FilesError::Io { path: q.path.clone(), source })?;
        let name = real.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        Ok((name, bytes))
    })
    .await?;
    let safe: String = name.chars().filter(|c| c.is_ascii_graphic() && *c != '"' && *c != '\\').collect();
    let disposition = format!("attachment; filename=\"{safe}\"");
    Ok((
        [(header::CONTENT_TYPE, "application/octet-stream".to_string()), (header::CONTENT_DISPOSITION, disposition)],
        bytes,
    )
        .into_response())
}

async fn sandbox_handler(State(root): State<PathBuf>, Query(q): Query<TaskQuery>) -> Result<Json<Value>, FilesError> {
    let dir = blocking(move || find_sandbox(&root, &q.framework_id, &q.task_id)).await?;
    Ok(Json(json!({"directory": dir.display().to_string()})))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A work dir with one sandbox holding `stdout`, a secret outside the sandboxes, and a second agent dir.
    struct Fixture {
        _dir: tempfile::TempDir,
        root: PathBuf,
        sandbox: PathBuf,
        secret: PathBuf,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let work = dir.path().canonicalize().unwrap();
        let root = sandboxes_root(&work);
        let sandbox = crate::sandbox::sandbox_dir(&work, "m-S0", "m-0000", "t1", "c1");
        fs::create_dir_all(&sandbox).unwrap();
        fs::write(sandbox.join("stdout"), "hello\nworld\n").unwrap();
        fs::write(sandbox.join("stderr"), "").unwrap();
        let secret = work.join("secret.txt");
        fs::write(&secret, "top secret").unwrap();
        Fixture { _dir: dir, root, sandbox, secret }
    }

    fn s(p: &Path) -> String {
        p.display().to_string()
    }

    #[test]
    fn reads_and_browses_inside_a_sandbox() {
        let f = fixture();
        let stdout = s(&f.sandbox.join("stdout"));
        let v = read(&f.root, &stdout, 0, None).unwrap();
        assert_eq!(v, json!({"data": "hello\nworld\n", "offset": 0}));
        assert_eq!(read(&f.root, &stdout, 6, Some(3)).unwrap(), json!({"data": "wor", "offset": 6}));
        assert_eq!(read(&f.root, &stdout, -1, None).unwrap(), json!({"data": "", "offset": 12}));
        assert_eq!(read(&f.root, &stdout, 100, None).unwrap(), json!({"data": "", "offset": 100}));
        let list = browse(&f.root, &s(&f.sandbox)).unwrap();
        let names: Vec<&str> = list.iter().map(|e| e["path"].as_str().unwrap()).collect();
        assert_eq!(names, [s(&f.sandbox.join("stderr")), stdout.clone()]);
        assert_eq!(list[1]["size"], 12);
        assert!(list[1]["mode"].as_str().unwrap().starts_with('-'));
    }

    #[test]
    fn hostile_paths_are_refused_and_never_read() {
        let f = fixture();
        let sb = s(&f.sandbox);
        let hostile = [
            format!("{sb}/../../../../../../../secret.txt"),
            format!("{sb}/../c2"),
            format!("{sb}/./../../t1/runs/c1/stdout"),
            s(&f.secret),
            "/etc/passwd".to_string(),
            "/".to_string(),
            "stdout".to_string(),
            "../secret.txt".to_string(),
            format!("{sb}/stdout\0"),
            // Directories above the sandboxes are not sandboxes.
            s(&f.root),
            s(&f.root.join("m-S0/frameworks/m-0000")),
            s(&f.root.join("m-S0/frameworks/m-0000/executors/t1/runs")),
        ];
        for p in &hostile {
            let err = read(&f.root, p, 0, None).unwrap_err();
            assert!(matches!(err, FilesError::Forbidden(_) | FilesError::NotFound(_)), "{p:?}: {err:?}");
            assert!(browse(&f.root, p).is_err(), "{p:?}");
        }
        assert!(matches!(read(&f.root, "/etc/passwd", 0, None), Err(FilesError::Forbidden(_))));
        assert!(matches!(read(&f.root, &format!("{sb}/nope"), 0, None), Err(FilesError::NotFound(_))));
        assert!(matches!(read(&f.root, "", 0, None), Err(FilesError::BadRequest(_))));
    }

    #[test]
    fn symlinks_out_of_the_sandbox_are_refused() {
        let f = fixture();
        symlink(&f.secret, f.sandbox.join("to-secret")).unwrap();
        symlink("/etc", f.sandbox.join("etc")).unwrap();
        symlink(f.sandbox.parent().unwrap(), f.sandbox.join("runs")).unwrap();
        symlink(f.sandbox.join("stdout"), f.sandbox.join("inside")).unwrap();
        for name in ["to-secret", "etc", "etc/passwd", "runs"] {
            let p = s(&f.sandbox.join(name));
            assert!(matches!(read(&f.root, &p, 0, None), Err(FilesError::Forbidden(_))), "{p}");
            assert!(browse(&f.root, &p).is_err(), "{p}");
        }
        // A link that stays inside the sandbox is an ordinary file.
        let inside = s(&f.sandbox.join("inside"));
        assert_eq!(read(&f.root, &inside, 0, Some(5)).unwrap()["data"], "hello");
    }

    #[test]
    fn a_symlinked_work_dir_still_serves_its_sandboxes() {
        let f = fixture();
        let outer = tempfile::tempdir().unwrap();
        let link = outer.path().join("work");
        symlink(f.root.parent().unwrap(), &link).unwrap();
        let root = sandboxes_root(&link);
        let p = s(&f.sandbox.join("stdout"));
        assert_eq!(read(&root, &p, 0, Some(5)).unwrap()["data"], "hello");
    }

    #[test]
    fn reads_end_on_whole_characters() {
        let f = fixture();
        let p = f.sandbox.join("utf8");
        fs::write(&p, "aé").unwrap(); // 'é' is two bytes
        let v = read(&f.root, &s(&p), 0, Some(2)).unwrap();
        assert_eq!(v, json!({"data": "a", "offset": 0}));
    }

    #[test]
    fn finds_the_latest_sandbox_of_a_task() {
        let f = fixture();
        assert_eq!(find_sandbox(&f.root, "m-0000", "t1").unwrap(), f.sandbox);
        assert!(matches!(find_sandbox(&f.root, "m-0000", "nope"), Err(FilesError::NotFound(_))));
        assert!(matches!(find_sandbox(&f.root, "..", "t1"), Err(FilesError::BadRequest(_))));
        assert!(matches!(find_sandbox(&f.root, "m-0000", "../t1"), Err(FilesError::BadRequest(_))));
    }
}
