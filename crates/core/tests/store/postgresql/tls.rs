//! TLS: the test server is switched to `ssl=on` with a certificate for
//! `localhost` signed by a CA the test makes, written into its data folder.

use super::*;
use std::sync::OnceLock;

/// The CA file, once the server speaks TLS.
fn ca_file(db: &TestDb) -> PathBuf {
    static CA: OnceLock<PathBuf> = OnceLock::new();
    CA.get_or_init(|| enable_tls(db)).clone()
}

fn enable_tls(db: &TestDb) -> PathBuf {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let mut admin = client(db.server());
    let data: String = admin.query_one("SHOW data_directory", &[]).unwrap().get(0);
    let data = PathBuf::from(data);
    let owner = std::fs::metadata(&data)
        .expect("KVMROLL_TEST_PG must be a server on this machine")
        .uid();
    let folder = data.join("kvmroll-test-tls");
    if !folder.join("ca.crt").exists() {
        // Made aside and renamed, so that a concurrent test process
        // uses one whole set or the other.
        let tmp = data.join(format!("kvmroll-test-tls.{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        let (ca, ca_key) = make_ca("kvmroll test CA");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .unwrap()
            .signed_by(&key, &ca, &ca_key)
            .unwrap();
        std::fs::write(tmp.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(tmp.join("server.crt"), cert.pem()).unwrap();
        std::fs::write(tmp.join("server.key"), key.serialize_pem()).unwrap();
        for f in ["ca.crt", "server.crt", "server.key"] {
            let p = tmp.join(f);
            std::os::unix::fs::chown(&p, Some(owner), None).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        std::os::unix::fs::chown(&tmp, Some(owner), None).unwrap();
        if std::fs::rename(&tmp, &folder).is_err() {
            std::fs::remove_dir_all(&tmp).unwrap();
        }
    }
    for (name, value) in [
        ("ssl_cert_file", folder.join("server.crt")),
        ("ssl_key_file", folder.join("server.key")),
    ] {
        let sql: String = admin
            .query_one(
                "SELECT format('ALTER SYSTEM SET %I = %L', $1::text, $2::text)",
                &[&name, &value.display().to_string()],
            )
            .unwrap()
            .get(0);
        admin.batch_execute(&sql).unwrap();
    }
    // One statement each: several make one transaction, which ALTER
    // SYSTEM refuses.
    admin.batch_execute("ALTER SYSTEM SET ssl = on").unwrap();
    admin.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The reload is asynchronous: wait until a new connection gets TLS.
    let ca = folder.join("ca.crt");
    let mut loc = db.location.clone();
    loc.sslmode = Some(SslMode::Require);
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Err(e) = open(&loc, OpenMode::Create) {
        assert!(Instant::now() < deadline, "no TLS: {}", one_line(&e));
        std::thread::sleep(Duration::from_millis(100));
    }
    ca
}

fn make_ca(name: &str) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    (params.self_signed(&key).unwrap(), key)
}

fn at(db: &TestDb, host: &str, mode: SslMode, ca: Option<&Path>) -> PgLocation {
    let mut loc = db.location.clone();
    loc.host = Some(PgHost::Tcp(host.into()));
    loc.sslmode = Some(mode);
    loc.sslrootcert = ca.map(Path::to_path_buf);
    loc
}

/// Whether the store's own connection is encrypted, as the server sees it.
fn encrypted(db: &TestDb, app: &str) -> bool {
    db.admin()
        .query_one(
            "SELECT coalesce(bool_or(s.ssl), false) FROM pg_stat_ssl s
                 JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.application_name = $1",
            &[&app],
        )
        .unwrap()
        .get(0)
}

#[test]
fn sslmode_require_encrypts() {
    let Some(db) = TestDb::create("tls_require") else {
        return;
    };
    ca_file(&db);
    let mut loc = at(&db, "127.0.0.1", SslMode::Require, None);
    loc.application_name = Some("kvmroll-tls-require".into());
    let s = open(&loc, OpenMode::Create).unwrap_or_else(|e| panic!("{}", one_line(&e)));
    s.snapshot().unwrap();
    assert!(encrypted(&db, "kvmroll-tls-require"));
    // And disable does not.
    loc.sslmode = Some(SslMode::Disable);
    loc.application_name = Some("kvmroll-tls-disable".into());
    let plain = open(&loc, OpenMode::Create).unwrap();
    plain.snapshot().unwrap();
    assert!(!encrypted(&db, "kvmroll-tls-disable"));
}

#[test]
fn verify_full_checks_the_ca_and_the_name() {
    let Some(db) = TestDb::create("tls_verify") else {
        return;
    };
    let ca = ca_file(&db);
    // The certificate names localhost.
    let loc = at(&db, "localhost", SslMode::VerifyFull, Some(&ca));
    open(&loc, OpenMode::Create).unwrap_or_else(|e| panic!("{}", one_line(&e)));
    // 127.0.0.1 is not the name it holds: verify-full refuses,
    // verify-ca (chain only) accepts.
    let by_ip = at(&db, "127.0.0.1", SslMode::VerifyFull, Some(&ca));
    let err = open(&by_ip, OpenMode::Create).unwrap_err();
    let line = one_line(&err);
    assert!(line.contains("setting up TLS"), "{line}");
    open(
        &at(&db, "127.0.0.1", SslMode::VerifyCa, Some(&ca)),
        OpenMode::ReadWrite,
    )
    .unwrap_or_else(|e| panic!("{}", one_line(&e)));
    // Another CA: refused, by verify-ca and by require with a CA file.
    let dir = tempfile::tempdir().unwrap();
    let other = dir.path().join("other.crt");
    std::fs::write(&other, make_ca("another CA").0.pem()).unwrap();
    for mode in [SslMode::VerifyFull, SslMode::VerifyCa, SslMode::Require] {
        let err = open(
            &at(&db, "localhost", mode, Some(&other)),
            OpenMode::ReadWrite,
        )
        .unwrap_err();
        let line = one_line(&err);
        assert!(line.contains("setting up TLS"), "{mode:?}: {line}");
    }
    // verify-full with no CA at all says what it needs.
    let err = open(
        &at(&db, "localhost", SslMode::VerifyFull, None),
        OpenMode::ReadWrite,
    )
    .unwrap_err();
    assert!(one_line(&err).contains("sslrootcert"), "{}", one_line(&err));
}
