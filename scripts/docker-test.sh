#!/bin/bash
# make docker-test: build the image (docker/Dockerfile) and run the demo story in containers on
# the host's network, all on 127.0.0.1 with free ports: init (keys, configs), the merchant, the
# wallet and the gateway, the agent's story, then the gateway is stopped with SIGTERM and
# mandate-audit verifies its log from a container. Stops and removes everything it started.
# Needs a Docker daemon and docker-compose. When no image registry answers, the base image is
# made locally by docker/base-image.sh (debootstrap from the machine's apt mirror).
# Not part of `make test`.
set -euo pipefail
cd "$(dirname "$0")/.."
IMAGE=${IMAGE:-mandate-gateway:latest}
BUILD_IMAGE=${BUILD_IMAGE:-mandate-gateway:build}
export IMAGE BUILD_IMAGE

docker info >/dev/null 2>&1 || { echo "docker-test: no Docker daemon answers (docker info failed)" >&2; exit 2; }
command -v docker-compose >/dev/null || { echo "docker-test: docker-compose is not installed" >&2; exit 2; }

BASE=${BASE:-}
if [ -z "$BASE" ]; then
    if timeout 30 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
        BASE=debian:bookworm-slim
    else
        echo "docker-test: no image registry answers; using a local Debian 12 base"
        docker/base-image.sh local/debian:bookworm
        BASE=local/debian:bookworm
    fi
fi
echo "docker-test: building on $BASE"
for target in build runtime; do
    tag=$IMAGE; [ $target = build ] && tag=$BUILD_IMAGE
    docker build -q --network host --build-arg BASE="$BASE" --target $target \
        -f docker/Dockerfile -t "$tag" . >/dev/null
done
echo "docker-test: image $IMAGE: $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.1f MB", $1 / 1e6}')"
docker run --rm --entrypoint id "$IMAGE"
docker run --rm "$IMAGE" --version

free_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 12000))
        (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo $p; return; }
    done
}
MERCHANT_PORT=$(free_port) GATEWAY_PORT=$(free_port) ADMIN_PORT=$(free_port) WALLET_PORT=$(free_port)
export MERCHANT_PORT GATEWAY_PORT ADMIN_PORT WALLET_PORT
echo "docker-test: ports merchant $MERCHANT_PORT, gateway $GATEWAY_PORT, admin $ADMIN_PORT, wallet $WALLET_PORT"
PROJECT=mandate-test-$$
DC=(docker-compose -p "$PROJECT" -f docker/docker-compose.yml)
cleanup() { "${DC[@]}" down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

"${DC[@]}" run --rm init
"${DC[@]}" up -d merchant wallet gateway 2>&1 | grep -v '^Creating network' || true
gw=$("${DC[@]}" ps -q gateway)
for _ in $(seq 150); do
    h=$(docker inspect -f '{{.State.Health.Status}}' "$gw")
    [ "$h" = healthy ] && break
    [ "$(docker inspect -f '{{.State.Running}}' "$gw")" = true ] || break
    sleep 0.2
done
echo "docker-test: gateway container is $h (HEALTHCHECK GET /livez)"
[ "$h" = healthy ] || { "${DC[@]}" logs; exit 1; }
rc=0
"${DC[@]}" run --rm agent || rc=1
"${DC[@]}" stop -t 15 gateway wallet merchant >/dev/null 2>&1
echo "docker-test: exit statuses after SIGTERM: gateway $(docker inspect -f '{{.State.ExitCode}}' "$gw"), wallet $(docker inspect -f '{{.State.ExitCode}}' "$("${DC[@]}" ps -q wallet)"), merchant $(docker inspect -f '{{.State.ExitCode}}' "$("${DC[@]}" ps -q merchant)")"
[ "$(docker inspect -f '{{.State.ExitCode}}' "$gw")" = 0 ] || rc=1
"${DC[@]}" run --rm audit || rc=1
echo "docker-test: the gateway's log lines (from its container):"
"${DC[@]}" logs --no-color gateway | tail -12 || true
[ $rc = 0 ] && echo "docker-test: ok" || echo "docker-test: FAILED"
exit $rc
