//! Outside text cut down to what one message can hold.
//!
//! A plugin's output, libvirt's error and the XML a parse error quotes come
//! from outside and have no size: a plugin printing 50 MB would otherwise
//! make a 50 MB "line" on stderr, in syslog and in the events table. Each of
//! those sinks keeps the first lines and a few KB, and says that it cut and
//! how much there was, so that nobody takes the rest for lost silently.

/// The most bytes one message keeps: a line on stderr, a syslog message,
/// an event's message (the note of the cut included).
pub const MAX_BYTES: usize = 2048;

/// The most lines an event's message or a syslog message keeps.
pub const MAX_LINES: usize = 5;

/// The most characters of outside text an error value quotes.
pub const QUOTE_CHARS: usize = 80;

/// The first `lines` non-blank lines of `text`, at most `bytes` long in
/// all. When anything was left out, the text ends with a note of the cut
/// ("… (cut: 52428800 bytes in all)"), counted within `bytes`, so that a
/// text cut once comes back unchanged when cut again.
pub fn first_lines(text: &str, lines: usize, bytes: usize) -> String {
    let mut kept: Vec<&str> = Vec::new();
    let mut size = 0;
    let mut more = false;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if kept.len() == lines || size > bytes {
            more = true;
            break;
        }
        // No more of one line than could be kept: a 50 MB line is not copied.
        let line = prefix(line, bytes + 1);
        size += line.len() + usize::from(!kept.is_empty());
        kept.push(line);
    }
    let out = kept.join("\n");
    if !more && out.len() <= bytes {
        return out;
    }
    let note = format!("… (cut: {} bytes in all)", text.len());
    let head = prefix(&out, bytes.saturating_sub(note.len() + 1)).trim_end();
    if head.is_empty() {
        note
    } else {
        format!("{head} {note}")
    }
}

/// One line of at most [`MAX_BYTES`]: what a refusal or an error printed on
/// stderr keeps of `text`.
pub fn one_line(text: &str) -> String {
    first_lines(text, 1, MAX_BYTES)
}

/// The first non-blank line of `text`, at most `bytes` long (with a note
/// when that line was cut): a summary whose details are kept elsewhere, as
/// a plugin's first line of stderr in a refusal.
pub fn headline(text: &str, bytes: usize) -> String {
    let line = text.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    first_lines(line, 1, bytes)
}

/// What an event or a log message keeps of `text`.
pub fn message(text: &str) -> String {
    first_lines(text, MAX_LINES, MAX_BYTES)
}

/// The first `chars` characters of `text`, with "…" where it goes on: what
/// an error value keeps of a name or a text from outside.
pub fn clip(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        None => text.to_string(),
        Some((end, _)) => format!("{}…", &text[..end]),
    }
}

/// The longest prefix of `s` of at most `bytes` bytes that ends on a
/// character boundary.
fn prefix(s: &str, bytes: usize) -> &str {
    if s.len() <= bytes {
        return s;
    }
    let mut cut = bytes;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    &s[..cut]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(first_lines("a\n\nb\n", 2, 100), "a\nb");
        assert_eq!(one_line("  plain  "), "  plain  ");
        assert_eq!(message(""), "");
    }

    #[test]
    fn a_cut_is_noted_with_the_whole_size() {
        assert_eq!(
            first_lines("a\nb\nc\n", 2, 100),
            "a\nb … (cut: 6 bytes in all)"
        );
        let big = "x".repeat(50 << 20);
        let cut = one_line(&big);
        assert!(cut.len() <= MAX_BYTES, "{}", cut.len());
        assert!(cut.ends_with("… (cut: 52428800 bytes in all)"), "{cut}");
        // Cut again, it stays as it is.
        assert_eq!(one_line(&cut), cut);
        assert_eq!(message(&cut), cut);
    }

    #[test]
    fn many_lines_become_few() {
        let many = "line\n".repeat(100_000);
        let m = message(&many);
        assert_eq!(m.lines().count(), MAX_LINES);
        assert!(m.ends_with("(cut: 500000 bytes in all)"), "{m}");
        let one = one_line("first\nsecond");
        assert_eq!(one, "first … (cut: 12 bytes in all)");
    }

    #[test]
    fn a_headline_is_the_first_line() {
        assert_eq!(headline("\n  first \nsecond", 100), "  first ");
        let h = headline(&format!("{}\nsecond", "x".repeat(1000)), 100);
        assert!(
            h.len() <= 100 && h.ends_with("(cut: 1000 bytes in all)"),
            "{h}"
        );
    }

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let s = first_lines(&"é".repeat(100), 1, 41);
        assert!(s.len() <= 41, "{s}");
        assert!(s.starts_with("éé"), "{s}");
    }

    #[test]
    fn clips_are_short() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééé", 2), "éé…");
        assert_eq!(
            clip(&"y".repeat(1 << 20), QUOTE_CHARS).len(),
            QUOTE_CHARS + 3
        );
    }
}
