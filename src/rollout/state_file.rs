//! The rollout's state on disk, so a restart resumes where the rollout was.
//!
//! A save writes a temporary file beside the state file, syncs it, renames it over the
//! old one and syncs the directory: a crash leaves the old state or the new, never a
//! torn file. A file that cannot be read is reported as such, never taken as "no
//! rollout yet": the caller pauses rather than restarting at the first step.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::machine::{RolloutState, Transition};
use super::Identity;

/// The format this build writes and reads.
pub const FORMAT: u32 = 1;
/// A state file is a few KiB; anything this large is not one.
const MAX_BYTES: u64 = 1 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Saved {
    pub format: u32,
    pub identity: Identity,
    pub steps: Vec<u16>,
    pub state: RolloutState,
    /// The most recent transitions, oldest first.
    #[serde(default)]
    pub transitions: Vec<Transition>,
    pub saved_at_ms: u64,
}

#[derive(Debug)]
pub enum Loaded {
    /// No file: no rollout has saved state here yet.
    Missing,
    Saved(Saved),
    /// The file exists but does not hold a state this build can use.
    Unreadable(String),
}

pub fn load(path: &Path) -> Loaded {
    // A symlink whose target is gone is not "no state yet": the state is lost.
    if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) && !path.exists() {
        return Loaded::Unreadable(format!(
            "{} is a symlink to a file that does not exist",
            path.display()
        ));
    }
    let text = match read_bounded(path) {
        Ok(text) => text,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Loaded::Missing,
        Err(err) => return Loaded::Unreadable(format!("cannot read {}: {err}", path.display())),
    };
    let saved: Saved = match serde_json::from_str(&text) {
        Ok(saved) => saved,
        Err(err) => {
            return Loaded::Unreadable(format!("{} is not a rollout state: {err}", path.display()))
        }
    };
    if saved.format != FORMAT {
        return Loaded::Unreadable(format!(
            "{} has format {}; this graygate reads format {FORMAT}",
            path.display(),
            saved.format
        ));
    }
    let increasing = saved.steps.windows(2).all(|w| w[0] < w[1]);
    if saved.steps.is_empty() || !increasing || saved.steps.iter().any(|&w| w > 1000) {
        return Loaded::Unreadable(format!("{} holds invalid steps", path.display()));
    }
    if saved.state.step >= saved.steps.len() || saved.state.held_weight.is_some_and(|w| w > 1000) {
        return Loaded::Unreadable(format!("{} holds a step outside its steps", path.display()));
    }
    Loaded::Saved(saved)
}

/// Reads a regular file of at most [`MAX_BYTES`]: a FIFO or a device is refused
/// rather than read forever.
fn read_bounded(path: &Path) -> io::Result<String> {
    let metadata = fs::metadata(path)?;
    if !metadata.is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let mut text = String::new();
    File::open(path)?
        .take(MAX_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_BYTES {
        return Err(io::Error::other(format!("larger than {MAX_BYTES} bytes")));
    }
    Ok(text)
}

/// Replaces the state file with `saved`, atomically and durably. A symlinked state file
/// is replaced where it points, so the link stays.
pub fn save(path: &Path, saved: &Saved) -> io::Result<()> {
    let target;
    let path = if fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) {
        target = fs::canonicalize(path)?;
        target.as_path()
    } else {
        path
    };
    let mut text = serde_json::to_string_pretty(saved).map_err(io::Error::other)?;
    text.push('\n');
    let temporary = sibling(path, ".tmp");
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&temporary)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    result
}

/// Copies an unreadable state file aside (`<file>.unreadable`), so the next save does
/// not destroy what an operator may want to look at.
pub fn set_aside(path: &Path) -> io::Result<PathBuf> {
    // Only a regular file: copying a FIFO would block forever.
    if !fs::metadata(path)?.is_file() {
        return Err(io::Error::other("not a regular file; left as it is"));
    }
    let aside = sibling(path, ".unreadable");
    fs::copy(path, &aside)?;
    Ok(aside)
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(suffix);
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::machine::RolloutState;

    fn saved() -> Saved {
        Saved {
            format: FORMAT,
            identity: Identity {
                rule: "canary-rollout".into(),
                canary_version: "v2".into(),
            },
            steps: vec![10, 100, 1000],
            state: RolloutState::start(5),
            transitions: Vec::new(),
            saved_at_ms: 6,
        }
    }

    #[test]
    fn a_saved_state_loads_back_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollout.state");
        assert!(matches!(load(&path), Loaded::Missing));
        save(&path, &saved()).unwrap();
        match load(&path) {
            Loaded::Saved(loaded) => assert_eq!(loaded, saved()),
            other => panic!("{other:?}"),
        }
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["rollout.state"]);
    }

    #[test]
    fn garbage_a_bad_step_and_a_fifo_are_unreadable_not_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rollout.state");
        fs::write(&path, "{ not json").unwrap();
        assert!(matches!(load(&path), Loaded::Unreadable(_)));
        let mut bad = saved();
        bad.state.step = 3;
        fs::write(&path, serde_json::to_string(&bad).unwrap()).unwrap();
        assert!(matches!(load(&path), Loaded::Unreadable(m) if m.contains("outside its steps")));
        fs::remove_file(&path).unwrap();
        let status = std::process::Command::new("mkfifo")
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(matches!(load(&path), Loaded::Unreadable(m) if m.contains("not a regular file")));
        // Copying a FIFO aside would block forever: it is refused at once.
        assert!(set_aside(&path).is_err());
        fs::remove_file(&path).unwrap();
        std::os::unix::fs::symlink(dir.path().join("gone"), &path).unwrap();
        assert!(matches!(load(&path), Loaded::Unreadable(m) if m.contains("does not exist")));
    }

    #[test]
    fn a_symlinked_state_file_is_saved_where_it_points() {
        let dir = tempfile::tempdir().unwrap();
        let (link, target) = (
            dir.path().join("rollout.state"),
            dir.path().join("real.state"),
        );
        fs::write(&target, "old").unwrap();
        std::os::unix::fs::symlink(&target, &link).unwrap();
        save(&link, &saved()).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(matches!(load(&target), Loaded::Saved(_)));
    }
}
