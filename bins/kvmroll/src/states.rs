//! What each VM is doing, as its container's libvirt says: asked of every
//! container at once, each within one time limit.
//!
//! libvirt's connect can hang (a libvirtd that accepts and never answers, a
//! host gone from the network with its TCP connection half open), and it
//! offers no time limit of its own. So each container's question runs on a
//! thread of its own, and the caller stops waiting when the limit passes:
//! an unreachable container costs the limit once, beside the others, and
//! not once per VM. A thread still waiting then is left behind; it ends
//! with the process.

use kvmroll_cli::error_chain;
use kvmroll_virt::{Connector, DomainInfo, DomainState};
use serde::{Serialize, Serializer};
use std::collections::{BTreeSet, HashMap};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// A VM's state, as `vm list` shows it; its word is fixed, for scripts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmState {
    Running,
    Paused,
    ShutOff,
    /// Off, with a managed-save image its next start restores.
    Saved,
    /// Its container's libvirt has no domain of that name.
    NotDefined,
    /// Its container's libvirt did not answer in time, or failed.
    Unreachable,
    /// The database places it on no container.
    NotPlaced,
    /// libvirt was not asked (`--no-sync`, or inside a hook stage).
    Unknown,
    /// Another libvirt state, named as libvirt names it ("crashed", ...).
    Other(String),
}

impl VmState {
    /// The state of a VM whose container answered, `None` when it has no
    /// domain of that name.
    pub fn of(domain: Option<&DomainInfo>) -> VmState {
        let Some(d) = domain else {
            return VmState::NotDefined;
        };
        match &d.state {
            DomainState::Running => VmState::Running,
            DomainState::Paused => VmState::Paused,
            DomainState::ShutOff if d.has_managed_save => VmState::Saved,
            DomainState::ShutOff => VmState::ShutOff,
            // As virsh says it, not to be read as "shut off".
            DomainState::Other(s) if s == "shutdown" => VmState::Other("in shutdown".into()),
            DomainState::Other(s) => VmState::Other(s.clone()),
        }
    }

    /// The word shown in the table and the JSON.
    pub fn word(&self) -> &str {
        match self {
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::ShutOff => "shut off",
            VmState::Saved => "saved",
            VmState::NotDefined => "not defined",
            VmState::Unreachable => "unreachable",
            VmState::NotPlaced => "not placed",
            VmState::Unknown => "unknown",
            VmState::Other(s) => s,
        }
    }
}

impl Serialize for VmState {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.word())
    }
}

/// What one libvirt answered: its domains by name, or why it did not.
pub type Answer = Result<HashMap<String, DomainInfo>, String>;

/// Asks each libvirt at `uris` for its domains, all at once, and waits for
/// them until `limit` has passed since the call. A URI that has not
/// answered by then has the answer "no answer within ...".
pub fn ask(
    connector: &Arc<dyn Connector + Send>,
    uris: &BTreeSet<String>,
    limit: Duration,
) -> HashMap<String, Answer> {
    let deadline = Instant::now() + limit;
    let (tx, rx) = mpsc::channel();
    let mut answers = HashMap::new();
    for uri in uris {
        let (tx, connector, uri) = (tx.clone(), Arc::clone(connector), uri.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("state {uri}"))
            .spawn({
                let uri = uri.clone();
                move || {
                    let answer = domains_of(connector.as_ref(), &uri);
                    // The caller may have stopped waiting: nobody to tell.
                    let _ = tx.send((uri, answer));
                }
            });
        if let Err(e) = spawned {
            answers.insert(uri, Err(format!("cannot start a thread to ask it: {e}")));
        }
    }
    drop(tx);
    while answers.len() < uris.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((uri, answer)) => {
                answers.insert(uri, answer);
            }
            Err(_) => break,
        }
    }
    for uri in uris {
        answers
            .entry(uri.clone())
            .or_insert_with(|| Err(format!("no answer within {}", seconds(limit))));
    }
    answers
}

/// Every domain of the libvirt at `uri`, by name.
fn domains_of(connector: &dyn Connector, uri: &str) -> Answer {
    let hv = connector.connect(uri).map_err(|e| error_chain(&e))?;
    let domains = hv.list_domains().map_err(|e| error_chain(&e))?;
    Ok(domains.into_iter().map(|d| (d.name.clone(), d)).collect())
}

/// A duration as people write it: "3 s", "0.5 s".
pub fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvmroll_virt::fake::FakeLibvirt;

    fn states(fake: &FakeLibvirt, uris: &[&str], limit: Duration) -> HashMap<String, Answer> {
        let connector: Arc<dyn Connector + Send> = Arc::new(fake.clone());
        let uris = uris.iter().map(|u| u.to_string()).collect();
        ask(&connector, &uris, limit)
    }

    #[test]
    fn every_state_has_its_fixed_word() {
        let fake = FakeLibvirt::new();
        fake.add("run", DomainState::Running)
            .add("pause", DomainState::Paused)
            .add("off", DomainState::ShutOff)
            .add("saved", DomainState::ShutOff)
            .give_managed_save("saved")
            .add("crash", DomainState::Other("crashed".into()))
            .add("going", DomainState::Other("shutdown".into()));
        let answers = states(&fake, &["fake:///a"], Duration::from_secs(3));
        let domains = answers["fake:///a"].as_ref().unwrap();
        let word = |n: &str| VmState::of(domains.get(n)).word().to_string();
        let words: Vec<String> = ["run", "pause", "off", "saved", "crash", "going", "nosuch"]
            .iter()
            .map(|n| word(n))
            .collect();
        assert_eq!(
            words,
            [
                "running",
                "paused",
                "shut off",
                "saved",
                "crashed",
                "in shutdown",
                "not defined"
            ]
        );
        let json = serde_json::to_string(&VmState::NotDefined).unwrap();
        assert_eq!(json, "\"not defined\"");
    }

    #[test]
    fn a_hanging_container_costs_the_limit_once_and_the_others_answer() {
        let fake = FakeLibvirt::new();
        fake.add("vm", DomainState::Running)
            .connect_hangs("fake:///hangs-1", Duration::from_secs(5))
            .connect_hangs("fake:///hangs-2", Duration::from_secs(5))
            .unreachable("fake:///gone");
        let limit = Duration::from_millis(300);
        let t = Instant::now();
        let answers = states(
            &fake,
            &[
                "fake:///a",
                "fake:///hangs-1",
                "fake:///hangs-2",
                "fake:///gone",
            ],
            limit,
        );
        let took = t.elapsed();
        assert!(took >= limit && took < 2 * limit, "took {took:?}");
        assert!(answers["fake:///a"].as_ref().unwrap().contains_key("vm"));
        assert_eq!(
            answers["fake:///hangs-1"].as_ref().unwrap_err(),
            "no answer within 0.3 s"
        );
        assert!(answers["fake:///hangs-2"].is_err());
        let gone = answers["fake:///gone"].as_ref().unwrap_err();
        assert!(gone.starts_with("cannot connect to fake:///gone"), "{gone}");
    }

    #[test]
    fn containers_that_all_answer_cost_no_wait() {
        let fake = FakeLibvirt::new();
        let t = Instant::now();
        let answers = states(&fake, &["fake:///a", "fake:///b"], Duration::from_secs(5));
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        assert!(answers.values().all(Result::is_ok));
        assert_eq!(fake.said().iter().filter(|c| *c == "list").count(), 2);
    }
}
