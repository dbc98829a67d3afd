//! The config's JSON Schema, generated from the serde model ([`super::model`]), and the
//! walk that uses it to find every unknown key of a file: one list of keys, the
//! model's, for editors (taplo, VS Code's Even Better TOML), CI and `check` alike.
//!
//! serde's `deny_unknown_fields` stops at the first unknown key; the walk reports each
//! one with its place and the nearest known name, so the rest of the file can still be
//! checked in the same run.

use std::sync::OnceLock;

use serde_json::{Map, Value};
use toml_edit::{Document, Item, Table, Value as TomlValue};

use super::error::KeyPath;
use super::model::ConfigFile;

/// Where the schema is kept in the repository, for editors and CI.
pub const SCHEMA_FILE: &str = "config/graygate.schema.json";

/// The schema, generated once. Draft 7, the draft editors' TOML tools (taplo, VS Code's
/// Even Better TOML) read best.
pub fn schema() -> &'static Value {
    static SCHEMA: OnceLock<Value> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut schema = schemars::generate::SchemaSettings::draft07()
            .into_generator()
            .into_root_schema_for::<ConfigFile>()
            .to_value();
        schema["title"] = "graygate configuration".into();
        schema["description"] = "graygate's config file (TOML). Generated from the serde model by \
             `graygate schema`; do not edit by hand."
            .into();
        schema
    })
}

/// The schema as committed in [`SCHEMA_FILE`]: pretty JSON and a final newline.
pub fn schema_text() -> String {
    let mut text = serde_json::to_string_pretty(schema()).expect("a JSON value serializes");
    text.push('\n');
    text
}

/// A key the schema does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct UnknownKey {
    pub path: KeyPath,
    /// Byte offset of the key in the text.
    pub offset: Option<usize>,
    pub message: String,
}

/// Every key of `document` that the schema does not allow, in file order.
pub(crate) fn unknown_keys(document: &Document<&str>) -> Vec<UnknownKey> {
    let root = schema();
    let mut found = Vec::new();
    Walk {
        root,
        found: &mut found,
    }
    .table(document.as_table(), root, &KeyPath::root());
    found.sort_by_key(|u| u.offset);
    found
}

struct Walk<'s, 'f> {
    root: &'s Value,
    found: &'f mut Vec<UnknownKey>,
}

/// What a schema says about the keys of a table.
struct Shape<'s> {
    properties: Option<&'s Map<String, Value>>,
    /// The schema of keys not in `properties` (a map's values); `None` when such keys
    /// are refused or the schema says nothing.
    additional: Option<&'s Value>,
    closed: bool,
}

impl<'s> Walk<'s, '_> {
    /// Follows `$ref`s (JSON pointers into the schema: `#/definitions/Pool`) to the
    /// schema they name.
    fn resolve(&self, mut schema: &'s Value) -> &'s Value {
        for _ in 0..32 {
            let Some(pointer) = schema
                .get("$ref")
                .and_then(Value::as_str)
                .and_then(|r| r.strip_prefix('#'))
            else {
                break;
            };
            match self.root.pointer(pointer) {
                Some(target) => schema = target,
                None => break,
            }
        }
        schema
    }

    /// The schemas a value may have to match: the parts of `anyOf` and `oneOf` (an
    /// `Option` is `T` or null) and of `allOf` (draft 7 wraps a `$ref` that has a
    /// `default` beside it in one), or the schema itself.
    fn variants(&self, schema: &'s Value) -> Vec<&'s Value> {
        let schema = self.resolve(schema);
        let listed = ["anyOf", "oneOf", "allOf"]
            .iter()
            .filter_map(|k| schema.get(*k).and_then(Value::as_array))
            .flatten()
            .flat_map(|variant| self.variants(variant))
            .collect::<Vec<_>>();
        if listed.is_empty() {
            vec![schema]
        } else {
            listed
        }
    }

    fn shape(&self, schema: &'s Value) -> Option<Shape<'s>> {
        self.variants(schema).into_iter().find_map(|variant| {
            let properties = variant.get("properties").and_then(Value::as_object);
            let additional = variant.get("additionalProperties");
            if properties.is_none() && additional.is_none() {
                return None;
            }
            Some(Shape {
                properties,
                additional: additional.filter(|a| a.is_object()),
                closed: additional == Some(&Value::Bool(false)),
            })
        })
    }

    fn items(&self, schema: &'s Value) -> Option<&'s Value> {
        self.variants(schema)
            .into_iter()
            .find_map(|variant| variant.get("items"))
    }

    fn table(&mut self, table: &Table, schema: &'s Value, path: &KeyPath) {
        let Some(shape) = self.shape(schema) else {
            return;
        };
        for (key, item) in table.iter() {
            let span = table.key(key).and_then(|k| k.span());
            self.entry(&shape, key, span.map(|s| s.start), Child::Item(item), path);
        }
    }

    fn inline(&mut self, table: &toml_edit::InlineTable, schema: &'s Value, path: &KeyPath) {
        let Some(shape) = self.shape(schema) else {
            return;
        };
        for (key, value) in table.iter() {
            let span = table.key(key).and_then(|k| k.span());
            self.entry(
                &shape,
                key,
                span.map(|s| s.start),
                Child::Value(value),
                path,
            );
        }
    }

    fn entry(
        &mut self,
        shape: &Shape<'s>,
        key: &str,
        offset: Option<usize>,
        child: Child<'_>,
        path: &KeyPath,
    ) {
        let path = path.key(key);
        if let Some(schema) = shape.properties.and_then(|p| p.get(key)) {
            self.child(child, schema, &path);
        } else if let Some(schema) = shape.additional {
            self.child(child, schema, &path);
        } else if shape.closed {
            let known: Vec<&str> = shape
                .properties
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            self.found.push(UnknownKey {
                path,
                offset,
                message: unknown_key_message(key, &known),
            });
        }
    }

    fn child(&mut self, child: Child<'_>, schema: &'s Value, path: &KeyPath) {
        match child {
            Child::Item(Item::Table(table)) => self.table(table, schema, path),
            Child::Item(Item::ArrayOfTables(tables)) => {
                if let Some(items) = self.items(schema) {
                    for (i, table) in tables.iter().enumerate() {
                        self.table(table, items, &path.index(i));
                    }
                }
            }
            Child::Item(Item::Value(value)) | Child::Value(value) => match value {
                TomlValue::InlineTable(table) => self.inline(table, schema, path),
                TomlValue::Array(array) => {
                    if let Some(items) = self.items(schema) {
                        for (i, value) in array.iter().enumerate() {
                            self.child(Child::Value(value), items, &path.index(i));
                        }
                    }
                }
                _ => {}
            },
            Child::Item(Item::None) => {}
        }
    }
}

#[derive(Clone, Copy)]
enum Child<'d> {
    Item(&'d Item),
    Value(&'d TomlValue),
}

/// `unknown key `endpoint`; did you mean `endpoints`?`, or the keys allowed there.
fn unknown_key_message(key: &str, known: &[&str]) -> String {
    let nearest = known
        .iter()
        .map(|k| (strsim::jaro_winkler(key, k), *k))
        .filter(|(similarity, _)| *similarity > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    match nearest {
        Some((_, name)) => format!("unknown key `{key}`; did you mean `{name}`?"),
        None if known.is_empty() => format!("unknown key `{key}`; no keys are allowed here"),
        None => {
            let list: Vec<String> = known.iter().map(|k| format!("`{k}`")).collect();
            format!("unknown key `{key}`; expected one of {}", list.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(text: &str) -> Vec<(String, String)> {
        let document = Document::parse(text).unwrap();
        unknown_keys(&document)
            .into_iter()
            .map(|u| (u.path.to_string(), u.message))
            .collect()
    }

    #[test]
    fn every_unknown_key_is_found_with_the_nearest_name() {
        let text = "[server]\nlisen = \"127.0.0.1:1\"\n\n[pools.blue]\nendpoint = [\"a:1\"]\nhealth_check = { path = \"/h\", intervall = \"1s\" }\n\n[routing]\nstable = \"blue\"\n\n[[rules]]\nname = \"r\"\nto = \"blue\"\nmatch = { header = { name = \"x\", exact = \"y\", regexp = \"z\" } }\n\n[bogus]\nx = 1\n";
        assert_eq!(
            unknown(text),
            [
                (
                    "server.lisen".to_string(),
                    "unknown key `lisen`; did you mean `listen`?".to_string()
                ),
                (
                    "pools.blue.endpoint".to_string(),
                    "unknown key `endpoint`; did you mean `endpoints`?".to_string()
                ),
                (
                    "pools.blue.health_check.intervall".to_string(),
                    "unknown key `intervall`; did you mean `interval`?".to_string()
                ),
                (
                    "rules[0].match.header.regexp".to_string(),
                    "unknown key `regexp`; did you mean `regex`?".to_string()
                ),
                (
                    "bogus".to_string(),
                    "unknown key `bogus`; expected one of `server`, `limits`, `pools`, `routing`, `rules`, `log`, `rollout`, `mirror`".to_string()
                ),
            ]
        );
    }

    #[test]
    fn a_valid_file_has_none() {
        let text =
            std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/config/graygate.toml"))
                .unwrap();
        assert_eq!(unknown(&text), []);
    }
}
