//! Reads what `rocks dump` prints, and what `rocks list host vm showdisks=1`
//! prints, into typed commands with their line numbers. Pure: text in,
//! values out; [`crate::rocksimport`] turns them into cluster changes.
//!
//! The format, as the Rocks code writes it (rocksclusters/core,
//! `src/rocks-pylib/rocks/commands/dump/`; rocksclusters/kvm,
//! `src/rocks-command/rocks/commands/dump/host/vm/`; 6.2 and 7.0 alike):
//!
//! - One command a line, `/opt/rocks/bin/rocks VERB ARGS`: `dump()` in
//!   `dump/__init__.py` prints `'/opt/rocks/bin/rocks %s\n'`.
//! - Values go through `quote()` there: every byte that is not a letter, a
//!   digit or one of `@%^-_=+:,./` gets a backslash in front of it, so a
//!   space is `\ `, a newline `\` and a newline, and each byte of a UTF-8
//!   character its own backslash (Python 2's `str.isalnum` in the C locale
//!   knows ASCII only). The text is therefore read as bytes, not as UTF-8.
//! - `rocks dump host` writes `"add host"`: the verb as one quoted word,
//!   which `bin/rocks` splits at white space into the command's path.
//!   Otherwise `bin/rocks` takes the longest run of words that names a
//!   command module, so `add host attr` is its own command and not
//!   `add host` of a host named `attr`; [`VERBS`] mirrors that.
//! - `set host vm` (kvm roll) puts its values in single quotes, `add host
//!   key` and `set host interface options` in double quotes; a host key
//!   spans lines inside its double quotes.
//! - Rocks' own parser takes any argument shaped `word=value` as an option,
//!   so an attribute value `a=b` would be lost on a restore. kvmroll reads
//!   positions: an attribute's value is its third word whatever it holds.
//!
//! Where kvmroll reads differently from the shell that `rocks dump` output
//! was meant for: a backslash-newline outside quotes is a newline in the
//! value, as `quote()` meant it (bash would join the lines and lose it); a
//! single quote must close on its own line (Rocks writes none that spans
//! lines, so one that does is a value that broke the quoting); and nothing
//! is expanded: an unquoted `$`, `` ` ``, `;`, `&`, `|`, `<`, `>`, `(` or `)`
//! in a command kvmroll reads is not Rocks' format, and the line is refused.

use crate::model::Scope;
use std::collections::BTreeMap;

/// The bytes `quote()` leaves bare besides ASCII letters and digits.
pub const ROCKS_SAFE: &[u8] = b"@%^-_=+:,./";

/// A line that cannot be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct Unreadable {
    pub line: usize,
    pub why: String,
}

/// A command and the line it starts on (1-based).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    pub line: usize,
    pub command: Command,
}

/// The `rocks` commands kvmroll reads. Host names are as written: the
/// frontend is `localhost` (`dumpHostname` in `dump/host/__init__.py`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// `add attr`, `add os attr`, `add appliance attr`, `add host attr`.
    Attr {
        scope: Scope,
        name: String,
        value: String,
    },
    /// `add appliance NAME graph=.. node=.. membership=M public=.. distribution=..`.
    Appliance {
        name: String,
        membership: Option<String>,
    },
    /// `"add host" HOST cpus=N rack=R rank=R membership=M os=OS`.
    Host {
        name: String,
        cpus: u32,
        rack: u32,
        rank: u32,
        membership: String,
        os: String,
    },
    /// `set host runaction|installaction|boot HOST action=A`.
    Action {
        host: String,
        kind: ActionKind,
        action: String,
    },
    /// `add host interface HOST IFACE`.
    Interface { host: String, iface: String },
    /// `set host interface FIELD HOST IFACE VALUE`.
    InterfaceField {
        host: String,
        iface: String,
        field: IfaceField,
        value: String,
    },
    /// `set host vm HOST physnode='..' disk='..' disksize='..' mem='..' slice='..' virt-type='..'`.
    Vm(VmLine),
}

/// Which of a host's actions a `set host ... action=` line sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    /// `set host runaction`: what a host runs when it boots normally.
    Run,
    /// `set host installaction`: what it runs to install.
    Install,
    /// `set host boot` (`dump/host/boot`): install or os at the next boot.
    Boot,
}

/// The interface fields kvmroll uses: enough to place a VM's NICs as
/// `rocks report host vm config` placed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IfaceField {
    Mac,
    Subnet,
    Vlan,
    Module,
    Options,
}

/// A `set host vm` line (`dumpVM` in the kvm roll's `dump/host/vm`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmLine {
    pub host: String,
    pub physnode: Option<String>,
    /// `None` when the line has no `disk=`; `Some(empty)` for `disk=''`.
    pub disks: Option<Vec<RocksDisk>>,
    pub mem_mb: Option<u32>,
    pub virt_type: Option<String>,
}

/// One disk of `disk='TYPE:PATH,DEV,MODE ...'` with its `disksize`, read as
/// the kvm roll's `parseDisk` (`add/host/vm/__init__.py`) reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocksDisk {
    /// `file`, `qcow2`, `qed` or `phy`: everything before the last colon.
    pub vbd_type: String,
    pub path: String,
    pub dev: String,
    /// The bus, or `w`: "we misuse the mode column to carry the driver
    /// name" (`report/host/vm/config`), `w` being the old default, virtio.
    pub mode: String,
    /// GB; 36 where `disksize` names none (`set host vm`'s default).
    pub size_gb: u32,
}

/// The size `set host vm` gives a disk whose `disksize` is missing.
pub const ROCKS_DEFAULT_DISK_GB: u32 = 36;

/// A whole dump: the commands kvmroll reads, how many lines of each other
/// verb it passed over, and the lines it could not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Dump {
    pub commands: Vec<Numbered>,
    pub other: BTreeMap<String, usize>,
    pub unreadable: Vec<Unreadable>,
}

/// What a line's verb is to kvmroll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Attr(AttrAt),
    Appliance,
    Host,
    Interface,
    Field(IfaceField),
    Action(ActionKind),
    Vm,
    /// A Rocks command kvmroll does not keep.
    Other,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AttrAt {
    Global,
    Os,
    Appliance,
    Host,
}

/// Rocks command paths, matched longest first as `bin/rocks` matches its
/// modules. The `Other` entries are the Rocks commands whose path starts
/// with one of kvmroll's (rocksclusters/core `commands/add/host/`,
/// `add/appliance/`, `add/os/`, `set/host/interface/`; the kvm roll's
/// `add/host/vm`, `set/host/vm/cdrom`), and the other verbs `rocks dump`
/// writes, so that each is counted under its own name.
const VERBS: &[(&str, Verb)] = &[
    ("add attr", Verb::Attr(AttrAt::Global)),
    ("add os attr", Verb::Attr(AttrAt::Os)),
    ("add appliance attr", Verb::Attr(AttrAt::Appliance)),
    ("add host attr", Verb::Attr(AttrAt::Host)),
    ("add appliance", Verb::Appliance),
    ("add host", Verb::Host),
    ("add host interface", Verb::Interface),
    ("set host interface mac", Verb::Field(IfaceField::Mac)),
    ("set host interface subnet", Verb::Field(IfaceField::Subnet)),
    ("set host interface vlan", Verb::Field(IfaceField::Vlan)),
    ("set host interface module", Verb::Field(IfaceField::Module)),
    (
        "set host interface options",
        Verb::Field(IfaceField::Options),
    ),
    ("set host runaction", Verb::Action(ActionKind::Run)),
    ("set host installaction", Verb::Action(ActionKind::Install)),
    ("set host boot", Verb::Action(ActionKind::Boot)),
    ("set host vm", Verb::Vm),
    ("add appliance route", Verb::Other),
    ("add os route", Verb::Other),
    ("add host alias", Verb::Other),
    ("add host bonded", Verb::Other),
    ("add host key", Verb::Other),
    ("add host route", Verb::Other),
    ("add host sec_attr", Verb::Other),
    ("add host vm", Verb::Other),
    ("add host firewall", Verb::Other),
    ("set host interface ip", Verb::Other),
    ("set host interface name", Verb::Other),
    ("set host interface channel", Verb::Other),
    ("set host vm cdrom", Verb::Other),
    ("set host roll", Verb::Other),
    ("add network", Verb::Other),
    ("add route", Verb::Other),
    ("add firewall", Verb::Other),
    ("run reconfigure", Verb::Other),
];

/// One command as the shell would split it into words.
struct Words {
    line: usize,
    words: Vec<Vec<u8>>,
    /// The first shell operator or expansion character met outside quotes.
    active: Option<u8>,
}

/// Reads a whole dump.
pub fn parse(text: &[u8]) -> Dump {
    let mut dump = Dump::default();
    let (commands, mut unreadable) = split(text);
    for c in commands {
        match classify(&c) {
            Ok(None) => {}
            Ok(Some(Classified::Other(verb))) => *dump.other.entry(verb).or_default() += 1,
            Ok(Some(Classified::Ours(command))) => dump.commands.push(Numbered {
                line: c.line,
                command,
            }),
            Err(why) => unreadable.push(Unreadable { line: c.line, why }),
        }
    }
    unreadable.sort_by_key(|u| u.line);
    dump.unreadable = unreadable;
    dump
}

/// Splits the text into commands the way a shell reads words, with the
/// differences the module doc lists.
fn split(text: &[u8]) -> (Vec<Words>, Vec<Unreadable>) {
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

enum Classified {
    Ours(Command),
    Other(String),
}

/// Finds a command's verb as `bin/rocks` does and reads its arguments.
/// `Ok(None)`: nothing to count (a bare `rocks`).
fn classify(c: &Words) -> Result<Option<Classified>, String> {
    let program = &c.words[0];
    if !(program == b"rocks" || program.ends_with(b"/rocks")) {
        let name = String::from_utf8_lossy(program.rsplit(|&b| b == b'/').next().unwrap_or(b""));
        return Ok(Some(Classified::Other(format!(
            "{} (not a rocks command)",
            crate::text::clip(&name, 40)
        ))));
    }
    let args = &c.words[1..];
    let Some(first) = args.first() else {
        return Ok(None);
    };
    let words_of = |w: &[u8]| -> Vec<String> {
        String::from_utf8_lossy(w)
            .split_whitespace()
            .map(str::to_string)
            .collect()
    };
    // `"add host"`: one word naming the whole path (bin/rocks' args[0].split()).
    let quoted = words_of(first);
    let (path, rest): (Vec<String>, &[Vec<u8>]) = if quoted.len() > 1 {
        (quoted, &args[1..])
    } else {
        let plain: Vec<String> = args
            .iter()
            .take(4)
            .map(|w| String::from_utf8_lossy(w).into_owned())
            .collect();
        let longest = VERBS
            .iter()
            .filter(|(p, _)| {
                let p: Vec<&str> = p.split(' ').collect();
                p.len() <= plain.len() && p.iter().zip(&plain).all(|(a, b)| a == b)
            })
            .max_by_key(|(p, _)| p.len());
        match longest {
            Some((p, _)) => {
                let n = p.split(' ').count();
                (plain[..n].to_vec(), &args[n..])
            }
            None => (plain.into_iter().take(2).collect(), &[]),
        }
    };
    let joined = path.join(" ");
    let verb = VERBS
        .iter()
        .find(|(p, _)| *p == joined)
        .map_or(Verb::Other, |(_, v)| *v);
    if verb == Verb::Other {
        return Ok(Some(Classified::Other(crate::text::clip(&joined, 60))));
    }
    if let Some(b) = c.active {
        return Err(format!(
            "{} outside quotes: a shell would expand or run it, and Rocks escapes it in what it dumps",
            shown_byte(b)
        ));
    }
    let rest = rest
        .iter()
        .enumerate()
        .map(|(n, w)| {
            String::from_utf8(w.clone())
                .map_err(|_| format!("{joined}: its word {} is not UTF-8 text", n + 1))
        })
        .collect::<Result<Vec<String>, String>>()?;
    let command = read(verb, &joined, &rest).map_err(|why| format!("{joined}: {why}"))?;
    Ok(Some(Classified::Ours(command)))
}

fn shown_byte(b: u8) -> String {
    match b {
        b'\r' => "a carriage return (a dump edited on Windows? dos2unix converts it)".into(),
        b => format!("an unescaped '{}'", b as char),
    }
}

/// Reads a command's arguments by position.
fn read(verb: Verb, usage: &str, rest: &[String]) -> Result<Command, String> {
    let positional = |n: usize, names: &str| -> Result<&[String], String> {
        if rest.len() == n {
            Ok(rest)
        } else {
            Err(format!(
                "expected {n} arguments ({names}), found {}",
                rest.len()
            ))
        }
    };
    Ok(match verb {
        Verb::Attr(AttrAt::Global) => {
            let a = positional(2, "NAME VALUE")?;
            attr(Scope::Global, &a[0], &a[1])
        }
        Verb::Attr(at) => {
            let a = match at {
                AttrAt::Os => positional(3, "OS NAME VALUE")?,
                AttrAt::Appliance => positional(3, "APPLIANCE NAME VALUE")?,
                _ => positional(3, "HOST NAME VALUE")?,
            };
            let target = a[0].clone();
            let scope = match at {
                AttrAt::Os => Scope::Os(target),
                AttrAt::Appliance => Scope::Appliance(target),
                _ => Scope::Host(target),
            };
            attr(scope, &a[1], &a[2])
        }
        Verb::Appliance => {
            let (name, opts) = split_first(rest, "APPLIANCE")?;
            let o = options(
                opts,
                &["graph", "node", "membership", "public", "distribution"],
            )?;
            Command::Appliance {
                name,
                membership: o.get("membership").cloned(),
            }
        }
        Verb::Host => {
            let (name, opts) = split_first(rest, "HOST")?;
            let o = options(opts, &["cpus", "rack", "rank", "membership", "os"])?;
            // bin/rocks' `add host` needs membership, rack and rank, and
            // defaults cpus to 1 and os to linux.
            let need = |k: &str| {
                o.get(k)
                    .cloned()
                    .ok_or_else(|| format!("no {k}= (Rocks' add host needs it)"))
            };
            Command::Host {
                name,
                cpus: number("cpus", o.get("cpus").map_or("1", String::as_str))?,
                rack: number("rack", &need("rack")?)?,
                rank: number("rank", &need("rank")?)?,
                membership: need("membership")?,
                os: o.get("os").cloned().unwrap_or_else(|| "linux".into()),
            }
        }
        Verb::Interface => {
            let args = positional(2, "HOST IFACE")?;
            Command::Interface {
                host: args[0].clone(),
                iface: args[1].clone(),
            }
        }
        Verb::Field(field) => {
            let args = positional(3, "HOST IFACE VALUE")?;
            let mut value = args[2].clone();
            if field == IfaceField::Options {
                // `options="%s"` (dump/host/interface): the value comes
                // with its parameter name.
                if let Some(v) = value.strip_prefix("options=") {
                    value = v.to_string();
                }
            }
            if field == IfaceField::Vlan {
                number("vlan", &value)?;
            }
            Command::InterfaceField {
                host: args[0].clone(),
                iface: args[1].clone(),
                field,
                value,
            }
        }
        Verb::Action(kind) => {
            let (host, opts) = split_first(rest, "HOST")?;
            let o = options(opts, &["action"])?;
            Command::Action {
                host,
                kind,
                action: o.get("action").cloned().ok_or("no action=")?,
            }
        }
        Verb::Vm => Command::Vm(read_vm(rest)?),
        Verb::Other => return Err(format!("{usage} is not a command kvmroll reads")),
    })
}

fn attr(scope: Scope, name: &str, value: &str) -> Command {
    Command::Attr {
        scope,
        name: name.to_string(),
        value: value.to_string(),
    }
}

fn split_first<'a>(rest: &'a [String], what: &str) -> Result<(String, &'a [String]), String> {
    match rest.split_first() {
        Some((first, opts)) => Ok((first.clone(), opts)),
        None => Err(format!("no {what}")),
    }
}

/// `key=value` words, each key one of `allowed`; a later one wins, as in
/// Rocks' `fillParams`.
fn options(words: &[String], allowed: &[&str]) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for w in words {
        let (k, v) = w.split_once('=').ok_or_else(|| {
            format!(
                "{:?} is not one of its options ({})",
                crate::text::clip(w, 40),
                allowed.join(", ")
            )
        })?;
        if !allowed.contains(&k) {
            return Err(format!(
                "unknown option {:?} (expected {})",
                crate::text::clip(k, 40),
                allowed.join(", ")
            ));
        }
        out.insert(k.to_string(), v.to_string());
    }
    Ok(out)
}

fn number(what: &str, value: &str) -> Result<u32, String> {
    value.parse::<u32>().map_err(|_| {
        format!(
            "{what}={:?} is not a whole number",
            crate::text::clip(value, 40)
        )
    })
}

/// A `set host vm` line, read as the kvm roll's `set host vm` reads its
/// parameters (`set/host/vm/__init__.py`): `disk` and `disksize` are lists
/// separated by single spaces, a missing size is 36 GB.
fn read_vm(rest: &[String]) -> Result<VmLine, String> {
    let (host, opts) = split_first(rest, "HOST")?;
    let o = options(
        opts,
        &["physnode", "disk", "disksize", "mem", "slice", "virt-type"],
    )?;
    if let Some(s) = o.get("slice") {
        number("slice", s)?;
    }
    let sizes: Vec<u32> = match o.get("disksize").map(String::as_str) {
        None | Some("") => Vec::new(),
        Some(s) => s
            .split(' ')
            .map(|n| number("disksize", n))
            .collect::<Result<_, _>>()?,
    };
    let disks = match o.get("disk").map(String::as_str) {
        None => None,
        Some("") => Some(Vec::new()),
        Some(list) => Some(
            list.split(' ')
                .enumerate()
                .map(|(n, spec)| {
                    read_disk(spec, sizes.get(n).copied().unwrap_or(ROCKS_DEFAULT_DISK_GB))
                })
                .collect::<Result<_, _>>()?,
        ),
    };
    Ok(VmLine {
        host,
        physnode: o.get("physnode").cloned(),
        disks,
        mem_mb: o.get("mem").map(|m| number("mem", m)).transpose()?,
        virt_type: o.get("virt-type").cloned(),
    })
}

/// `TYPE:PATH,DEV,MODE` as `parseDisk` splits it: three comma-separated
/// fields, the type everything before the path's last colon.
fn read_disk(spec: &str, size_gb: u32) -> Result<RocksDisk, String> {
    let shown = || crate::text::clip(spec, 80);
    let fields: Vec<&str> = spec.split(',').collect();
    if fields.len() != 3 {
        return Err(format!(
            "disk {:?}: expected TYPE:PATH,DEV,BUS (three comma-separated fields), found {}",
            shown(),
            fields.len()
        ));
    }
    let (vbd_type, path) = fields[0].rsplit_once(':').unwrap_or(("", fields[0]));
    if vbd_type.is_empty() {
        return Err(format!("disk {:?}: no TYPE: before its path", shown()));
    }
    if fields[1].is_empty() || fields[2].is_empty() {
        return Err(format!("disk {:?}: no device or no bus", shown()));
    }
    Ok(RocksDisk {
        vbd_type: vbd_type.to_string(),
        path: path.to_string(),
        dev: fields[1].to_string(),
        mode: fields[2].to_string(),
        size_gb,
    })
}

/// One VM's row of `rocks list host vm showdisks=1`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmListRow {
    pub line: usize,
    /// `None` where Rocks left the VM-HOST column out: `endOutput` drops
    /// the owner column when every row has the same owner (one VM listed).
    pub vm: Option<String>,
    pub cdrom: Option<String>,
}

/// Reads the output of `rocks list host vm showdisks=1` (the kvm roll's
/// `list/host/vm`; columns VM-HOST SLICE MEM CPUS MAC HOST VIRT-TYPE
/// [STATUS] DISK DISKSIZE CDROM) for each VM's cdrom.
///
/// Rocks' `endOutput` (core `rocks/commands/__init__.py`) pads every cell
/// to its column's width and joins them with one space, the header too, so
/// each column starts where its header word starts (byte offsets, as
/// Python 2 counted them); an empty cell is a run of dashes. A VM with more
/// disks or MACs gets more rows, whose CDROM is empty: the first row of a
/// VM carries its cdrom.
pub fn parse_vm_list(text: &[u8]) -> Result<Vec<VmListRow>, Unreadable> {
    let mut lines = text
        .split(|&b| b == b'\n')
        .enumerate()
        .map(|(n, l)| (n + 1, l))
        .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    let Some((header_line, header)) = lines.next() else {
        return Err(Unreadable {
            line: 1,
            why: "the VM list is empty".into(),
        });
    };
    let mut columns: Vec<(usize, &[u8])> = Vec::new();
    let mut at = 0;
    for word in header.split(|&b| b == b' ') {
        if !word.is_empty() {
            columns.push((at, word));
        }
        at += word.len() + 1;
    }
    let find = |name: &[u8]| columns.iter().position(|(_, w)| *w == name);
    let Some(cdrom) = find(b"CDROM") else {
        return Err(Unreadable {
            line: header_line,
            why: "no CDROM column: give the output of `rocks list host vm showdisks=1`".into(),
        });
    };
    let owner = find(b"VM-HOST");
    if owner.is_some_and(|o| o != 0) {
        return Err(Unreadable {
            line: header_line,
            why: "VM-HOST is not the first column".into(),
        });
    }
    let cell = |row: &[u8], k: usize| -> Vec<u8> {
        let start = columns[k].0;
        let end = columns.get(k + 1).map_or(row.len(), |(s, _)| *s);
        let cell = row.get(start..end.min(row.len())).unwrap_or(b"");
        cell.trim_ascii().to_vec()
    };
    let mut rows: Vec<VmListRow> = Vec::new();
    for (line, row) in lines {
        let text_of = |bytes: Vec<u8>| {
            String::from_utf8(bytes).map_err(|_| Unreadable {
                line,
                why: "not UTF-8 text".into(),
            })
        };
        let vm = match owner {
            Some(o) => {
                let name = text_of(cell(row, o))?;
                let Some(name) = name.strip_suffix(':') else {
                    return Err(Unreadable {
                        line,
                        why: format!(
                            "{:?} is not a VM-HOST cell (NAME:) under the header's",
                            crate::text::clip(&name, 40)
                        ),
                    });
                };
                Some(name.to_string())
            }
            None => None,
        };
        let path = text_of(cell(row, cdrom))?;
        let path = (!path.is_empty() && !path.bytes().all(|b| b == b'-')).then_some(path);
        if rows.iter().any(|r| r.vm == vm) {
            // A later row of the same VM: its CDROM cell is empty.
            continue;
        }
        rows.push(VmListRow {
            line,
            vm,
            cdrom: path,
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `quote()` of rocksclusters/core `dump/__init__.py`, byte for byte.
    fn quote(value: &[u8]) -> Vec<u8> {
        let mut s = Vec::new();
        for &c in value {
            if !(c.is_ascii_alphanumeric() || ROCKS_SAFE.contains(&c)) {
                s.push(b'\\');
            }
            s.push(c);
        }
        s
    }

    fn one(line: &str) -> Command {
        let d = parse(line.as_bytes());
        assert!(d.unreadable.is_empty(), "{:?}", d.unreadable);
        assert_eq!(d.commands.len(), 1, "{d:?}");
        d.commands[0].command.clone()
    }

    fn refused(text: &str) -> Unreadable {
        let d = parse(text.as_bytes());
        assert_eq!(d.unreadable.len(), 1, "{d:?}");
        d.unreadable[0].clone()
    }

    #[test]
    fn values_quoted_by_rocks_read_back_exactly() {
        let value = "it's \"so\" $HOME `id`; a|b & c<d>(e) {f} [g]* ?! ~#\\ tab\there\nnext line\n\u{e9}\u{fc} end\n";
        let mut line = b"/opt/rocks/bin/rocks add host attr compute-0-0 site_note ".to_vec();
        line.extend(quote(value.as_bytes()));
        line.push(b'\n');
        let d = parse(&line);
        assert!(d.unreadable.is_empty(), "{:?}", d.unreadable);
        assert_eq!(
            d.commands,
            vec![Numbered {
                line: 1,
                command: Command::Attr {
                    scope: Scope::Host("compute-0-0".into()),
                    name: "site_note".into(),
                    value: value.into(),
                }
            }]
        );
    }

    #[test]
    fn positions_not_option_shapes() {
        // Rocks itself would take `a=b` for an option and lose the value.
        assert_eq!(
            one("/opt/rocks/bin/rocks add attr x a=b"),
            Command::Attr {
                scope: Scope::Global,
                name: "x".into(),
                value: "a=b".into()
            }
        );
        assert_eq!(
            one("/opt/rocks/bin/rocks add os attr linux ssh_use_dns false"),
            Command::Attr {
                scope: Scope::Os("linux".into()),
                name: "ssh_use_dns".into(),
                value: "false".into()
            }
        );
        let u = refused("/opt/rocks/bin/rocks add attr x a b");
        assert!(
            u.why.contains("expected 2 arguments (NAME VALUE), found 3"),
            "{u}"
        );
    }

    #[test]
    fn the_quoted_add_host_verb_and_its_options() {
        assert_eq!(
            one("/opt/rocks/bin/rocks \"add host\" vm-container-0-1 cpus=16 rack=0 rank=1 membership=VM\\ Container os=linux"),
            Command::Host {
                name: "vm-container-0-1".into(),
                cpus: 16,
                rack: 0,
                rank: 1,
                membership: "VM Container".into(),
                os: "linux".into(),
            }
        );
        // A host named like a sub-command needs the quoted verb, as in Rocks.
        assert!(matches!(
            one("/opt/rocks/bin/rocks \"add host\" attr cpus=1 rack=0 rank=0 membership=Compute os=linux"),
            Command::Host { name, .. } if name == "attr"
        ));
        let u = refused(
            "/opt/rocks/bin/rocks \"add host\" c-0-0 cpus=x rack=0 rank=0 membership=Compute",
        );
        assert!(u.why.contains("cpus=\"x\" is not a whole number"), "{u}");
        let u = refused("/opt/rocks/bin/rocks \"add host\" c-0-0 rack=0 membership=Compute");
        assert!(u.why.contains("no rank="), "{u}");
        let u = refused(
            "/opt/rocks/bin/rocks \"add host\" c-0-0 rack=0 rank=0 membership=Compute colour=red",
        );
        assert!(u.why.contains("unknown option \"colour\""), "{u}");
    }

    #[test]
    fn set_host_vm_disks_as_parse_disk_reads_them() {
        let Command::Vm(vm) = one(
            "/opt/rocks/bin/rocks set host vm hosted-vm-0-0-0 physnode='vm-container-0-0' \
             disk='phy:/dev/vg0/lv,vda,virtio tap:aio:/state/x.img,vdb,w file:/state/y.img,hda,ide' \
             disksize='10 20' mem='2048' slice='3' virt-type='hvm'",
        ) else {
            panic!("not a VM line")
        };
        assert_eq!(vm.host, "hosted-vm-0-0-0");
        assert_eq!(vm.physnode.as_deref(), Some("vm-container-0-0"));
        assert_eq!(vm.mem_mb, Some(2048));
        assert_eq!(vm.virt_type.as_deref(), Some("hvm"));
        let disks = vm.disks.unwrap();
        let d = |i: usize| {
            let d = &disks[i];
            (
                d.vbd_type.as_str(),
                d.path.as_str(),
                d.dev.as_str(),
                d.mode.as_str(),
                d.size_gb,
            )
        };
        assert_eq!(d(0), ("phy", "/dev/vg0/lv", "vda", "virtio", 10));
        assert_eq!(d(1), ("tap:aio", "/state/x.img", "vdb", "w", 20));
        assert_eq!(
            d(2),
            ("file", "/state/y.img", "hda", "ide", ROCKS_DEFAULT_DISK_GB)
        );
        let Command::Vm(empty) =
            one("/opt/rocks/bin/rocks set host vm v disk='' disksize='' mem='512' slice='0' virt-type='hvm'")
        else {
            panic!("not a VM line")
        };
        assert_eq!(empty.disks, Some(vec![]));
        assert_eq!(empty.physnode, None);
    }

    #[test]
    fn a_disk_without_a_device_is_refused_with_its_line() {
        let text = "# made by hand\n\n/opt/rocks/bin/rocks add attr a b\n/opt/rocks/bin/rocks set host vm v physnode='c' disk='file:/state/v.img' disksize='8' mem='512' slice='0' virt-type='hvm'\n";
        let u = refused(text);
        assert_eq!(u.line, 4);
        assert!(u.why.contains("expected TYPE:PATH,DEV,BUS"), "{u}");
        let u = refused("/opt/rocks/bin/rocks set host vm v disk='file:/state/v.img,,virtio'");
        assert!(u.why.contains("no device"), "{u}");
        let u = refused("/opt/rocks/bin/rocks set host vm v disk='/state/v.img,vda,virtio'");
        assert!(u.why.contains("no TYPE:"), "{u}");
    }

    #[test]
    fn an_unbalanced_single_quote_spoils_only_its_line() {
        let text = "/opt/rocks/bin/rocks add attr a b\n\
                    /opt/rocks/bin/rocks set host vm v physnode='c disk='file:/x,vda,virtio' mem='1'\n\
                    /opt/rocks/bin/rocks add attr c d\n";
        let d = parse(text.as_bytes());
        assert_eq!(d.unreadable.len(), 1);
        assert_eq!(d.unreadable[0].line, 2);
        assert!(d.unreadable[0].why.contains("' quote is not closed"));
        assert_eq!(
            d.commands.iter().map(|c| c.line).collect::<Vec<_>>(),
            vec![1, 3]
        );
    }

    #[test]
    fn double_quotes_span_lines_as_host_keys_do() {
        let text = "/opt/rocks/bin/rocks add host key localhost key=\"-----BEGIN PUBLIC KEY-----\nMIIBIjAN\n-----END PUBLIC KEY-----\n\"\n\
                    /opt/rocks/bin/rocks set host interface options vm-container-0-1 eth1 options=\"mtu=9000 novtap\"\n\
                    /opt/rocks/bin/rocks add firewall \"global=global\" network=all service=\"ssh\" rulename=\"A\"\n\
                    /opt/rocks/bin/rocks run reconfigure clear=1\n";
        let d = parse(text.as_bytes());
        assert!(d.unreadable.is_empty(), "{:?}", d.unreadable);
        assert_eq!(
            d.commands,
            vec![Numbered {
                line: 5,
                command: Command::InterfaceField {
                    host: "vm-container-0-1".into(),
                    iface: "eth1".into(),
                    field: IfaceField::Options,
                    value: "mtu=9000 novtap".into()
                }
            }]
        );
        let other: Vec<(&str, usize)> = d.other.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            other,
            vec![
                ("add firewall", 1),
                ("add host key", 1),
                ("run reconfigure", 1)
            ]
        );
        let u = refused(
            "/opt/rocks/bin/rocks add attr a b\n/opt/rocks/bin/rocks add host key h key=\"abc\n",
        );
        assert_eq!(u.line, 2);
        assert!(u.why.contains("never closed"), "{u}");
    }

    #[test]
    fn other_verbs_are_counted_by_their_rocks_command() {
        let text = "/opt/rocks/bin/rocks add network private subnet=10.1.0.0 netmask=255.255.0.0 mtu=1500\n\
                    /opt/rocks/bin/rocks add host route localhost 0.0.0.0 192.0.2.1 netmask=0.0.0.0\n\
                    /opt/rocks/bin/rocks add host route compute-0-0 10.9.0.0 10.1.1.1 netmask=255.255.0.0\n\
                    /opt/rocks/bin/rocks set host interface ip compute-0-0 eth0 10.1.255.254\n\
                    /opt/rocks/bin/rocks sync config\n\
                    echo done\n";
        let d = parse(text.as_bytes());
        assert!(d.commands.is_empty() && d.unreadable.is_empty(), "{d:?}");
        let other: Vec<(&str, usize)> = d.other.iter().map(|(k, v)| (k.as_str(), *v)).collect();
        assert_eq!(
            other,
            vec![
                ("add host route", 2),
                ("add network", 1),
                ("echo (not a rocks command)", 1),
                ("set host interface ip", 1),
                ("sync config", 1),
            ]
        );
    }

    #[test]
    fn shell_operators_and_expansions_are_refused_in_commands_kvmroll_reads() {
        for (text, what) in [
            ("/opt/rocks/bin/rocks add attr a $HOME", "'$'"),
            ("/opt/rocks/bin/rocks add attr a b; rm -rf /", "';'"),
            ("/opt/rocks/bin/rocks add attr a `id`", "'`'"),
            ("/opt/rocks/bin/rocks add attr a b\r\n", "carriage return"),
        ] {
            let u = refused(text);
            assert!(u.why.contains(what), "{text}: {u}");
        }
        // Quoted, they are text; in a verb kvmroll passes over, not its business.
        assert!(matches!(
            one("/opt/rocks/bin/rocks add attr a \"$HOME;\"\\`"),
            Command::Attr { value, .. } if value == "$HOME;`"
        ));
        let d = parse(b"/opt/rocks/bin/rocks add host route h 1.2.3.4 5.6.7.8 > /dev/null");
        assert!(d.unreadable.is_empty() && d.commands.is_empty());
    }

    #[test]
    fn bytes_escaped_one_by_one_make_utf8_and_other_bytes_are_refused() {
        let mut line = b"/opt/rocks/bin/rocks add attr Info_ClusterName ".to_vec();
        line.extend(quote("Z\u{fc}rich".as_bytes()));
        assert!(matches!(
            parse(&line).commands[0].command.clone(),
            Command::Attr { value, .. } if value == "Z\u{fc}rich"
        ));
        // A value Rocks held as unicode, whose letters isalnum() passed.
        assert!(matches!(
            one("/opt/rocks/bin/rocks add attr Info_ClusterName Z\u{fc}rich"),
            Command::Attr { value, .. } if value == "Z\u{fc}rich"
        ));
        let mut latin1 = b"/opt/rocks/bin/rocks add attr Info_ClusterName Z\\".to_vec();
        latin1.push(0xfc);
        latin1.extend(b"rich");
        let d = parse(&latin1);
        assert!(d.unreadable[0].why.contains("not UTF-8"), "{d:?}");
    }

    #[test]
    fn interface_and_action_lines() {
        assert_eq!(
            one("/opt/rocks/bin/rocks set host interface vlan vm-container-0-0 vlan7 7"),
            Command::InterfaceField {
                host: "vm-container-0-0".into(),
                iface: "vlan7".into(),
                field: IfaceField::Vlan,
                value: "7".into()
            }
        );
        assert!(
            refused("/opt/rocks/bin/rocks set host interface vlan h vlan7 seven")
                .why
                .contains("vlan=\"seven\"")
        );
        assert_eq!(
            one("/opt/rocks/bin/rocks set host installaction h action=install\\ vm\\ frontend"),
            Command::Action {
                host: "h".into(),
                kind: ActionKind::Install,
                action: "install vm frontend".into()
            }
        );
        assert!(refused("/opt/rocks/bin/rocks set host boot h")
            .why
            .contains("no action="));
    }

    #[test]
    fn vm_list_columns_are_read_where_the_header_puts_them() {
        let text = "\
VM-HOST          SLICE MEM  CPUS MAC               HOST             VIRT-TYPE DISK                                    DISKSIZE CDROM                      \n\
hosted-vm-0-0-0: 0     2048 2    52:54:00:00:00:01 vm-container-0-0 hvm       qcow2:/state/a.qcow2,vda,virtio         20       /isos/My Rescue.iso        \n\
hosted-vm-0-0-1: 1     1024 1    52:54:00:00:00:02 vm-container-0-0 hvm       file:/state/b.img,vda,virtio            36       -------------------------- \n\
hosted-vm-0-0-1: ----- ---- ---- 52:54:00:00:00:03 ---------------- --------- file:/state/c.img,vdb,virtio            10       -------------------------- \n";
        let rows = parse_vm_list(text.as_bytes()).unwrap();
        assert_eq!(
            rows,
            vec![
                VmListRow {
                    line: 2,
                    vm: Some("hosted-vm-0-0-0".into()),
                    cdrom: Some("/isos/My Rescue.iso".into())
                },
                VmListRow {
                    line: 3,
                    vm: Some("hosted-vm-0-0-1".into()),
                    cdrom: None
                },
            ]
        );
        let one_vm = "SLICE MEM CPUS MAC  HOST VIRT-TYPE DISK DISKSIZE CDROM\n0     512 1    ---- c    hvm       ---- -------- /isos/x.iso\n";
        assert_eq!(
            parse_vm_list(one_vm.as_bytes()).unwrap(),
            vec![VmListRow {
                line: 2,
                vm: None,
                cdrom: Some("/isos/x.iso".into())
            }]
        );
        let e = parse_vm_list(b"VM-HOST SLICE MEM\nv: 0 512\n").unwrap_err();
        assert!(e.why.contains("no CDROM column"), "{e}");
    }
}
