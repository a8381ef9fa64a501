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
        Err(e) => {
            eprintln!("{}", one_line(name, &e.to_string()));
            std::process::exit(2)
        }
    }
}

/// clap's report as one line: its first, without clap's "error: ".
fn one_line(name: &str, report: &str) -> String {
    let first = report.lines().next().unwrap_or("bad usage");
    let first = first.strip_prefix("error: ").unwrap_or(first);
    format!("{name}: {first} (see {name} --help)")
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
    }
}
