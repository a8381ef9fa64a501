//! `kvmroll-gen`: renders what kvmroll generates from the cluster database.
//!
//! Exit status: 0 on success, 1 when something could not be rendered (one
//! line per fault on stderr), 2 for a usage error.

use clap::Parser;
use cli::{Cli, Command};
use kvmroll_core::{open_store, OpenMode, Renderer, DEFAULT_DB_PATH};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

mod cli;

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
        c @ (Command::Kickstart { .. } | Command::Udev { .. } | Command::Dracut { .. }) => {
            let text = host_file(&cluster, c)?;
            out.write_all(text.as_bytes())?;
        }
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

fn host_file(
    cluster: &kvmroll_core::Cluster,
    command: Command,
) -> Result<String, Box<dyn std::error::Error>> {
    use kvmroll_core::hostfiles;
    Ok(match command {
        Command::Kickstart { host, dist_url } => {
            let mut o = hostfiles::KickstartOptions::for_host(cluster, &host);
            if let Some(url) = dist_url {
                o.dist_url = url;
            }
            hostfiles::kickstart(cluster, &host, &o)?
        }
        Command::Udev { host } => hostfiles::udev_rules(cluster, &host)?,
        Command::Dracut { host } => hostfiles::dracut_conf(cluster, &host)?,
        Command::Domain { .. } => unreachable!("domain is rendered by run"),
    })
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
