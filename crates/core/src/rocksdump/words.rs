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
    let mut reader = Reader {
        text,
        at: 0,
        line: 1,
    };
    let mut out = Vec::new();
    let mut bad = Vec::new();
    while reader.at < text.len() {
        match reader.command() {
            Ok(c) if c.words.is_empty() => {}
            Ok(c) => out.push(c),
            Err(e) => bad.push(e),
        }
    }
    (out, bad)
}

/// Where the reading is: a byte offset and its line.
struct Reader<'t> {
    text: &'t [u8],
    at: usize,
    line: usize,
}

impl Reader<'_> {
    /// One command: up to a newline outside quotes, or the end. A broken
    /// one is refused whole, and the reading goes on after it.
    fn command(&mut self) -> Result<Words, Unreadable> {
        let start = self.line;
        let mut words: Vec<Vec<u8>> = Vec::new();
        let mut word: Option<Vec<u8>> = None;
        let mut active = None;
        let mut broken = None;
        while let Some(&b) = self.text.get(self.at) {
            match b {
                b'\n' => {
                    self.at += 1;
                    self.line += 1;
                    break;
                }
                b' ' | b'\t' => {
                    words.extend(word.take());
                    self.at += 1;
                }
                b'#' if word.is_none() => self.skip_line(),
                b'\\' => self.escaped(word.get_or_insert_with(Vec::new)),
                b'\'' => {
                    if let Err(why) = self.single_quoted(word.get_or_insert_with(Vec::new)) {
                        broken.get_or_insert(why);
                    }
                }
                b'"' => {
                    if let Err(why) = self.double_quoted(word.get_or_insert_with(Vec::new)) {
                        broken.get_or_insert(why);
                    }
                }
                _ => {
                    if b"$`;&|<>()\r".contains(&b) {
                        active.get_or_insert(b);
                    }
                    word.get_or_insert_with(Vec::new).push(b);
                    self.at += 1;
                }
            }
        }
        words.extend(word.take());
        match broken {
            Some(why) => Err(Unreadable { line: start, why }),
            None => Ok(Words {
                line: start,
                words,
                active,
            }),
        }
    }

    /// Up to the newline that ends the line, which stays to be read.
    fn skip_line(&mut self) {
        while self.at < self.text.len() && self.text[self.at] != b'\n' {
            self.at += 1;
        }
    }

    /// A backslash and the byte it escapes. Backslash-newline is a newline
    /// of the value: what quote() wrote it for.
    fn escaped(&mut self, w: &mut Vec<u8>) {
        match self.text.get(self.at + 1) {
            Some(&next) => {
                if next == b'\n' {
                    self.line += 1;
                }
                w.push(next);
                self.at += 2;
            }
            None => {
                w.push(b'\\');
                self.at += 1;
            }
        }
    }

    /// A single-quoted string, which must close on its line.
    fn single_quoted(&mut self, w: &mut Vec<u8>) -> Result<(), String> {
        let rest = &self.text[self.at + 1..];
        match rest.iter().position(|&c| c == b'\'' || c == b'\n') {
            Some(end) if rest[end] == b'\'' => {
                w.extend_from_slice(&rest[..end]);
                self.at += end + 2;
                Ok(())
            }
            _ => {
                self.skip_line();
                Err("a ' quote is not closed on its line".into())
            }
        }
    }

    /// A double-quoted string, which may span lines (host keys do).
    fn double_quoted(&mut self, w: &mut Vec<u8>) -> Result<(), String> {
        match double_quoted(&self.text[self.at + 1..], w) {
            Some((used, newlines)) => {
                self.at += used + 1;
                self.line += newlines;
                Ok(())
            }
            None => {
                let why = format!(
                    "the \" quote opened on line {} is never closed (the rest of the file is inside it)",
                    self.line
                );
                self.line += self.text[self.at..].iter().filter(|&&c| c == b'\n').count();
                self.at = self.text.len();
                Err(why)
            }
        }
    }
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
