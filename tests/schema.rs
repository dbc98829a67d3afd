//! The config's JSON Schema: the committed file is what the code generates (so it
//! cannot drift from the serde model), and what it refuses, `check` refuses too. CI
//! validates every `config/*.toml` against it with Python's `jsonschema`
//! (`scripts/check_schema.py`), and checks that it rejects `tests/data/schema_invalid/`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_committed_schema_is_the_one_the_code_generates() {
    let output = Command::new(common::bin())
        .arg("schema")
        .output()
        .expect("run graygate schema");
    assert!(output.status.success());
    let generated = String::from_utf8(output.stdout).unwrap();
    let committed = std::fs::read_to_string(manifest().join("config/graygate.schema.json"))
        .expect("config/graygate.schema.json");
    assert!(
        generated == committed,
        "config/graygate.schema.json is out of date: run `cargo run -- schema > config/graygate.schema.json`"
    );
    let schema: serde_json::Value = serde_json::from_str(&generated).unwrap();
    assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    let defined =
        |name: &str, key: &str| schema["definitions"][name]["properties"][key].is_object();
    assert!(defined("Pool", "resolve_every"));
    assert!(defined("Server", "dns"));
    assert!(defined("Server", "watch"));
    assert!(defined("Log", "user_key"));
}

fn fixtures() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(manifest().join("tests/data/schema_invalid"))
        .expect("tests/data/schema_invalid")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

#[test]
fn check_refuses_every_file_the_schema_refuses() {
    let files = fixtures();
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let output = Command::new(common::bin())
            .args(["check", "--config"])
            .arg(&file)
            .output()
            .expect("run graygate check");
        assert_eq!(
            output.status.code(),
            Some(1),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
