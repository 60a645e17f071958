//! Reading a config document so that **every** problem is reported with where it is.
//!
//! 1. TOML syntax: the parser recovers after an error, so each syntax error is reported (with a
//!    hint for the common `[route]`-instead-of-`[[route]]` mistake).
//! 2. Environment overrides are applied to the parsed tree, remembering which variable set which
//!    key, so an error in an override names the variable instead of a line of the file.
//! 3. Deserialization stops at the first bad key; the key is then taken out of the tree (its
//!    default applies) and deserialization runs again, until it succeeds. Every key taken out is
//!    one reported problem, so one run reports every bad key.
//! 4. [`Document::locate`] finds the line of any field for the problems validation finds.
//!
//! Fields are written `section.key`; array entries count from 1, like `{topic.N}` in key
//! templates: `route[1]` is the first `[[route]]` of the file.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::env::Override;

/// One problem of a configuration: the field, what is wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted field (`log.fsync`, `route[2].key`), or `(document)` for syntax errors.
    pub field: String,
    /// What is wrong, and what to write instead when we know.
    pub message: String,
    /// Where the field is set, when it is set at all.
    pub at: Option<Location>,
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// A place in the file (both count from 1).
    Line {
        /// Line number.
        line: usize,
        /// Column (characters from the line start, plus one).
        column: usize,
    },
    /// An `EDGE_BROKER_<SECTION>_<KEY>` variable.
    Variable(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Line { line, column } => write!(f, "line {line}, column {column}"),
            Location::Variable(name) => write!(f, "from {name}"),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)?;
        if let Some(at) = &self.at {
            write!(f, " ({at})")?;
        }
        Ok(())
    }
}

/// Most problems reported for one document (each costs one deserialization pass).
const MAX_PROBLEMS: usize = 100;

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    /// 0-based here, written 1-based.
    Index(usize),
}

/// A field path, written `a.b[1].c` with 1-based indices.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldPath(Vec<Step>);

impl FieldPath {
    fn from_serde(path: &serde_path_to_error::Path) -> FieldPath {
        use serde_path_to_error::Segment;
        FieldPath(
            path.iter()
                .filter_map(|segment| match segment {
                    Segment::Map { key } => Some(Step::Key(key.clone())),
                    Segment::Seq { index } => Some(Step::Index(*index)),
                    Segment::Enum { .. } | Segment::Unknown => None,
                })
                .collect(),
        )
    }

    /// Parses a field as [`Problem::field`] writes it (`route[2].key`).
    fn parse(field: &str) -> FieldPath {
        let mut steps = Vec::new();
        for part in field.split('.') {
            let mut rest = part;
            if let Some(open) = rest.find('[') {
                steps.push(Step::Key(rest[..open].to_owned()));
                rest = &rest[open..];
                while let Some(inner) = rest.strip_prefix('[') {
                    let Some((n, after)) = inner.split_once(']') else {
                        break;
                    };
                    if let Some(n) = n.parse::<usize>().ok().and_then(|n| n.checked_sub(1)) {
                        steps.push(Step::Index(n));
                    }
                    rest = after;
                }
            } else if !rest.is_empty() {
                steps.push(Step::Key(rest.to_owned()));
            }
        }
        FieldPath(steps)
    }

    /// The `section.key` of a top-level key, for looking up environment overrides.
    fn section_key(&self) -> Option<(&str, &str)> {
        match self.0.as_slice() {
            [Step::Key(section), Step::Key(key), ..] => Some((section, key)),
            _ => None,
        }
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(key) if i == 0 => f.write_str(key)?,
                Step::Key(key) => write!(f, ".{key}")?,
                Step::Index(index) => write!(f, "[{}]", index + 1)?,
            }
        }
        Ok(())
    }
}

/// A parsed config document with the environment overrides applied.
pub struct Document<'i> {
    text: &'i str,
    root: Spanned<DeTable<'i>>,
    /// `(section, key, variable)` of every override applied.
    from_env: Vec<(String, String, String)>,
}

impl<'i> Document<'i> {
    /// Parses `text` and applies `overrides`; every syntax error is a problem.
    pub fn parse(text: &'i str, overrides: &'i [Override]) -> Result<Document<'i>, Vec<Problem>> {
        let (root, errors) = DeTable::parse_recoverable(text);
        if !errors.is_empty() {
            return Err(syntax_problems(&errors, text));
        }
        let mut document = Document {
            text,
            root,
            from_env: Vec::new(),
        };
        let mut problems = Vec::new();
        for o in overrides {
            match document.apply(o) {
                Ok(()) => {
                    document
                        .from_env
                        .push((o.section.clone(), o.key.clone(), o.variable.clone()))
                }
                Err(message) => problems.push(Problem {
                    field: o.section.clone(),
                    message,
                    at: Some(Location::Variable(o.variable.clone())),
                }),
            }
        }
        if problems.is_empty() {
            Ok(document)
        } else {
            Err(problems)
        }
    }

    fn apply(&mut self, o: &'i Override) -> Result<(), String> {
        let section = self
            .root
            .get_mut()
            .entry(Spanned::new(0..0, Cow::Borrowed(o.section.as_str())))
            .or_insert_with(|| Spanned::new(0..0, DeValue::Table(DeTable::new())));
        let DeValue::Table(table) = section.get_mut() else {
            return Err(format!("[{}] is not a table in the file", o.section));
        };
        // A TOML value when it parses as one (5, true, ["a", "b"]), else the text as a string.
        let value = DeValue::parse(&o.raw)
            .unwrap_or_else(|_| Spanned::new(0..0, DeValue::String(Cow::Borrowed(&o.raw))));
        table.insert(Spanned::new(0..0, Cow::Borrowed(o.key.as_str())), value);
        Ok(())
    }

    /// Deserializes the document into `T`. A key that does not deserialize is reported and
    /// taken out (so its default applies) until the rest deserializes; `None` only when a
    /// problem cannot be taken out.
    pub fn deserialize<T: DeserializeOwned>(&self) -> (Option<T>, Vec<Problem>) {
        let mut root = self.root.clone();
        let mut problems = Vec::new();
        while problems.len() < MAX_PROBLEMS {
            let deserializer = toml::de::Deserializer::from(root.clone());
            let error = match serde_path_to_error::deserialize::<_, T>(deserializer) {
                Ok(value) => return (Some(value), problems),
                Err(error) => error,
            };
            let path = FieldPath::from_serde(error.path());
            let inner = error.inner();
            let at = self
                .variable_of(&path)
                .map(Location::Variable)
                .or_else(|| inner.span().map(|span| line_of(self.text, span)));
            problems.push(Problem {
                field: path.to_string(),
                message: schema_message(&path, inner.message()),
                at,
            });
            if !remove(root.get_mut(), &path.0) {
                return (None, problems);
            }
        }
        (None, problems)
    }

    /// Where `field` (`route[2].key`, as [`Problem::field`] writes it) is set: the variable
    /// that set it, else its line; `None` for a field left at its default.
    pub fn locate(&self, field: &str) -> Option<Location> {
        let path = FieldPath::parse(field);
        if let Some(variable) = self.variable_of(&path) {
            return Some(Location::Variable(variable));
        }
        let mut value: Option<&Spanned<DeValue<'_>>> = None;
        for step in &path.0 {
            value = match (step, value.map(Spanned::get_ref)) {
                (Step::Key(key), None) => self.root.get_ref().get(key.as_str()),
                (Step::Key(key), Some(DeValue::Table(table))) => table.get(key.as_str()),
                (Step::Index(i), Some(DeValue::Array(items))) => items.get(*i),
                _ => None,
            };
            value?;
        }
        value.map(|v| line_of(self.text, v.span()))
    }

    fn variable_of(&self, path: &FieldPath) -> Option<String> {
        let (section, key) = path.section_key()?;
        self.from_env
            .iter()
            .find(|(s, k, _)| s == section && k == key)
            .map(|(_, _, variable)| variable.clone())
    }
}

/// Takes the innermost key on `path` out of `table` (an array entry cannot be taken out, so
/// an error inside an array takes out the array's key). False when there is no key to take.
fn remove(table: &mut DeTable<'_>, path: &[Step]) -> bool {
    let Some(last_key) = path.iter().rposition(|s| matches!(s, Step::Key(_))) else {
        return false;
    };
    let mut table = table;
    let mut at = 0;
    while at < last_key {
        let Step::Key(key) = &path[at] else {
            return false;
        };
        let Some(mut value) = table.get_mut(key.as_str()).map(Spanned::get_mut) else {
            return false;
        };
        at += 1;
        while let Some(Step::Index(i)) = path.get(at).filter(|_| at < last_key) {
            let DeValue::Array(items) = value else {
                return false;
            };
            let Some(item) = items.get_mut(*i) else {
                return false;
            };
            value = item.get_mut();
            at += 1;
        }
        let DeValue::Table(inner) = value else {
            return false;
        };
        table = inner;
    }
    match &path[last_key] {
        Step::Key(key) => table.remove(key.as_str()).is_some(),
        Step::Index(_) => false,
    }
}

/// The message of a schema error, with a hint where one helps.
fn schema_message(path: &FieldPath, message: &str) -> String {
    let message = message.trim_end();
    if path.0 == [Step::Key("route".to_owned())] && message.contains("expected a sequence") {
        return format!(
            "{message}: write [[route]] (two brackets): each route is one entry of a list of \
             tables, and the file may have many"
        );
    }
    message.to_owned()
}

/// The syntax errors as problems. A table given twice is reported once, with a hint, not
/// again for each of its keys.
fn syntax_problems(errors: &[toml::de::Error], text: &str) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut in_repeated_table = false;
    for error in errors.iter().take(MAX_PROBLEMS) {
        let line = error
            .span()
            .map_or("", |span| line_at(text, span.start))
            .trim();
        let duplicate = error.message().contains("duplicate key");
        if line.starts_with('[') {
            in_repeated_table = duplicate;
        } else if in_repeated_table && duplicate {
            continue;
        }
        problems.push(Problem {
            field: "(document)".to_owned(),
            message: syntax_message(error, line),
            at: error.span().map(|span| line_of(text, span)),
        });
    }
    problems
}

/// The whole line of `text` holding byte `offset`.
fn line_at(text: &str, offset: usize) -> &str {
    let offset = offset.min(text.len());
    let start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    text[start..].lines().next().unwrap_or("")
}

/// The message of a syntax error on `line`, with a hint for a table given twice.
fn syntax_message(error: &toml::de::Error, line: &str) -> String {
    let message = error.message().trim_end().to_owned();
    if message.contains("duplicate key") && line.starts_with('[') && !line.starts_with("[[") {
        let name = line.trim_matches(|c| c == '[' || c == ']').trim();
        if name == "route" {
            return format!(
                "{message}: [route] appears twice; write [[route]] (two brackets) before each \
                 route: each is one entry of a list of tables"
            );
        }
        return format!("{message}: the table [{name}] appears twice; merge the two");
    }
    message
}

/// Line and column (both from 1) of a byte offset span's start in `text`.
pub fn line_of(text: &str, span: Range<usize>) -> Location {
    let before = &text[..span.start.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    Location::Line { line, column }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_paths_count_array_entries_from_one() {
        let path = FieldPath::parse("route[2].key");
        assert_eq!(
            path.0,
            vec![
                Step::Key("route".into()),
                Step::Index(1),
                Step::Key("key".into())
            ]
        );
        assert_eq!(path.to_string(), "route[2].key");
        assert_eq!(FieldPath::parse("log.fsync").to_string(), "log.fsync");
        assert_eq!(FieldPath::default().to_string(), "(document)");
    }

    #[test]
    fn lines_and_columns_count_from_one() {
        let text = "a = 1\nbé = 2\n";
        assert_eq!(line_of(text, 0..1), Location::Line { line: 1, column: 1 });
        let at = text.find('2').unwrap();
        assert_eq!(
            line_of(text, at..at + 1),
            Location::Line { line: 2, column: 6 }
        );
    }

    #[test]
    fn removing_a_key_inside_an_array_of_tables() {
        let text = "[[route]]\nmqtt = \"a\"\n[[route]]\nmqtt = 5\nkafka_topic = \"t\"\n";
        let doc = Document::parse(text, &[]).unwrap();
        let mut root = doc.root.clone();
        let path = FieldPath::parse("route[2].mqtt");
        assert!(remove(root.get_mut(), &path.0));
        let Some(DeValue::Array(routes)) = root.get_ref().get("route").map(Spanned::get_ref) else {
            panic!("route is an array")
        };
        let DeValue::Table(second) = routes[1].get_ref() else {
            panic!("a table")
        };
        assert!(second.get("mqtt").is_none() && second.get("kafka_topic").is_some());
        assert!(!remove(root.get_mut(), &[]));
    }
}
