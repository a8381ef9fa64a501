//! kvmroll's core: the cluster model, attribute resolution and validation,
//! the store behind which the database sits, and the domain XML renderer.
//!
//! Nothing here links libvirt: the hook depends on this crate and must never
//! call back into the daemon that is waiting for it.

pub mod attrs;
pub mod cluster;
pub mod cpuset;
pub mod disks;
pub mod drift;
pub mod events;
pub mod hostfiles;
pub mod model;
pub mod plugins;
pub mod render;
pub mod sqlite;
pub mod store;
pub mod sys;
pub mod xml;

pub use cluster::{Change, Cluster, ClusterError, Plan};
pub use events::{Event, EventFilter};
pub use model::{Disk, Host, Mac, Nic, NicSpec, Scope, ValidationError, Vm};
pub use render::{render_domain, RenderError, Renderer};
pub use store::{
    open_store, MadeImage, OpenMode, Store, StoreError, VmBrief, VmDisk, DEFAULT_DB_PATH,
};
pub use sys::{db_path, error_chain, now_ms};
