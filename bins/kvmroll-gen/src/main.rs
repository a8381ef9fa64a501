//! `kvmroll-gen`: renders what kvmroll generates from the cluster database.
//!
//! Exit status: 0 on success, 1 when something could not be rendered (one
//! line per fault on stderr), 2 for a usage error.

use kvmroll_core::{error_chain as chain, hostfiles, open_store, OpenMode, Renderer};
use kvmroll_gen::cli::{Cli, Command};
use std::io::Write;
use std::process::ExitCode;

fn run(cli: Cli) -> Result<bool, Box<dyn std::error::Error>> {
    let path = cli.db.location()?;
    let store = open_store(&path, OpenMode::ReadOnly)?;
    let cluster = store.snapshot()?;
    let mut renderer = Renderer::new(&cluster);
    let out = std::io::stdout();
    let mut out = std::io::BufWriter::new(out.lock());
    match cli.command {
        Command::Kickstart { host, dist_url } => {
            let mut o = hostfiles::KickstartOptions::for_host(&cluster, &host)?;
            if let Some(url) = dist_url {
                o.dist_url = Some(url);
            }
            if let Some(path) = o.credential_source(&cluster, &host) {
                o.credential = Some(read_credential(std::path::Path::new(&path))?);
            }
            out.write_all(hostfiles::kickstart(&cluster, &host, &o)?.as_bytes())?;
        }
        Command::Udev { host } => {
            out.write_all(hostfiles::udev_rules(&cluster, &host)?.as_bytes())?
        }
        Command::Dracut { host } => {
            out.write_all(hostfiles::dracut_conf(&cluster, &host)?.as_bytes())?
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

/// Why the container credential could not go into a kickstart.
#[derive(Debug, thiserror::Error)]
enum CredentialError {
    #[error("cannot read the container credential {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the container credential {path} can be read by group or others (mode {mode:o}): chmod 600 it")]
    Readable { path: std::path::PathBuf, mode: u32 },
}

/// The frontend's passfile for containers, refused when anyone but its
/// owner could read it (libpq's own rule for passfiles).
fn read_credential(path: &std::path::Path) -> Result<String, CredentialError> {
    use std::os::unix::fs::PermissionsExt;
    let read = |source| CredentialError::Read {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(read)?.permissions().mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(CredentialError::Readable {
            path: path.to_path_buf(),
            mode,
        });
    }
    std::fs::read_to_string(path).map_err(read)
}

fn main() -> ExitCode {
    match run(kvmroll_cli::parse::<Cli>("kvmroll-gen")) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("kvmroll-gen: {}", chain(e.as_ref()));
            ExitCode::from(1)
        }
    }
}
