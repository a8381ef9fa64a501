#!/usr/bin/env bash
# A private PostgreSQL server for the store tests (never the machine's own
# cluster, never port 5432): initdb into a folder, start it on 127.0.0.1 and a
# socket folder of its own, and print the superuser URL the tests read from
# KVMROLL_TEST_PG. Needs root (the server runs as the postgres user) and the
# postgresql package (scripts/deps.sh installs it).
#
#   scripts/pg-test-server.sh start DIR [PORT]   prints KVMROLL_TEST_PG=URL
#                                   (PORT: the first free of 54330-54399)
#   scripts/pg-test-server.sh stop DIR           stops it (by its pid file)
#
# TCP asks a password (scram-sha-256), so the tests can check a wrong one;
# the socket folder DIR/sock trusts local users.
set -euo pipefail

die() {
    echo "pg-test-server.sh: $*" >&2
    exit 1
}

[ $# -ge 2 ] || die "usage: pg-test-server.sh start|stop DIR [PORT]"
cmd=$1 dir=$2 port=${3:-}
if [ "$cmd" = start ] && [ -z "$port" ]; then
    busy=$(ss -Hltn 2>/dev/null | awk '{print $4}' | sed 's/.*://')
    for p in $(seq 54330 54399); do
        grep -qx "$p" <<<"$busy" || { port=$p; break; }
    done
    [ -n "$port" ] || die "no free port in 54330-54399"
fi
[ "$port" != 5432 ] || die "port 5432 is the machine's own cluster's; pick another"
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)
[ -n "$bin" ] || die "no PostgreSQL server found (apt-get install postgresql)"
as_pg() { su postgres -s /bin/sh -c "$1"; }

case $cmd in
start)
    password=kvmroll-test
    if [ ! -e "$dir/data/PG_VERSION" ]; then
        mkdir -p "$dir/sock"
        printf '%s\n' "$password" >"$dir/pw"
        chown -R postgres:postgres "$dir"
        chmod 700 "$dir"
        as_pg "$bin/initdb -D $dir/data -U postgres --pwfile=$dir/pw \
            --auth-local=trust --auth-host=scram-sha-256 --no-sync" >"$dir/initdb.log" 2>&1 ||
            die "initdb failed (see $dir/initdb.log)"
    fi
    as_pg "$bin/pg_ctl -D $dir/data -l $dir/server.log -w \
        -o \"-p $port -k $dir/sock -c listen_addresses=127.0.0.1 -c max_connections=200\" start" \
        >/dev/null || die "the server did not start (see $dir/server.log)"
    echo "KVMROLL_TEST_PG=postgresql://postgres:$password@127.0.0.1:$port/postgres"
    ;;
stop)
    [ -e "$dir/data/postmaster.pid" ] || exit 0
    as_pg "$bin/pg_ctl -D $dir/data -m fast -w stop" >/dev/null
    ;;
*)
    die "unknown command $cmd (start or stop)"
    ;;
esac
