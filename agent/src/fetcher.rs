//! The fetcher: fills a task's sandbox with its `CommandInfo.uris` before the container starts, as Mesos's
//! `mesos-fetcher` does. URIs are fetched in order; the first failure stops the launch and fails the task
//! (`TASK_FAILED`, `REASON_CONTAINER_LAUNCH_FAILED`, the URI and the cause in the message). What it does goes to the
//! sandbox's `stderr`, before the task's own output.
//!
//! Sources: absolute local paths and `file:///...` (copied), `http://` URLs (downloaded with a stall timeout). The
//! decisions — where a URI comes from, where it lands in the sandbox, whether and how it is extracted, where it is
//! cached — are the pure [`plan`]; [`fetch_all`] is the thin I/O shell around it.
//!
//! Options, with Mesos's semantics: `output_file` (a path relative to the sandbox that never leaves it, default the
//! URI's file name), `executable` (chmod 755, and then no extraction), `extract` (by extension: tar archives, plain
//! or gzip/bzip2/xz-compressed, through `tar`; `.zip` through `unzip`; other `.gz` files through `gzip`; the archive
//! stays in the sandbox beside its contents), `cache` (kept in `<work_dir>/fetch-cache` and copied, or extracted
//! straight from the cache, on later launches; the cache is never evicted).

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use agora_proto::model::Uri;
use tokio::io::AsyncWriteExt;

/// How long a download may receive nothing before it is abandoned (Mesos's `--fetcher_stall_timeout`).
pub const STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// The fetcher cache under the agent's work dir.
pub const CACHE_DIR: &str = "fetch-cache";

/// Why one URI could not be fetched; every message names the URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("failed to fetch '{uri}': {cause}")]
pub struct FetchError {
    pub uri: String,
    pub cause: String,
}

/// Where a URI's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A file on the agent (an absolute path or `file:///...`).
    Local(PathBuf),
    /// An `http://` URL.
    Http(String),
}

/// How a fetched file is unpacked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Extraction {
    /// `tar -C <into> -xf <file>` (GNU tar recognises gzip, bzip2 and xz compression itself).
    Tar,
    /// `unzip -o -d <into> <file>`.
    Zip,
    /// `gzip -dc <file> > <output>`.
    Gunzip { output: PathBuf },
}

/// Everything the I/O shell does for one URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub uri: String,
    pub source: Source,
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
    let fail = |cause: String| FetchError { uri: uri.value.clone(), cause };
    let (source, name) = resolve_source(&uri.value).map_err(fail)?;
    let relative = if uri.output_file.is_empty() {
        PathBuf::from(name)
    } else {
        confined_relative(&uri.output_file).map_err(|why| fail(format!("output_file '{}' {why}", uri.output_file)))?
    };
    if !relative.components().any(|c| matches!(c, Component::Normal(_))) {
        return Err(fail("there is no file name to write to; set output_file".into()));
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

/// The source of a URI and the file name it suggests (its last path segment, without query or fragment).
fn resolve_source(value: &str) -> Result<(Source, String), String> {
    if value.is_empty() {
        return Err("the URI is empty".into());
    }
    if let Some(rest) = value.strip_prefix("file://") {
        let path = rest.strip_prefix("localhost").unwrap_or(rest);
        if !path.starts_with('/') {
            return Err("a file:// URI needs an absolute path (file:///path)".into());
        }
        return local(path);
    }
    if value.starts_with('/') {
        return local(value);
    }
    if let Some((scheme, rest)) = value.split_once("://") {
        if scheme.eq_ignore_ascii_case("http") {
            let path = rest.split(['?', '#']).next().unwrap_or_default();
            let Some((host, path)) = path.split_once('/') else {
                return Err("the URL has no path to take a file name from; set output_file".into());
            };
            if host.is_empty() {
                return Err("the URL has no host".into());
            }
            let name = path.rsplit('/').next().unwrap_or_default().to_string();
            return Ok((Source::Http(value.to_string()), name));
        }
        return Err(format!(
            "the scheme '{scheme}' is not supported by this agent: it fetches http:// URLs, file:// URIs and \
             absolute paths (https needs TLS, which the agent is built without)"
        ));
    }
    Err("a relative path needs Mesos's --frameworks_home, which this agent does not have; use an absolute path or \
         a URL"
        .into())
}

fn local(path: &str) -> Result<(Source, String), String> {
    let path = PathBuf::from(path);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err("the path contains '..'".into());
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok((Source::Local(path), name))
}

/// `output_file` as a path that stays inside the sandbox: relative, no `..`.
fn confined_relative(path: &str) -> Result<PathBuf, String> {
    let p = Path::new(path);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(part) => out.push(part),
            Component::CurDir => {}
            Component::ParentDir => return Err("must not contain '..': it would leave the sandbox".into()),
            Component::RootDir | Component::Prefix(_) => {
                return Err("must be relative to the sandbox".into());
            }
        }
    }
    if path.ends_with('/') {
        return Err("names a directory, not a file".into());
    }
    Ok(out)
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

/// Fetches every URI into `sandbox` in order, logging to the sandbox's `stderr`. The first failure ends it.
pub async fn fetch_all(uris: &[Uri], sandbox: &Path, cache_dir: &Path) -> Result<(), FetchError> {
    if uris.is_empty() {
        return Ok(());
    }
    let log_path = sandbox.join("stderr");
    let mut log = tokio::fs::OpenOptions::new().create(true).append(true).open(&log_path).await.map_err(|e| {
        FetchError { uri: uris[0].value.clone(), cause: format!("cannot open {}: {e}", log_path.display()) }
    })?;
    let client = reqwest::Client::new();
    for uri in uris {
        let step = match plan(uri, sandbox, cache_dir) {
            Ok(step) => step,
            Err(e) => {
                write_log(&mut log, &format!("{e}\n")).await;
                return Err(e);
            }
        };
        write_log(&mut log, &format!("Fetching URI '{}'\n", step.uri)).await;
        if let Err(cause) = fetch_one(&client, &step, sandbox, &mut log).await {
            let e = FetchError { uri: step.uri.clone(), cause };
            write_log(&mut log, &format!("{e}\n")).await;
            return Err(e);
        }
    }
    Ok(())
}

async fn write_log(log: &mut tokio::fs::File, line: &str) {
    // The log is for people; a full disk shows up in the fetch itself.
    // tokio's File writes in the background: flush so that the line is there when the task starts.
    let _ = log.write_all(line.as_bytes()).await;
    let _ = log.flush().await;
}

async fn fetch_one(
    client: &reqwest::Client,
    step: &Step,
    sandbox: &Path,
    log: &mut tokio::fs::File,
) -> Result<(), String> {
    let parent = &step.extract_into;
    tokio::fs::create_dir_all(parent).await.map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    // An earlier URI may have extracted a symlink: resolve before writing anything.
    let real_sandbox = tokio::fs::canonicalize(sandbox).await.map_err(|e| format!("{}: {e}", sandbox.display()))?;
    let real_parent = tokio::fs::canonicalize(parent).await.map_err(|e| format!("{}: {e}", parent.display()))?;
    if !inside(&real_sandbox, &real_parent) {
        return Err(format!("{} resolves to {}, outside the sandbox", parent.display(), real_parent.display()));
    }
    if tokio::fs::symlink_metadata(&step.destination).await.is_ok_and(|m| m.file_type().is_symlink()) {
        return Err(format!("{} is a symlink; refusing to write through it", step.destination.display()));
    }
    let fetched = match &step.cache {
        Some(entry) => {
            if tokio::fs::metadata(entry).await.is_ok() {
                write_log(log, &format!("Using the cached copy {}\n", entry.display())).await;
            } else {
                let dir = entry.parent().unwrap_or(Path::new("/"));
                tokio::fs::create_dir_all(dir).await.map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
                let partial = entry.with_extension(format!("partial-{}", uuid::Uuid::new_v4()));
                write_log(log, &format!("Downloading into the cache {}\n", entry.display())).await;
                if let Err(e) = download(client, &step.source, &partial).await {
                    let _ = tokio::fs::remove_file(&partial).await;
                    return Err(e);
                }
                tokio::fs::rename(&partial, entry)
                    .await
                    .map_err(|e| format!("cannot move {} into the cache: {e}", partial.display()))?;
            }
            if step.extraction.is_some() {
                // Mesos extracts a cached archive straight from the cache.
                entry.clone()
            } else {
                tokio::fs::copy(entry, &step.destination)
                    .await
                    .map_err(|e| format!("cannot copy {} to {}: {e}", entry.display(), step.destination.display()))?;
                step.destination.clone()
            }
        }
        None => {
            download(client, &step.source, &step.destination).await?;
            step.destination.clone()
        }
    };
    if step.executable {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(&step.destination, std::fs::Permissions::from_mode(0o755))
            .await
            .map_err(|e| format!("cannot make {} executable: {e}", step.destination.display()))?;
    }
    if let Some(extraction) = &step.extraction {
        extract(extraction, &fetched, &step.extract_into).await?;
        write_log(log, &format!("Extracted '{}' into '{}'\n", fetched.display(), step.extract_into.display())).await;
    }
    write_log(log, &format!("Fetched '{}' to '{}'\n", step.uri, step.destination.display())).await;
    Ok(())
}

/// Copies or downloads the source to `to`.
async fn download(client: &reqwest::Client, source: &Source, to: &Path) -> Result<(), String> {
    match source {
        Source::Local(path) => {
            let meta = tokio::fs::metadata(path).await.map_err(|e| format!("{}: {e}", path.display()))?;
            if !meta.is_file() {
                return Err(format!("{} is not a regular file", path.display()));
            }
            tokio::fs::copy(path, to)
                .await
                .map_err(|e| format!("cannot copy {} to {}: {e}", path.display(), to.display()))?;
            Ok(())
        }
        Source::Http(url) => {
            let mut response = tokio::time::timeout(STALL_TIMEOUT, client.get(url).send())
                .await
                .map_err(|_| format!("no response within {}s", STALL_TIMEOUT.as_secs()))?
                .map_err(|e| format!("HTTP request failed: {e}"))?;
            if !response.status().is_success() {
                return Err(format!("HTTP {}", response.status()));
            }
            let mut file =
                tokio::fs::File::create(to).await.map_err(|e| format!("cannot create {}: {e}", to.display()))?;
            loop {
                let chunk = tokio::time::timeout(STALL_TIMEOUT, response.chunk())
                    .await
                    .map_err(|_| format!("the download stalled for {}s", STALL_TIMEOUT.as_secs()))?
                    .map_err(|e| format!("the download broke off: {e}"))?;
                let Some(chunk) = chunk else { break };
                file.write_all(&chunk).await.map_err(|e| format!("cannot write {}: {e}", to.display()))?;
            }
            file.flush().await.map_err(|e| format!("cannot write {}: {e}", to.display()))?;
            Ok(())
        }
    }
}

/// Runs the extraction tool; its failure output becomes the error.
async fn extract(extraction: &Extraction, archive: &Path, into: &Path) -> Result<(), String> {
    let (program, mut command) = match extraction {
        Extraction::Tar => {
            let mut c = tokio::process::Command::new("tar");
            c.arg("-C").arg(into).arg("-xf").arg(archive);
            ("tar", c)
        }
        Extraction::Zip => {
            let mut c = tokio::process::Command::new("unzip");
            c.arg("-o").arg("-q").arg("-d").arg(into).arg(archive);
            ("unzip", c)
        }
        Extraction::Gunzip { output } => {
            let out = std::fs::File::create(output).map_err(|e| format!("cannot create {}: {e}", output.display()))?;
            let mut c = tokio::process::Command::new("gzip");
            c.arg("-dc").arg(archive).stdout(out);
            ("gzip", c)
        }
    };
    if !matches!(extraction, Extraction::Gunzip { .. }) {
        command.stdout(std::process::Stdio::null());
    }
    // Not `output()`: tokio's would pipe stdout too, and gunzip writes to a file.
    let child = command.stdin(std::process::Stdio::null()).stderr(std::process::Stdio::piped()).spawn();
    let output = match child {
        Ok(child) => child.wait_with_output().await,
        Err(e) => Err(e),
    };
    let output = output.map_err(|e| {
        let package = if program == "unzip" { "unzip" } else { "tar gzip bzip2 xz-utils" };
        format!("cannot run '{program}' to extract {}: {e} (apt-get install {package})", archive.display())
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("cannot extract {}: {program} {}: {}", archive.display(), output.status, stderr.trim()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(value: &str) -> Uri {
        Uri { value: value.into(), executable: false, extract: true, cache: false, output_file: String::new() }
    }

    const SANDBOX: &str = "/w/sandbox";
    const CACHE: &str = "/w/fetch-cache";

    fn plan_of(u: &Uri) -> Result<Step, FetchError> {
        plan(u, Path::new(SANDBOX), Path::new(CACHE))
    }

    #[test]
    fn sources_are_paths_file_uris_and_http_urls() {
        let s = plan_of(&uri("/opt/app/run.sh")).unwrap();
        assert_eq!(s.source, Source::Local("/opt/app/run.sh".into()));
        assert_eq!(s.destination, Path::new("/w/sandbox/run.sh"));
        let s = plan_of(&uri("file:///opt/app/run.sh")).unwrap();
        assert_eq!(s.source, Source::Local("/opt/app/run.sh".into()));
        let s = plan_of(&uri("file://localhost/opt/x")).unwrap();
        assert_eq!(s.source, Source::Local("/opt/x".into()));
        let s = plan_of(&uri("http://127.0.0.1:8000/dl/app.bin?token=1#frag")).unwrap();
        assert_eq!(s.source, Source::Http("http://127.0.0.1:8000/dl/app.bin?token=1#frag".into()));
        assert_eq!(s.destination, Path::new("/w/sandbox/app.bin"));
        assert_eq!(s.extract_into, Path::new(SANDBOX));
    }

    #[test]
    fn unsupported_and_relative_uris_are_refused_naming_them() {
        for (value, needle) in [
            ("https://example.org/a.tgz", "scheme 'https' is not supported"),
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
            assert!(e.cause.contains(needle), "{value}: {e}");
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
        assert!(found, "'{name}' is missing: apt-get install tar gzip bzip2 xz-utils unzip");
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
        fetch_all(&uris, &sandbox, &cache).await.unwrap();

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
        fetch_all(&[cached], &again, &cache).await.unwrap();
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
        let e = fetch_all(&[uri(&missing)], &sandbox, dir.path()).await.unwrap_err();
        assert_eq!(e.uri, missing);
        assert!(e.cause.contains("No such file"), "{e}");
        let log = std::fs::read_to_string(sandbox.join("stderr")).unwrap();
        assert!(log.contains(&format!("failed to fetch '{missing}'")), "{log}");

        let bogus = dir.path().join("bogus.tgz");
        std::fs::write(&bogus, "not an archive").unwrap();
        let e = fetch_all(&[uri(&bogus.display().to_string())], &sandbox, dir.path()).await.unwrap_err();
        assert!(e.cause.contains("cannot extract") && e.cause.contains("tar"), "{e}");
    }

    #[tokio::test]
    async fn downloads_over_http_and_names_the_status_of_a_failure() {
        let app = axum::Router::new().route("/files/hello.txt", axum::routing::get(|| async { "hello over http\n" }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let dir = tempfile::tempdir().unwrap();
        let good = format!("http://{addr}/files/hello.txt");
        fetch_all(&[uri(&good)], dir.path(), dir.path()).await.unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("hello.txt")).unwrap(), "hello over http\n");
        let missing = format!("http://{addr}/files/missing.txt");
        let e = fetch_all(&[uri(&missing)], dir.path(), dir.path()).await.unwrap_err();
        assert_eq!(e.uri, missing);
        assert!(e.cause.contains("HTTP 404"), "{e}");
        server.abort();
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
        let e = fetch_all(&[u], &sandbox, dir.path()).await.unwrap_err();
        assert!(e.cause.contains("outside the sandbox"), "{e}");
        assert!(!outside.join("f.txt").exists());
    }
}
