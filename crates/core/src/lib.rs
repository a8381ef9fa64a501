//! kvmroll's core: the cluster model, attribute resolution and validation,
//! the store behind which the database sits, and the domain XML renderer.
//!
//! Nothing here links libvirt: the hook depends on this crate and must never
//! call back into the daemon that is waiting for it.

pub mod attrs;
pub mod cluster;
pub mod conf;
pub mod copy;
pub mod cpuset;
pub mod disks;
pub mod drift;
pub mod events;
pub mod hostfiles;
pub mod location;
pub mod metadata;
pub mod model;
pub mod pg;
pub mod render;
pub mod rocksdump;
pub mod rocksimport;
pub mod spool;
pub mod sqlite;
pub mod store;
pub mod sys;
pub mod text;
pub mod xml;

pub use cluster::{Change, Cluster, ClusterError, Plan};
pub use conf::db_location;
pub use events::{Event, EventFilter};
pub use model::{Disk, Host, Mac, Nic, NicSpec, Scope, ValidationError, Vm};
pub use render::{render_domain, Draft, RenderError, Renderer};
pub use store::{
    init_store, open_store, open_within, Init, MadeImage, OpenMode, Store, StoreError, StoreStatus,
    VmBrief, VmDisk, DEFAULT_DB_PATH,
};
pub use sys::{error_chain, now_ms};
