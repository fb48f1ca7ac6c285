//! Garbage collection of sandboxes, as Mesos's agent does it: the sandbox of a container that ended is deleted
//! `--gc-delay` after it ended, sooner as the disk fills. Every `--disk-watch-interval` the agent measures the disk
//! of its work dir and deletes the sandboxes older than `gc_delay × max(0, 1 − gc_disk_headroom − disk used)`
//! (Mesos's formula: with the default headroom 0.1, a disk 90 % full keeps no finished sandbox).
//!
//! A sandbox's age is the time since its directory's mtime, which the agent sets when the container ends; a sandbox
//! left from before a restart that never got that mark counts from its last change, as in Mesos's recovery. Only
//! sandboxes of containers the agent no longer tracks go: [`InUse`] is asked with the agent's lock held, so no task
//! can start using a directory between the question and its removal. Emptied parents (`runs`, the task's
//! `executors/<task_id>`, the framework's and a former agent id's directories) go with their last sandbox.
//!
//! [`max_age`] and [`due`] are pure; [`scan`] and [`collect`] are the file system around them.

use std::ops::Deref;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use crate::files::sandboxes_root;

/// The work dir could not be scanned or measured; each names the directory.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    #[error("cannot read {}: {source}", path.display())]
    ReadDir { path: PathBuf, source: std::io::Error },
    #[error("cannot measure the disk of {}: {source}", path.display())]
    Disk { path: PathBuf, source: nix::Error },
}

/// How old an ended sandbox may get: `delay × max(0, 1 − headroom − used)`, `used` the fraction of the disk in use.
pub fn max_age(delay: Duration, headroom: f64, used: f64) -> Duration {
    let keep = (1.0 - headroom - used).clamp(0.0, 1.0);
    delay.mul_f64(keep)
}

/// One sandbox on disk: `<work_dir>/slaves/<agent_id>/frameworks/<framework_id>/executors/<task_id>/runs/<container_id>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    pub agent_id: String,
    pub framework_id: String,
    pub task_id: String,
    pub container_id: String,
    pub path: PathBuf,
    /// When its container ended (the directory's mtime).
    pub ended: SystemTime,
}

/// The sandboxes older than `max_age` at `now`, oldest first. A sandbox from the future (a clock set back) is not
/// old.
pub fn due(sandboxes: &[Sandbox], now: SystemTime, max_age: Duration) -> Vec<&Sandbox> {
    let mut old: Vec<&Sandbox> =
        sandboxes.iter().filter(|s| now.duration_since(s.ended).is_ok_and(|age| age >= max_age)).collect();
    old.sort_by_key(|s| s.ended);
    old
}

/// What the agent still uses. Asked with the agent's lock held (see [`collect`]).
pub trait InUse {
    /// The current agent id, whose directory stays.
    fn agent_id(&self) -> Option<&str>;
    /// A tracked task runs (or ran, and is not forgotten yet) in this container.
    fn uses_container(&self, framework_id: &str, task_id: &str, container_id: &str) -> bool;
    /// A tracked task has this framework and task id.
    fn uses_task(&self, framework_id: &str, task_id: &str) -> bool;
    /// A tracked task belongs to this framework.
    fn uses_framework(&self, framework_id: &str) -> bool;
}

/// The sandboxes under `work_dir`, with their ids and mtimes. Entries that vanish while scanning are skipped;
/// a directory that cannot be read is an error naming it.
pub fn scan(work_dir: &Path) -> Result<Vec<Sandbox>, GcError> {
    let mut out = Vec::new();
    let root = sandboxes_root(work_dir);
    for (agent_id, agent_dir) in subdirs(&root)? {
        for (framework_id, framework_dir) in subdirs(&agent_dir.join("frameworks"))? {
            for (task_id, task_dir) in subdirs(&framework_dir.join("executors"))? {
                for (container_id, path) in subdirs(&task_dir.join("runs"))? {
                    let Ok(meta) = std::fs::symlink_metadata(&path) else { continue };
                    let Ok(ended) = meta.modified() else { continue };
                    out.push(Sandbox {
                        agent_id: agent_id.clone(),
                        framework_id: framework_id.clone(),
                        task_id: task_id.clone(),
                        container_id,
                        path,
                        ended,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// The directories in `dir` (none if it does not exist), by name. Names that are not UTF-8 are not ours.
fn subdirs(dir: &Path) -> Result<Vec<(String, PathBuf)>, GcError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(GcError::ReadDir { path: dir.to_path_buf(), source }),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
        if let (true, Ok(name)) = (is_dir, entry.file_name().into_string()) {
            out.push((name, entry.path()));
        }
    }
    out.sort();
    Ok(out)
}

/// What the collector did over the agent's life: Mesos's `gc/path_removals_succeeded`, `gc/path_removals_failed`
/// and `gc/path_removals_pending`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub succeeded: u64,
    pub failed: u64,
    /// Ended sandboxes waiting for their time, at the last collection.
    pub pending: u64,
}

/// What one collection did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    /// Sandboxes deleted.
    pub removed: Vec<PathBuf>,
    /// Sandboxes that could not be deleted, with why.
    pub failed: Vec<(PathBuf, String)>,
    /// Ended sandboxes kept for later.
    pub pending: usize,
}

/// Deletes the sandboxes of `scanned` that are older than `max_age` and no longer in use, then their emptied
/// parents. `in_use` locks the agent and returns what it uses; the lock is held for each check and the removal of
/// empty parents (cheap `rmdir`s), never while a sandbox's files are deleted (a container id that is not in use
/// never comes back).
pub fn collect<G, U>(
    work_dir: &Path,
    scanned: &[Sandbox],
    now: SystemTime,
    max_age: Duration,
    in_use: impl Fn() -> G,
) -> Report
where
    G: Deref<Target = U>,
    U: InUse + ?Sized,
{
    let mut report = Report::default();
    let mut gone: std::collections::HashSet<&Path> = std::collections::HashSet::new();
    let root = sandboxes_root(work_dir);
    for s in due(scanned, now, max_age) {
        if in_use().uses_container(&s.framework_id, &s.task_id, &s.container_id) {
            continue;
        }
        match std::fs::remove_dir_all(&s.path) {
            Ok(()) => {
                gone.insert(&s.path);
                report.removed.push(s.path.clone());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                gone.insert(&s.path);
                continue;
            }
            Err(e) => {
                report.failed.push((s.path.clone(), e.to_string()));
                continue;
            }
        }
        let used = in_use();
        let agent_dir = root.join(&s.agent_id);
        let framework_dir = agent_dir.join("frameworks").join(&s.framework_id);
        let task_dir = framework_dir.join("executors").join(&s.task_id);
        let mut parents = vec![task_dir.join("runs")];
        if !used.uses_task(&s.framework_id, &s.task_id) {
            parents.push(task_dir);
            if !used.uses_framework(&s.framework_id) {
                parents.push(framework_dir.join("executors"));
                parents.push(framework_dir);
                if used.agent_id() != Some(s.agent_id.as_str()) {
                    parents.push(agent_dir.join("frameworks"));
                    parents.push(agent_dir);
                }
            }
        }
        // Each only if empty: the first that is not ends the climb.
        for dir in parents {
            if std::fs::remove_dir(&dir).is_err() {
                break;
            }
        }
    }
    let used = in_use();
    report.pending = scanned
        .iter()
        .filter(|s| !gone.contains(s.path.as_path()))
        .filter(|s| !used.uses_container(&s.framework_id, &s.task_id, &s.container_id))
        .count();
    report
}

/// The fraction of the file system holding `dir` in use (0.0 to 1.0), as Mesos's `fs::usage` counts it:
/// `(blocks − free blocks) / blocks` (blocks reserved for root count as free).
pub fn disk_used(dir: &Path) -> Result<f64, GcError> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(|source| GcError::Disk { path: dir.to_path_buf(), source })?;
    let total = st.blocks() as f64;
    if total == 0.0 {
        return Ok(0.0);
    }
    Ok(((total - st.blocks_free() as f64) / total).clamp(0.0, 1.0))
}

/// Marks the sandbox of a container that just ended: its age for [`collect`] counts from now.
pub fn mark_ended(sandbox: &Path, now: SystemTime) -> std::io::Result<()> {
    std::fs::File::open(sandbox)?.set_modified(now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    const DAY: Duration = Duration::from_secs(86_400);
    const WEEK: Duration = Duration::from_secs(7 * 86_400);

    #[test]
    fn the_disk_shortens_the_delay_as_mesos_computes_it() {
        assert_eq!(max_age(WEEK, 0.1, 0.0), WEEK.mul_f64(0.9));
        assert_eq!(max_age(WEEK, 0.1, 0.4), WEEK.mul_f64(0.5));
        assert_eq!(max_age(WEEK, 0.1, 0.9), Duration::ZERO);
        assert_eq!(max_age(WEEK, 0.1, 1.0), Duration::ZERO, "never negative");
        assert_eq!(max_age(WEEK, 0.0, 0.0), WEEK);
    }

    fn sandbox(task: &str, ended: SystemTime) -> Sandbox {
        Sandbox {
            agent_id: "a".into(),
            framework_id: "f".into(),
            task_id: task.into(),
            container_id: format!("c-{task}"),
            path: PathBuf::from(task),
            ended,
        }
    }

    #[test]
    fn due_takes_the_old_enough_oldest_first() {
        let now = SystemTime::UNIX_EPOCH + 10 * WEEK;
        let all = [
            sandbox("young", now - DAY),
            sandbox("old", now - 2 * WEEK),
            sandbox("older", now - 3 * WEEK),
            sandbox("just", now - WEEK),
            sandbox("future", now + DAY),
        ];
        let names: Vec<&str> = due(&all, now, WEEK).iter().map(|s| s.task_id.as_str()).collect();
        assert_eq!(names, ["older", "old", "just"]);
        assert_eq!(due(&all, now, Duration::ZERO).len(), 4, "a sandbox from the future is not old");
    }

    /// A fake of the agent's tracked tasks: (framework, task, container).
    struct Tracked {
        agent: String,
        tasks: BTreeSet<(String, String, String)>,
    }

    impl InUse for Tracked {
        fn agent_id(&self) -> Option<&str> {
            Some(&self.agent)
        }
        fn uses_container(&self, f: &str, t: &str, c: &str) -> bool {
            self.tasks.contains(&(f.into(), t.into(), c.into()))
        }
        fn uses_task(&self, f: &str, t: &str) -> bool {
            self.tasks.iter().any(|(tf, tt, _)| tf == f && tt == t)
        }
        fn uses_framework(&self, f: &str) -> bool {
            self.tasks.iter().any(|(tf, _, _)| tf == f)
        }
    }

    fn make(work: &Path, agent: &str, framework: &str, task: &str, container: &str, ended: SystemTime) -> PathBuf {
        let dir = crate::sandbox::sandbox_dir(work, agent, framework, task, container);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("stdout"), "out").unwrap();
        mark_ended(&dir, ended).unwrap();
        dir
    }

    #[test]
    fn old_unused_sandboxes_go_with_their_emptied_parents_and_nothing_in_use_is_touched() {
        let work = tempfile::tempdir().unwrap();
        let w = work.path();
        let now = SystemTime::now();
        let old = now - 2 * WEEK;
        // A finished task whose framework still runs another task.
        let done = make(w, "a1", "f1", "done", "c1", old);
        let running = make(w, "a1", "f1", "running", "c2", old);
        // A task id reused: its old container ended, its new one runs.
        let reused_old = make(w, "a1", "f1", "again", "c3", old);
        let reused_new = make(w, "a1", "f1", "again", "c4", old);
        // Recently ended: kept.
        let recent = make(w, "a1", "f2", "recent", "c5", now - DAY);
        // A former agent id's last sandbox: the whole tree goes.
        let former = make(w, "a0", "f0", "gone", "c6", old);
        let tracked = Tracked {
            agent: "a1".into(),
            tasks: [("f1", "running", "c2"), ("f1", "again", "c4")]
                .into_iter()
                .map(|(f, t, c)| (f.to_string(), t.to_string(), c.to_string()))
                .collect(),
        };
        let scanned = scan(w).unwrap();
        assert_eq!(scanned.len(), 6);
        let report = collect(w, &scanned, now, WEEK, || &tracked);

        let removed: BTreeSet<PathBuf> = report.removed.iter().cloned().collect();
        assert_eq!(removed, BTreeSet::from([done.clone(), reused_old.clone(), former.clone()]));
        assert!(report.failed.is_empty(), "{:?}", report.failed);
        assert_eq!(report.pending, 1, "the recent one");
        assert!(running.join("stdout").is_file() && reused_new.is_dir() && recent.is_dir());
        // Emptied parents go; the framework in use and the current agent's directory stay.
        let root = sandboxes_root(w);
        assert!(!root.join("a1/frameworks/f1/executors/done").exists());
        assert!(root.join("a1/frameworks/f1/executors/again/runs").is_dir());
        assert!(!root.join("a0").exists(), "a former agent id's emptied tree");
        assert!(root.join("a1/frameworks/f2/executors/recent").is_dir());

        // Once the disk is 90 % full (max age 0), the recent one goes too, and the current agent's dir stays.
        let report = collect(w, &scan(w).unwrap(), now, max_age(WEEK, 0.1, 0.9), || &tracked);
        assert_eq!(report.removed, [recent]);
        assert!(!root.join("a1/frameworks/f2").exists() && root.join("a1/frameworks/f1").is_dir());
    }

    #[test]
    fn a_missing_work_dir_has_no_sandboxes_and_the_disk_is_measured() {
        let work = tempfile::tempdir().unwrap();
        assert_eq!(scan(&work.path().join("nothing")).unwrap(), []);
        let used = disk_used(work.path()).unwrap();
        assert!((0.0..=1.0).contains(&used), "{used}");
        assert!(disk_used(&work.path().join("nothing")).unwrap_err().to_string().contains("nothing"));
    }
}
