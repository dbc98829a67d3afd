//! Maps key paths to places in the TOML text and back, so errors found after parsing
//! (an unknown pool, a bad regex) still carry a line and column.
//!
//! The serde structs stay plain; a second, span-keeping parse with `toml_edit` is made
//! only when there is an error to place.

use std::ops::Range;

use toml_edit::{Document, Item, Table, Value};

use super::error::{KeyPath, Segment};

pub(crate) struct Locator<'t> {
    text: &'t str,
    document: Option<Document<&'t str>>,
}

/// A node of the span-keeping tree: tables and values are different types there.
#[derive(Clone, Copy)]
enum Node<'d> {
    Item(&'d Item),
    Table(&'d Table),
    Value(&'d Value),
}

impl<'d> Node<'d> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(item) => item.span(),
            Node::Table(table) => table.span(),
            Node::Value(value) => value.span(),
        }
    }

    /// `(key span, child)` for a key of a table or inline table.
    fn child_key(self, key: &str) -> Option<(Option<Range<usize>>, Node<'d>)> {
        let (k, item) = match self {
            Node::Item(Item::Table(t)) | Node::Table(t) => t.get_key_value(key)?,
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                t.get_key_value(key)?
            }
            _ => return None,
        };
        Some((k.span(), Node::Item(item)))
    }

    fn child_index(self, index: usize) -> Option<Node<'d>> {
        match self {
            Node::Item(Item::ArrayOfTables(a)) => a.get(index).map(Node::Table),
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                a.get(index).map(Node::Value)
            }
            _ => None,
        }
    }

    /// Children with their key spans, for searching by offset.
    fn children(self) -> Vec<(Segment, Option<Range<usize>>, Node<'d>)> {
        let mut out = Vec::new();
        match self {
            Node::Item(Item::Table(t)) | Node::Table(t) => {
                for (key, item) in t.iter() {
                    let key_span = t.key(key).and_then(|k| k.span());
                    out.push((Segment::Key(key.to_string()), key_span, Node::Item(item)));
                }
            }
            Node::Item(Item::Value(Value::InlineTable(t))) | Node::Value(Value::InlineTable(t)) => {
                for (key, value) in t.iter() {
                    let key_span = t.key(key).and_then(|k| k.span());
                    out.push((Segment::Key(key.to_string()), key_span, Node::Value(value)));
                }
            }
            Node::Item(Item::ArrayOfTables(a)) => {
                for (i, table) in a.iter().enumerate() {
                    out.push((Segment::Index(i), None, Node::Table(table)));
                }
            }
            Node::Item(Item::Value(Value::Array(a))) | Node::Value(Value::Array(a)) => {
                for (i, value) in a.iter().enumerate() {
                    out.push((Segment::Index(i), None, Node::Value(value)));
                }
            }
            _ => {}
        }
        out
    }
}

impl<'t> Locator<'t> {
    pub(crate) fn new(text: &'t str) -> Self {
        Locator {
            text,
            document: Document::parse(text).ok(),
        }
    }

    /// The byte offset of the value at `path`, or of the deepest part of the path that
    /// exists (a missing key is reported at its table).
    pub(crate) fn offset_of(&self, path: &KeyPath) -> Option<usize> {
        let mut node = Node::Item(self.document.as_ref()?.as_item());
        let mut best = None;
        for segment in path.segments() {
            let next = match segment {
                Segment::Key(key) => node.child_key(key).map(|(key_span, child)| {
                    best = child.span().or(key_span).or(best.clone());
                    child
                }),
                Segment::Index(index) => node.child_index(*index).inspect(|child| {
                    best = child.span().or(best.clone());
                }),
            };
            match next {
                Some(child) => node = child,
                None => break,
            }
        }
        best.map(|span| span.start)
    }

    /// The key path of the innermost key or value whose extent covers all of `span`
    /// (an unknown key's span is the key; a missing key's span is its whole table).
    pub(crate) fn path_at(&self, span: Range<usize>) -> Option<KeyPath> {
        let mut node = Node::Item(self.document.as_ref()?.as_item());
        let mut path = Vec::new();
        'descend: loop {
            for (segment, key_span, child) in node.children() {
                let covered = extent(key_span, child);
                if covered.is_some_and(|c| c.start <= span.start && span.end <= c.end) {
                    path.push(segment);
                    node = child;
                    continue 'descend;
                }
            }
            break;
        }
        Some(KeyPath::from_segments(path))
    }

    /// 1-based line and column (in characters) of a byte offset.
    pub(crate) fn line_column(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..floor_char_boundary(self.text, offset)];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, column)
    }
}

/// The text a key and its value occupy, including everything nested in it: tables
/// defined by headers (`[pools.blue]`, `[[rules]]`) have no span covering their body.
fn extent(key_span: Option<Range<usize>>, node: Node<'_>) -> Option<Range<usize>> {
    let mut covered = union(key_span, node.span());
    for (_, child_key, child) in node.children() {
        covered = union(covered, extent(child_key, child));
    }
    covered
}

fn union(a: Option<Range<usize>>, b: Option<Range<usize>>) -> Option<Range<usize>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.start.min(b.start)..a.end.max(b.end)),
        (a, b) => a.or(b),
    }
}

fn floor_char_boundary(text: &str, mut offset: usize) -> usize {
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "[routing]\nstable = \"blue\"\n\n[[rules]]\nname = \"a\"\nmatch = { permille = 5 }\nto = \"x\"\n\n[[rules]]\nname = \"b\"\nmatch = { rate = 2.0 }\nto = \"y\"\n";

    #[test]
    fn finds_values_in_arrays_of_tables_and_inline_tables() {
        let locator = Locator::new(TEXT);
        let path = KeyPath::root()
            .key("rules")
            .index(1)
            .key("match")
            .key("rate");
        let offset = locator.offset_of(&path).unwrap();
        assert_eq!(locator.line_column(offset), (11, 18));
        let path = KeyPath::root().key("rules").index(0).key("to");
        assert_eq!(
            locator.line_column(locator.offset_of(&path).unwrap()),
            (7, 6)
        );
    }

    #[test]
    fn missing_key_points_at_its_table() {
        let locator = Locator::new(TEXT);
        let path = KeyPath::root()
            .key("rules")
            .index(1)
            .key("match")
            .key("nope");
        let offset = locator.offset_of(&path).unwrap();
        assert_eq!(locator.line_column(offset).0, 11);
    }

    #[test]
    fn path_at_span() {
        let locator = Locator::new(TEXT);
        let at = |needle: &str| {
            let start = TEXT.find(needle).unwrap();
            locator
                .path_at(start..start + needle.len())
                .unwrap()
                .to_string()
        };
        assert_eq!(at("2.0"), "rules[1].match.rate");
        assert_eq!(at("\"blue\""), "routing.stable");
        assert_eq!(at("permille"), "rules[0].match.permille");
        // A span over the whole document (a missing top-level key) names no key.
        assert_eq!(locator.path_at(0..TEXT.len()).unwrap().to_string(), "");
    }
}
