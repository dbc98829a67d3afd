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
mod schema;

use std::path::{Path, PathBuf};

pub use compile::compile;
pub use error::{ConfigError, ConfigErrors, KeyPath};
pub use model::ConfigFile;
pub use schema::{schema_text, SCHEMA_FILE};

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

/// Parses the TOML into the file's structs. Any unknown key is an error.
pub fn parse(source: &Source) -> Result<ConfigFile, ConfigErrors> {
    match parse_all(source)? {
        (file, unknown) if unknown.is_empty() => Ok(file),
        (_, unknown) => Err(ConfigErrors(unknown)),
    }
}

/// Parses the TOML into the file's structs, and reports every unknown key (the schema's
/// walk) beside them: the structs are built without those keys, so the rest of the file
/// can be checked in the same run. A syntax or type error stops here (serde reports one
/// at a time); it still gets a line, a column and a key path, and comes with the unknown
/// keys.
fn parse_all(source: &Source) -> Result<(ConfigFile, Vec<ConfigError>), ConfigErrors> {
    let text = source.text.as_str();
    // A file serde takes has no unknown key (`deny_unknown_fields`): the schema's walk
    // is for files with errors.
    if let Ok(file) = toml::from_str(text) {
        return Ok((file, Vec::new()));
    }
    let unknown = match toml_edit::Document::parse(text) {
        Ok(document) => schema::unknown_keys(&document),
        // A syntax error: serde's message below says where.
        Err(_) => Vec::new(),
    };
    if unknown.is_empty() {
        return deserialize(source, text, None).map(|file| (file, Vec::new()));
    }
    let locator = Locator::new(text);
    let mut errors: Vec<ConfigError> = unknown
        .iter()
        .map(|u| {
            let key = Some(u.path.clone());
            ConfigError::located(&source.path, &locator, u.offset, key, u.message.clone())
        })
        .collect();
    let mut document: toml_edit::DocumentMut = text.parse().expect("the text parsed above");
    for u in &unknown {
        remove(document.as_item_mut(), u.path.segments());
    }
    match deserialize(source, &document.to_string(), Some(&locator)) {
        Ok(file) => Ok((file, errors)),
        Err(ConfigErrors(more)) => {
            errors.extend(more);
            errors.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
            Err(ConfigErrors(errors))
        }
    }
}

/// serde's pass over `text`. When `text` is the original with keys taken out,
/// `original` places its error in the original by the error's key path.
fn deserialize(
    source: &Source,
    text: &str,
    original: Option<&Locator<'_>>,
) -> Result<ConfigFile, ConfigErrors> {
    toml::from_str(text).map_err(|err| {
        let locator = Locator::new(text);
        // A key missing from the top level comes with the empty span 0..0: no place.
        let span = err.span().filter(|s| !s.is_empty() || s.start > 0);
        let key = span.clone().and_then(|span| locator.path_at(span));
        let (locator, offset) = match original {
            None => (&locator, span.map(|s| s.start)),
            Some(original) => (original, key.as_ref().and_then(|k| original.offset_of(k))),
        };
        ConfigErrors::one(ConfigError::located(
            &source.path,
            locator,
            offset,
            key,
            err.message().trim().to_string(),
        ))
    })
}

/// Takes the key at `path` out of the document.
fn remove(item: &mut toml_edit::Item, path: &[error::Segment]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut item = item;
    for segment in parents {
        let next = match segment {
            error::Segment::Key(key) => item.get_mut(key.as_str()),
            error::Segment::Index(index) => item.get_mut(*index),
        };
        match next {
            Some(next) => item = next,
            None => return,
        }
    }
    if let (error::Segment::Key(key), Some(table)) = (last, item.as_table_like_mut()) {
        table.remove(key);
    }
}

/// Reads, parses, validates and compiles a config file. Nothing is returned unless
/// all of it is valid; the errors are all of them, unknown keys included.
pub fn load(
    path: &Path,
    shared: &crate::shared::Shared,
) -> Result<crate::snapshot::Snapshot, ConfigErrors> {
    let source = Source::read(path)?;
    let (file, mut unknown) = parse_all(&source)?;
    match compile(file, &source, shared) {
        Ok(snapshot) if unknown.is_empty() => Ok(snapshot),
        Ok(_) => Err(ConfigErrors(unknown)),
        Err(ConfigErrors(errors)) => {
            unknown.extend(errors);
            unknown.sort_by_key(|e| (e.line.is_none(), e.line, e.column));
            Err(ConfigErrors(unknown))
        }
    }
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
