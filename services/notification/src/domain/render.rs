//! A tiny template renderer (a small subset of Mustache), enough for the email templates.
//!
//! Syntax:
//! - `{{name}}` inserts a text value, escaped for the output ([`Escape::Html`] or [`Escape::Plain`]);
//! - `{{#name}} ... {{/name}}` repeats the block once per item of a list value; inside, names
//!   are looked up in the item first, then outwards. An empty list renders nothing, so a list
//!   of one empty item works as a condition ([`Context::flag`]).
//!
//! A section tag alone on its line takes the whole line with it, so templates stay readable.
//! Every problem is an error instead of an empty string: a missing value, a tag that is never
//! closed, a value of the wrong kind. There is deliberately no way to insert unescaped HTML.

use std::collections::BTreeMap;

/// How interpolated values are escaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Escape {
    /// `& < > " '` become entities; safe in element content and quoted attributes.
    Html,
    /// Inserted as is (text/plain bodies).
    Plain,
}

/// A value a template can refer to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Text(String),
    List(Vec<Context>),
}

/// Named values for a render.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    values: BTreeMap<String, Value>,
}

impl Context {
    pub fn new() -> Context {
        Context::default()
    }

    /// Adds a text value.
    pub fn text(mut self, name: &str, value: impl Into<String>) -> Context {
        self.values
            .insert(name.to_owned(), Value::Text(value.into()));
        self
    }

    /// Adds a list value, for a `{{#name}}` section.
    pub fn list(mut self, name: &str, items: Vec<Context>) -> Context {
        self.values.insert(name.to_owned(), Value::List(items));
        self
    }

    /// Adds a condition: a `{{#name}}` section renders once if `on`, not at all otherwise.
    pub fn flag(self, name: &str, on: bool) -> Context {
        let items = if on { vec![Context::new()] } else { Vec::new() };
        self.list(name, items)
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.values.get(name)
    }
}

/// Why a template could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("unterminated tag at byte {0}")]
    UnterminatedTag(usize),
    #[error("invalid tag {0:?} (names are [a-z0-9_]+)")]
    InvalidTag(String),
    #[error("section {0:?} is never closed")]
    UnclosedSection(String),
    #[error("closing tag {found:?} does not match the open section {expected:?}")]
    MismatchedClose {
        expected: Option<String>,
        found: String,
    },
    #[error("no value named {0:?}")]
    Missing(String),
    #[error("{0:?} is a list, used as text")]
    NotText(String),
    #[error("{0:?} is text, used as a section")]
    NotAList(String),
}

#[derive(Debug)]
enum Node<'a> {
    Text(&'a str),
    Var(&'a str),
    Section(&'a str, Vec<Node<'a>>),
}

enum Tok<'a> {
    Text(&'a str),
    Var(&'a str),
    Open(&'a str),
    Close(&'a str),
}

/// Renders `template` with `ctx`, escaping every inserted value with `escape`.
pub fn render(template: &str, ctx: &Context, escape: Escape) -> Result<String, RenderError> {
    let nodes = parse(template)?;
    let mut out = String::with_capacity(template.len() * 2);
    let mut scopes = vec![ctx];
    render_nodes(&nodes, &mut scopes, escape, &mut out)?;
    Ok(out)
}

fn tokenize(src: &str) -> Result<Vec<Tok<'_>>, RenderError> {
    let mut toks = Vec::new();
    let mut pos = 0;
    while let Some(off) = src[pos..].find("{{") {
        let open = pos + off;
        let close = src[open + 2..]
            .find("}}")
            .ok_or(RenderError::UnterminatedTag(open))?
            + open
            + 2;
        let tag = src[open + 2..close].trim();
        let (kind, name) = match tag.as_bytes().first() {
            Some(b'#') => (Some(true), tag[1..].trim()),
            Some(b'/') => (Some(false), tag[1..].trim()),
            _ => (None, tag),
        };
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(RenderError::InvalidTag(tag.to_owned()));
        }
        let mut text_end = open;
        let mut next = close + 2;
        if kind.is_some() {
            // A section tag alone on its line removes the line.
            let line_start = src[..open].rfind('\n').map_or(0, |i| i + 1);
            let line_end = src[next..].find('\n').map_or(src.len(), |i| next + i + 1);
            let blank = |s: &str| s.chars().all(|c| matches!(c, ' ' | '\t' | '\r' | '\n'));
            if line_start >= pos && blank(&src[line_start..open]) && blank(&src[next..line_end]) {
                text_end = line_start;
                next = line_end;
            }
        }
        toks.push(Tok::Text(&src[pos..text_end]));
        toks.push(match kind {
            Some(true) => Tok::Open(name),
            Some(false) => Tok::Close(name),
            None => Tok::Var(name),
        });
        pos = next;
    }
    toks.push(Tok::Text(&src[pos..]));
    Ok(toks)
}

fn parse(src: &str) -> Result<Vec<Node<'_>>, RenderError> {
    // Stack of open sections: (name, children so far); the root has no name.
    let mut stack: Vec<(Option<&str>, Vec<Node<'_>>)> = vec![(None, Vec::new())];
    for tok in tokenize(src)? {
        match tok {
            Tok::Text("") => {}
            Tok::Text(t) => top(&mut stack).push(Node::Text(t)),
            Tok::Var(name) => top(&mut stack).push(Node::Var(name)),
            Tok::Open(name) => stack.push((Some(name), Vec::new())),
            Tok::Close(name) => match stack.pop() {
                Some((Some(open), children)) if open == name => {
                    top(&mut stack).push(Node::Section(name, children))
                }
                Some((open, _)) => {
                    return Err(RenderError::MismatchedClose {
                        expected: open.map(str::to_owned),
                        found: name.to_owned(),
                    });
                }
                None => {
                    return Err(RenderError::MismatchedClose {
                        expected: None,
                        found: name.to_owned(),
                    });
                }
            },
        }
    }
    match stack.pop() {
        Some((None, nodes)) if stack.is_empty() => Ok(nodes),
        Some((Some(open), _)) => Err(RenderError::UnclosedSection(open.to_owned())),
        _ => Err(RenderError::UnclosedSection(String::new())),
    }
}

fn top<'s, 'a>(stack: &'s mut [(Option<&'a str>, Vec<Node<'a>>)]) -> &'s mut Vec<Node<'a>> {
    // The root is never popped before the end of parsing, so the stack is never empty here.
    &mut stack.last_mut().expect("parse stack keeps its root").1
}

fn lookup<'c>(scopes: &[&'c Context], name: &str) -> Result<&'c Value, RenderError> {
    scopes
        .iter()
        .rev()
        .find_map(|c| c.get(name))
        .ok_or_else(|| RenderError::Missing(name.to_owned()))
}

fn render_nodes(
    nodes: &[Node<'_>],
    scopes: &mut Vec<&Context>,
    escape: Escape,
    out: &mut String,
) -> Result<(), RenderError> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Var(name) => match lookup(scopes, name)? {
                Value::Text(s) => match escape {
                    Escape::Html => out.push_str(&jetmart_kit::html::escape(s)),
                    Escape::Plain => out.push_str(s),
                },
                Value::List(_) => return Err(RenderError::NotText((*name).to_owned())),
            },
            Node::Section(name, children) => match lookup(scopes, name)? {
                Value::List(items) => {
                    for item in items {
                        scopes.push(item);
                        let r = render_nodes(children, scopes, escape, out);
                        scopes.pop();
                        r?;
                    }
                }
                Value::Text(_) => return Err(RenderError::NotAList((*name).to_owned())),
            },
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(t: &str, ctx: &Context) -> Result<String, RenderError> {
        render(t, ctx, Escape::Html)
    }

    #[test]
    fn substitutes_and_escapes_values() {
        let ctx = Context::new().text("name", "<b>Tom & \"Jerry\"</b>'");
        assert_eq!(
            r("Hi {{ name }}!", &ctx).unwrap(),
            "Hi &lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;&#39;!"
        );
        assert_eq!(
            render("Hi {{name}}!", &ctx, Escape::Plain).unwrap(),
            "Hi <b>Tom & \"Jerry\"</b>'!"
        );
    }

    #[test]
    fn repeats_sections_with_outer_lookup() {
        let items = vec![Context::new().text("n", "1"), Context::new().text("n", "2")];
        let ctx = Context::new().text("unit", "kg").list("items", items);
        assert_eq!(
            r("[{{#items}}{{n}}{{unit}};{{/items}}]", &ctx).unwrap(),
            "[1kg;2kg;]"
        );
        assert_eq!(
            r(
                "[{{#items}}x{{/items}}]",
                &Context::new().list("items", vec![])
            )
            .unwrap(),
            "[]"
        );
    }

    #[test]
    fn standalone_section_lines_disappear() {
        let ctx = Context::new().list(
            "l",
            vec![Context::new().text("v", "a"), Context::new().text("v", "b")],
        );
        let t = "top\n  {{#l}}\n- {{v}}\n  {{/l}}\nend\n";
        assert_eq!(r(t, &ctx).unwrap(), "top\n- a\n- b\nend\n");
        // Not standalone: the surrounding text stays.
        assert_eq!(r("x {{#l}}{{v}}{{/l}} y", &ctx).unwrap(), "x ab y");
    }

    #[test]
    fn flags_render_conditionally() {
        let t = "a{{#f}}!{{/f}}b";
        assert_eq!(r(t, &Context::new().flag("f", true)).unwrap(), "a!b");
        assert_eq!(r(t, &Context::new().flag("f", false)).unwrap(), "ab");
    }

    #[test]
    fn template_mistakes_are_errors() {
        let ctx = Context::new().text("t", "x").list("l", vec![]);
        assert_eq!(
            r("{{nope}}", &ctx),
            Err(RenderError::Missing("nope".into()))
        );
        assert_eq!(r("{{t", &ctx), Err(RenderError::UnterminatedTag(0)));
        assert_eq!(
            r("{{Bad-Name}}", &ctx),
            Err(RenderError::InvalidTag("Bad-Name".into()))
        );
        assert_eq!(r("{{}}", &ctx), Err(RenderError::InvalidTag(String::new())));
        assert_eq!(
            r("{{#l}}", &ctx),
            Err(RenderError::UnclosedSection("l".into()))
        );
        assert_eq!(
            r("{{/l}}", &ctx),
            Err(RenderError::MismatchedClose {
                expected: None,
                found: "l".into()
            })
        );
        assert_eq!(
            r("{{#l}}{{/t}}", &ctx),
            Err(RenderError::MismatchedClose {
                expected: Some("l".into()),
                found: "t".into()
            })
        );
        assert_eq!(r("{{l}}", &ctx), Err(RenderError::NotText("l".into())));
        assert_eq!(
            r("{{#t}}{{/t}}", &ctx),
            Err(RenderError::NotAList("t".into()))
        );
    }

    proptest! {
        /// Whatever a value contains, HTML output never carries a raw markup character from it.
        #[test]
        fn html_output_never_contains_raw_markup_from_values(v in ".*") {
            let out = r("<p>{{v}}</p>", &Context::new().text("v", v.clone())).unwrap();
            let inner = &out[3..out.len() - 4];
            prop_assert!(!inner.contains(['<', '>', '"', '\'']));
            // Unescaping gives the value back.
            let back = inner.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'").replace("&amp;", "&");
            prop_assert_eq!(back, v);
        }

        /// Arbitrary templates never panic the renderer, and whatever renders has no tag left.
        #[test]
        fn arbitrary_templates_do_not_panic(t in "[al{}#/ \n]{0,40}") {
            if let Ok(out) = r(&t, &Context::new().text("a", "1").list("l", vec![Context::new()])) {
                prop_assert!(!out.contains("{{"), "{:?} rendered {:?}", t, out);
            }
        }
    }
}
