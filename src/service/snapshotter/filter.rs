//! containerd's filter syntax, as `List` receives it, over runtime snapshots.
//!
//! A request carries filter strings; a snapshot is listed if it matches any of them (or if
//! there are none). One string is selectors joined by `,`, all of which must match. A
//! selector is a field path (`name`, `parent`, `kind`, `labels.KEY`; a part may be quoted:
//! `labels."containerd.io/gc.root"`) alone (the field is present and not empty) or followed
//! by `==`, `!=` or `~=` (a regular expression) and a value, bare or quoted.

use super::SnapshotterError;

/// What a selector compares.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Field {
    Name,
    Parent,
    Kind,
    Label(String),
}

#[derive(Debug, Clone)]
enum Op {
    Present,
    Equal(String),
    NotEqual(String),
    Matches(regex_lite::Regex),
}

#[derive(Debug, Clone)]
struct Selector {
    field: Field,
    op: Op,
}

/// Parsed filters: any of the alternatives, each all of its selectors.
#[derive(Debug, Clone, Default)]
pub struct Filters {
    any: Vec<Vec<Selector>>,
}

/// What a filter looks at in one snapshot.
pub trait Fields {
    fn field(&self, name: &str) -> Option<&str>;
    fn label(&self, key: &str) -> Option<&str>;
}

impl Filters {
    /// Parses every string; an empty list (or only empty strings) matches everything.
    pub fn parse(filters: &[String]) -> Result<Filters, SnapshotterError> {
        let mut any = Vec::new();
        for f in filters {
            if f.trim().is_empty() {
                continue;
            }
            any.push(
                parse_one(f)
                    .map_err(|why| SnapshotterError::Invalid(format!("filter {f:?}: {why}")))?,
            );
        }
        Ok(Filters { any })
    }

    pub fn matches(&self, s: &dyn Fields) -> bool {
        self.any.is_empty()
            || self
                .any
                .iter()
                .any(|all| all.iter().all(|sel| sel.matches(s)))
    }
}

impl Selector {
    fn matches(&self, s: &dyn Fields) -> bool {
        let value = match &self.field {
            Field::Name => s.field("name"),
            Field::Parent => s.field("parent"),
            Field::Kind => s.field("kind"),
            Field::Label(k) => s.label(k),
        };
        match &self.op {
            Op::Present => value.is_some_and(|v| !v.is_empty()),
            Op::Equal(want) => value == Some(want.as_str()),
            Op::NotEqual(want) => value != Some(want.as_str()),
            Op::Matches(re) => value.is_some_and(|v| re.is_match(v)),
        }
    }
}

fn parse_one(s: &str) -> Result<Vec<Selector>, String> {
    let mut p = Parser {
        s: s.as_bytes(),
        i: 0,
    };
    let mut out = Vec::new();
    loop {
        p.skip_space();
        out.push(p.selector()?);
        p.skip_space();
        match p.next() {
            None => return Ok(out),
            Some(b',') => continue,
            Some(c) => return Err(format!("unexpected {:?} at {}", c as char, p.i - 1)),
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        if c.is_some() {
            self.i += 1;
        }
        c
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(|c| c.is_ascii_whitespace()) {
            self.i += 1;
        }
    }

    fn selector(&mut self) -> Result<Selector, String> {
        let mut path = vec![self.part()?];
        while self.peek() == Some(b'.') {
            self.i += 1;
            path.push(self.part()?);
        }
        let field = match path.as_slice() {
            [f] if f == "name" => Field::Name,
            [f] if f == "parent" => Field::Parent,
            [f] if f == "kind" => Field::Kind,
            [f, rest @ ..] if f == "labels" && !rest.is_empty() => Field::Label(rest.join(".")),
            _ => return Err(format!("unknown field {:?}", path.join("."))),
        };
        self.skip_space();
        let op = match (self.peek(), self.s.get(self.i + 1).copied()) {
            (Some(b'='), Some(b'=')) => "==",
            (Some(b'!'), Some(b'=')) => "!=",
            (Some(b'~'), Some(b'=')) => "~=",
            _ => {
                return Ok(Selector {
                    field,
                    op: Op::Present,
                })
            }
        };
        self.i += 2;
        self.skip_space();
        let value = self.value()?;
        let op = match op {
            "==" => Op::Equal(value),
            "!=" => Op::NotEqual(value),
            _ => Op::Matches(
                regex_lite::Regex::new(&value)
                    .map_err(|e| format!("bad regular expression {value:?}: {e}"))?,
            ),
        };
        Ok(Selector { field, op })
    }

    /// A field name: quoted, or letters, digits and `_` `-` `/`.
    fn part(&mut self) -> Result<String, String> {
        self.token("a field name", |c| {
            c.is_ascii_alphanumeric() || matches!(c, b'_' | b'-' | b'/')
        })
    }

    /// A value: quoted, or everything up to a `,` or a space.
    fn value(&mut self) -> Result<String, String> {
        self.token("a value", |c| c != b',' && !c.is_ascii_whitespace())
    }

    /// A quoted string, or the longest run of bytes `ok` takes (at least one).
    fn token(&mut self, what: &str, ok: impl Fn(u8) -> bool) -> Result<String, String> {
        if let Some(q @ (b'"' | b'`')) = self.peek() {
            return self.quoted(q);
        }
        let start = self.i;
        while self.peek().is_some_and(&ok) {
            self.i += 1;
        }
        if self.i == start {
            return Err(format!("{what} expected at {start}"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A string in `"` (with `\` escapes) or in backquotes (raw).
    fn quoted(&mut self, q: u8) -> Result<String, String> {
        let start = self.i;
        self.i += 1;
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return Err(format!("unterminated quote at {start}")),
                Some(c) if c == q => return String::from_utf8(out).map_err(|e| e.to_string()),
                Some(b'\\') if q == b'"' => match self.next() {
                    Some(b'n') => out.push(b'\n'),
                    Some(b't') => out.push(b'\t'),
                    Some(c) => out.push(c),
                    None => return Err(format!("unterminated quote at {start}")),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    struct S {
        name: &'static str,
        kind: &'static str,
        labels: BTreeMap<String, String>,
    }

    impl Fields for S {
        fn field(&self, name: &str) -> Option<&str> {
            match name {
                "name" => Some(self.name),
                "kind" => Some(self.kind),
                _ => None,
            }
        }
        fn label(&self, key: &str) -> Option<&str> {
            self.labels.get(key).map(String::as_str)
        }
    }

    fn s(name: &'static str, kind: &'static str, labels: &[(&str, &str)]) -> S {
        S {
            name,
            kind,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn f(v: &[&str]) -> Filters {
        Filters::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("parses")
    }

    #[test]
    fn selectors_and_alternatives() {
        let a = s(
            "default/1/a",
            "committed",
            &[("containerd.io/gc.root", "x")],
        );
        let b = s("default/2/b", "active", &[("team", "web")]);
        assert!(f(&[]).matches(&a));
        assert!(f(&["kind==committed"]).matches(&a));
        assert!(!f(&["kind==committed"]).matches(&b));
        assert!(f(&["kind!=committed"]).matches(&b));
        assert!(f(&[r#"labels."containerd.io/gc.root""#]).matches(&a));
        assert!(!f(&[r#"labels."containerd.io/gc.root""#]).matches(&b));
        assert!(f(&["labels.team==web,kind==active"]).matches(&b));
        assert!(!f(&["labels.team==web,kind==committed"]).matches(&b));
        assert!(f(&["kind==view", "labels.team==web"]).matches(&b));
        assert!(f(&[r#"name~="^default/[0-9]+/b$""#]).matches(&b));
        assert!(!f(&["name~=^x"]).matches(&b));
        assert!(f(&[r#"name=="default/1/a""#]).matches(&a));
    }

    #[test]
    fn bad_filters_are_refused() {
        for bad in [
            "bogus==1",
            "kind==",
            "kind==a b",
            r#"name=="open"#,
            "name~=(",
            "labels",
            ",",
        ] {
            let r = Filters::parse(&[bad.to_string()]);
            assert!(
                matches!(r, Err(SnapshotterError::Invalid(_))),
                "{bad}: {r:?}"
            );
        }
    }
}
