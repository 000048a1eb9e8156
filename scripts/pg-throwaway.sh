#!/usr/bin/env bash
# A throwaway PostgreSQL for the tests and the cluster demo (SPEC §6), never a shared instance.
#   pg-throwaway.sh start DIR   initdb into DIR/data (first time), start on 127.0.0.1 on a free port
#                               (again: the port it had), wait until it accepts connections, print
#                               the DSN postgresql://postgres@127.0.0.1:PORT/postgres on stdout
#   pg-throwaway.sh stop DIR [fast|immediate]   stop it (default fast) and wait
#   pg-throwaway.sh dsn DIR     print the DSN again
# DIR must be reachable by the postgres user (initdb refuses root: as root, the server runs as
# postgres). It listens on 127.0.0.1 only, its Unix socket is DIR itself, trust authentication,
# fsync off: it holds nothing worth keeping. Its log is DIR/postgres.log. Debian's server binaries
# are found under /usr/lib/postgresql/<newest>/bin unless PG_BIN says where.
set -euo pipefail

die() { echo "pg-throwaway: $*" >&2; exit 1; }
usage() { die "usage: pg-throwaway.sh start|stop|dsn DIR [fast|immediate]"; }

[ $# -ge 2 ] || usage
CMD=$1
DIR=$2
if [ -z "${PG_BIN:-}" ]; then
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
fi
[ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] ||
    die "no PostgreSQL server binaries (scripts/deps.sh cluster installs them, or set PG_BIN)"

# as_pg CMD...: run as the postgres user when we are root, as ourselves otherwise.
as_pg() {
    if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
dsn() {
    [ -f "$DIR/port" ] || die "no server was started in $DIR"
    echo "postgresql://postgres@127.0.0.1:$(cat "$DIR/port")/postgres"
}
port_taken() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000)) # below the ephemeral range: no client socket takes it
        port_taken "$p" || { echo "$p"; return; }
    done
}

init() {
    mkdir -p "$DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$DIR"
    as_pg test -w "$DIR" || die "$DIR is not writable by the postgres user (its parents need o+x)"
    as_pg "$PG_BIN/initdb" -D "$DIR/data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 \
        --no-sync --no-instructions >"$DIR/initdb.log" 2>&1 ||
        { cat "$DIR/initdb.log" >&2; die "initdb failed"; }
    # %e puts the SQLSTATE in every line, so that a test can tell the errors the gateway raises
    # on purpose from others.
    as_pg tee -a "$DIR/data/postgresql.conf" >/dev/null <<CONF
listen_addresses = '127.0.0.1'
unix_socket_directories = '$DIR'
fsync = off
full_page_writes = off
log_line_prefix = '%m [%p] %e '
CONF
}

start() {
    [ -d "$DIR/data" ] || init
    local port="" kept=0 seen tries
    if [ -f "$DIR/port" ]; then port=$(cat "$DIR/port") kept=1; fi
    for tries in 1 2 3 4 5; do
        [ -n "$port" ] || port=$(free_port)
        seen=0
        [ -f "$DIR/postgres.log" ] && seen=$(wc -l <"$DIR/postgres.log")
        if as_pg "$PG_BIN/pg_ctl" start -D "$DIR/data" -l "$DIR/postgres.log" -w -t 30 \
            -o "-p $port" >/dev/null; then
            echo "$port" >"$DIR/port"
            dsn
            return
        fi
        # A port picked free can be taken before the server binds it: pick another, unless the
        # server had one already (a restart keeps its port: its clients know no other).
        [ "$kept" -eq 0 ] && tail -n +$((seen + 1)) "$DIR/postgres.log" |
            grep -q 'could not bind\|could not create any TCP/IP' || break
        port=""
    done
    tail -20 "$DIR/postgres.log" >&2 || true
    die "PostgreSQL did not start in $DIR"
}

stop() {
    [ -f "$DIR/data/postmaster.pid" ] || return 0
    as_pg "$PG_BIN/pg_ctl" stop -D "$DIR/data" -m "${1:-fast}" -w -t 30 >/dev/null
}

case $CMD in
start) start ;;
stop) stop "${3:-fast}" ;;
dsn) dsn ;;
*) usage ;;
esac
