//! A command's verb, found as Rocks' `bin/rocks` finds its command module,
//! and its arguments read by position into a [`Command`].

use super::words::Words;
use super::{ActionKind, Command, HostEntry, IfaceField, RocksDisk, VmLine, ROCKS_DEFAULT_DISK_GB};
use crate::model::Scope;
use std::collections::BTreeMap;

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

pub(super) enum Classified {
    Ours(Command),
    Other(String),
}

/// Finds a command's verb as `bin/rocks` does and reads its arguments.
/// `Ok(None)`: nothing to count (a bare `rocks`).
pub(super) fn classify(c: &Words) -> Result<Option<Classified>, String> {
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

/// Exactly `n` positional arguments (`names` says which), or why not.
fn positional<'a>(rest: &'a [String], n: usize, names: &str) -> Result<&'a [String], String> {
    if rest.len() == n {
        Ok(rest)
    } else {
        Err(format!(
            "expected {n} arguments ({names}), found {}",
            rest.len()
        ))
    }
}

/// Reads a command's arguments by position.
fn read(verb: Verb, usage: &str, rest: &[String]) -> Result<Command, String> {
    Ok(match verb {
        Verb::Attr(at) => read_attr(at, rest)?,
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
        Verb::Host => Command::Host(read_host(rest)?),
        Verb::Interface => {
            let args = positional(rest, 2, "HOST IFACE")?;
            Command::Interface {
                host: args[0].clone(),
                iface: args[1].clone(),
            }
        }
        Verb::Field(field) => read_field(field, rest)?,
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

/// `add attr NAME VALUE`, or `add os|appliance|host attr TARGET NAME VALUE`.
fn read_attr(at: AttrAt, rest: &[String]) -> Result<Command, String> {
    if at == AttrAt::Global {
        let a = positional(rest, 2, "NAME VALUE")?;
        return Ok(attr(Scope::Global, &a[0], &a[1]));
    }
    let (names, scope): (&str, fn(String) -> Scope) = match at {
        AttrAt::Os => ("OS NAME VALUE", Scope::Os),
        AttrAt::Appliance => ("APPLIANCE NAME VALUE", Scope::Appliance),
        _ => ("HOST NAME VALUE", Scope::Host),
    };
    let a = positional(rest, 3, names)?;
    Ok(attr(scope(a[0].clone()), &a[1], &a[2]))
}

/// `"add host" HOST cpus=N rack=R rank=R membership=M os=OS`: bin/rocks'
/// `add host` needs membership, rack and rank, and defaults cpus to 1 and
/// os to linux.
fn read_host(rest: &[String]) -> Result<HostEntry, String> {
    let (name, opts) = split_first(rest, "HOST")?;
    let o = options(opts, &["cpus", "rack", "rank", "membership", "os"])?;
    let need = |k: &str| {
        o.get(k)
            .cloned()
            .ok_or_else(|| format!("no {k}= (Rocks' add host needs it)"))
    };
    Ok(HostEntry {
        name,
        cpus: number("cpus", o.get("cpus").map_or("1", String::as_str))?,
        rack: number("rack", &need("rack")?)?,
        rank: number("rank", &need("rank")?)?,
        membership: need("membership")?,
        os: o.get("os").cloned().unwrap_or_else(|| "linux".into()),
    })
}

/// `set host interface FIELD HOST IFACE VALUE`.
fn read_field(field: IfaceField, rest: &[String]) -> Result<Command, String> {
    let args = positional(rest, 3, "HOST IFACE VALUE")?;
    let mut value = args[2].clone();
    if field == IfaceField::Options {
        // `options="%s"` (dump/host/interface): the value comes with its
        // parameter name.
        if let Some(v) = value.strip_prefix("options=") {
            value = v.to_string();
        }
    }
    if field == IfaceField::Vlan {
        number("vlan", &value)?;
    }
    Ok(Command::InterfaceField {
        host: args[0].clone(),
        iface: args[1].clone(),
        field,
        value,
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
