//! PostgreSQL's schema: the same tables, columns and schema versions as
//! SQLite's (`crate::sqlite`), in PostgreSQL's dialect; the identity marker
//! and schema version kept in kvmroll's own table `kvmroll_meta` (SQLite
//! keeps them in `application_id` and `user_version`); migrations run in one
//! transaction under kvmroll's advisory lock; and the role containers
//! connect as.
//!
//! Types: SQLite's INTEGER holds any i64, so the columns Rust keeps as u32
//! (rack, rank, cpus, memory, vCPUs, disk size) are BIGINT here, not INTEGER,
//! which would refuse the upper half of u32. `vms.stale` is a BOOLEAN.

use super::{Fail, LOCK_CLASS, LOCK_WRITERS};
use crate::cluster::Cluster;
use postgres::GenericClient;

/// The schema, one step per version; step N brings version N-1 to N, as
/// SQLite's `MIGRATIONS` do.
const MIGRATIONS: &[&str] = &[
    // 1: hosts, appliances, attributes, VMs, disks, NICs.
    r#"
    CREATE TABLE appliances (
        id   BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL UNIQUE
    );
    CREATE TABLE hosts (
        id             BIGSERIAL PRIMARY KEY,
        name           TEXT NOT NULL UNIQUE,
        appliance_id   BIGINT NOT NULL REFERENCES appliances(id),
        rack           BIGINT NOT NULL DEFAULT 0,
        rank           BIGINT NOT NULL DEFAULT 0,
        cpus           BIGINT NOT NULL DEFAULT 1 CHECK (cpus > 0),
        os             TEXT NOT NULL DEFAULT 'linux',
        boot_action    TEXT NOT NULL DEFAULT 'os' CHECK (boot_action IN ('install', 'os')),
        install_action TEXT NOT NULL DEFAULT 'install',
        run_action     TEXT NOT NULL DEFAULT 'os'
    );
    CREATE TABLE attributes (
        id     BIGSERIAL PRIMARY KEY,
        scope  TEXT NOT NULL CHECK (scope IN ('global', 'os', 'appliance', 'rack', 'host')),
        target TEXT NOT NULL,
        name   TEXT NOT NULL,
        value  TEXT NOT NULL,
        UNIQUE (scope, target, name)
    );
    CREATE TABLE vms (
        id           BIGINT PRIMARY KEY,
        host_id      BIGINT NOT NULL UNIQUE REFERENCES hosts(id),
        container_id BIGINT REFERENCES hosts(id),
        memory_mib   BIGINT NOT NULL CHECK (memory_mib > 0),
        vcpus        BIGINT NOT NULL CHECK (vcpus > 0),
        uuid         TEXT NOT NULL UNIQUE,
        cdrom        TEXT,
        virt_type    TEXT NOT NULL DEFAULT 'kvm',
        stale        BOOLEAN NOT NULL DEFAULT false
    );
    CREATE TABLE vm_disks (
        id       BIGSERIAL PRIMARY KEY,
        vm_id    BIGINT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        type     TEXT NOT NULL CHECK (type IN ('file', 'raw', 'qcow2', 'block')),
        path     TEXT NOT NULL,
        dev      TEXT NOT NULL,
        bus      TEXT NOT NULL,
        size_gib BIGINT,
        UNIQUE (vm_id, dev)
    );
    CREATE TABLE vm_nics (
        id       BIGSERIAL PRIMARY KEY,
        vm_id    BIGINT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        position INTEGER NOT NULL,
        kind     TEXT NOT NULL CHECK (kind IN ('bridge', 'direct')),
        source   TEXT NOT NULL,
        mac      TEXT NOT NULL UNIQUE,
        vlan     INTEGER,
        model    TEXT NOT NULL DEFAULT 'virtio'
    );
    CREATE INDEX vms_container ON vms(container_id);
    "#,
    // 2: the events table of hook invocations and plugin runs.
    r#"
    CREATE TABLE events (
        id          BIGSERIAL PRIMARY KEY,
        time_ms     BIGINT NOT NULL,
        vm          TEXT NOT NULL,
        stage       TEXT NOT NULL,
        op          TEXT NOT NULL,
        subop       TEXT NOT NULL,
        plugin      TEXT,
        outcome     TEXT NOT NULL,
        status      INTEGER,
        duration_ms BIGINT NOT NULL,
        message     TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX events_vm ON events(vm, id);
    "#,
    // 3: the disk images kvmroll made (`vm remove --delete-disks` removes
    // those and no others), and the grows waiting for a VM's next start.
    r#"
    CREATE TABLE made_images (
        vm_id     BIGINT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        container TEXT NOT NULL,
        path      TEXT NOT NULL,
        time_ms   BIGINT NOT NULL,
        PRIMARY KEY (container, path)
    );
    CREATE INDEX made_images_vm ON made_images(vm_id);
    CREATE TABLE disk_grows (
        vm_id BIGINT NOT NULL REFERENCES vms(id) ON DELETE CASCADE,
        path  TEXT NOT NULL,
        PRIMARY KEY (vm_id, path)
    );
    "#,
];

/// The schema version this build writes: SQLite's, which the assertion
/// below keeps in step (a migration added to one engine alone does not
/// build).
pub const SCHEMA_VERSION: i64 = crate::sqlite::SCHEMA_VERSION;
const _: () = assert!(MIGRATIONS.len() as i64 == SCHEMA_VERSION);

/// What `kvmroll_meta` says a kvmroll database is.
const IDENTITY: &str = "kvmroll";

/// What a database holds, as read before anything is written to it.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// No table at all in the current schema: kvmroll may make its own.
    Empty,
    /// Tables, but not kvmroll's.
    Foreign,
    /// A kvmroll database of this schema version.
    Version(i64),
}

/// Reads what the database holds, writing nothing.
pub(super) fn identify(c: &mut impl GenericClient) -> Result<Found, Fail> {
    let row = c.query_one(
        "SELECT to_regclass('kvmroll_meta') IS NOT NULL,
                (SELECT count(*) FROM pg_catalog.pg_class k
                 JOIN pg_catalog.pg_namespace n ON n.oid = k.relnamespace
                 WHERE n.nspname = current_schema() AND k.relkind IN ('r', 'p', 'v', 'm', 'f'))",
        &[],
    )?;
    let (ours, tables): (bool, i64) = (row.try_get(0)?, row.try_get(1)?);
    if !ours {
        return Ok(if tables == 0 {
            Found::Empty
        } else {
            Found::Foreign
        });
    }
    let mut identity = None;
    let mut version = None;
    for row in c.query(
        "SELECT key, value FROM kvmroll_meta WHERE key IN ('identity', 'schema_version')",
        &[],
    )? {
        let (key, value): (String, String) = (row.try_get(0)?, row.try_get(1)?);
        match key.as_str() {
            "identity" => identity = Some(value),
            _ => version = value.parse::<i64>().ok(),
        }
    }
    Ok(match (identity.as_deref(), version) {
        (Some(IDENTITY), Some(v)) => Found::Version(v),
        _ => Found::Foreign,
    })
}

/// Brings the schema to [`SCHEMA_VERSION`] in one transaction, holding
/// kvmroll's writer lock so that two processes upgrading at once take turns
/// (the second finds the work done), and no update runs against a schema
/// half made. A fresh database is stamped and seeded as SQLite's is.
pub(super) fn migrate(client: &mut postgres::Client) -> Result<Found, Fail> {
    let mut tx = client
        .build_transaction()
        .isolation_level(postgres::IsolationLevel::ReadCommitted)
        .start()?;
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, $2)",
        &[&LOCK_CLASS, &LOCK_WRITERS],
    )?;
    // Read again under the lock: another process may have done it.
    let found = identify(&mut tx)?;
    let mut version = match found {
        Found::Foreign => return Ok(found),
        Found::Version(v) if v >= SCHEMA_VERSION => return Ok(found),
        Found::Version(v) => v,
        Found::Empty => {
            tx.batch_execute(
                "CREATE TABLE kvmroll_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
            )?;
            tx.execute(
                "INSERT INTO kvmroll_meta (key, value) VALUES ('identity', $1),
                                                              ('schema_version', '0')",
                &[&IDENTITY],
            )?;
            0
        }
    };
    let fresh = version == 0;
    while version < SCHEMA_VERSION {
        tx.batch_execute(MIGRATIONS[version as usize])?;
        version += 1;
        tx.execute(
            "UPDATE kvmroll_meta SET value = $1 WHERE key = 'schema_version'",
            &[&version.to_string()],
        )?;
    }
    if fresh {
        let seeded = Cluster::seeded();
        for a in &seeded.appliances {
            tx.execute("INSERT INTO appliances (name) VALUES ($1)", &[a])?;
        }
        for (scope, attrs) in &seeded.attrs {
            for (name, value) in attrs {
                super::put_attr(&mut tx, scope, name, value)?;
            }
        }
    }
    tx.commit()?;
    Ok(Found::Version(version))
}

/// Which host-scoped attribute rows belong to a VM: the only ones the
/// containers' role may write.
const VM_ATTRIBUTE: &str = "scope = 'host' AND target IN
    (SELECT h.name FROM hosts h JOIN vms v ON v.host_id = h.id)";

/// The statements that give `role` what a container needs, and no more:
///
/// - read the whole cluster (every table; `kvmroll_meta` to open it);
/// - record events (INSERT on `events` and its sequence); not prune them,
///   which the frontend does;
/// - what the hook records of a VM's disks: the images it made
///   (`made_images`) and the grows it did (`disk_grows`);
/// - what allocate and shutdown plugins write through `kvmroll`: a VM's
///   placement and resources (UPDATE of `vms`' own columns, never its id,
///   host or UUID; a host's `cpus`, which follows its VM's vCPUs; its disks
///   and NICs, rewritten whole, and a disk's growth), and the attributes of VMs (INSERT, UPDATE,
///   DELETE on `attributes`, narrowed by row-level security to host-scoped
///   rows of VMs, so a container cannot set a global, appliance or
///   container attribute that the frontend acts on, such as the reinstall
///   command).
///
/// It cannot add or remove hosts, VMs or appliances, nor change the schema.
/// Every statement runs again harmlessly, so `db init` may be repeated.
/// Each name comes quoted; `policies` name the role's INSERT, UPDATE and
/// DELETE policies.
fn grants(role: &str, database: &str, schema: &str, policies: &[String; 3]) -> Vec<String> {
    let r = role;
    let mut sql = vec![
        format!("GRANT CONNECT ON DATABASE {database} TO {r}"),
        format!("GRANT USAGE ON SCHEMA {schema} TO {r}"),
        format!(
            "GRANT SELECT ON kvmroll_meta, appliances, hosts, attributes, vms, vm_disks, \
             vm_nics, events, made_images, disk_grows TO {r}"
        ),
        // The hook records the images it made and the grows it did; a
        // plugin may ask a disk to grow (`kvmroll vm disk resize`).
        format!("GRANT INSERT, UPDATE (vm_id, time_ms) ON made_images TO {r}"),
        format!("GRANT INSERT, DELETE ON disk_grows TO {r}"),
        format!("GRANT UPDATE (size_gib) ON vm_disks TO {r}"),
        format!("GRANT INSERT ON events TO {r}"),
        format!(
            "GRANT UPDATE (container_id, memory_mib, vcpus, cdrom, virt_type, stale) \
             ON vms TO {r}"
        ),
        format!("GRANT UPDATE (cpus) ON hosts TO {r}"),
        format!("GRANT INSERT, DELETE ON vm_disks, vm_nics TO {r}"),
        format!("GRANT INSERT, UPDATE (value), DELETE ON attributes TO {r}"),
        format!(
            "GRANT USAGE ON SEQUENCE events_id_seq, vm_disks_id_seq, vm_nics_id_seq, \
             attributes_id_seq TO {r}"
        ),
        // Row-level security on attributes: everyone keeps what table
        // privileges give (a permissive policy for all), and the
        // containers' role is narrowed by restrictive ones. The owner of
        // the tables (the administrator who ran `db init`) is not subject
        // to it.
        "ALTER TABLE attributes ENABLE ROW LEVEL SECURITY".to_string(),
        "DROP POLICY IF EXISTS kvmroll_everyone ON attributes".to_string(),
        "CREATE POLICY kvmroll_everyone ON attributes USING (true) WITH CHECK (true)".to_string(),
    ];
    let clauses = [
        ("INSERT", format!("WITH CHECK ({VM_ATTRIBUTE})")),
        (
            "UPDATE",
            format!("USING ({VM_ATTRIBUTE}) WITH CHECK ({VM_ATTRIBUTE})"),
        ),
        ("DELETE", format!("USING ({VM_ATTRIBUTE})")),
    ];
    for ((command, clauses), policy) in clauses.iter().zip(policies) {
        sql.push(format!("DROP POLICY IF EXISTS {policy} ON attributes"));
        sql.push(format!(
            "CREATE POLICY {policy} ON attributes AS RESTRICTIVE FOR {command} TO {r} {clauses}"
        ));
    }
    sql
}

/// Creates `role` if it does not exist (with LOGIN), sets its password if
/// one is given, and grants it what containers need ([`grants`]), in one
/// transaction.
pub(super) fn grant_container_role(
    client: &mut postgres::Client,
    role: &str,
    password: Option<&str>,
) -> Result<(), Fail> {
    let mut tx = client.transaction()?;
    // Identifiers and literals quoted by the server (format's %I and %L):
    // DDL takes no bound parameters.
    let row = tx.query_one(
        "SELECT format('%I', $1::text), format('%I', current_database()),
                format('%I', current_schema()),
                EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = $1::text),
                format('%I', 'kvmroll_insert_' || $1::text),
                format('%I', 'kvmroll_update_' || $1::text),
                format('%I', 'kvmroll_delete_' || $1::text)",
        &[&role],
    )?;
    let quoted: String = row.try_get(0)?;
    let database: String = row.try_get(1)?;
    let schema: String = row.try_get(2)?;
    let exists: bool = row.try_get(3)?;
    let policies = [row.try_get(4)?, row.try_get(5)?, row.try_get(6)?];
    if !exists {
        tx.batch_execute(&format!("CREATE ROLE {quoted} LOGIN"))?;
    }
    if let Some(password) = password {
        let sql: String = tx
            .query_one(
                "SELECT format('ALTER ROLE %I LOGIN PASSWORD %L', $1::text, $2::text)",
                &[&role, &password],
            )?
            .try_get(0)?;
        tx.batch_execute(&sql)?;
    }
    for sql in grants(&quoted, &database, &schema, &policies) {
        tx.batch_execute(&sql)?;
    }
    tx.commit()?;
    Ok(())
}
