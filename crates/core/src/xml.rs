//! XML helpers: escaping text written into XML, and a small checked parser for
//! the XML fragments that cluster attributes hold (`kvm_cpu_pinning`,
//! `kvm_device_N`, the inner part of `cpu_mode`).
//!
//! A fragment is accepted only when it is well-formed on its own: every element
//! it opens it closes, it never closes an element it did not open (so it cannot
//! end `<cpu>` or `<devices>` early and smuggle elements elsewhere), and it holds
//! no document type, processing instruction or entity other than XML's five and
//! character references. Rocks pasted such values into the domain unchecked.
//!
//! Depth is bounded: libvirt parses a definition with libxml2, which refuses
//! a document nested deeper than 256 elements ("Excessive depth in document:
//! 256"), so a fragment is refused when the domain it goes into would be
//! deeper, and a document (the hook's stdin, a plugin's output) when it is.
//! The parser keeps open elements on a heap stack, never recursing; the
//! bound also keeps the recursion of everything that walks a parsed tree
//! (Drop, Debug, Clone, comparisons, the drift check) shallow.

use crate::text::{clip, QUOTE_CHARS};
use quick_xml::events::Event;
use quick_xml::Reader;

/// The deepest nesting accepted, counted from a document's root element
/// (depth 1): libvirt's, which is libxml2's default limit.
pub const MAX_DEPTH: usize = 256;

/// Whether XML 1.0 can carry `c` at all, raw or as a character reference
/// (<https://www.w3.org/TR/xml/#charsets>): libxml2, and so libvirt,
/// refuses a document holding any other, such as U+0001 or U+FFFE.
pub fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Escapes text for an XML text node.
pub fn escape_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s, false);
    out
}

/// Escapes text for an XML attribute value, whichever quote delimits it.
pub fn escape_attr(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    push_escaped(&mut out, s, true);
    out
}

/// Appends `s` to `out`, escaped; quotes too when `attr`.
pub fn push_escaped(out: &mut String, s: &str, attr: bool) {
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attr => out.push_str("&quot;"),
            '\'' if attr => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
}

/// Undoes the escaping Rocks applied to attribute values before 6.2, once.
///
/// Only a value that holds no `<` but does hold `&lt;` is taken as escaped:
/// a real fragment always has a `<`, so a value is never unescaped twice.
pub fn rocks_unescape(value: &str) -> String {
    if value.contains('<') || !value.contains("&lt;") {
        return value.to_string();
    }
    value
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// One element of a parsed fragment.
///
/// Walking a tree recurses (the derived Drop, Debug, Clone and PartialEq
/// do): the parser builds none deeper than [`MAX_DEPTH`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Element {
    pub name: String,
    pub attrs: Vec<(String, String)>,
    pub children: Vec<Element>,
    /// The element's own text, unescaped and concatenated.
    pub text: String,
}

impl Element {
    /// The value of attribute `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The first child named `name`.
    pub fn child(&self, name: &str) -> Option<&Element> {
        self.children.iter().find(|c| c.name == name)
    }

    /// Every descendant (and self) named `name`, in document order; walked
    /// with a stack of its own, not by recursion.
    pub fn descendants<'a>(&'a self, name: &str, out: &mut Vec<&'a Element>) {
        let mut todo = vec![self];
        while let Some(el) = todo.pop() {
            if el.name == name {
                out.push(el);
            }
            todo.extend(el.children.iter().rev());
        }
    }
}

/// Why a fragment was refused. What a variant quotes of the input (a name,
/// a text) is clipped when the error is made: the input may be megabytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FragmentError {
    #[error("empty XML fragment")]
    Empty,
    #[error("malformed XML at byte {pos}: {msg}")]
    Malformed { pos: u64, msg: String },
    #[error("closing tag </{0}> closes an element the fragment did not open")]
    ClosesParent(String),
    #[error("element <{0}> is never closed")]
    Unclosed(String),
    #[error("text {0:?} outside any element")]
    StrayText(String),
    #[error("{0} is not allowed in an XML fragment")]
    Forbidden(&'static str),
    #[error("invalid element or attribute name {0:?}")]
    BadName(String),
    /// A character XML cannot carry, raw or as a character reference.
    #[error("character U+{0:04X} is not allowed in XML")]
    BadChar(u32),
    /// Deeper than libvirt accepts; `around` counts the elements of the
    /// domain that a fragment goes into.
    #[error("nested deeper than {} elements{}", MAX_DEPTH - around, if *around > 0 {
        format!(" ({MAX_DEPTH} with the {around} of the domain around it)")
    } else {
        String::new()
    })]
    TooDeep { around: usize },
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
}

fn malformed(reader: &Reader<&[u8]>, msg: impl ToString) -> FragmentError {
    FragmentError::Malformed {
        pos: reader.buffer_position(),
        msg: clip(&msg.to_string(), 4 * QUOTE_CHARS),
    }
}

fn element_from(
    reader: &Reader<&[u8]>,
    start: &quick_xml::events::BytesStart<'_>,
) -> Result<Element, FragmentError> {
    let name = String::from_utf8_lossy(start.name().as_ref()).into_owned();
    if !valid_name(&name) {
        return Err(FragmentError::BadName(clip(&name, QUOTE_CHARS)));
    }
    let mut attrs = Vec::new();
    for attr in start.attributes().with_checks(true) {
        let attr = attr.map_err(|e| malformed(reader, e))?;
        let key = String::from_utf8_lossy(attr.key.as_ref()).into_owned();
        if !valid_name(&key) {
            return Err(FragmentError::BadName(clip(&key, QUOTE_CHARS)));
        }
        let value = attr
            .unescape_value()
            .map_err(|e| malformed(reader, e))?
            .into_owned();
        xml_chars(&value)?;
        attrs.push((key, value));
    }
    Ok(Element {
        name,
        attrs,
        children: Vec::new(),
        text: String::new(),
    })
}

/// Parses a fragment: zero or more elements (comments and whitespace between
/// them allowed). Returns the top-level elements; refuses an empty fragment
/// and one nested deeper than [`MAX_DEPTH`].
pub fn parse_fragment(fragment: &str) -> Result<Vec<Element>, FragmentError> {
    parse_fragment_within(fragment, 0)
}

/// Parses a fragment that goes `around` elements deep into a domain (1 for
/// a child of `<domain>`, 2 for one of `<devices>`): refused when the domain
/// would be nested deeper than [`MAX_DEPTH`].
pub fn parse_fragment_within(fragment: &str, around: usize) -> Result<Vec<Element>, FragmentError> {
    let roots = parse_nodes(fragment, around.min(MAX_DEPTH - 1))?;
    if roots.is_empty() {
        return Err(FragmentError::Empty);
    }
    Ok(roots)
}

/// Parses a whole document (a domain XML): exactly one root element, an XML
/// declaration allowed.
pub fn parse_document(doc: &str) -> Result<Element, FragmentError> {
    let trimmed = doc.trim_start();
    let body = if trimmed.starts_with("<?xml") {
        match trimmed.find("?>") {
            Some(end) => &trimmed[end + 2..],
            None => return Err(FragmentError::Forbidden("an unterminated XML declaration")),
        }
    } else {
        trimmed
    };
    let mut roots = parse_nodes(body, 0)?;
    match roots.len() {
        0 => Err(FragmentError::Empty),
        1 => Ok(roots.remove(0)),
        _ => Err(FragmentError::StrayText(format!(
            "<{}> after the root element",
            clip(&roots[1].name, QUOTE_CHARS)
        ))),
    }
}

/// Refuses text holding a character XML cannot carry: quick-xml passes
/// them, raw or as character references, and libxml2 refuses them.
fn xml_chars(text: &str) -> Result<(), FragmentError> {
    match text.chars().find(|c| !is_xml_char(*c)) {
        Some(c) => Err(FragmentError::BadChar(c.into())),
        None => Ok(()),
    }
}

/// The parse itself: a loop over quick-xml's events with the open elements
/// on a stack, refusing an element deeper than [`MAX_DEPTH`] counted from
/// `around` elements up, before it is built.
fn parse_nodes(fragment: &str, around: usize) -> Result<Vec<Element>, FragmentError> {
    xml_chars(fragment)?;
    let mut reader = Reader::from_str(fragment);
    reader.config_mut().check_end_names = true;
    reader.config_mut().check_comments = true;
    let mut stack: Vec<Element> = Vec::new();
    let mut roots: Vec<Element> = Vec::new();
    loop {
        let event =
            reader.read_event().map_err(|e| match e {
                quick_xml::Error::IllFormed(
                    quick_xml::errors::IllFormedError::UnmatchedEndTag(n),
                ) if stack.is_empty() => FragmentError::ClosesParent(clip(&n, QUOTE_CHARS)),
                e => malformed(&reader, e),
            })?;
        if matches!(event, Event::Start(_) | Event::Empty(_)) && around + stack.len() >= MAX_DEPTH {
            return Err(FragmentError::TooDeep { around });
        }
        match event {
            Event::Start(start) => {
                let el = element_from(&reader, &start)?;
                stack.push(el);
            }
            Event::Empty(start) => {
                let el = element_from(&reader, &start)?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => roots.push(el),
                }
            }
            Event::End(end) => {
                let name = String::from_utf8_lossy(end.name().as_ref()).into_owned();
                let Some(el) = stack.pop() else {
                    return Err(FragmentError::ClosesParent(clip(&name, QUOTE_CHARS)));
                };
                match stack.last_mut() {
                    Some(parent) => parent.children.push(el),
                    None => roots.push(el),
                }
            }
            Event::Text(text) => {
                // Looked at as bytes: most text is the indentation between
                // elements, and a copy of each would cost more than the rest
                // of a parse.
                if text.as_ref().contains(&b'<') {
                    return Err(malformed(&reader, "unescaped '<' in text"));
                }
                let value = text.unescape().map_err(|e| malformed(&reader, e))?;
                xml_chars(&value)?;
                match stack.last_mut() {
                    // Blank text after a child element (the indentation
                    // between elements) adds nothing an element's text is
                    // read for, and would cost a copy per element.
                    Some(parent) if !parent.children.is_empty() && value.trim().is_empty() => {}
                    Some(parent) => parent.text.push_str(&value),
                    None if value.trim().is_empty() => {}
                    None => return Err(FragmentError::StrayText(clip(value.trim(), QUOTE_CHARS))),
                }
            }
            Event::CData(data) => {
                let value = String::from_utf8_lossy(data.as_ref()).into_owned();
                match stack.last_mut() {
                    Some(parent) => parent.text.push_str(&value),
                    None => return Err(FragmentError::StrayText(clip(&value, QUOTE_CHARS))),
                }
            }
            Event::Comment(_) => {}
            Event::Decl(_) => return Err(FragmentError::Forbidden("an XML declaration")),
            Event::PI(_) => return Err(FragmentError::Forbidden("a processing instruction")),
            Event::DocType(_) => return Err(FragmentError::Forbidden("a document type")),
            Event::Eof => break,
        }
    }
    if let Some(open) = stack.pop() {
        return Err(FragmentError::Unclosed(clip(&open.name, QUOTE_CHARS)));
    }
    Ok(roots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_text_and_attributes() {
        assert_eq!(escape_text("a<b>&'\""), "a&lt;b&gt;&amp;'\"");
        assert_eq!(escape_attr("a<'\">&"), "a&lt;&apos;&quot;&gt;&amp;");
    }

    #[test]
    fn rocks_escaped_values_are_unescaped_once() {
        assert_eq!(
            rocks_unescape("&lt;cputune&gt;&lt;/cputune&gt;"),
            "<cputune></cputune>"
        );
        // A real fragment is left alone, even if it holds an escaped text.
        assert_eq!(rocks_unescape("<a>&lt;</a>"), "<a>&lt;</a>");
        assert_eq!(rocks_unescape("pin_all"), "pin_all");
        // &amp;lt; comes back as &lt; and no further.
        assert_eq!(rocks_unescape("&lt;a&gt;&amp;lt;&lt;/a&gt;"), "<a>&lt;</a>");
    }

    #[test]
    fn parses_a_fragment_with_attributes_and_children() {
        let els = parse_fragment(
            "<cputune><vcpupin vcpu='0' cpuset=\"1\"/><vcpupin vcpu='1' cpuset='2'/></cputune>",
        )
        .unwrap();
        assert_eq!(els.len(), 1);
        assert_eq!(els[0].name, "cputune");
        assert_eq!(els[0].children.len(), 2);
        assert_eq!(els[0].children[1].attr("cpuset"), Some("2"));
    }

    #[test]
    fn several_roots_and_comments_are_fine() {
        let els = parse_fragment("<!-- x --> <a/>\n<b>t&amp;u</b>").unwrap();
        assert_eq!(els.len(), 2);
        assert_eq!(els[1].text, "t&u");
    }

    #[test]
    fn refuses_what_would_escape_its_parent() {
        assert_eq!(
            parse_fragment("<model>x</model></cpu><devices/>"),
            Err(FragmentError::ClosesParent("cpu".into()))
        );
        assert!(matches!(
            parse_fragment("</devices>"),
            Err(FragmentError::ClosesParent(_))
        ));
    }

    #[test]
    fn refuses_malformed_fragments() {
        for bad in [
            "",
            "   ",
            "<a>",
            "<a></b>",
            "<a x='1' x='2'/>",
            "<a>&bogus;</a>",
            "<a>x & y</a>",
            "text",
            "<!DOCTYPE a [<!ENTITY e 'x'>]><a>&e;</a>",
            "<?pi x?><a/>",
            "<a x=1/>",
            "<1a/>",
            "<a><!-- -- --></a>",
        ] {
            assert!(parse_fragment(bad).is_err(), "accepted {bad:?}");
        }
    }

    /// Regression: a raw U+0001 or a reference to one (`&#1;`, `&#xFFFE;`)
    /// passed as well-formed, and libvirt refused the whole definition
    /// ("PCDATA invalid Char value 1").
    #[test]
    fn characters_xml_cannot_carry_are_refused_raw_or_referenced() {
        for (bad, code) in [
            ("<a>x\u{1}</a>", 1),
            ("<a b='\u{FFFF}'/>", 0xFFFF),
            ("<a/>\u{8}", 8),
            ("<!-- \u{FFFE} --><a/>", 0xFFFE),
            ("<a>&#1;</a>", 1),
            ("<a b='i&#xFFFE;'/>", 0xFFFE),
            ("<a>&#x1F;</a>", 0x1F),
        ] {
            assert_eq!(
                parse_fragment(bad),
                Err(FragmentError::BadChar(code)),
                "{bad:?}"
            );
        }
        assert!(parse_document("<domain>\u{1}</domain>").is_err());
        // Every character XML allows passes, raw or referenced.
        parse_fragment("<a b='&#x9;&#10;\u{FFFD}'>\t&#xD7FF;&#xE000;\u{10FFFF}&#x10000;</a>")
            .unwrap();
    }

    fn nested(depth: usize) -> String {
        format!("{}{}", "<a>".repeat(depth), "</a>".repeat(depth))
    }

    #[test]
    fn depth_is_bounded_as_libvirt_bounds_it() {
        assert!(parse_document(&nested(MAX_DEPTH)).is_ok());
        let e = parse_document(&nested(MAX_DEPTH + 1)).unwrap_err();
        assert_eq!(e, FragmentError::TooDeep { around: 0 });
        assert_eq!(e.to_string(), "nested deeper than 256 elements");
        // An empty element counts as much as an open one.
        let deep_empty = format!("{}<b/>{}", "<a>".repeat(256), "</a>".repeat(256));
        assert!(parse_document(&deep_empty).is_err());
        assert!(parse_fragment(&nested(MAX_DEPTH + 1)).is_err());
    }

    #[test]
    fn a_fragment_counts_the_domain_around_it() {
        // A device goes into <domain><devices>.
        assert!(parse_fragment_within(&nested(254), 2).is_ok());
        let e = parse_fragment_within(&nested(255), 2).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nested deeper than 254 elements (256 with the 2 of the domain around it)"
        );
    }

    /// Runs `f` on a thread of `stack` bytes: a recursion as deep as the
    /// input would overflow it.
    fn on_stack(stack: usize, f: impl FnOnce() + Send + 'static) {
        std::thread::Builder::new()
            .stack_size(stack)
            .spawn(f)
            .unwrap()
            .join()
            .unwrap();
    }

    /// Regression: 200,000 levels overflowed the stack (the tree's Drop
    /// recursed) and killed the CLI and the hook with no message.
    #[test]
    fn input_200000_deep_is_one_error_even_on_a_small_stack() {
        let deep = nested(200_000);
        let unclosed = "<a>".repeat(200_000);
        on_stack(64 << 10, move || {
            assert_eq!(
                parse_document(&deep),
                Err(FragmentError::TooDeep { around: 0 })
            );
            assert!(parse_fragment(&deep).is_err());
            assert!(parse_document(&unclosed).is_err());
        });
    }

    /// The deepest tree accepted is walked, copied, compared, printed and
    /// dropped in half a test thread's stack, even unoptimised (about 1 KB
    /// a level there).
    #[test]
    fn the_deepest_tree_accepted_is_cheap_to_walk() {
        on_stack(1 << 20, || {
            let tree = parse_document(&nested(MAX_DEPTH)).unwrap();
            let copy = tree.clone();
            assert_eq!(copy, tree);
            let mut all = Vec::new();
            tree.descendants("a", &mut all);
            assert_eq!(all.len(), MAX_DEPTH);
            assert!(format!("{tree:?}").len() > MAX_DEPTH);
        });
    }

    #[test]
    fn errors_quote_little_of_a_huge_input() {
        let junk = "z".repeat(16 << 20);
        let e = parse_document(&junk).unwrap_err();
        assert!(e.to_string().len() < 200, "{e}");
        let long_name = format!("<{}>", "n".repeat(1 << 20));
        assert!(parse_fragment(&long_name).unwrap_err().to_string().len() < 200);
    }

    #[test]
    fn parses_a_document_with_declaration() {
        let d = parse_document("<?xml version='1.0'?>\n<domain type='kvm'><name>x</name></domain>")
            .unwrap();
        assert_eq!(d.child("name").unwrap().text, "x");
        assert!(parse_document("<a/><b/>").is_err());
    }
}
