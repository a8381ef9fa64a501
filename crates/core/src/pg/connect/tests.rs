//! Unit tests of [`super`] (connect), kept beside it so the module reads
//! on its own.

use super::*;

fn target(host: PgHost, port: u16, db: &str, user: &str) -> Target {
    Target {
        host,
        port,
        user: user.into(),
        dbname: db.into(),
        password: None,
        sslmode: SslMode::Prefer,
        sslrootcert: None,
        timeout: None,
        application_name: "kvmroll".into(),
    }
}

#[test]
fn password_file_lines_match_as_libpq_reads_them() {
    let file = "\
# comment
other:5432:*:*:no
db.example:5432:kvmroll:kvm:first
*:*:*:kvm:fallback
localhost:5433:*:*:sock\\:et\\\\pw:x
short:line
";
    let tcp = target(PgHost::Tcp("db.example".into()), 5432, "kvmroll", "kvm");
    assert_eq!(passfile_lookup(file, &tcp).as_deref(), Some("first"));
    let other_db = target(PgHost::Tcp("db.example".into()), 5432, "x", "kvm");
    assert_eq!(
        passfile_lookup(file, &other_db).as_deref(),
        Some("fallback")
    );
    let sock = target(PgHost::Socket("/run/postgresql".into()), 5433, "k", "u");
    assert_eq!(
        passfile_lookup(file, &sock).as_deref(),
        Some("sock:et\\pw:x")
    );
    let none = target(PgHost::Tcp("h".into()), 1, "k", "u");
    assert_eq!(passfile_lookup(file, &none), None);
}

#[test]
fn passwords_come_from_the_url_then_pgpassword_then_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("pgpass");
    std::fs::write(&file, "*:*:*:*:from-file\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut loc = PgLocation {
        host: Some(PgHost::Tcp("h".into())),
        ..PgLocation::default()
    };
    let mut env = PgEnv {
        passfile: Some(file.clone()),
        os_user: Some("me".into()),
        ..PgEnv::default()
    };
    let password = |loc: &PgLocation, env: &PgEnv| Target::resolve(loc, env).map(|t| t.password);
    assert_eq!(password(&loc, &env).unwrap().as_deref(), Some("from-file"));
    env.password = Some("from-env".into());
    assert_eq!(password(&loc, &env).unwrap().as_deref(), Some("from-env"));
    loc.password = Some("from-url".into());
    assert_eq!(password(&loc, &env).unwrap().as_deref(), Some("from-url"));
    // Defaults: the login name, and a database of that name.
    let t = Target::resolve(&PgLocation::default(), &PgEnv::default()).unwrap();
    assert_eq!(t.host, PgHost::Socket(DEFAULT_SOCKET_DIR.into()));
    assert_eq!(
        (t.port, t.user.as_str(), t.dbname.as_str()),
        (5432, "root", "root")
    );
    assert_eq!(t.timeout, Some(DEFAULT_CONNECT_TIMEOUT));
    // A missing file is no error; one others can read is refused.
    env = PgEnv {
        passfile: Some(dir.path().join("none")),
        ..PgEnv::default()
    };
    loc.password = None;
    assert_eq!(password(&loc, &env).unwrap(), None);
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
    env.passfile = Some(file.clone());
    let err = password(&loc, &env).unwrap_err();
    assert!(matches!(err, StoreError::PassfileReadable { .. }));
    assert!(err.to_string().contains("group or others"), "{err}");
}
