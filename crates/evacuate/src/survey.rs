//! What an evacuation starts from: the VMs the database places on the
//! source that its libvirt says run, and the free memory of every other VM
//! container. libvirt's connect has no time limit of its own (a libvirtd
//! that accepts and never answers), so each container is asked on a thread
//! of its own and the survey stops waiting at the limit: a container that
//! has not answered by then is silent, as `vm list` treats it.

use crate::{MoveError, Probe};
use kvmroll_core::Cluster;
use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Why an evacuation cannot begin; nothing was changed.
#[derive(Debug, thiserror::Error)]
pub enum SurveyError {
    #[error("{0} is not a VM container")]
    NotContainer(String),
    #[error("container {container} does not answer: {why}")]
    SourceSilent { container: String, why: String },
}

/// What the survey found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Survey {
    /// The source's VMs (the database's) that run there, by name.
    pub running: Vec<String>,
    /// Each other VM container that answered, with its free memory in bytes.
    pub free_memory: BTreeMap<String, u64>,
    /// The other VM containers that did not answer, with why.
    pub silent: Vec<(String, String)>,
}

/// One container's answer.
enum Answer {
    Running(Result<Vec<String>, MoveError>),
    Free(Result<u64, MoveError>),
}

/// Asks `source` its running domains and every other VM container its free
/// memory, all at once, waiting at most `limit`.
pub fn survey(
    cluster: &Cluster,
    source: &str,
    probe: &Arc<dyn Probe>,
    limit: Duration,
) -> Result<Survey, SurveyError> {
    let is_container = cluster
        .hosts
        .get(source)
        .is_some_and(|h| cluster.is_container(h) && !cluster.vms.contains_key(source));
    if !is_container {
        return Err(SurveyError::NotContainer(source.to_string()));
    }
    let others = other_containers(cluster, source);
    let deadline = Instant::now() + limit;
    let (tx, rx) = mpsc::channel();
    let mut running = None;
    let mut found = Survey::default();
    let mut asked = 0;
    for (name, first) in
        std::iter::once((source.to_string(), true)).chain(others.iter().map(|o| (o.clone(), false)))
    {
        match ask(&tx, probe, name.clone(), first) {
            Ok(_) => asked += 1,
            Err(why) if first => running = Some(Err(why)),
            Err(why) => found.silent.push((name, why)),
        }
    }
    drop(tx);
    for _ in 0..asked {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((name, answer)) = rx.recv_timeout(left) else {
            break;
        };
        match answer {
            Answer::Running(r) => {
                running = Some(r.map_err(|e| kvmroll_core::error_chain(e.as_ref())));
            }
            Answer::Free(Ok(bytes)) => {
                found.free_memory.insert(name, bytes);
            }
            Answer::Free(Err(e)) => {
                found
                    .silent
                    .push((name, kvmroll_core::error_chain(e.as_ref())));
            }
        }
    }
    let waited = format!("no answer within {:.1} s", limit.as_secs_f64());
    let domains = running
        .unwrap_or_else(|| Err(waited.clone()))
        .map_err(|why| SurveyError::SourceSilent {
            container: source.to_string(),
            why,
        })?;
    for o in &others {
        let heard = found.free_memory.contains_key(o) || found.silent.iter().any(|(n, _)| n == o);
        if !heard {
            found.silent.push((o.clone(), waited.clone()));
        }
    }
    found.silent.sort();
    // The database's VMs of the source only: a domain it does not place
    // there is not kvmroll's to move.
    let placed: Vec<String> = cluster.vms_on(source).map(|v| v.name.clone()).collect();
    found.running = placed.into_iter().filter(|n| domains.contains(n)).collect();
    Ok(found)
}

/// The VM containers other than `source` (hosts that are no VM themselves).
fn other_containers(cluster: &Cluster, source: &str) -> Vec<String> {
    cluster
        .hosts
        .values()
        .filter(|h| h.name != source && !cluster.vms.contains_key(&h.name))
        .filter(|h| cluster.is_container(h))
        .map(|h| h.name.clone())
        .collect()
}

/// Asks `name`, on a thread of its own, its running domains (`first`: the
/// source) or its free memory; the answer comes on `tx`. `Err` says why
/// the thread could not start.
fn ask(
    tx: &mpsc::Sender<(String, Answer)>,
    probe: &Arc<dyn Probe>,
    name: String,
    first: bool,
) -> Result<(), String> {
    let (tx, probe) = (tx.clone(), Arc::clone(probe));
    let spawned = std::thread::Builder::new()
        .name(format!("ask {name}"))
        .spawn(move || {
            let answer = if first {
                Answer::Running(probe.running(&name))
            } else {
                Answer::Free(probe.free_memory(&name))
            };
            // The survey may have stopped waiting: nobody to tell.
            let _ = tx.send((name, answer));
        });
    spawned
        .map(drop)
        .map_err(|e| format!("cannot start a thread to ask it: {e}"))
}
