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

impl Source {
    pub fn read(path: &Path) -> Result<Source, ConfigErrors> {
        match std::fs::read_to_string(path) {
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
