//! `kvmroll-gen`: renders what kvmroll generates from the cluster database.
//!
//! Exit status: 0 on success, 1 when something could not be rendered (one
//! line per fault on stderr), 2 for a usage error.

use clap::{Parser, Subcommand};
use kvmroll_core::{open_store, OpenMode, Renderer, DEFAULT_DB_PATH};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Render libvirt domain XML from the kvmroll database.
#[derive(Debug, Parser)]
#[command(name = "kvmroll-gen", version, about)]
struct Cli {
    /// The cluster database [default: $KVMROLL_DB, else /var/lib/kvmroll/kvmroll.db].
    #[arg(long, global = true, value_name = "PATH")]
    db: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print a VM's libvirt domain XML (`--all`: every VM, one document after another).
    Domain {
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        vm: Option<String>,
        #[arg(long)]
        all: bool,
    },
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

fn run(cli: Cli) -> Result<bool, Box<dyn std::error::Error>> {
    let path = cli
        .db
        .or_else(|| std::env::var_os("KVMROLL_DB").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DB_PATH));
    let store = open_store(&path, OpenMode::ReadOnly)?;
    let cluster = store.snapshot()?;
    let mut renderer = Renderer::new(&cluster);
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match cli.command {
        Command::Domain { vm: Some(vm), .. } => {
            let xml = renderer.render(&vm)?;
            out.write_all(xml.as_bytes())?;
        }
        Command::Domain { vm: None, .. } => {
            let mut ok = true;
            for name in cluster.vms.keys() {
                match renderer.render(name) {
                    Ok(xml) => out.write_all(xml.as_bytes())?,
                    Err(e) => {
                        eprintln!("kvmroll-gen: {}", chain(&e));
                        ok = false;
                    }
                }
            }
            out.flush()?;
            return Ok(ok);
        }
    }
    out.flush()?;
    Ok(true)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kvmroll-gen: {}", chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}
