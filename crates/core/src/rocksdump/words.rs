//! The shell's reading of a dump into words, with the differences the
//! parent module's doc lists: a backslash-newline is a newline of the value,
//! a single quote closes on its line, and nothing is expanded.

use super::Unreadable;

/// One command as the shell would split it into words.
pub(super) struct Words {
    pub(super) line: usize,
    pub(super) words: Vec<Vec<u8>>,
    /// The first shell operator or expansion character met outside quotes.
    pub(super) active: Option<u8>,
}

/// Splits the text into commands the way a shell reads words, with the
/// differences the module doc lists.
pub(super) fn split(text: &[u8]) -> (Vec<Words>, Vec<Unreadable>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < text.len() {
        let start = line;
        let mut words: Vec<Vec<u8>> = Vec::new();
        let mut word: Option<Vec<u8>> = None;
        let mut active = None;
        let mut broken = None;
        // One command: up to a newline outside quotes, or the end.
        while i < text.len() {
            let b = text[i];
            match b {
                b'\n' => {
                    i += 1;
                    line += 1;
                    break;
                }
                b' ' | b'\t' => {
                    words.extend(word.take());
                    i += 1;
                }
                b'#' if word.is_none() => {
                    while i < text.len() && text[i] != b'\n' {
                        i += 1;
                    }
                }
                b'\\' => {
                    let w = word.get_or_insert_with(Vec::new);
                    match text.get(i + 1) {
                        Some(&next) => {
                            // Backslash-newline is a newline of the value:
                            // what quote() wrote it for.
                            if next == b'\n' {
                                line += 1;
                            }
                            w.push(next);
                            i += 2;
                        }
                        None => {
                            w.push(b'\\');
                            i += 1;
                        }
                    }
                }
                b'\'' => {
                    let w = word.get_or_insert_with(Vec::new);
                    let rest = &text[i + 1..];
                    match rest.iter().position(|&c| c == b'\'' || c == b'\n') {
                        Some(end) if rest[end] == b'\'' => {
                            w.extend_from_slice(&rest[..end]);
                            i += end + 2;
                        }
                        _ => {
                            broken = Some("a ' quote is not closed on its line".to_string());
                            while i < text.len() && text[i] != b'\n' {
                                i += 1;
                            }
                        }
                    }
                }
                b'"' => {
                    let w = word.get_or_insert_with(Vec::new);
                    match double_quoted(&text[i + 1..], w) {
                        Some((used, newlines)) => {
                            i += used + 1;
                            line += newlines;
                        }
                        None => {
                            broken = Some(format!(
                                "the \" quote opened on line {line} is never closed (the rest of the file is inside it)"
                            ));
                            line += text[i..].iter().filter(|&&c| c == b'\n').count();
                            i = text.len();
                        }
                    }
                }
                b'$' | b'`' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')' | b'\r' => {
                    active.get_or_insert(b);
                    word.get_or_insert_with(Vec::new).push(b);
                    i += 1;
                }
                _ => {
                    word.get_or_insert_with(Vec::new).push(b);
                    i += 1;
                }
            }
        }
        words.extend(word.take());
        match broken {
            Some(why) => bad.push(Unreadable { line: start, why }),
            None if words.is_empty() => {}
            None => out.push(Words {
                line: start,
                words,
                active,
            }),
        }
    }
    (out, bad)
}

/// Reads a double-quoted string after its opening quote as bash does
/// (a backslash escapes only `$`, `` ` ``, `"`, `\` and a newline, which it
/// removes); returns the bytes used, closing quote included, and the
/// newlines crossed, or `None` when the quote never closes.
fn double_quoted(text: &[u8], w: &mut Vec<u8>) -> Option<(usize, usize)> {
    let mut newlines = 0;
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => return Some((i + 1, newlines)),
            b'\\' if i + 1 < text.len() && b"$`\"\\\n".contains(&text[i + 1]) => {
                if text[i + 1] == b'\n' {
                    newlines += 1;
                } else {
                    w.push(text[i + 1]);
                }
                i += 2;
            }
            c => {
                if c == b'\n' {
                    newlines += 1;
                }
                w.push(c);
                i += 1;
            }
        }
    }
    None
}
