//! Where each key and value of a `lake.toml` sits in the file, for error messages.

use std::collections::HashMap;
use std::ops::Range;

use toml::de::{DeTable, DeValue};

/// Byte spans of every key and value, by dotted path (`steps.report.depends_on[1]`).
#[derive(Debug, Default, Clone)]
pub(crate) struct SpanIndex {
    keys: HashMap<String, Range<usize>>,
    values: HashMap<String, Range<usize>>,
    line_starts: Vec<usize>,
}

impl SpanIndex {
    /// Index `text`; a text that does not parse gives an index with line numbers only.
    pub(crate) fn new(text: &str) -> Self {
        let mut index = Self {
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            ..Self::default()
        };
        if let Ok(root) = DeTable::parse(text) {
            index.table("", root.get_ref());
        }
        index
    }

    fn table(&mut self, prefix: &str, table: &DeTable<'_>) {
        for (key, value) in table {
            let path = if prefix.is_empty() {
                key.get_ref().to_string()
            } else {
                format!("{prefix}.{}", key.get_ref())
            };
            self.keys.insert(path.clone(), key.span());
            self.value(path, value.get_ref(), value.span());
        }
    }

    fn value(&mut self, path: String, value: &DeValue<'_>, span: Range<usize>) {
        match value {
            DeValue::Table(t) => self.table(&path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.value(format!("{path}[{i}]"), item.get_ref(), item.span());
                }
            }
            _ => {}
        }
        self.values.insert(path, span);
    }

    /// Line and column (1-based) of a byte offset.
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        let line = self.line_starts.partition_point(|&s| s <= offset).max(1);
        (line, offset - self.line_starts[line - 1] + 1)
    }

    /// Where a value is (falling back to its key, then to its parents).
    pub(crate) fn value_pos(&self, path: &str) -> (usize, usize) {
        self.find(path, true)
    }

    /// Where a key is written (falling back to its value, then to its parents).
    pub(crate) fn key_pos(&self, path: &str) -> (usize, usize) {
        self.find(path, false)
    }

    fn find(&self, path: &str, value_first: bool) -> (usize, usize) {
        let mut path = path;
        loop {
            let (first, second) = if value_first {
                (&self.values, &self.keys)
            } else {
                (&self.keys, &self.values)
            };
            if let Some(span) = first.get(path).or_else(|| second.get(path)) {
                return self.line_col(span.start);
            }
            match path.rfind(['.', '[']) {
                Some(i) => path = &path[..i],
                None => return (1, 1),
            }
        }
    }

    /// True when the dotted `path` is a key of the file.
    pub(crate) fn has_key(&self, path: &str) -> bool {
        self.keys.contains_key(path)
    }

    /// The file's top-level keys, in no order.
    pub(crate) fn top_keys(&self) -> impl Iterator<Item = &str> {
        self.keys
            .keys()
            .map(String::as_str)
            .filter(|k| !k.contains(['.', '[']))
    }

    /// The dotted path of the innermost key whose key or value span contains `offset`.
    pub(crate) fn key_at(&self, offset: usize) -> Option<&str> {
        self.keys
            .iter()
            .chain(self.values.iter())
            .filter(|(_, span)| span.contains(&offset))
            .max_by_key(|(path, _)| path.len())
            .map(|(path, _)| path.as_str())
    }
}
