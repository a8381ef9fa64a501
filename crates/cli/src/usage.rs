//! The command-line parse every kvmroll binary shares: a usage error is one
//! line on stderr and exit status 2, as every other bad input is one line.
//!
//! The line is built from the error's kind and context (what clap found,
//! for which option), never from clap's rendered report: that report spans
//! several lines, and its wording is clap's to change between releases.

use clap::error::{ContextKind, ContextValue, ErrorKind};

/// The exit status of a usage error.
pub const USAGE_EXIT: u8 = 2;

/// Parses the process's arguments as `T`. `--help` and `--version` print
/// and exit 0; a usage error prints `NAME: WHAT (see NAME --help)` and exits 2.
pub fn parse<T: clap::Parser>(name: &str) -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("{}", usage_line(name, &e));
            std::process::exit(i32::from(USAGE_EXIT))
        }
    }
}

/// A usage error as one line: `NAME: WHAT (see NAME --help)`.
pub fn usage_line(name: &str, e: &clap::Error) -> String {
    format!("{name}: {} (see {name} --help)", what(e))
}

/// One context value as text: a list joined by commas.
fn text(e: &clap::Error, kind: ContextKind) -> Option<String> {
    match e.get(kind)? {
        ContextValue::String(s) => Some(s.clone()),
        ContextValue::Strings(v) if !v.is_empty() => Some(v.join(", ")),
        ContextValue::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// What is wrong, in our words, from the error's kind and context.
fn what(e: &clap::Error) -> String {
    let arg = || text(e, ContextKind::InvalidArg).unwrap_or_else(|| "an argument".into());
    let value = || text(e, ContextKind::InvalidValue).unwrap_or_default();
    match e.kind() {
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => "a command is missing".into(),
        ErrorKind::UnknownArgument => format!("unexpected argument '{}' found", arg()),
        ErrorKind::InvalidSubcommand => match text(e, ContextKind::InvalidSubcommand) {
            Some(sub) => format!("unrecognized subcommand '{sub}'"),
            None => "unrecognized subcommand".into(),
        },
        ErrorKind::MissingSubcommand => match text(e, ContextKind::InvalidSubcommand) {
            Some(cmd) => format!("'{cmd}' requires a subcommand but one was not provided"),
            None => "a subcommand is missing".into(),
        },
        ErrorKind::MissingRequiredArgument => format!(
            "the following required arguments were not provided: {}",
            arg()
        ),
        ErrorKind::InvalidValue if value().is_empty() => {
            format!("a value is required for '{}' but none was supplied", arg())
        }
        ErrorKind::InvalidValue => match text(e, ContextKind::ValidValue) {
            Some(valid) => format!(
                "invalid value '{}' for '{}' (possible values: {valid})",
                value(),
                arg()
            ),
            None => format!("invalid value '{}' for '{}'", value(), arg()),
        },
        ErrorKind::ValueValidation => match std::error::Error::source(e) {
            Some(why) => format!("invalid value '{}' for '{}': {why}", value(), arg()),
            None => format!("invalid value '{}' for '{}'", value(), arg()),
        },
        ErrorKind::ArgumentConflict => conflict(e, &arg()),
        ErrorKind::TooManyValues => {
            format!("unexpected value '{}' for '{}'", value(), arg())
        }
        ErrorKind::TooFewValues | ErrorKind::WrongNumberOfValues => {
            format!("wrong number of values for '{}'", arg())
        }
        ErrorKind::NoEquals => format!("'{}' needs its value after an equal sign", arg()),
        ErrorKind::InvalidUtf8 => "an argument is not valid UTF-8".into(),
        _ => "bad usage".into(),
    }
}

/// An argument given with one it excludes, or given twice.
fn conflict(e: &clap::Error, arg: &str) -> String {
    match text(e, ContextKind::PriorArg) {
        Some(prior) if prior == arg => format!("the argument '{arg}' cannot be used twice"),
        Some(prior) => format!("the argument '{arg}' cannot be used with '{prior}'"),
        None => format!("the argument '{arg}' cannot be used with the others given"),
    }
}

#[cfg(test)]
mod tests;
