//! kvmroll's core: the cluster model, attribute resolution and validation,
//! the store behind which the database sits, and the domain XML renderer.
//!
//! Nothing here links libvirt: the hook depends on this crate and must never
//! call back into the daemon that is waiting for it.
//!
//! # Layers
//!
//! A module uses only modules of the layers below its own, never one above
//! nor, through others, one that uses it (`tests/layering.rs` holds this).
//! From the top:
//!
//! - the users of the store: [`conf`], [`copy`], [`spool`], [`hostfiles`],
//!   [`rocksimport`] over [`rocksdump`];
//! - [`location`]: opens the engine a location names, the one module that
//!   knows every engine (with [`open_store`], [`open_within`],
//!   [`init_store`]);
//! - the engines, [`sqlite`] and [`pg`] (which takes its schema version
//!   from SQLite's);
//! - [`store`]: the [`Store`] trait, its errors and its types, rows
//!   included; it names no engine;
//! - [`plan`]: a write checked by rendering every VM it touches;
//! - [`render`]: a VM's domain XML;
//! - [`cluster`]: the snapshot, resolution and checked changes, with the
//!   errors of both (a change that would break a VM carries the renderer's
//!   [`RenderError`]);
//! - [`attrs`] over [`disks`] (whose disk roots are an attribute; it
//!   runs `qemu-img` through the kvmroll-plugins crate's runner), over
//!   [`model`];
//! - [`drift`] and [`metadata`] (what a definition decides), [`dburl`]
//!   (where the database is), [`events`], [`cpuset`], [`xml`], [`sys`],
//!   [`text`].

pub mod attrs;
pub mod cluster;
pub mod conf;
pub mod copy;
pub mod cpuset;
pub mod dburl;
pub mod disks;
pub mod drift;
pub mod events;
pub mod hostfiles;
pub mod location;
pub mod metadata;
pub mod model;
pub mod pg;
pub mod plan;
pub mod render;
pub mod rocksdump;
pub mod rocksimport;
pub mod spool;
pub mod sqlite;
pub mod store;
pub mod sys;
pub mod text;
pub mod xml;

pub use cluster::{Change, Cluster, ClusterError};
pub use conf::db_location;
pub use events::{Event, EventFilter};
pub use location::{init_store, open_store, open_within};
pub use model::{Disk, Host, Mac, Nic, NicSpec, Scope, ValidationError, Vm};
pub use plan::Plan;
pub use render::{render_domain, Draft, RenderError, Renderer};
pub use store::{
    Init, MadeImage, OpenMode, Store, StoreError, StoreStatus, VmBrief, VmDisk, DEFAULT_DB_PATH,
};
pub use sys::{error_chain, now_ms};
