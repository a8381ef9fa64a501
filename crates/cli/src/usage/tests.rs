//! Each usage error kind the binaries can meet, pinned to our line: a clap
//! upgrade that rewords its own report must not change what users see.

use super::usage_line;
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Parser)]
#[command(name = "t")]
struct Cli {
    #[arg(long, value_name = "N")]
    keep: Option<u32>,
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    #[arg(long, conflicts_with = "keep")]
    all: bool,
    #[arg(long, num_args = 2)]
    pair: Vec<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Clone, ValueEnum)]
enum Mode {
    Fast,
    Slow,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    Add {
        name: String,
    },
    #[command(subcommand)]
    Vm(VmCmd),
    #[command(arg_required_else_help = true)]
    Show {
        name: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum VmCmd {
    List,
}

/// The line `t ARGS` gets.
fn line(args: &[&str]) -> String {
    let e = Cli::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap_err();
    usage_line("t", &e)
}

#[test]
fn unknown_argument() {
    assert_eq!(
        line(&["--x", "add", "a"]),
        "t: unexpected argument '--x' found (see t --help)"
    );
}

#[test]
fn unknown_subcommand() {
    assert_eq!(
        line(&["remove"]),
        "t: unrecognized subcommand 'remove' (see t --help)"
    );
}

#[test]
fn no_command() {
    assert_eq!(line(&[]), "t: a command is missing (see t --help)");
    assert_eq!(line(&["show"]), "t: a command is missing (see t --help)");
}

#[test]
fn missing_subcommand() {
    // clap's derive answers a bare `t vm` with help, which is no line.
    assert_eq!(line(&["vm"]), "t: a command is missing (see t --help)");
    let e = clap::Command::new("t")
        .subcommand_required(true)
        .subcommand(clap::Command::new("list"))
        .try_get_matches_from(["t"])
        .unwrap_err();
    assert_eq!(
        usage_line("t", &e),
        "t: 't' requires a subcommand but one was not provided (see t --help)"
    );
}

#[test]
fn missing_required_arguments_are_listed() {
    assert_eq!(
        line(&["add"]),
        "t: the following required arguments were not provided: <NAME> (see t --help)"
    );
}

#[test]
fn value_not_among_the_possible_ones() {
    assert_eq!(
        line(&["--mode", "quick", "add", "a"]),
        "t: invalid value 'quick' for '--mode <MODE>' (possible values: fast, slow) (see t --help)"
    );
}

#[test]
fn empty_value() {
    assert_eq!(
        line(&["--mode=", "add", "a"]),
        "t: a value is required for '--mode <MODE>' but none was supplied (see t --help)"
    );
}

#[test]
fn value_that_does_not_parse_says_why() {
    assert_eq!(
        line(&["--keep", "some", "add", "a"]),
        "t: invalid value 'some' for '--keep <N>': invalid digit found in string (see t --help)"
    );
}

#[test]
fn conflicting_arguments() {
    assert_eq!(
        line(&["--keep", "1", "--all", "add", "a"]),
        "t: the argument '--keep <N>' cannot be used with '--all' (see t --help)"
    );
    assert_eq!(
        line(&["--all", "--all", "add", "a"]),
        "t: the argument '--all' cannot be used twice (see t --help)"
    );
}

#[test]
fn wrong_number_of_values() {
    let e = clap::Command::new("t")
        .arg(clap::Arg::new("pair").long("pair").num_args(2))
        .try_get_matches_from(["t", "--pair", "a"])
        .unwrap_err();
    assert_eq!(
        usage_line("t", &e),
        "t: wrong number of values for '--pair <pair> <pair>' (see t --help)"
    );
}

#[test]
fn too_many_values() {
    assert_eq!(
        line(&["add", "a", "b"]),
        "t: unexpected argument 'b' found (see t --help)"
    );
}
