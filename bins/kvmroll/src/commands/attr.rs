//! `kvmroll attr set|get|list|rm`: attributes at any scope.

use super::{one_line, print_json, refused, App, Error, Exit};
use crate::cli::{AttrCmd, ScopeArgs};
use kvmroll_cli::print_table;
use kvmroll_core::{Change, Scope};
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
            } => self.attr_set(scope, args, value_file),
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
            AttrCmd::List { host, json } => {
                let c = self.store.snapshot()?;
                let h = c.host(&host)?;
                let resolved: Vec<_> = c.resolve(h).into_values().collect();
                if json.json {
                    print_json(out, &resolved)?;
                    return Ok(Exit::Done);
                }
                let rows: Vec<Vec<String>> = resolved
                    .iter()
                    .map(|r| vec![r.name.clone(), r.scope.to_string(), one_line(&r.value)])
                    .collect();
                print_table(out, &["ATTRIBUTE", "SCOPE", "VALUE"], &rows)?;
                Ok(Exit::Done)
            }
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
