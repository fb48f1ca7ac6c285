//! The fetcher: fills a task's sandbox with its `CommandInfo.uris` before the container starts, as Mesos's
//! `mesos-fetcher` does. URIs are fetched in order; the first failure stops the launch and fails the task
//! (`TASK_FAILED`, `REASON_CONTAINER_LAUNCH_FAILED`, the URI and the cause in the message). What it does goes to the
//! sandbox's `stderr`, before the task's own output.
//!
//! Sources: absolute local paths and `file:///...` (copied), `http://` and `https://` URLs, downloaded by `curl` as
//! Mesos's fetcher downloads them with libcurl: redirects followed (at most [`MAX_REDIRECTS`], http and https only),
//! an HTTP error fails the fetch, a download receiving nothing for [`STALL_TIMEOUT`] is abandoned, certificates are
//! verified (against the system's store, or `--fetcher-ca-file`); no shell is involved. The decisions — where a URI
//! comes from, where it lands in the sandbox, whether and how it is extracted, where it is cached, which cache
//! entries make room for a new one — are pure ([`plan`], [`evictions`]); [`Fetcher::fetch_all`] is the thin I/O
//! shell around them.
//!
//! Which URIs can be fetched and which output files stay in the sandbox are the shared rules of
//! [`agora_proto::model::FetchSource`] and [`agora_proto::model::SandboxPath`], which Marathon applies too.
//!
//! Options, with Mesos's semantics: `output_file` (a path relative to the sandbox that never leaves it, default the
//! URI's file name), `executable` (chmod 755, and then no extraction), `extract` (by extension: tar archives and
//! other `.gz` files are unpacked in process by [`crate::tarball`], plain or gzip-compressed, confined to the
//! sandbox; bzip2-, xz- or zstd-compressed tar archives go to GNU `tar` and `.zip` files to `unzip`, as no small
//! pure-Rust decoder for them is in the tree, and those programs' own refusal of `..` members is then the only
//! guard; the archive stays in the sandbox beside its contents), `cache` (kept in the cache directory,
//! `--fetcher-cache-dir`, and copied, or extracted straight from the cache, on later launches). The cache holds at
//! most `--fetcher-cache-size` bytes (Mesos's default, 2 GB): room for a new entry is made by evicting the least
//! recently used entries that no fetch is reading; a file that cannot fit is fetched straight into the sandbox,
//! uncached, as Mesos does.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use agora_proto::model::{FetchSource, SandboxPath, SandboxPathError, Uri, UriError};
use tokio::io::AsyncWriteExt;

use crate::tarball::TarballError;

/// How long a download may receive nothing before it is abandoned (Mesos's `--fetcher_stall_timeout`).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The fetcher cache under the agent's work dir, unless `--fetcher-cache-dir` says otherwise.
pub const CACHE_DIR: &str = "fetch-cache";
/// Mesos's default `--fetcher_cache_size`: 2 GB.
pub const DEFAULT_CACHE_SIZE: u64 = 2 << 30;
/// Redirects a download follows at most.
pub const MAX_REDIRECTS: u32 = 10;

/// Why one URI could not be fetched; every message names the URI.
#[derive(Debug, thiserror::Error)]
#[error("failed to fetch '{uri}': {cause}")]
pub struct FetchError {
    pub uri: String,
    pub cause: Cause,
}

/// What went wrong fetching one URI; each names the path or program involved.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    #[error(transparent)]
    Uri(#[from] UriError),
    #[error("output_file '{path}' {error}")]
    OutputFile { path: String, error: SandboxPathError },
    #[error("cannot open {}: {source}", path.display())]
    Open { path: PathBuf, source: std::io::Error },
    #[error("cannot create {}: {source}", path.display())]
    Create { path: PathBuf, source: std::io::Error },
    /// A path that cannot be looked at (missing, unreadable).
    #[error("{}: {source}", path.display())]
    Stat { path: PathBuf, source: std::io::Error },
    #[error("{} resolves to {}, outside the sandbox", path.display(), real.display())]
    Outside { path: PathBuf, real: PathBuf },
    #[error("{} is a symlink; refusing to write through it", .0.display())]
    Symlink(PathBuf),
    #[error("{} is not a regular file", .0.display())]
    NotRegular(PathBuf),
    #[error("cannot copy {} to {}: {source}", from.display(), to.display())]
    Copy { from: PathBuf, to: PathBuf, source: std::io::Error },
    #[error("cannot evict {} from the cache: {source}", path.display())]
    Evict { path: PathBuf, source: std::io::Error },
    #[error("cannot move {} into the cache: {source}", path.display())]
    IntoCache { path: PathBuf, source: std::io::Error },
    #[error("cannot make {} executable: {source}", path.display())]
    Chmod { path: PathBuf, source: std::io::Error },
    #[error("cannot run curl to download it ({0}); install curl on the agent (apt-get install curl)")]
    NoCurl(#[source] std::io::Error),
    #[error("HTTP {code} ({stderr})")]
    Http { code: u16, stderr: String },
    /// curl's own message (`curl: (60) SSL certificate problem: ...`).
    #[error("{0}")]
    Curl(String),
    #[error("cannot extract {}: {source}", archive.display())]
    Extract { archive: PathBuf, source: TarballError },
    #[error("cannot run '{program}' to extract {}: {source} (apt-get install {package})", archive.display())]
    NoTool { program: &'static str, package: &'static str, archive: PathBuf, source: std::io::Error },
    #[error("cannot extract {}: {program} {status}: {stderr}", archive.display())]
    Tool { program: &'static str, archive: PathBuf, status: std::process::ExitStatus, stderr: String },
    #[error("the extracting thread failed: {0}")]
    Thread(#[source] tokio::task::JoinError),
}

/// How a fetched file is unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extraction {
    /// A tar archive: in process when plain or gzip-compressed ([`crate::tarball`]), else `tar -C <into> -xf
    /// <file>` (GNU tar recognises bzip2, xz and zstd compression itself).
    Tar,
    /// `unzip -o -d <into> <file>`.
    Zip,
    /// The gzip file decompressed to `output`, in process.
    Gunzip { output: PathBuf },
}

/// Everything the I/O shell does for one URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub uri: String,
    pub source: FetchSource,
    /// Where the file lands, inside the sandbox.
    pub destination: PathBuf,
    /// The directory extraction writes into (the destination's directory).
    pub extract_into: PathBuf,
    pub extraction: Option<Extraction>,
    pub executable: bool,
    /// The cache entry when `cache` is set.
    pub cache: Option<PathBuf>,
}

/// Decides how to fetch `uri` into `sandbox`, caching under `cache_dir`. Pure.
pub fn plan(uri: &Uri, sandbox: &Path, cache_dir: &Path) -> Result<Step, FetchError> {
    let fail = |cause: Cause| FetchError { uri: uri.value.clone(), cause };
    let source = FetchSource::parse(&uri.value).map_err(|e| fail(e.into()))?;
    let relative = if uri.output_file.is_empty() {
        PathBuf::from(source.default_file_name().map_err(|e| fail(e.into()))?)
    } else {
        SandboxPath::parse_file(&uri.output_file)
            .map_err(|error| fail(Cause::OutputFile { path: uri.output_file.clone(), error }))?
            .as_path()
            .to_path_buf()
    };
    if !relative.components().any(|c| matches!(c, Component::Normal(_))) {
        return Err(fail(UriError::NoFileName.into()));
    }
    let destination = sandbox.join(&relative);
    let extract_into = destination.parent().unwrap_or(sandbox).to_path_buf();
    let extraction = if uri.extract && !uri.executable { extraction_for(&destination) } else { None };
    let cache = uri.cache.then(|| cache_dir.join(cache_key(&uri.value)));
    Ok(Step {
        uri: uri.value.clone(),
        source,
        destination,
        extract_into,
        extraction,
        executable: uri.executable,
        cache,
    })
}

/// The extraction a file name calls for, by extension as Mesos and Marathon decide it.
pub fn extraction_for(path: &Path) -> Option<Extraction> {
    let name = path.file_name()?.to_string_lossy().to_ascii_lowercase();
    const TAR: [&str; 7] = [".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz"];
    if TAR.iter().any(|ext| name.ends_with(ext)) {
        return Some(Extraction::Tar);
    }
    if name.ends_with(".zip") {
        return Some(Extraction::Zip);
    }
    if name.ends_with(".gz") && name.len() > 3 {
        let original = path.file_name()?.to_string_lossy();
        return Some(Extraction::Gunzip { output: path.with_file_name(&original[..original.len() - 3]) });
    }
    None
}

/// The cache entry's file name: FNV-1a 64 of the URI, in hex.
pub fn cache_key(uri: &str) -> String {
    let hash = uri.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3));
    format!("{hash:016x}")
}

/// Whether `resolved` (a canonical path) lies inside `sandbox` (canonical). Pure.
pub fn inside(sandbox: &Path, resolved: &Path) -> bool {
    resolved.starts_with(sandbox)
}

/// One entry of the cache, as [`evictions`] weighs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub path: PathBuf,
    pub size: u64,
    /// When a fetch last used it (its modification time: set when it is stored and on every hit).
    pub last_used: SystemTime,
}

/// The entries to delete, least recently used first, so that `incoming` more bytes fit in `limit`; `None` when even
/// evicting every entry no fetch is reading would not make room (the file is then fetched uncached). Pure.
pub fn evictions(
    entries: &[CacheEntry],
    incoming: u64,
    limit: u64,
    in_use: impl Fn(&Path) -> bool,
) -> Option<Vec<PathBuf>> {
    let mut used: u64 = entries.iter().map(|e| e.size).sum();
    let mut candidates: Vec<&CacheEntry> = entries.iter().filter(|e| !in_use(&e.path)).collect();
    candidates.sort_by(|a, b| a.last_used.cmp(&b.last_used).then_with(|| a.path.cmp(&b.path)));
    let mut out = Vec::new();
    let mut candidates = candidates.into_iter();
    while used.saturating_add(incoming) > limit {
        let victim = candidates.next()?;
        used -= victim.size;
        out.push(victim.path.clone());
    }
    Some(out)
}

/// The fetcher of one agent: its cache (directory, size limit, the entries being read) and how it downloads.
#[derive(Debug)]
pub struct Fetcher {
    cache_dir: PathBuf,
    cache_size: u64,
    /// CA certificates `https://` servers are verified with (`curl --cacert`); `None`: curl's default store.
    ca_file: Option<PathBuf>,
    /// Cache entries being copied or extracted, with how many fetches read each: never evicted meanwhile.
    reading: Mutex<HashMap<PathBuf, usize>>,
}

/// A cache entry marked as read until dropped.
struct Reading<'a> {
    fetcher: &'a Fetcher,
    entry: PathBuf,
}

impl Drop for Reading<'_> {
    fn drop(&mut self) {
        let mut reading = self.fetcher.reading.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = reading.get_mut(&self.entry) {
            *n -= 1;
            if *n == 0 {
                reading.remove(&self.entry);
            }
        }
    }
}

impl Fetcher {
    pub fn new(cache_dir: PathBuf, cache_size: u64, ca_file: Option<PathBuf>) -> Fetcher {
        Fetcher { cache_dir, cache_size, ca_file, reading: Mutex::new(HashMap::new()) }
    }

    pub fn cache_dir(&self) -> &Path {
        &self.cache_dir
    }

    /// Fetches every URI into `sandbox` in order, logging to the sandbox's `stderr`. The first failure ends it.
    pub async fn fetch_all(&self, uris: &[Uri], sandbox: &Path) -> Result<(), FetchError> {
        if uris.is_empty() {
            return Ok(());
        }
        let log_path = sandbox.join("stderr");
        let mut log =
            tokio::fs::OpenOptions::new().create(true).append(true).open(&log_path).await.map_err(|source| {
                FetchError { uri: uris[0].value.clone(), cause: Cause::Open { path: log_path.clone(), source } }
            })?;
        for uri in uris {
            let step = match plan(uri, sandbox, &self.cache_dir) {
                Ok(step) => step,
                Err(e) => {
                    write_log(&mut log, &format!("{e}\n")).await;
                    return Err(e);
                }
            };
            write_log(&mut log, &format!("Fetching URI '{}'\n", step.uri)).await;
            if let Err(cause) = self.fetch_one(&step, sandbox, &mut log).await {
                let e = FetchError { uri: step.uri.clone(), cause };
                write_log(&mut log, &format!("{e}\n")).await;
                return Err(e);
            }
        }
        Ok(())
    }

    /// Marks `entry` as read if it is in the cache (and as just used); `None` on a miss.
    fn hit(&self, entry: &Path) -> Option<Reading<'_>> {
        let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let file = std::fs::File::open(entry).ok()?;
        let _ = file.set_modified(SystemTime::now());
        *reading.entry(entry.to_path_buf()).or_default() += 1;
        Some(Reading { fetcher: self, entry: entry.to_path_buf() })
    }

    /// Moves a downloaded `partial` into the cache as `entry`, evicting what [`evictions`] says, and marks it as
    /// read; `Ok(None)` when it cannot fit (the caller uses `partial` itself, uncached).
    fn store(&self, partial: &Path, entry: &Path) -> Result<Option<Reading<'_>>, Cause> {
        let mut reading = self.reading.lock().unwrap_or_else(|e| e.into_inner());
        let size =
            std::fs::metadata(partial).map_err(|source| Cause::Stat { path: partial.to_path_buf(), source })?.len();
        let entries = cache_entries(&self.cache_dir, entry);
        let Some(victims) = evictions(&entries, size, self.cache_size, |p| reading.contains_key(p)) else {
            return Ok(None);
        };
        for victim in &victims {
            std::fs::remove_file(victim).map_err(|source| Cause::Evict { path: victim.clone(), source })?;
        }
        std::fs::rename(partial, entry).map_err(|source| Cause::IntoCache { path: partial.to_path_buf(), source })?;
        *reading.entry(entry.to_path_buf()).or_default() += 1;
        Ok(Some(Reading { fetcher: self, entry: entry.to_path_buf() }))
    }

    async fn fetch_one(&self, step: &Step, sandbox: &Path, log: &mut tokio::fs::File) -> Result<(), Cause> {
        let parent = &step.extract_into;
        let stat = |path: &Path| {
            let path = path.to_path_buf();
            move |source| Cause::Stat { path, source }
        };
        tokio::fs::create_dir_all(parent).await.map_err(|source| Cause::Create { path: parent.clone(), source })?;
        // An earlier URI may have extracted a symlink: resolve before writing anything.
        let real_sandbox = tokio::fs::canonicalize(sandbox).await.map_err(stat(sandbox))?;
        let real_parent = tokio::fs::canonicalize(parent).await.map_err(stat(parent))?;
        if !inside(&real_sandbox, &real_parent) {
            return Err(Cause::Outside { path: parent.clone(), real: real_parent });
        }
        if tokio::fs::symlink_metadata(&step.destination).await.is_ok_and(|m| m.file_type().is_symlink()) {
            return Err(Cause::Symlink(step.destination.clone()));
        }
        // The cache entry being read stays marked (never evicted) until the step is done with it.
        let mut _reading = None;
        let fetched = match &step.cache {
            Some(entry) => {
                let source = match self.hit(entry) {
                    Some(r) => {
                        write_log(log, &format!("Using the cached copy {}\n", entry.display())).await;
                        _reading = Some(r);
                        entry.clone()
                    }
                    None => {
                        let dir = entry.parent().unwrap_or(Path::new("/"));
                        tokio::fs::create_dir_all(dir)
                            .await
                            .map_err(|source| Cause::Create { path: dir.to_path_buf(), source })?;
                        let partial = entry.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
                        write_log(log, &format!("Downloading into the cache {}\n", entry.display())).await;
                        if let Err(e) = self.download(&step.source, &partial).await {
                            let _ = tokio::fs::remove_file(&partial).await;
                            return Err(e);
                        }
                        match self.store(&partial, entry) {
                            Ok(Some(r)) => {
                                _reading = Some(r);
                                entry.clone()
                            }
                            Ok(None) => {
                                let line = format!(
                                    "Not caching '{}': it does not fit in the cache's {} bytes\n",
                                    step.uri, self.cache_size
                                );
                                write_log(log, &line).await;
                                partial
                            }
                            Err(e) => {
                                let _ = tokio::fs::remove_file(&partial).await;
                                return Err(e);
                            }
                        }
                    }
                };
                if step.extraction.is_some() {
                    // Mesos extracts a cached archive straight from the cache.
                    source
                } else {
                    tokio::fs::copy(&source, &step.destination).await.map_err(|e| Cause::Copy {
                        from: source.clone(),
                        to: step.destination.clone(),
                        source: e,
                    })?;
                    if source != *entry {
                        let _ = tokio::fs::remove_file(&source).await;
                    }
                    step.destination.clone()
                }
            }
            None => {
                self.download(&step.source, &step.destination).await?;
                step.destination.clone()
            }
        };
        if step.executable {
            use std::os::unix::fs::PermissionsExt;
            tokio::fs::set_permissions(&step.destination, std::fs::Permissions::from_mode(0o755))
                .await
                .map_err(|source| Cause::Chmod { path: step.destination.clone(), source })?;
        }
        if let Some(extraction) = &step.extraction {
            let extracted = extract(extraction, &fetched, &step.extract_into).await;
            if step.cache.as_ref().is_some_and(|entry| *entry != fetched) {
                // An uncached download of a cached URI (too big for the cache): it was only a temporary file.
                let _ = tokio::fs::remove_file(&fetched).await;
            }
            extracted?;
            let line = format!("Extracted '{}' into '{}'\n", fetched.display(), step.extract_into.display());
            write_log(log, &line).await;
        }
        write_log(log, &format!("Fetched '{}' to '{}'\n", step.uri, step.destination.display())).await;
        Ok(())
    }

    /// Copies or downloads the source to `to`.
    async fn download(&self, source: &FetchSource, to: &Path) -> Result<(), Cause> {
        match source {
            FetchSource::Local(path) => {
                let meta =
                    tokio::fs::metadata(path).await.map_err(|source| Cause::Stat { path: path.clone(), source })?;
                if !meta.is_file() {
                    return Err(Cause::NotRegular(path.clone()));
                }
                tokio::fs::copy(path, to).await.map_err(|source| Cause::Copy {
                    from: path.clone(),
                    to: to.to_path_buf(),
                    source,
                })?;
                Ok(())
            }
            FetchSource::Http(url) => {
                let result = curl_download(url, to, self.ca_file.as_deref()).await;
                if result.is_err() {
                    let _ = tokio::fs::remove_file(to).await;
                }
                result
            }
        }
    }
}

/// The cache's entries (not the downloads in progress, nor `except`, the entry about to be stored).
fn cache_entries(dir: &Path, except: &Path) -> Vec<CacheEntry> {
    let Ok(read) = std::fs::read_dir(dir) else { return Vec::new() };
    read.flatten()
        .filter(|e| !e.file_name().to_string_lossy().contains('.') && e.path() != except)
        .filter_map(|e| {
            let meta = e.metadata().ok().filter(|m| m.is_file())?;
            Some(CacheEntry { path: e.path(), size: meta.len(), last_used: meta.modified().ok()? })
        })
        .collect()
}

/// The arguments of the `curl` that downloads `url` to `to`: no config file (`-q`), errors shown, HTTP errors
/// fail (`-f`), redirects followed within http and https (at most [`MAX_REDIRECTS`]), the stall timeout as curl's
/// low-speed limit (Mesos sets libcurl's the same way), the status code written on stdout. Pure.
pub fn curl_args(url: &str, to: &Path, ca_file: Option<&Path>) -> Vec<std::ffi::OsString> {
    let stall = STALL_TIMEOUT.as_secs().to_string();
    let mut args: Vec<std::ffi::OsString> =
        ["-q", "-s", "-S", "-f", "-L", "-g", "--max-redirs"].into_iter().map(Into::into).collect();
    args.push(MAX_REDIRECTS.to_string().into());
    for a in ["--proto", "=http,https", "--proto-redir", "=http,https", "--connect-timeout", &stall] {
        args.push(a.into());
    }
    for a in ["--speed-limit", "1", "--speed-time", &stall, "-w", "%{http_code}", "-o"] {
        args.push(a.into());
    }
    args.push(to.into());
    if let Some(ca) = ca_file {
        args.push("--cacert".into());
        args.push(ca.into());
    }
    args.push(url.into());
    args
}

/// Downloads `url` to `to` with `curl`; the error says what the server answered or why curl failed.
async fn curl_download(url: &str, to: &Path, ca_file: Option<&Path>) -> Result<(), Cause> {
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(curl_args(url, to, ca_file)).stdin(Stdio::null()).kill_on_drop(true);
    let out = cmd.output().await.map_err(Cause::NoCurl)?;
    if out.status.success() {
        return Ok(());
    }
    let code = String::from_utf8_lossy(&out.stdout).trim().parse::<u16>().unwrap_or(0);
    let stderr = String::from_utf8_lossy(&out.stderr).trim().to_string();
    if code >= 400 { Err(Cause::Http { code, stderr }) } else { Err(Cause::Curl(stderr)) }
}

async fn write_log(log: &mut tokio::fs::File, line: &str) {
    // The log is for people; a full disk shows up in the fetch itself.
    // tokio's File writes in the background: flush so that the line is there when the task starts.
    let _ = log.write_all(line.as_bytes()).await;
    let _ = log.flush().await;
}

/// Unpacks `archive` into `into` as `extraction` says: in process where [`crate::tarball`] reads the format, else
/// with the external tool, whose failure output becomes the error.
async fn extract(extraction: &Extraction, archive: &Path, into: &Path) -> Result<(), Cause> {
    let (from, to) = (archive.to_path_buf(), into.to_path_buf());
    let in_process = match extraction {
        Extraction::Tar => tokio::task::spawn_blocking(move || crate::tarball::unpack_file(&from, &to, "the sandbox")),
        Extraction::Gunzip { output } => {
            let output = output.clone();
            tokio::task::spawn_blocking(move || crate::tarball::gunzip(&from, &output))
        }
        Extraction::Zip => return run_tool("unzip", "unzip", archive, into).await,
    };
    match in_process.await.map_err(Cause::Thread)? {
        Ok(()) => Ok(()),
        // bzip2, xz or zstd: nothing was written; GNU tar reads them.
        Err(TarballError::Compressed { .. }) if *extraction == Extraction::Tar => {
            run_tool("tar", "tar bzip2 xz-utils zstd", archive, into).await
        }
        Err(source) => Err(Cause::Extract { archive: archive.to_path_buf(), source }),
    }
}

/// `tar -C <into> -xf <archive>` or `unzip -o -q -d <into> <archive>`.
async fn run_tool(program: &'static str, package: &'static str, archive: &Path, into: &Path) -> Result<(), Cause> {
    let mut command = tokio::process::Command::new(program);
    match program {
        "unzip" => command.arg("-o").arg("-q").arg("-d").arg(into).arg(archive),
        _ => command.arg("-C").arg(into).arg("-xf").arg(archive),
    };
    let output = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| Cause::NoTool { program, package, archive: archive.to_path_buf(), source })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        return Err(Cause::Tool { program, archive: archive.to_path_buf(), status: output.status, stderr });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(value: &str) -> Uri {
        Uri { value: value.into(), executable: false, extract: true, cache: false, output_file: String::new() }
    }

    fn fetcher(cache: &Path) -> Fetcher {
        Fetcher::new(cache.to_path_buf(), DEFAULT_CACHE_SIZE, None)
    }

    const SANDBOX: &str = "/w/sandbox";
    const CACHE: &str = "/w/fetch-cache";

    fn plan_of(u: &Uri) -> Result<Step, FetchError> {
        plan(u, Path::new(SANDBOX), Path::new(CACHE))
    }

    #[test]
    fn sources_are_paths_file_uris_and_http_urls() {
        let s = plan_of(&uri("/opt/app/run.sh")).unwrap();
        assert_eq!(s.source, FetchSource::Local("/opt/app/run.sh".into()));
        assert_eq!(s.destination, Path::new("/w/sandbox/run.sh"));
        let s = plan_of(&uri("file:///opt/app/run.sh")).unwrap();
        assert_eq!(s.source, FetchSource::Local("/opt/app/run.sh".into()));
        let s = plan_of(&uri("file://localhost/opt/x")).unwrap();
        assert_eq!(s.source, FetchSource::Local("/opt/x".into()));
        let s = plan_of(&uri("https://example.org/dl/app.tgz")).unwrap();
        assert_eq!(s.source, FetchSource::Http("https://example.org/dl/app.tgz".into()));
        assert_eq!(s.extraction, Some(Extraction::Tar));
        let s = plan_of(&uri("http://127.0.0.1:8000/dl/app.bin?token=1#frag")).unwrap();
        assert_eq!(s.source, FetchSource::Http("http://127.0.0.1:8000/dl/app.bin?token=1#frag".into()));
        assert_eq!(s.destination, Path::new("/w/sandbox/app.bin"));
        assert_eq!(s.extract_into, Path::new(SANDBOX));
    }

    #[test]
    fn unsupported_and_relative_uris_are_refused_naming_them() {
        for (value, needle) in [
            ("ftp://example.org/a.tgz", "scheme 'ftp' is not supported"),
            ("hdfs://nn/a", "scheme 'hdfs'"),
            ("app/run.sh", "relative path"),
            ("file://host/x", "absolute path"),
            ("", "empty"),
            ("http://example.org", "no path"),
            ("http://example.org/", "no file name"),
            ("/opt/../etc/passwd", "'..'"),
            ("/", "no file name"),
        ] {
            let e = plan_of(&uri(value)).unwrap_err();
            assert_eq!(e.uri, value);
            assert!(e.to_string().contains(&format!("'{value}'")), "{e}");
            assert!(e.cause.to_string().contains(needle), "{value}: {e}");
        }
    }

    #[test]
    fn output_file_is_relative_and_stays_in_the_sandbox() {
        let mut u = uri("http://h/x.tgz");
        u.output_file = "bin/tool".into();
        let s = plan_of(&u).unwrap();
        assert_eq!(s.destination, Path::new("/w/sandbox/bin/tool"));
        assert_eq!(s.extract_into, Path::new("/w/sandbox/bin"));
        assert_eq!(s.extraction, None, "the output name decides extraction");
        u.output_file = "./pkg.tar.gz".into();
        assert_eq!(plan_of(&u).unwrap().extraction, Some(Extraction::Tar));
        for bad in ["../escape", "a/../../b", "/etc/passwd", "dir/", "."] {
            u.output_file = bad.into();
            let e = plan_of(&u).unwrap_err();
            assert!(e.to_string().contains("http://h/x.tgz"), "{bad}: {e}");
        }
    }

    #[test]
    fn extraction_follows_the_extension() {
        let x = |name: &str| extraction_for(Path::new("/s").join(name).as_path());
        for name in ["a.tar", "a.tar.gz", "a.tgz", "a.tar.bz2", "a.tbz2", "a.tar.xz", "a.TXZ"] {
            assert_eq!(x(name), Some(Extraction::Tar), "{name}");
        }
        assert_eq!(x("a.zip"), Some(Extraction::Zip));
        assert_eq!(x("notes.txt.gz"), Some(Extraction::Gunzip { output: "/s/notes.txt".into() }));
        assert_eq!(x("a.sh"), None);
        assert_eq!(x(".gz"), None);
        assert_eq!(x("tar"), None);
    }

    #[test]
    fn executable_or_no_extract_means_no_extraction() {
        let mut u = uri("/srv/a.tgz");
        assert_eq!(plan_of(&u).unwrap().extraction, Some(Extraction::Tar));
        u.extract = false;
        assert_eq!(plan_of(&u).unwrap().extraction, None);
        u.extract = true;
        u.executable = true;
        let s = plan_of(&u).unwrap();
        assert_eq!((s.extraction, s.executable), (None, true));
    }

    #[test]
    fn the_cache_entry_is_keyed_by_the_uri() {
        let mut u = uri("http://h/a.bin");
        assert_eq!(plan_of(&u).unwrap().cache, None);
        u.cache = true;
        let entry = plan_of(&u).unwrap().cache.unwrap();
        assert_eq!(entry, Path::new(CACHE).join(cache_key("http://h/a.bin")));
        assert_ne!(cache_key("http://h/a.bin"), cache_key("http://h/b.bin"));
        assert_eq!(cache_key("").len(), 16);
    }

    fn entry(name: &str, size: u64, used_at: u64) -> CacheEntry {
        CacheEntry {
            path: PathBuf::from(CACHE).join(name),
            size,
            last_used: SystemTime::UNIX_EPOCH + Duration::from_secs(used_at),
        }
    }

    #[test]
    fn eviction_takes_the_least_recently_used_until_the_new_entry_fits() {
        let entries = vec![entry("new", 30, 300), entry("old", 30, 100), entry("mid", 30, 200)];
        let names = |v: Vec<PathBuf>| -> Vec<String> {
            v.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect()
        };
        let none = |_: &Path| false;
        assert_eq!(evictions(&entries, 10, 100, none).map(names), Some(vec![]), "90 + 10 fits in 100");
        assert_eq!(evictions(&entries, 11, 100, none).map(names), Some(vec!["old".to_string()]));
        assert_eq!(evictions(&entries, 50, 100, none).map(names), Some(vec!["old".to_string(), "mid".to_string()]));
        assert_eq!(
            evictions(&entries, 100, 100, none).map(names),
            Some(vec!["old".into(), "mid".into(), "new".into()])
        );
        assert_eq!(evictions(&entries, 101, 100, none), None, "bigger than the whole cache");
        // Entries being read are never evicted: the next least recently used goes instead, or nothing fits.
        let reading_old = |p: &Path| p.ends_with("old");
        assert_eq!(evictions(&entries, 11, 100, reading_old).map(names), Some(vec!["mid".to_string()]));
        assert_eq!(evictions(&entries, 71, 100, reading_old), None);
        assert_eq!(evictions(&[], 0, 0, none), Some(vec![]), "an empty file fits an empty cache");
    }

    #[test]
    fn curl_fails_on_http_errors_follows_few_redirects_and_runs_no_shell() {
        let args = curl_args("https://h/a b.tgz", Path::new("/s/a.tgz"), Some(Path::new("/etc/ca.pem")));
        let args: Vec<String> = args.iter().map(|a| a.to_string_lossy().into_owned()).collect();
        assert_eq!(args[0], "-q", "no ~/.curlrc: -q must come first");
        for flag in ["-f", "-L", "-S"] {
            assert!(args.contains(&flag.to_string()), "{flag} in {args:?}");
        }
        let after = |flag: &str| args[args.iter().position(|a| a == flag).unwrap() + 1].clone();
        assert_eq!(after("--max-redirs"), MAX_REDIRECTS.to_string());
        assert_eq!((after("--proto"), after("--proto-redir")), ("=http,https".into(), "=http,https".into()));
        assert_eq!((after("--speed-limit"), after("--speed-time")), ("1".into(), "60".into()));
        assert_eq!((after("-o"), after("--cacert")), ("/s/a.tgz".into(), "/etc/ca.pem".into()));
        assert_eq!(args.last().unwrap(), "https://h/a b.tgz", "the URL is one argument, never parsed by a shell");
        let plain = curl_args("http://h/a", Path::new("/s/a"), None);
        assert!(!plain.iter().any(|a| a == "--cacert"));
    }

    #[test]
    fn inside_is_a_prefix_of_whole_components() {
        assert!(inside(Path::new("/w/s"), Path::new("/w/s")));
        assert!(inside(Path::new("/w/s"), Path::new("/w/s/a/b")));
        assert!(!inside(Path::new("/w/s"), Path::new("/w/s2")));
        assert!(!inside(Path::new("/w/s"), Path::new("/etc")));
    }

    fn tool(name: &str) {
        let found = std::env::var_os("PATH")
            .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
            .unwrap_or(false);
        assert!(found, "'{name}' is missing: apt-get install tar gzip bzip2 xz-utils unzip curl openssl");
    }

    #[tokio::test]
    async fn fetches_copies_extracts_and_logs_to_stderr() {
        tool("tar");
        tool("gzip");
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(src.join("pkg")).unwrap();
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::write(src.join("pkg/hello.txt"), "hello\n").unwrap();
        std::fs::write(src.join("run.sh"), "#!/bin/sh\necho run\n").unwrap();
        let tar = std::process::Command::new("tar")
            .arg("-C")
            .arg(&src)
            .args(["-czf", "pkg.tar.gz", "pkg"])
            .current_dir(&src)
            .status()
            .unwrap();
        assert!(tar.success());
        let gz = std::process::Command::new("gzip").arg("-k").arg(src.join("run.sh")).status().unwrap();
        assert!(gz.success());

        let mut exe = uri(&src.join("run.sh").display().to_string());
        exe.executable = true;
        exe.output_file = "bin/run".into();
        let mut cached = uri(&format!("file://{}", src.join("pkg.tar.gz").display()));
        cached.cache = true;
        let uris = vec![exe, cached.clone(), uri(&src.join("run.sh.gz").display().to_string())];
        let cache = dir.path().join("cache");
        fetcher(&cache).fetch_all(&uris, &sandbox).await.unwrap();

        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(sandbox.join("bin/run")).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);
        assert_eq!(std::fs::read_to_string(sandbox.join("pkg/hello.txt")).unwrap(), "hello\n");
        assert!(!sandbox.join("pkg.tar.gz").exists(), "a cached archive is extracted from the cache");
        assert!(cache.join(cache_key(&cached.value)).is_file());
        assert_eq!(std::fs::read_to_string(sandbox.join("run.sh")).unwrap(), "#!/bin/sh\necho run\n");
        let log = std::fs::read_to_string(sandbox.join("stderr")).unwrap();
        assert!(log.contains(&format!("Fetching URI '{}'", cached.value)), "{log}");
        assert!(log.contains("Extracted"), "{log}");

        // The second time the cache serves it, even with the source gone.
        std::fs::remove_file(src.join("pkg.tar.gz")).unwrap();
        let again = dir.path().join("again");
        std::fs::create_dir_all(&again).unwrap();
        fetcher(&cache).fetch_all(&[cached], &again).await.unwrap();
        assert_eq!(std::fs::read_to_string(again.join("pkg/hello.txt")).unwrap(), "hello\n");
        assert!(std::fs::read_to_string(again.join("stderr")).unwrap().contains("Using the cached copy"));
    }

    #[tokio::test]
    async fn a_missing_file_or_a_broken_archive_fails_naming_the_uri() {
        tool("tar");
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        let missing = dir.path().join("nope.bin").display().to_string();
        let e = fetcher(dir.path()).fetch_all(&[uri(&missing)], &sandbox).await.unwrap_err();
        assert_eq!(e.uri, missing);
        assert!(e.cause.to_string().contains("No such file"), "{e}");
        let log = std::fs::read_to_string(sandbox.join("stderr")).unwrap();
        assert!(log.contains(&format!("failed to fetch '{missing}'")), "{log}");

        let bogus = dir.path().join("bogus.tgz");
        std::fs::write(&bogus, "not an archive").unwrap();
        let e = fetcher(dir.path()).fetch_all(&[uri(&bogus.display().to_string())], &sandbox).await.unwrap_err();
        assert!(e.cause.to_string().contains("cannot extract") && e.cause.to_string().contains("tar"), "{e}");
    }

    #[tokio::test]
    async fn downloads_over_http_and_names_the_status_of_a_failure() {
        let app = axum::Router::new().route("/files/hello.txt", axum::routing::get(|| async { "hello over http\n" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let good = format!("http://{addr}/files/hello.txt");
        fetcher(dir.path()).fetch_all(&[uri(&good)], dir.path()).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(), "hello over http\n");
        let missing = format!("http://{addr}/files/missing.txt");
        let e = fetcher(dir.path()).fetch_all(&[uri(&missing)], dir.path()).await.unwrap_err();
        assert_eq!(e.uri, missing);
        assert!(e.cause.to_string().contains("HTTP 404"), "{e}");
        server.abort();
    }

    /// `openssl s_server -WWW` serving `dir` over HTTPS on a loopback port, with a fresh self-signed certificate
    /// for 127.0.0.1 (`dir/cert.pem`); killed on drop.
    struct HttpsFiles {
        child: std::process::Child,
        port: u16,
        cert: PathBuf,
    }

    impl HttpsFiles {
        async fn start(dir: &Path) -> HttpsFiles {
            tool("openssl");
            let openssl = |args: &[&str]| {
                let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().unwrap();
                assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
            };
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
                "-keyout",
                "key.pem",
                "-out",
                "cert.pem",
            ]);
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let child = std::process::Command::new("openssl")
                .args(["s_server", "-quiet", "-WWW", "-cert", "cert.pem", "-key", "key.pem", "-accept"])
                .arg(format!("127.0.0.1:{port}"))
                .current_dir(dir)
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("openssl s_server (apt-get install openssl)");
            let deadline = std::time::Instant::now() + Duration::from_secs(10);
            while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
                assert!(std::time::Instant::now() < deadline, "openssl s_server did not listen on {port}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            HttpsFiles { child, port, cert: dir.join("cert.pem") }
        }
    }

    impl Drop for HttpsFiles {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    #[tokio::test]
    async fn downloads_over_https_verifying_the_server() {
        tool("curl");
        let served = tempfile::tempdir().unwrap();
        std::fs::write(served.path().join("hello.txt"), "hello over https\n").unwrap();
        let server = HttpsFiles::start(served.path()).await;
        let url = format!("https://127.0.0.1:{}/hello.txt", server.port);
        let dir = tempfile::tempdir().unwrap();
        let trusting = Fetcher::new(dir.path().join("cache"), DEFAULT_CACHE_SIZE, Some(server.cert.clone()));
        let mut cached = uri(&url);
        cached.cache = true;
        trusting.fetch_all(&[cached], dir.path()).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(), "hello over https\n");

        // Without the CA the server's certificate is refused, and the error names the URI and why.
        let other = tempfile::tempdir().unwrap();
        let e = fetcher(other.path()).fetch_all(&[uri(&url)], other.path()).await.unwrap_err();
        assert_eq!(e.uri, url);
        assert!(e.to_string().starts_with(&format!("failed to fetch '{url}': curl: (60) SSL certificate")), "{e}");
        assert!(!other.path().join("hello.txt").exists(), "nothing is left of a failed download");
    }

    #[tokio::test]
    async fn the_cache_evicts_the_least_recently_used_and_fetches_too_big_files_uncached() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(&src).unwrap();
        for (name, size) in [("a.bin", 40), ("b.bin", 40), ("c.bin", 40), ("huge.bin", 101)] {
            std::fs::write(src.join(name), vec![b'x'; size]).unwrap();
        }
        let cached = |name: &str| {
            let mut u = uri(&src.join(name).display().to_string());
            u.cache = true;
            u
        };
        let cache = dir.path().join("cache");
        let fetcher = Fetcher::new(cache.clone(), 100, None);
        let sandbox = |n: &str| {
            let s = dir.path().join(n);
            std::fs::create_dir_all(&s).unwrap();
            s
        };
        let entry = |name: &str| cache.join(cache_key(&cached(name).value));
        fetcher.fetch_all(&[cached("a.bin"), cached("b.bin")], &sandbox("s1")).await.unwrap();
        // a is used again, so b is now the least recently used.
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::open(entry("a.bin")).unwrap().set_modified(old).unwrap();
        std::fs::File::open(entry("b.bin")).unwrap().set_modified(old).unwrap();
        fetcher.fetch_all(&[cached("a.bin")], &sandbox("s2")).await.unwrap();
        fetcher.fetch_all(&[cached("c.bin")], &sandbox("s3")).await.unwrap();
        assert!(entry("a.bin").is_file() && entry("c.bin").is_file());
        assert!(!entry("b.bin").exists(), "the least recently used entry made room");
        // Bigger than the whole cache: fetched into the sandbox all the same, nothing evicted, nothing cached.
        let s4 = sandbox("s4");
        fetcher.fetch_all(&[cached("huge.bin")], &s4).await.unwrap();
        assert_eq!(std::fs::metadata(s4.join("huge.bin")).unwrap().len(), 101);
        assert!(!entry("huge.bin").exists() && entry("a.bin").is_file() && entry("c.bin").is_file());
        assert!(std::fs::read_to_string(s4.join("stderr")).unwrap().contains("does not fit in the cache's 100 bytes"));
        let left: Vec<_> = std::fs::read_dir(&cache).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(left.len(), 2, "no partial download is left behind: {left:?}");
    }

    #[tokio::test]
    async fn output_through_an_extracted_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&sandbox).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, sandbox.join("link")).unwrap();
        let src = dir.path().join("f.txt");
        std::fs::write(&src, "x").unwrap();
        let mut u = uri(&src.display().to_string());
        u.output_file = "link/f.txt".into();
        let e = fetcher(dir.path()).fetch_all(&[u], &sandbox).await.unwrap_err();
        assert!(e.cause.to_string().contains("outside the sandbox"), "{e}");
        assert!(!outside.join("f.txt").exists());
    }
    /// Writes `bytes` as `name` under `dir` and returns its path as a URI.
    fn archive_uri(dir: &Path, name: &str, bytes: &[u8]) -> Uri {
        let path = dir.join(name);
        std::fs::write(&path, bytes).unwrap();
        uri(&path.display().to_string())
    }

    #[tokio::test]
    async fn tar_tgz_and_gz_are_extracted_in_process() {
        use crate::tarball::tests::{gzip, tar_of};
        let dir = tempfile::tempdir().unwrap();
        let tar = tar_of(&[("pkg/", None), ("pkg/a.txt", Some("a\n"))]);
        let uris = vec![
            archive_uri(dir.path(), "plain.tar", &tar),
            archive_uri(dir.path(), "packed.tgz", &gzip(&tar_of(&[("b.txt", Some("b\n"))]))),
            archive_uri(dir.path(), "packed.tar.gz", &gzip(&tar_of(&[("c.txt", Some("c\n"))]))),
            archive_uri(dir.path(), "notes.txt.gz", &gzip(b"notes\n")),
        ];
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        fetcher(&dir.path().join("cache")).fetch_all(&uris, &sandbox).await.unwrap();
        for (file, text) in [("pkg/a.txt", "a\n"), ("b.txt", "b\n"), ("c.txt", "c\n"), ("notes.txt", "notes\n")] {
            assert_eq!(std::fs::read_to_string(sandbox.join(file)).unwrap(), text, "{file}");
        }
    }

    #[tokio::test]
    async fn archives_that_would_write_outside_the_sandbox_fail_and_write_nothing_there() {
        use crate::tarball::tests::{tar_of, with_first_name};
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        let dotdot = with_first_name(tar_of(&[("x", Some("evil"))]), b"../outside/dotdot");
        let e = fetcher(dir.path()).fetch_all(&[archive_uri(dir.path(), "dotdot.tar", &dotdot)], &sandbox).await;
        let e = e.unwrap_err();
        assert!(e.to_string().contains("leaves the sandbox"), "{e}");
        let out = outside.display().to_string();
        let through = tar_of(&[("esc", Some(&format!("->{out}"))), ("esc/planted", Some("x"))]);
        let e = fetcher(dir.path()).fetch_all(&[archive_uri(dir.path(), "through.tar", &through)], &sandbox).await;
        assert!(e.unwrap_err().to_string().contains("esc/planted"));
        assert!(!outside.join("dotdot").exists() && !outside.join("planted").exists());
    }

    #[tokio::test]
    async fn bzip2_tar_archives_go_to_gnu_tar() {
        tool("tar");
        tool("bzip2");
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("pkg")).unwrap();
        std::fs::write(src.join("pkg/z.txt"), "z\n").unwrap();
        let status =
            std::process::Command::new("tar").args(["-cjf", "pkg.tar.bz2", "pkg"]).current_dir(&src).status().unwrap();
        assert!(status.success());
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(&sandbox).unwrap();
        let u = uri(&src.join("pkg.tar.bz2").display().to_string());
        fetcher(dir.path()).fetch_all(&[u], &sandbox).await.unwrap();
        assert_eq!(std::fs::read_to_string(sandbox.join("pkg/z.txt")).unwrap(), "z\n");
    }
}
