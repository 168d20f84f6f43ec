//! `--reload`: polls the app's Python files and reports when one changes.
//!
//! Polling (once a second) rather than inotify keeps this dependency-free
//! and works on every filesystem; it is a development aid, not a
//! production path. What to do about a change is the supervisor's call.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Files looked at, at most; a tree larger than this is cut short.
const MAX_FILES: usize = 20_000;
const INTERVAL: Duration = Duration::from_secs(1);

type Snapshot = HashMap<PathBuf, SystemTime>;

/// Calls `changed` with a changed file's path whenever a `.py` file under
/// `roots` is added, removed or modified. Runs until `changed` returns false.
pub async fn watch(roots: Vec<PathBuf>, mut changed: impl FnMut(PathBuf) -> bool) {
    let scan_roots = roots.clone();
    let mut last = match tokio::task::spawn_blocking(move || scan(&scan_roots)).await {
        Ok(s) => s,
        Err(_) => return,
    };
    loop {
        tokio::time::sleep(INTERVAL).await;
        let scan_roots = roots.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || scan(&scan_roots)).await else {
            return;
        };
        if let Some(path) = first_difference(&last, &now) {
            if !changed(path) {
                return;
            }
        }
        last = now;
    }
}

fn first_difference(old: &Snapshot, new: &Snapshot) -> Option<PathBuf> {
    for (path, mtime) in new {
        if old.get(path) != Some(mtime) {
            return Some(path.clone());
        }
    }
    old.keys().find(|p| !new.contains_key(*p)).cloned()
}

fn scan(roots: &[PathBuf]) -> Snapshot {
    let mut found = Snapshot::new();
    for root in roots {
        walk(root, &mut found);
    }
    found
}

fn walk(dir: &Path, found: &mut Snapshot) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        if found.len() >= MAX_FILES {
            return;
        }
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let Ok(kind) = entry.file_type() else { continue };
        if kind.is_dir() {
            if !skipped_dir(&name) {
                walk(&path, found);
            }
        } else if name.ends_with(".py") {
            if let Ok(mtime) = entry.metadata().and_then(|m| m.modified()) {
                found.insert(path, mtime);
            }
        }
    }
}

/// Directories that hold no app code worth reloading for.
fn skipped_dir(name: &str) -> bool {
    name.starts_with('.')
        || matches!(name, "__pycache__" | "site-packages" | "node_modules" | "venv" | "env" | "target")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_sees_python_files_and_skips_caches() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.py"), "x = 1").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        std::fs::create_dir(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/app.py"), "").unwrap();
        std::fs::create_dir(dir.path().join("pkg")).unwrap();
        std::fs::write(dir.path().join("pkg/mod.py"), "").unwrap();
        let snap = scan(&[dir.path().to_path_buf()]);
        let mut names: Vec<_> = snap.keys().map(|p| p.strip_prefix(dir.path()).unwrap().to_path_buf()).collect();
        names.sort();
        assert_eq!(names, vec![PathBuf::from("app.py"), PathBuf::from("pkg/mod.py")]);
    }

    #[test]
    fn differences_cover_change_addition_and_removal() {
        let t0 = SystemTime::UNIX_EPOCH;
        let t1 = t0 + Duration::from_secs(1);
        let a: Snapshot = [(PathBuf::from("a.py"), t0)].into();
        let changed: Snapshot = [(PathBuf::from("a.py"), t1)].into();
        let added: Snapshot = [(PathBuf::from("a.py"), t0), (PathBuf::from("b.py"), t0)].into();
        assert_eq!(first_difference(&a, &a), None);
        assert_eq!(first_difference(&a, &changed), Some(PathBuf::from("a.py")));
        assert_eq!(first_difference(&a, &added), Some(PathBuf::from("b.py")));
        assert_eq!(first_difference(&added, &a), Some(PathBuf::from("b.py")));
    }
}
