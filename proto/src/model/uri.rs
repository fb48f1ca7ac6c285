//! Which URIs an agent can fetch (`CommandInfo.uris`, Marathon's `fetch`), decided once: Marathon refuses an app
//! whose URI no agent could fetch, and the agent's fetcher reads where to fetch from, with the same rule.
//!
//! Agents fetch `http://` and `https://` URLs (with a host) and files on the agent: an absolute path, or
//! `file:///path` (`file://localhost/path`), with no `..` in it. Anything else is refused with a [`UriError`] that
//! says why: an empty URI, a relative path (Mesos resolves those against `--frameworks_home`, which Agora's agents do
//! not have), another scheme (`ftp://`, `hdfs://`, `s3://`), a `file://` URI naming a host.
//!
//! [`FetchSource::default_file_name`] is the name a fetched file gets in the sandbox when no output file is given
//! (the URI's last path segment); a URI without one needs an explicit output file (see [`super::SandboxPath`]).

use std::path::{Component, Path, PathBuf};

/// Where a fetchable URI's bytes come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchSource {
    /// A file on the agent (an absolute path, or the path of a `file://` URI).
    Local(PathBuf),
    /// An `http://` or `https://` URL, as given.
    Http(String),
}

/// Why no agent can fetch a URI. Messages say what is wrong, not which URI (the caller names it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    #[error("the URI is empty")]
    Empty,
    #[error("a file:// URI needs an absolute path (file:///path)")]
    FileNotAbsolute,
    #[error("the path contains '..'")]
    ParentDir,
    #[error("the URL has no host")]
    NoHost,
    #[error(
        "the scheme '{0}' is not supported: agents fetch http:// and https:// URLs, file:// URIs and absolute paths"
    )]
    Scheme(String),
    #[error("a relative path needs Mesos's --frameworks_home, which agents do not have; use an absolute path or a URL")]
    Relative,
    /// Only from [`FetchSource::default_file_name`].
    #[error("the URL has no path to take a file name from; set output_file")]
    NoPath,
    /// Only from [`FetchSource::default_file_name`].
    #[error("there is no file name to write to; set output_file")]
    NoFileName,
}

impl FetchSource {
    /// Where `uri` is fetched from, or why no agent can fetch it.
    pub fn parse(uri: &str) -> Result<FetchSource, UriError> {
        if uri.is_empty() {
            return Err(UriError::Empty);
        }
        if let Some(rest) = uri.strip_prefix("file://") {
            let path = rest.strip_prefix("localhost").unwrap_or(rest);
            if !path.starts_with('/') {
                return Err(UriError::FileNotAbsolute);
            }
            return local(path);
        }
        if uri.starts_with('/') {
            return local(uri);
        }
        let Some((scheme, rest)) = uri.split_once("://") else { return Err(UriError::Relative) };
        if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
            return Err(UriError::Scheme(scheme.to_string()));
        }
        let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
        if host.is_empty() {
            return Err(UriError::NoHost);
        }
        Ok(FetchSource::Http(uri.to_string()))
    }

    /// The file name a fetched URI gets when no output file is given: the last segment of its path (of a URL's
    /// path, without query or fragment). A URL without a path ([`UriError::NoPath`]) or a path ending in `/`
    /// ([`UriError::NoFileName`]) has none.
    pub fn default_file_name(&self) -> Result<String, UriError> {
        let name = match self {
            FetchSource::Local(path) => path.file_name().map(|n| n.to_string_lossy().into_owned()),
            FetchSource::Http(url) => {
                let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
                let before_query = rest.split(['?', '#']).next().unwrap_or_default();
                let Some((_, path)) = before_query.split_once('/') else { return Err(UriError::NoPath) };
                path.rsplit('/').next().map(str::to_string)
            }
        };
        name.filter(|n| !n.is_empty()).ok_or(UriError::NoFileName)
    }
}

fn local(path: &str) -> Result<FetchSource, UriError> {
    let path = Path::new(path);
    if path.components().any(|c| c == Component::ParentDir) {
        return Err(UriError::ParentDir);
    }
    Ok(FetchSource::Local(path.to_path_buf()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn fetchable_uris_and_their_file_names() {
        let local = |p: &str| FetchSource::Local(p.into());
        let http = |u: &str| FetchSource::Http(u.into());
        let cases: &[(&str, FetchSource, Result<&str, UriError>)] = &[
            ("/opt/app/run.sh", local("/opt/app/run.sh"), Ok("run.sh")),
            ("file:///opt/app/run.sh", local("/opt/app/run.sh"), Ok("run.sh")),
            ("file://localhost/opt/x", local("/opt/x"), Ok("x")),
            ("/", local("/"), Err(UriError::NoFileName)),
            ("https://example.org/dl/app.tgz", http("https://example.org/dl/app.tgz"), Ok("app.tgz")),
            ("HTTP://h:8000/a.bin?token=1#frag", http("HTTP://h:8000/a.bin?token=1#frag"), Ok("a.bin")),
            ("http://h/dir/?x=/y", http("http://h/dir/?x=/y"), Err(UriError::NoFileName)),
            ("http://example.org", http("http://example.org"), Err(UriError::NoPath)),
            ("http://example.org?q=a/b", http("http://example.org?q=a/b"), Err(UriError::NoPath)),
        ];
        for (uri, source, name) in cases {
            let parsed = FetchSource::parse(uri).unwrap();
            assert_eq!(&parsed, source, "{uri}");
            assert_eq!(parsed.default_file_name().as_deref().map_err(Clone::clone), name.clone(), "{uri}");
        }
    }

    #[test]
    fn unfetchable_uris_say_why() {
        let cases: &[(&str, UriError)] = &[
            ("", UriError::Empty),
            ("app/run.sh", UriError::Relative),
            ("run.sh", UriError::Relative),
            ("file://host/x", UriError::FileNotAbsolute),
            ("file:relative", UriError::Relative),
            ("/opt/../etc/passwd", UriError::ParentDir),
            ("file:///a/../b", UriError::ParentDir),
            ("http://", UriError::NoHost),
            ("https:///path", UriError::NoHost),
            ("ftp://example.org/a.tgz", UriError::Scheme("ftp".into())),
            ("hdfs://nn/a", UriError::Scheme("hdfs".into())),
        ];
        for (uri, error) in cases {
            assert_eq!(FetchSource::parse(uri).as_ref(), Err(error), "{uri}");
        }
        assert_eq!(
            UriError::Scheme("s3".into()).to_string(),
            "the scheme 's3' is not supported: agents fetch http:// and https:// URLs, file:// URIs and absolute paths"
        );
    }

    proptest! {
        /// A local source never holds `..`, and its default file name is a single path segment.
        #[test]
        fn local_sources_stay_put(segments in proptest::collection::vec("[a-z.]{1,4}", 1..5)) {
            let uri = format!("/{}", segments.join("/"));
            match FetchSource::parse(&uri) {
                Ok(FetchSource::Local(path)) => {
                    prop_assert!(!path.components().any(|c| c == Component::ParentDir));
                    if let Ok(name) = FetchSource::Local(path).default_file_name() {
                        prop_assert!(!name.contains('/') && !name.is_empty());
                    }
                }
                Ok(other) => prop_assert!(false, "{uri} parsed as {other:?}"),
                Err(e) => prop_assert_eq!(e, UriError::ParentDir, "{}", uri),
            }
        }

        /// Every URI either parses or is refused with a reason; nothing panics.
        #[test]
        fn any_text_is_decided(uri in ".{0,40}") {
            let _ = FetchSource::parse(&uri).map(|s| s.default_file_name());
        }
    }
}
