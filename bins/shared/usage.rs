//! The command-line parse every kvmroll binary shares (each includes this
//! file with `#[path]`, as kvmroll-docs includes their `cli.rs`): a usage
//! error is one line on stderr and exit status 2, as every other bad input
//! is one line. clap's own report spans several lines, one of them blank.

/// Parses the process's arguments as `T`. `--help` and `--version` print
/// and exit 0; a usage error prints `NAME: WHAT (see NAME --help)` and exits 2.
pub fn parse<T: clap::Parser>(name: &str) -> T {
    match T::try_parse() {
        Ok(parsed) => parsed,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            std::process::exit(0)
        }
        // No subcommand given: clap's "error" is then the whole help page,
        // whose first line says nothing of what is wrong.
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            eprintln!("{name}: a command is missing (see {name} --help)");
            std::process::exit(2)
        }
        Err(e) => {
            eprintln!("{}", one_line(name, &e.to_string()));
            std::process::exit(2)
        }
    }
}

/// clap's report as one line: its first, without clap's "error: ", and the
/// lines it announces with a colon (the missing arguments' names).
fn one_line(name: &str, report: &str) -> String {
    let mut lines = report.lines().map(str::trim).filter(|l| !l.is_empty());
    let first = lines.next().unwrap_or("bad usage");
    let mut what = first.strip_prefix("error: ").unwrap_or(first).to_string();
    if what.ends_with(':') {
        let listed: Vec<&str> = lines.take_while(|l| !l.starts_with("Usage:")).collect();
        what = format!("{what} {}", listed.join(", "));
    }
    format!("{name}: {what} (see {name} --help)")
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_report_becomes_one_line() {
        let report = "error: unexpected argument '--x' found\n\nUsage: kvmroll-gen domain <VM>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            super::one_line("kvmroll-gen", report),
            "kvmroll-gen: unexpected argument '--x' found (see kvmroll-gen --help)"
        );
        let report = "error: the following required arguments were not provided:\n  <HOST>\n\nUsage: kvmroll-enable <HOST>\n";
        assert_eq!(
            super::one_line("kvmroll-enable", report),
            "kvmroll-enable: the following required arguments were not provided: <HOST> \
             (see kvmroll-enable --help)"
        );
    }
}
