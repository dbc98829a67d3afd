//! Reload when the config file or a whitelist file changes.
//!
//! The watch is on each file's directory, not its inode, so every way a file gets
//! replaced is seen: an in-place write, an editor's write-then-rename, and a Kubernetes
//! ConfigMap update (the file is a symlink through `..data`, and an update swaps that
//! symlink atomically). A file reached through a symlink is also watched where the
//! link points, so an edit at the target is seen. The files followed are those the
//! config on disk names, even when it does not compile yet: a whitelist file created
//! after the config that names it still triggers the reload. A burst of events from
//! one save becomes one reload.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::event::{AccessKind, AccessMode};
use notify::{Event, EventKind, RecommendedWatcher, RecursiveMode, Watcher};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::reload::Reloader;

/// A save is over when no event has come for this long.
const QUIET: Duration = Duration::from_millis(100);
/// A stream of events never delays a reload longer than this.
const MAX_DELAY: Duration = Duration::from_secs(1);

/// Starts watching the files of the config in force; the returned future reloads on
/// each change and follows the set of files as reloads change it.
pub fn watch_files(
    reloader: Arc<Reloader>,
) -> notify::Result<impl std::future::Future<Output = ()>> {
    let (events, mut incoming) = mpsc::unbounded_channel::<Event>();
    let mut watcher =
        notify::recommended_watcher(move |event: notify::Result<Event>| match event {
            Ok(event) => {
                let _ = events.send(event);
            }
            Err(err) => warn!(error = %err, "file watch error"),
        })?;
    let mut watched = Watched::default();
    watched.follow(&mut watcher, &files_to_follow(&reloader));
    Ok(async move {
        while let Some(event) = incoming.recv().await {
            if !watched.concerns(&event) {
                continue;
            }
            debug!(?event, "config file change");
            settle(&mut incoming).await;
            let _ = reloader.reload_logged("file change").await;
            watched.follow(&mut watcher, &files_to_follow(&reloader));
        }
    })
}

/// The files of the config in force, and those the config on disk names (it may be a
/// failed candidate waiting for one of them), each also at its symlink target.
fn files_to_follow(reloader: &Reloader) -> Vec<PathBuf> {
    let mut files = reloader.live().load().origin.files.clone();
    files.extend(crate::config::referenced_files(reloader.path()));
    let targets: Vec<PathBuf> = files
        .iter()
        .filter_map(|f| std::fs::canonicalize(f).ok())
        .collect();
    files.extend(targets);
    files.sort();
    files.dedup();
    files
}

/// Waits until events stop for [`QUIET`], at most [`MAX_DELAY`].
async fn settle(incoming: &mut mpsc::UnboundedReceiver<Event>) {
    let deadline = Instant::now() + MAX_DELAY;
    while let Ok(Some(_)) =
        tokio::time::timeout_at(deadline.min(Instant::now() + QUIET), incoming.recv()).await
    {}
}

/// The directories watched and the file names in them that matter.
#[derive(Debug, Default)]
struct Watched {
    directories: BTreeSet<PathBuf>,
    names: HashSet<OsString>,
}

impl Watched {
    /// Watches the directories of `files`, and stops watching those no longer needed.
    fn follow(&mut self, watcher: &mut RecommendedWatcher, files: &[PathBuf]) {
        let wanted: BTreeSet<PathBuf> = files.iter().map(|f| directory_of(f)).collect();
        for gone in self.directories.difference(&wanted) {
            let _ = watcher.unwatch(gone);
        }
        for new in wanted.difference(&self.directories) {
            if let Err(err) = watcher.watch(new, RecursiveMode::NonRecursive) {
                warn!(directory = %new.display(), error = %err, "cannot watch; reload with SIGHUP or POST /admin/reload");
            }
        }
        self.directories = wanted;
        self.names = files
            .iter()
            .filter_map(|f| f.file_name().map(OsString::from))
            .collect();
    }

    /// An event that may change a watched file: a write, create, rename or removal of
    /// one of the names, or of ConfigMap's `..data` machinery. Reads are not changes
    /// (the reload itself reads the files).
    fn concerns(&self, event: &Event) -> bool {
        let changes = match event.kind {
            EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
            EventKind::Access(_) => false,
            _ => true,
        };
        changes
            && event.paths.iter().any(|path| {
                path.file_name().is_some_and(|name| {
                    self.names.contains(name)
                        || name.to_str().is_some_and(|n| n.starts_with("..data"))
                })
            })
    }
}

fn directory_of(file: &Path) -> PathBuf {
    match file.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
