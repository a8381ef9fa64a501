//! A network between a rig's nodes, for what libvirt's own connection does
//! not carry (a native QEMU migration stream): a bridge in a network
//! namespace of the rig's own (a [`Sandbox`] with no daemon), and one veth
//! pair per node, its one end on the bridge and its other end `eth0` in the
//! node, with the node's address on [`SUBNET`].
//!
//! Every link is made inside the rig's namespaces, never in the machine's:
//! `ip link add ... peer name eth0 netns NODE` runs in the bridge's
//! network namespace. A veth pair is deleted with either of its namespaces, and a
//! bridge with its own, so when the test process ends in any way the
//! sandboxes' inits return (see [`super::sandbox`]) and nothing of the
//! network remains; ending one node takes only its own link away.

use super::sandbox::{Sandbox, Spaces};
use super::{run, Node, RigError};
use std::net::Ipv4Addr;
use std::process::Command;

/// The nodes' subnet: node `i` (in the order given) is `10.77.0.(i+2)`,
/// the bridge itself takes no address. A network namespace of its own sees
/// none of the machine's routes, so this cannot clash with them.
pub const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 77, 0, 0), 24);

/// The bridge's name in its namespace.
const BRIDGE: &str = "rigbr0";

/// The namespace holding the bridge; the links end with it.
#[derive(Debug)]
pub struct Network {
    sandbox: Sandbox,
}

impl Network {
    /// Makes the bridge and links `nodes` to it, giving each its address
    /// ([`Node::address`]).
    pub(crate) fn link(nodes: &mut [Node]) -> Result<Network, RigError> {
        let too_many = nodes.len() > 200;
        if too_many {
            return Err(RigError::Invalid {
                what: "node count",
                value: nodes.len().to_string(),
                why: "a linked rig's subnet holds at most 200 nodes",
            });
        }
        let mut sandbox = Sandbox::create("net", Spaces::Machine)?;
        sandbox.enter(None)?;
        sandbox.sh(&format!(
            "ip link add {BRIDGE} type bridge && ip link set {BRIDGE} up"
        ))?;
        for (i, node) in nodes.iter_mut().enumerate() {
            let init = node.init_pid().ok_or_else(|| RigError::Invalid {
                what: "node to link",
                value: node.name().to_string(),
                why: "it is not running",
            })?;
            let host_end = format!("n{i}");
            // In the bridge's network namespace only: `netns PID` names
            // the node by its pid on the machine, which the sandbox's own
            // PID namespace and /proc would not show.
            let bridge_ns = sandbox.init_pid().expect("entered").to_string();
            let init = init.to_string();
            run(Command::new("nsenter")
                .args(["-t", &bridge_ns, "-n", "--", "ip", "link", "add", &host_end])
                .args(["type", "veth", "peer", "name", "eth0", "netns", &init]))?;
            sandbox.sh(&format!("ip link set {host_end} master {BRIDGE} up"))?;
            let [a, b, c, _] = SUBNET.0.octets();
            let address = Ipv4Addr::new(a, b, c, u8::try_from(i + 2).unwrap_or(u8::MAX));
            node.sh(&format!(
                "ip addr add {address}/{} dev eth0 && ip link set eth0 up",
                SUBNET.1
            ))?;
            node.set_address(address);
        }
        Ok(Network { sandbox })
    }

    /// The bridge namespace's folder and namespaces, to check later that
    /// nothing of it remains.
    pub fn footprint(&self) -> super::Footprint {
        self.sandbox.footprint()
    }
}
