//! Configuration: TOML text → serde structs that mirror the file ([`model`]) →
//! validation and compilation in one pass ([`compile`]) → an immutable
//! [`Snapshot`](crate::snapshot::Snapshot) the request path reads.
//!
//! Every error names the file, the line and column, and the key path
//! (`rules[3].match.permille`); validation collects every problem, not just the first.

mod compile;
mod error;
mod locate;
mod mirror;
pub mod model;
mod rollout;

use std::path::{Path, PathBuf};

pub use compile::compile;
pub use error::{ConfigError, ConfigErrors, KeyPath};
pub use model::ConfigFile;

use locate::Locator;

/// The text of a config file and where it came from. Relative `whitelist_file`
/// paths resolve against the file's directory.
#[derive(Debug, Clone)]
pub struct Source {
    pub path: PathBuf,
    pub text: String,
}

/// The most a config file may hold.
pub const MAX_CONFIG_BYTES: u64 = 16 << 20;
/// The most a whitelist file may hold.
pub const MAX_WHITELIST_BYTES: u64 = 64 << 20;
/// The most a certificate or key file may hold.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a file the config names, if it is a regular file of at most `max` bytes. A
/// FIFO, a device or a directory is refused before a byte is read: a FIFO blocks until
/// a writer comes, and `/dev/zero` never ends.
pub fn read_regular(path: &Path, max: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    // O_NONBLOCK makes opening a FIFO return at once instead of waiting for
    // a writer; the type is then checked on the handle itself, so a file
    // swapped between a check and the open cannot slip through.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        let kind = if metadata.is_dir() {
            "a directory"
        } else {
            "not a regular file (a FIFO, a socket or a device)"
        };
        return Err(std::io::Error::other(kind));
    }
    if metadata.len() > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    let mut bytes = Vec::new();
    file.take(max + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > max {
        return Err(std::io::Error::other(format!("larger than {max} bytes")));
    }
    Ok(bytes)
}

impl Source {
    pub fn read(path: &Path) -> Result<Source, ConfigErrors> {
        let text = read_regular(path, MAX_CONFIG_BYTES).and_then(|bytes| {
            String::from_utf8(bytes).map_err(|_| std::io::Error::other("not UTF-8 text"))
        });
        match text {
            Ok(text) => Ok(Source {
                path: path.to_path_buf(),
                text,
            }),
            Err(err) => Err(ConfigErrors::one(ConfigError::file(
                path,
                format!("cannot read: {err}"),
            ))),
        }
    }

    pub fn base_dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

/// Parses the TOML into the file's structs. A syntax or type error stops here (serde
/// reports one at a time); it still gets a line, a column and a key path.
pub fn parse(source: &Source) -> Result<ConfigFile, ConfigErrors> {
    toml::from_str(&source.text).map_err(|err| {
        let locator = Locator::new(&source.text);
        // A key missing from the top level comes with the empty span 0..0: no place.
        let span = err.span().filter(|s| !s.is_empty() || s.start > 0);
        let offset = span.as_ref().map(|s| s.start);
        let key = span.and_then(|span| locator.path_at(span));
        ConfigErrors::one(ConfigError::located(
            &source.path,
            &locator,
            offset,
            key,
            err.message().trim().to_string(),
        ))
    })
}

/// Reads, parses, validates and compiles a config file. Nothing is returned unless
/// all of it is valid.
pub fn load(
    path: &Path,
    shared: &crate::shared::Shared,
) -> Result<crate::snapshot::Snapshot, ConfigErrors> {
    let source = Source::read(path)?;
    let file = parse(&source)?;
    compile(file, &source, shared)
}

/// Every file a config file names (itself, its whitelist files and TLS pair), read from
/// disk whether or not the config is valid, so a reload watcher can follow files a
/// failed config is waiting for. Best effort: a file that does not parse names itself.
pub fn referenced_files(path: &Path) -> Vec<PathBuf> {
    let mut files = vec![path.to_path_buf()];
    let Ok(source) = Source::read(path) else {
        return files;
    };
    let Ok(file) = parse(&source) else {
        return files;
    };
    let base = source.base_dir();
    files.extend(
        file.rules
            .iter()
            .filter_map(|r| r.conditions.whitelist_file.as_ref())
            .map(|f| base.join(f)),
    );
    if let Some(tls) = &file.server.tls {
        files.extend([base.join(&tls.cert), base.join(&tls.key)]);
    }
    files
}
