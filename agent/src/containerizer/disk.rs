//! Mesos's `disk/du`: the disk a sandbox uses, measured by walking it as `du` does (allocated blocks, each inode
//! once, no symlinks followed, no other filesystems entered).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Bytes allocated under `dir` (`du -s -B1 -x`); unreadable entries count as nothing.
pub fn du_bytes(dir: &Path) -> u64 {
    let Ok(root) = std::fs::symlink_metadata(dir) else { return 0 };
    let device = root.dev();
    let mut seen = HashSet::new();
    let mut total = root.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let Ok(m) = entry.metadata() else { continue };
            if m.dev() != device {
                continue;
            }
            if m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino()) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(entry.path());
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_allocated_bytes_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let empty = du_bytes(dir.path());
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/big"), vec![7u8; 1 << 20]).unwrap();
        std::fs::hard_link(dir.path().join("sub/big"), dir.path().join("again")).unwrap();
        let used = du_bytes(dir.path());
        assert!(used >= empty + (1 << 20), "{used}");
        assert!(used < empty + (2 << 20), "the hard link counts once: {used}");
        assert_eq!(du_bytes(&dir.path().join("missing")), 0);
    }
}
