//! App ids: slash paths (`/prod/web`), normalised as Marathon does — `//` collapsed, relative ids made absolute
//! against a base, `.`/`..` resolved — and validated segment by segment.

/// Marathon's segment rule, spelled as in its error message.
pub const ID_REGEX: &str =
    "^(([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])\\.)*([a-z0-9]|[a-z0-9][a-z0-9\\-]*[a-z0-9])|(\\.|\\.\\.)$";

/// Normalises `raw` relative to `base` (an absolute group path such as `/` or `/prod`): collapses empty
/// segments, resolves `.` and `..`, and returns the absolute path. Does not validate the segments.
pub fn normalize(raw: &str, base: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    if !raw.starts_with('/') {
        segments.extend(base.split('/').filter(|s| !s.is_empty()));
    }
    for seg in raw.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s),
        }
    }
    format!("/{}", segments.join("/"))
}

fn valid_label(label: &str) -> bool {
    let b = label.as_bytes();
    !b.is_empty()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether one segment fits Marathon's rule: dot-separated labels of `[a-z0-9-]`, not starting or ending with `-`.
pub fn valid_segment(segment: &str) -> bool {
    segment.split('.').all(valid_label)
}

/// Checks a raw id before normalisation; the errors are Marathon's wording.
pub fn validate(raw: &str) -> Result<String, String> {
    let normalized = normalize(raw, "/");
    if normalized == "/" {
        return Err("Path must contain at least one path element".into());
    }
    for seg in raw.split('/').filter(|s| !s.is_empty() && *s != "." && *s != "..") {
        if !valid_segment(seg) {
            return Err(format!("must fit regex '{ID_REGEX}'"));
        }
    }
    Ok(normalized)
}

/// The prefix of task ids: the path without its leading slash, `/` replaced by `_` (`/prod/web` → `prod_web`).
pub fn task_prefix(id: &str) -> String {
    id.trim_start_matches('/').replace('/', "_")
}

/// Mesos task name: the path reversed and dot-joined (`/prod/web` → `web.prod`).
pub fn task_name(id: &str) -> String {
    let mut parts: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
    parts.reverse();
    parts.join(".")
}

/// The deepest group holding every app id given (`/prod/web` and `/prod/db/pg` → `/prod`; none → `/`): the
/// `groupId` of a change's `group_change_success` event.
pub fn common_group<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let mut common: Option<Vec<&str>> = None;
    for id in ids {
        let mut parent: Vec<&str> = id.split('/').filter(|s| !s.is_empty()).collect();
        parent.pop();
        common = Some(match common {
            None => parent,
            Some(c) => c.iter().zip(&parent).take_while(|(a, b)| a == b).map(|(a, _)| *a).collect(),
        });
    }
    format!("/{}", common.unwrap_or_default().join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_group_is_the_deepest_shared_parent() {
        assert_eq!(common_group(["/prod/web", "/prod/db/pg"]), "/prod");
        assert_eq!(common_group(["/prod/web"]), "/prod");
        assert_eq!(common_group(["/web", "/prod/db"]), "/");
        assert_eq!(common_group([]), "/");
    }

    #[test]
    fn normalizes_slashes_and_relative_ids() {
        assert_eq!(normalize("//prod///web/", "/"), "/prod/web");
        assert_eq!(normalize("web", "/prod"), "/prod/web");
        assert_eq!(normalize("../db", "/prod/web"), "/prod/db");
        assert_eq!(normalize("./x", "/"), "/x");
    }

    #[test]
    fn validates_segments() {
        assert_eq!(validate("prod/web-1").unwrap(), "/prod/web-1");
        assert!(validate("/Prod").unwrap_err().starts_with("must fit regex"));
        assert!(validate("/web-").is_err());
        assert!(validate("/a_b").is_err());
        assert!(validate("/").is_err());
        assert!(validate("/a.b/c").is_ok());
    }

    #[test]
    fn task_names() {
        assert_eq!(task_prefix("/prod/web"), "prod_web");
        assert_eq!(task_name("/prod/web"), "web.prod");
    }
}
