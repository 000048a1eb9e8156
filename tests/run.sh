#!/bin/sh
# Run every test: the cmocka unit binaries, then the integration tests (pytest, which start the
# real programs on loopback). Ends with one summary line: "tests: N passed, M failed".
set -u
BUILD=${BUILD:-build}
export BUILD
cd "$(dirname "$0")/.." || exit 2
passed=0
failed=0

# The unit tests of the postgres state backend (SPEC §6) get one throwaway server and a fresh
# database on it, in MG_TEST_PG_DSN; without it they skip that half. The server is stopped after
# the unit tests, and on any exit before.
PGDIR=$(mktemp -d /tmp/mg-unit-pg.XXXXXX) || exit 2
chmod 711 "$PGDIR" # the server runs as postgres, in a directory below this one
stop_pg() {
    if [ -f "$PGDIR/pg/data/postmaster.pid" ]; then
        scripts/pg-throwaway.sh stop "$PGDIR/pg" ||
            echo "unit: PostgreSQL in $PGDIR/pg did not stop"
    fi
    rm -rf "$PGDIR"
}
trap stop_pg EXIT
trap 'exit 130' INT TERM
if dsn=$(scripts/pg-throwaway.sh start "$PGDIR/pg") &&
    psql -qX "$dsn" -c 'CREATE DATABASE mg_unit'; then
    MG_TEST_PG_DSN=${dsn%/postgres}/mg_unit
    export MG_TEST_PG_DSN
else
    echo "unit: no throwaway PostgreSQL (scripts/deps.sh test installs it):" \
        "the postgres backend is not tested"
    failed=$((failed + 1))
fi

for t in "$BUILD"/tests/test_*; do
    [ -x "$t" ] || continue
    out=$("$t" 2>&1)
    rc=$?
    echo "$out" | grep -E '^\[  (PASSED|FAILED)  \]|^\[  ERROR   \]|^\[   LINE   \]|^ERROR' | sed "s|^|$(basename "$t"): |"
    p=$(echo "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    f=$(echo "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | tail -1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0}))
    if [ $rc -ne 0 ] && [ -z "$f" ]; then failed=$((failed + 1)); echo "$(basename "$t"): crashed (exit $rc)"; fi
done
echo "unit: $passed passed, $failed failed"
unset MG_TEST_PG_DSN
stop_pg
trap - EXIT

if [ -d tests/integration ]; then
    out=$(/usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration 2>&1)
    rc=$?
    echo "$out" | tail -40
    p=$(echo "$out" | tail -1 | sed -n 's/.* \([0-9]*\) passed.*/\1/p; s/^\([0-9]*\) passed.*/\1/p' | head -1)
    f=$(echo "$out" | tail -1 | sed -n 's/.* \([0-9]*\) failed.*/\1/p; s/^\([0-9]*\) failed.*/\1/p' | head -1)
    e=$(echo "$out" | tail -1 | sed -n 's/.* \([0-9]*\) error.*/\1/p' | head -1)
    passed=$((passed + ${p:-0}))
    failed=$((failed + ${f:-0} + ${e:-0}))
    if [ $rc -ne 0 ] && [ -z "$f$e" ]; then failed=$((failed + 1)); fi
fi
echo "tests: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
