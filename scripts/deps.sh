#!/bin/sh
# Install the Debian packages that are missing, and say which: `deps.sh` for building and the
# demo, `deps.sh test` for the tests as well, `deps.sh cluster` for `make cluster-demo` (a
# throwaway PostgreSQL server), `deps.sh docker` for `make docker-test` (optional: docker.io,
# docker-compose, debootstrap, mandoc). Each pkg-config module (or command) maps to the package
# that provides it.
set -eu
missing=""
need_pc() { pkg-config --exists "$1" 2>/dev/null || missing="$missing $2"; }
need_cmd() { command -v "$1" >/dev/null 2>&1 || missing="$missing $2"; }
need_py() { /usr/bin/python3 -c "import $1" 2>/dev/null || missing="$missing $2"; }
# need_pg: PostgreSQL's server binaries (initdb, pg_ctl, postgres) for scripts/pg-throwaway.sh,
# which the tests and the cluster demo start (SPEC §6); Debian keeps them off PATH. The package is
# Debian's default version (postgresql-15 on bookworm); psql comes with it.
need_pg() {
    ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && command -v psql >/dev/null ||
        missing="$missing postgresql"
}

need_cmd pkg-config pkg-config
need_cmd cc gcc
need_pc libevent libevent-dev
need_pc libevent_pthreads libevent-dev
need_pc libevent_openssl libevent-dev
need_pc openssl libssl-dev
need_pc jansson libjansson-dev
need_pc sqlite3 libsqlite3-dev
need_pc libpq libpq-dev # the postgres state backend (SPEC §6)
need_cmd openssl openssl
need_cmd curl curl
need_cmd jq jq
if [ "${1:-}" = test ]; then
    need_pc libjwt libjwt-dev
    need_pc cmocka libcmocka-dev
    need_cmd /usr/bin/python3 python3
    need_py pytest python3-pytest
    need_py jwcrypto python3-jwcrypto
    need_cmd nginx nginx-light # the forward-auth tests put Debian's nginx in front of the gateway
    need_cmd mandoc mandoc     # the man pages are linted
    need_pg
fi
if [ "${1:-}" = cluster ]; then
    need_pg
fi
if [ "${1:-}" = docker ]; then
    need_cmd dockerd docker.io
    need_cmd docker-compose docker-compose
    need_cmd debootstrap debootstrap
    need_cmd mandoc mandoc
fi

[ -z "$missing" ] && exit 0
echo "deps: installing missing Debian packages:$missing"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO=sudo
$SUDO apt-get update -qq
# A package's own service (nginx) must not start: the tests run their own on loopback ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod +x /usr/sbin/policy-rc.d
    trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends $missing
