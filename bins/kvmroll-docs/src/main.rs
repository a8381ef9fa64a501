//! `kvmroll-docs DIR`: writes the man pages (clap_mangen) and the bash and
//! zsh completions (clap_complete) of every kvmroll binary under DIR, from
//! the very clap definitions the binaries parse with, so they never drift.
//!
//!     DIR/man/man1/kvmroll.1  kvmroll-gen.1
//!     DIR/man/man8/kvmroll-enable.8  kvmroll-guests.8  kvmroll-hook.8
//!     DIR/bash-completion/completions/NAME
//!     DIR/zsh/vendor-completions/_NAME

#[path = "../../kvmroll/src/cli.rs"]
#[allow(dead_code)]
mod kvmroll_cli;
#[path = "../../kvmroll-enable/src/cli.rs"]
#[allow(dead_code)]
mod kvmroll_enable_cli;
#[path = "../../kvmroll-gen/src/cli.rs"]
#[allow(dead_code)]
mod kvmroll_gen_cli;
#[path = "../../kvmroll-guests/src/cli.rs"]
#[allow(dead_code)]
mod kvmroll_guests_cli;
#[path = "../../kvmroll-hook/src/cli.rs"]
#[allow(dead_code)]
mod kvmroll_hook_cli;

use clap::CommandFactory;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn write(dir: &Path, name: &str, cmd: clap::Command, section: &str) -> std::io::Result<()> {
    let man_dir = dir.join(format!("man/man{section}"));
    std::fs::create_dir_all(&man_dir)?;
    let mut page = Vec::new();
    clap_mangen::Man::new(cmd.clone())
        .section(section)
        .render(&mut page)?;
    std::fs::write(man_dir.join(format!("{name}.{section}")), page)?;
    let bash = dir.join("bash-completion/completions");
    let zsh = dir.join("zsh/vendor-completions");
    std::fs::create_dir_all(&bash)?;
    std::fs::create_dir_all(&zsh)?;
    let mut cmd = cmd;
    let mut out = Vec::new();
    clap_complete::generate(clap_complete::Shell::Bash, &mut cmd, name, &mut out);
    std::fs::write(bash.join(name), &out)?;
    out.clear();
    clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, name, &mut out);
    std::fs::write(zsh.join(format!("_{name}")), &out)?;
    Ok(())
}

fn main() -> ExitCode {
    let Some(dir) = std::env::args_os().nth(1).map(PathBuf::from) else {
        eprintln!("usage: kvmroll-docs DIR");
        return ExitCode::from(2);
    };
    let pages = [
        ("kvmroll", kvmroll_cli::Cli::command(), "1"),
        ("kvmroll-gen", kvmroll_gen_cli::Cli::command(), "1"),
        ("kvmroll-enable", kvmroll_enable_cli::Cli::command(), "8"),
        ("kvmroll-guests", kvmroll_guests_cli::Cli::command(), "8"),
        ("kvmroll-hook", kvmroll_hook_cli::Cli::command(), "8"),
    ];
    for (name, cmd, section) in pages {
        if let Err(e) = write(&dir, name, cmd, section) {
            eprintln!("kvmroll-docs: {name}: {e}");
            return ExitCode::from(1);
        }
    }
    ExitCode::SUCCESS
}
