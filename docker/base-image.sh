#!/bin/sh
# Make a local Debian 12 (bookworm) base image for machines that reach no image registry:
# debootstrap --variant=minbase into a temporary directory from the Debian mirror this machine's
# apt is configured with, then `docker import` it as local/debian:bookworm (or $1).
#   docker/base-image.sh [IMAGE]        needs root, debootstrap and a running Docker daemon
# The mirror is read from /etc/apt/sources.list.d/*.sources (deb822 "URIs:") or
# /etc/apt/sources.list ("deb URI bookworm ..."), never hard-coded; MIRROR=... overrides it.
set -eu
IMAGE=${1:-local/debian:bookworm}
SUITE=bookworm

if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "base-image: $IMAGE exists"
    exit 0
fi

mirror() {
    # The first URI that serves the suite itself (not -security or -updates).
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        awk -v suite="$SUITE" '
            /^[ \t]*$/ { if (uri != "" && ok) { print uri; exit } uri = ""; ok = 0; next }
            /^URIs:/   { uri = $2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) ok = 1 }
            END        { if (uri != "" && ok) print uri }' "$f" | head -1
    done
    if [ -f /etc/apt/sources.list ]; then
        awk -v suite="$SUITE" '$1 == "deb" {
            i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
            if ($(i + 1) == suite) { print $i; exit } }' /etc/apt/sources.list
    fi
}

MIRROR=${MIRROR:-$(mirror | head -1)}
if [ -z "$MIRROR" ]; then
    echo "base-image: no Debian mirror for $SUITE found in the apt configuration; set MIRROR=" >&2
    exit 1
fi
command -v debootstrap >/dev/null || { echo "base-image: debootstrap is not installed" >&2; exit 1; }

DIR=$(mktemp -d /tmp/mandate-base.XXXXXX)
trap 'rm -rf "$DIR"' EXIT
echo "base-image: debootstrap --variant=minbase $SUITE from $MIRROR"
debootstrap --variant=minbase "$SUITE" "$DIR" "$MIRROR" >"$DIR.log" 2>&1 || {
    tail -20 "$DIR.log" >&2
    rm -f "$DIR.log"
    exit 1
}
rm -f "$DIR.log"
# apt inside the image uses the same mirror (and the security suite when apt here has one).
printf 'deb %s %s main\n' "$MIRROR" "$SUITE" >"$DIR/etc/apt/sources.list"
rm -rf "$DIR"/var/cache/apt/archives/*.deb "$DIR"/var/lib/apt/lists/*
tar -C "$DIR" -c . | docker import - "$IMAGE" >/dev/null
echo "base-image: $IMAGE ($(docker image inspect -f '{{.Size}}' "$IMAGE") bytes)"
