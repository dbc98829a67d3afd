//! A config file's text -> parse, validate and compile into a snapshot: errors are
//! fine, a panic is not; the errors' messages (with line, column, key path) are
//! rendered too.
//!
//! The file sits in a scratch directory holding the example whitelist (`staff.txt`)
//! and TLS pair (`certs/`), so the examples compile; other files it names simply fail.
//! `[log] access` is dropped before compiling: it opens (creates) a file at a path the
//! input chooses and starts a writer thread.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use graygate::config::{compile, parse, Source};
use graygate::shared::Shared;
use libfuzzer_sys::fuzz_target;

fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("graygate-fuzz-{}", std::process::id()));
        let config = concat!(env!("CARGO_MANIFEST_DIR"), "/../config");
        std::fs::create_dir_all(dir.join("certs")).unwrap();
        for file in ["staff.txt", "certs/example.pem", "certs/example.key"] {
            let _ = std::fs::copy(format!("{config}/{file}"), dir.join(file));
        }
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source {
        path: scratch().join("graygate.toml"),
        text: text.to_string(),
    };
    let mut file = match parse(&source) {
        Ok(file) => file,
        Err(errors) => {
            let _ = errors.to_string();
            return;
        }
    };
    file.log.access = None;
    match compile(file, &source, &Shared::new()) {
        Ok(snapshot) => drop(snapshot),
        Err(errors) => {
            let _ = errors.to_string();
        }
    }
});
