//! `kvmroll attr set|get|list|rm|known`: attributes at any scope, and the
//! registry of those kvmroll reads.

use super::{refused, App, Error, Exit};
use crate::cli::{AttrCmd, ScopeArgs};
use kvmroll_cli::args::NoHeader;
use kvmroll_cli::{print_listing, Format};
use kvmroll_core::attrs::known::{self, Known};
use kvmroll_core::cluster::Resolved;
use kvmroll_core::{Change, Scope};
use serde_json::{json, Value};
use std::io::{Read, Write};

fn scope_of(scope: &ScopeArgs, host: Option<&str>) -> Scope {
    if scope.global {
        Scope::Global
    } else if let Some(os) = &scope.os {
        Scope::Os(os.clone())
    } else if let Some(a) = &scope.appliance {
        Scope::Appliance(a.clone())
    } else if let Some(r) = scope.rack {
        Scope::Rack(r)
    } else {
        Scope::Host(host.unwrap_or_default().to_string())
    }
}

fn has_scope_flag(scope: &ScopeArgs) -> bool {
    scope.global || scope.os.is_some() || scope.appliance.is_some() || scope.rack.is_some()
}

/// Reads an attribute value from a file or standard input; one trailing
/// newline (an editor's) is dropped.
fn read_value(source: &std::path::Path) -> Result<String, Error> {
    let mut value = String::new();
    if source.as_os_str() == "-" {
        std::io::stdin()
            .read_to_string(&mut value)
            .map_err(|e| refused(format!("cannot read the value from standard input: {e}")))?;
    } else {
        value = std::fs::read_to_string(source)
            .map_err(|e| refused(format!("cannot read value file {}: {e}", source.display())))?;
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    Ok(value)
}

impl App<'_> {
    pub(super) fn attr(&mut self, cmd: AttrCmd, out: &mut dyn Write) -> Result<Exit, Error> {
        match cmd {
            AttrCmd::Set {
                scope,
                args,
                value_file,
                force,
            } => self.attr_set(scope, args, value_file, force),
            AttrCmd::Get { host, name } => {
                let c = self.store.snapshot()?;
                let h = c.host(&host)?;
                match c.attr(h, &name) {
                    Some(v) => {
                        writeln!(out, "{v}")?;
                        Ok(Exit::Done)
                    }
                    None => Ok(Exit::Unset),
                }
            }
            AttrCmd::List {
                scope,
                host,
                json,
                header,
            } => {
                let c = self.store.snapshot()?;
                let rows: Vec<Resolved> = match host {
                    Some(host) if !has_scope_flag(&scope) => {
                        c.resolve(c.host(&host)?).into_values().collect()
                    }
                    Some(_) => return Err(refused("give a HOST or a scope flag, not both")),
                    None => {
                        let scope = scope_of(&scope, None);
                        c.attrs
                            .get(&scope)
                            .into_iter()
                            .flatten()
                            .map(|(name, value)| Resolved {
                                name: name.clone(),
                                value: value.clone(),
                                scope: scope.clone(),
                            })
                            .collect()
                    }
                };
                print_resolved(out, &rows, json.json, header)
            }
            AttrCmd::Known { .. } => unreachable!("answered before the store is opened"),
            AttrCmd::Rm { scope, args } => self.attr_rm(scope, args),
        }
    }

    /// `attr set`: HOST NAME VALUE, or NAME VALUE after a scope flag; the
    /// value from the command line, a file or standard input.
    fn attr_set(
        &mut self,
        scope: ScopeArgs,
        args: Vec<String>,
        value_file: Option<std::path::PathBuf>,
        force: bool,
    ) -> Result<Exit, Error> {
        let flagged = has_scope_flag(&scope);
        let (target, rest) = if flagged {
            (None, &args[..])
        } else {
            (Some(args[0].as_str()), &args[1..])
        };
        let (name, value) = match (rest, &value_file) {
            ([name], Some(file)) => (name.clone(), read_value(file)?),
            ([name, v], None) if v == "-" => (name.clone(), read_value(std::path::Path::new("-"))?),
            ([name, v], None) => (name.clone(), v.clone()),
            ([_, _], Some(_)) => return Err(refused("give the value or --value-file, not both")),
            ([_], None) => {
                return Err(refused(
                    "no value given (a VALUE, `-` for standard input, or --value-file)",
                ))
            }
            _ => {
                return Err(refused(if flagged {
                    "expected NAME VALUE after a scope flag"
                } else {
                    "expected HOST NAME VALUE (or a scope flag such as --global)"
                }))
            }
        };
        if !force {
            if let Some(near) = known::did_you_mean(&name) {
                return Err(refused(format!(
                    "kvmroll does not read {name}: did you mean {near}? (--force sets it anyway)"
                )));
            }
        }
        let scope = scope_of(&scope, target);
        self.write(&mut |_| {
            Ok(vec![Change::SetAttr {
                scope: scope.clone(),
                name: name.clone(),
                value: value.clone(),
            }])
        })
        .map(|(_, o)| o)
    }

    /// `attr rm`: HOST NAME, or NAME after a scope flag.
    fn attr_rm(&mut self, scope: ScopeArgs, args: Vec<String>) -> Result<Exit, Error> {
        let flagged = has_scope_flag(&scope);
        let (target, name) = match (flagged, &args[..]) {
            (true, [name]) => (None, name.clone()),
            (false, [host, name]) => (Some(host.as_str()), name.clone()),
            _ => {
                return Err(refused(if flagged {
                    "expected NAME after a scope flag"
                } else {
                    "expected HOST NAME (or a scope flag such as --global)"
                }))
            }
        };
        let scope = scope_of(&scope, target);
        self.write(&mut |_| {
            Ok(vec![Change::RemoveAttr {
                scope: scope.clone(),
                name: name.clone(),
            }])
        })
        .map(|(_, o)| o)
    }
}

/// The rows of `attr list`: a table, or JSON whose fields are its columns.
fn print_resolved(
    out: &mut dyn Write,
    rows: &[Resolved],
    json: bool,
    header: NoHeader,
) -> Result<Exit, Error> {
    let rows: Vec<Vec<Value>> = rows
        .iter()
        .map(|r| vec![json!(r.name), json!(r.scope.to_string()), json!(r.value)])
        .collect();
    let format = Format::of(json, header.no_header);
    print_listing(out, &["NAME", "SCOPE", "VALUE"], &rows, format)?;
    Ok(Exit::Done)
}

/// `attr known [NAME]`: the registry, or one entry of it; it needs no
/// database.
pub(super) fn known(
    name: Option<&str>,
    json: bool,
    header: NoHeader,
    out: &mut dyn Write,
) -> Result<Exit, Error> {
    let entries: Vec<&Known> = match name {
        None => known::KNOWN.iter().collect(),
        Some(name) => match known::lookup(name) {
            Some(k) => vec![k],
            None => {
                let hint = known::did_you_mean(name)
                    .map(|n| format!(": did you mean {n}?"))
                    .unwrap_or_default();
                return Err(refused(format!("kvmroll does not read {name}{hint}")));
            }
        },
    };
    let rows: Vec<Vec<Value>> = entries
        .iter()
        .map(|k| {
            vec![
                json!(k.name),
                json!(k.scope.as_str()),
                json!(k.kind.as_str()),
                json!(k.default),
                json!(k.description),
            ]
        })
        .collect();
    let format = Format::of(json, header.no_header);
    print_listing(
        out,
        &["NAME", "SCOPE", "TYPE", "DEFAULT", "DESCRIPTION"],
        &rows,
        format,
    )?;
    Ok(Exit::Done)
}
