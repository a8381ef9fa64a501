//! `kvmroll-gen`: renders what kvmroll generates from the cluster database.
//!
//! Exit status: 0 on success, 1 when something could not be rendered (one
//! line per fault on stderr), 2 for a usage error.

use kvmroll_cli::error_chain;
use kvmroll_core::{hostfiles, open_store, OpenMode, Renderer};
use kvmroll_gen::cli::{Cli, Command};
use std::io::Write;
use std::process::ExitCode;

// How kvmroll-gen exits: done, or something could not be rendered, said
// one line per fault (usage errors aside: 2).
use kvmroll_cli::report::Exit;

/// Why nothing (or not all) could be rendered.
#[derive(Debug, thiserror::Error)]
enum GenError {
    #[error(transparent)]
    Config(#[from] kvmroll_core::conf::ConfigError),
    #[error(transparent)]
    Store(#[from] kvmroll_core::StoreError),
    #[error(transparent)]
    HostFile(#[from] hostfiles::HostFileError),
    #[error(transparent)]
    Render(#[from] kvmroll_core::RenderError),
    #[error(transparent)]
    Credential(#[from] CredentialError),
    #[error("cannot write to standard output")]
    Output(#[from] std::io::Error),
}

fn run(cli: Cli) -> Result<Exit, GenError> {
    let path = cli.db.location()?;
    let store = open_store(&path, OpenMode::ReadOnly)?;
    let cluster = store.snapshot()?;
    let mut renderer = Renderer::new(&cluster);
    let mut out = std::io::BufWriter::new(kvmroll_cli::output::stdout());
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
                        eprintln!("kvmroll-gen: {}", error_chain(&e));
                        ok = false;
                    }
                }
            }
            out.flush()?;
            return Ok(if ok { Exit::Done } else { Exit::Failed });
        }
    }
    out.flush()?;
    Ok(Exit::Done)
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
    let cli = kvmroll_cli::parse::<Cli>("kvmroll-gen");
    kvmroll_cli::log::init_command("kvmroll-gen", cli.verbose.verbose);
    kvmroll_cli::finish("kvmroll-gen", run(cli), Exit::Failed)
}
