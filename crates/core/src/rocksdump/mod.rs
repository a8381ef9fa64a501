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
    Host(HostEntry),
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

/// A host as `rocks dump host` writes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostEntry {
    pub name: String,
    pub cpus: u32,
    pub rack: u32,
    pub rank: u32,
    pub membership: String,
    pub os: String,
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

mod verbs;
mod vmlist;
mod words;

use verbs::{classify, Classified};
pub use vmlist::{parse_vm_list, VmListRow};
use words::split;

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
            Command::Host(HostEntry {
                name: "vm-container-0-1".into(),
                cpus: 16,
                rack: 0,
                rank: 1,
                membership: "VM Container".into(),
                os: "linux".into(),
            })
        );
        // A host named like a sub-command needs the quoted verb, as in Rocks.
        assert!(matches!(
            one("/opt/rocks/bin/rocks \"add host\" attr cpus=1 rack=0 rank=0 membership=Compute os=linux"),
            Command::Host(h) if h.name == "attr"
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
}
