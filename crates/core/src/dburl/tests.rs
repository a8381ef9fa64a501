//! Unit tests of [`super`] (dburl), kept beside it so the module reads
//! on its own.

use super::*;

fn parse(text: &str) -> Result<Location, LocationError> {
    Location::parse(text, Path::new("/work/here"))
}

fn pg(text: &str) -> PgLocation {
    match parse(text).unwrap() {
        Location::Postgres(pg) => pg,
        other => panic!("{text} parsed as {other:?}"),
    }
}

#[test]
fn paths_are_sqlite_and_relative_ones_are_made_absolute() {
    let sqlite = |p: &str| Location::Sqlite(PathBuf::from(p));
    assert_eq!(parse("/var/lib/k.db").unwrap(), sqlite("/var/lib/k.db"));
    assert_eq!(parse("k.db").unwrap(), sqlite("/work/here/k.db"));
    assert_eq!(parse("./d/k.db").unwrap(), sqlite("/work/here/./d/k.db"));
    assert_eq!(parse("sqlite:/a/k.db").unwrap(), sqlite("/a/k.db"));
    assert_eq!(parse("sqlite:k.db").unwrap(), sqlite("/work/here/k.db"));
    assert_eq!(parse("sqlite:///a/k.db").unwrap(), sqlite("/a/k.db"));
    // A colon after a slash is no scheme.
    assert_eq!(parse("d/a:b.db").unwrap(), sqlite("/work/here/d/a:b.db"));
    assert_eq!(parse("/a/k.db").unwrap().engine(), "sqlite");
}

#[test]
fn anything_else_is_refused_in_one_line() {
    for (text, says) in [
        ("", "empty"),
        ("postgresql:kvmroll", "must be followed by //"),
        ("postgres:/x", "must be followed by //"),
        ("mysql://h/db", "unknown scheme mysql:"),
        ("http://x", "unknown scheme http:"),
        ("sqlite:", "names no file"),
        ("sqlite://host/x.db", "absolute path"),
        ("postgresql://h:99999/db", "invalid port"),
        ("postgresql://h:/db", "invalid port"),
        ("postgresql://a,b/db", "more than one host"),
        ("postgresql://h/db?sslmode=allow", "sslmode \"allow\""),
        ("postgresql://h/db?sslmode=", "sslmode"),
        ("postgresql://h/db?bogus=1", "unknown parameter \"bogus\""),
        ("postgresql://h/db?host", "has no value"),
        ("postgresql://h/d%zzb", "percent-encoding in dbname"),
        ("postgresql://h/db?connect_timeout=x", "whole seconds"),
        ("postgresql://h/db?sslrootcert=system", "name a CA file"),
        ("postgresql://[::1/db", "misses its ]"),
    ] {
        let err = parse(text).expect_err(text).to_string();
        assert!(err.contains(says), "{text}: {err}");
        assert!(!err.contains('\n'), "{text}: {err}");
    }
}

#[test]
fn libpq_uris_parse() {
    let l = pg(
        "postgresql://kvmroll:s%40cr%3At@frontend.local:5433/kvm%20db\
                ?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=5",
    );
    assert_eq!(l.user.as_deref(), Some("kvmroll"));
    assert_eq!(l.password.as_deref(), Some("s@cr:t"));
    assert_eq!(l.host, Some(PgHost::Tcp("frontend.local".into())));
    assert_eq!(l.port, Some(5433));
    assert_eq!(l.dbname.as_deref(), Some("kvm db"));
    assert_eq!(l.sslmode, Some(SslMode::VerifyFull));
    assert_eq!(l.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
    assert_eq!(l.connect_timeout, Some(Duration::from_secs(5)));

    let s = pg("postgres:///kvmroll?host=/run/postgresql&user=root&port=5432");
    assert_eq!(s.host, Some(PgHost::Socket("/run/postgresql".into())));
    assert_eq!((s.user.as_deref(), s.port), (Some("root"), Some(5432)));
    assert_eq!(
        pg("postgresql://%2Frun%2Fpostgresql/k").host,
        Some(PgHost::Socket("/run/postgresql".into()))
    );
    assert_eq!(pg("postgresql://").host, None);
    let v6 = pg("postgresql://[::1]:6000/k");
    assert_eq!(
        (v6.host, v6.port),
        (Some(PgHost::Tcp("::1".into())), Some(6000))
    );
    // A password with a bare @, and one given as a parameter.
    assert_eq!(
        pg("postgresql://u:p@ss@h/k").password.as_deref(),
        Some("p@ss")
    );
    assert_eq!(
        pg("postgresql://h/k?password=x%26y").password.as_deref(),
        Some("x&y")
    );
    // libpq's timeout rules, and its JDBC spelling of require.
    assert_eq!(
        pg("postgresql://h?connect_timeout=1").connect_timeout,
        Some(Duration::from_secs(2))
    );
    assert_eq!(
        pg("postgresql://h?connect_timeout=-3").connect_timeout,
        Some(Duration::ZERO)
    );
    assert_eq!(
        pg("postgresql://h?ssl=true").sslmode,
        Some(SslMode::Require)
    );
    assert_eq!(pg("POSTGRESQL://h/k").host, Some(PgHost::Tcp("h".into())));
}

#[test]
fn display_never_shows_the_password_and_parses_back() {
    for text in [
        "postgresql://kvmroll:secret@frontend:5433/kvmroll?sslmode=require&connect_timeout=3",
        "postgresql:///kvmroll?host=/tmp/pg%20sock&password=secret",
        "postgresql://u%3Ax:secret@[::1]/d%2Fb?sslrootcert=/a%20b/ca.pem&passfile=/p",
        "postgresql://secret@h",
    ] {
        let loc = parse(text).unwrap();
        let shown = loc.to_string();
        let debug = format!("{loc:?}");
        let Location::Postgres(mut want) = loc else {
            unreachable!()
        };
        if text.ends_with("secret@h") {
            // The user named "secret" is no password.
            assert_eq!(shown, "postgresql://secret@h");
            continue;
        }
        assert!(
            !shown.contains("secret") && !debug.contains("secret"),
            "{shown} {debug}"
        );
        want.password = None;
        assert_eq!(pg(&shown), want, "{shown}");
    }
}

#[test]
fn refusals_never_show_the_password() {
    for text in [
        "postgresql://u:secret@h:x/db",
        "postgresql://u@h/db?password=secret&bogus=1",
        "postgresql:u:secret@h/db",
        "mysql://u:secret@h/db",
    ] {
        let err = parse(text).unwrap_err().to_string();
        assert!(!err.contains("secret"), "{err}");
        assert!(err.contains("***"), "{err}");
    }
}

#[test]
fn only_urls_given_as_paths_become_locations() {
    assert_eq!(
        Location::from_url_path(Path::new("/var/lib/k.db")).unwrap(),
        None
    );
    assert_eq!(Location::from_url_path(Path::new("k.db")).unwrap(), None);
    assert!(matches!(
        Location::from_url_path(Path::new("postgresql://h/k")).unwrap(),
        Some(Location::Postgres(_))
    ));
    assert!(Location::from_url_path(Path::new("postgresql:k")).is_err());
    assert_eq!(
        Location::from_url_path(Path::new("sqlite:k.db")).unwrap(),
        Some(Location::Sqlite(PathBuf::from("k.db")))
    );
}
