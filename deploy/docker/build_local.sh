#!/usr/bin/env bash
# Builds the CPU image without Docker Hub or PyPI access from inside Docker, runs it, and checks it.
#
#   sudo bash deploy/docker/build_local.sh          (or: make image)
#
# 1. installs Debian's docker.io and mmdebstrap if missing, and starts dockerd if none answers
#    (without iptables or a bridge; containers use the host network) - stopped again at the end;
# 2. makes the base image onnx-serve-base:bookworm (Debian bookworm + python3 3.11, the same Python
#    as python:3.11-slim-bookworm) with mmdebstrap and `docker import`, once;
# 3. downloads the locked wheels on the host into deploy/docker/wheels/ (cp311, manylinux);
# 4. builds the image with BASE_IMAGE=onnx-serve-base:bookworm, PIP_NO_INDEX=1, --network host
#    (the Dockerfile's apt-get still reaches deb.debian.org through the host);
# 5. runs it read-only on free loopback ports, waits for readiness and Docker's "healthy",
#    infers with the digits model, then `docker stop` must end it with exit code 0;
# 6. prints the build time and the image size.
# Idempotent: steps 1-3 are skipped when already done. Needs root (dockerd, apt-get).
# Environment: IMAGE (onnx-serve:0.1.0), NO_CACHE=1 (cold build), PYTHON (host python3),
# DOCKER (a client with BuildKit built in; default /usr/bin/docker from docker.io),
# STORAGE_DRIVER (overlay2; vfs where overlayfs is not available).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
IMAGE=${IMAGE:-onnx-serve:0.1.0}
BASE=${BASE:-onnx-serve-base:bookworm}
PYTHON=${PYTHON:-python3}
STORAGE_DRIVER=${STORAGE_DRIVER:-overlay2}
work=${BUILD_WORK_DIR:-/var/tmp/onnx-serve-build}
mkdir -p "$work"
container=onnx-serve-check-$$
dockerd_pid=""

log() { printf '\n== %s\n' "$*"; }
fail() { printf 'build_local.sh: FAILED: %s\n' "$*" >&2; exit 1; }

cleanup() {
    "$DOCKER" rm -f -v "$container" >/dev/null 2>&1 || true  # -v: the /models anonymous volume
    if [[ -n $dockerd_pid ]]; then
        echo "stopping the dockerd this script started (pid $dockerd_pid)"
        kill -TERM "$dockerd_pid" 2>/dev/null || true
        # dockerd stops containerd and its shims itself; wait for it, bounded.
        for _ in $(seq 100); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    fi
}
trap cleanup EXIT

# -- 1. tools and the Docker engine -------------------------------------------------------------
need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
# docker.io's client (20.10) has BuildKit built in; newer clients need the buildx plugin.
DOCKER=${DOCKER:-/usr/bin/docker}
export DOCKER_BUILDKIT=1

if ! "$DOCKER" info >/dev/null 2>&1; then
    log "starting dockerd (storage driver $STORAGE_DRIVER; log $work/dockerd.log)"
    dockerd --storage-driver="$STORAGE_DRIVER" --iptables=false --ip-masq=false --bridge=none \
        --exec-opt native.cgroupdriver=cgroupfs --pidfile "$work/dockerd.pid" \
        >"$work/dockerd.log" 2>&1 &
    dockerd_pid=$!
    for _ in $(seq 150); do
        "$DOCKER" info >/dev/null 2>&1 && break
        kill -0 "$dockerd_pid" 2>/dev/null || { tail -20 "$work/dockerd.log"; dockerd_pid="";
            fail "dockerd exited (try STORAGE_DRIVER=vfs)"; }
        sleep 0.2
    done
    "$DOCKER" info >/dev/null 2>&1 || fail "dockerd did not answer within 30 s"
fi

# -- 2. the base image ---------------------------------------------------------------------------
if ! "$DOCKER" image inspect "$BASE" >/dev/null 2>&1; then
    log "making $BASE with mmdebstrap"
    start=$SECONDS
    mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
        --aptopt='Acquire::Languages "none"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        bookworm "$work/base.tar" http://deb.debian.org/debian
    "$DOCKER" import --change 'CMD ["python3"]' "$work/base.tar" "$BASE" >/dev/null
    rm -f "$work/base.tar"
    echo "base image made in $((SECONDS - start)) s"
fi

# -- 3. wheels, for the base's Python (3.11) whatever the host's is -------------------------------
log "downloading the locked wheels into deploy/docker/wheels/"
platforms=()
for tag in manylinux_2_36 manylinux_2_34 manylinux_2_28 manylinux_2_27 manylinux_2_17 \
           manylinux2014 manylinux_2_5 manylinux1 linux; do
    platforms+=(--platform "${tag}_x86_64")
done
"$PYTHON" -m pip download -qq --disable-pip-version-check --no-deps --only-binary=:all: \
    --python-version 3.11 --implementation cp "${platforms[@]}" -d "$here/wheels" \
    -r "$here/requirements-cpu.txt" -r "$here/requirements-build.txt"

# -- 4. the image --------------------------------------------------------------------------------
log "building $IMAGE"
start=$(date +%s%N)
"$DOCKER" build ${NO_CACHE:+--no-cache} --network host --build-arg BASE_IMAGE="$BASE" \
    --build-arg PIP_NO_INDEX=1 -t "$IMAGE" "$root"
build_ms=$((($(date +%s%N) - start) / 1000000))

# -- 5. run, check, infer, stop ------------------------------------------------------------------
free_port() { "$PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http_port=$(free_port)
grpc_port=$(free_port)
log "running $IMAGE read-only on 127.0.0.1:$http_port (HTTP) and :$grpc_port (gRPC)"
"$DOCKER" run -d --name "$container" --network host --read-only --tmpfs /tmp \
    -e ONNX_SERVE_HOST=127.0.0.1 -e ONNX_SERVE_HTTP__PORT="$http_port" \
    -e ONNX_SERVE_GRPC__PORT="$grpc_port" "$IMAGE" >/dev/null
url=http://127.0.0.1:$http_port

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...: poll with a deadline
    local deadline=$((SECONDS + $1)) what=$2; shift 2
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS > deadline)) || [[ $("$DOCKER" inspect -f '{{.State.Running}}' "$container") != true ]]; then
            "$DOCKER" logs "$container" 2>&1 | tail -20
            fail "$what"
        fi
        sleep 0.2
    done
}
is_healthy() { [[ $("$DOCKER" inspect -f '{{.State.Health.Status}}' "$container") == healthy ]]; }
wait_until 120 "not ready within 120 s" curl -sf "$url/v2/health/ready"
echo "ready"
[[ $("$DOCKER" exec "$container" id -u) == 10001 ]] || fail "the server does not run as uid 10001"
pid1=$("$DOCKER" inspect -f '{{.State.Pid}}' "$container")  # host PID of the container's PID 1
[[ $(cat "/proc/$pid1/comm") == tini ]] || fail "tini is not PID 1"
server_pid=$(pgrep -P "$pid1")
grep -q libjemalloc "/proc/$server_pid/maps" || fail "jemalloc is not loaded in the server"
answer=$(curl -sf "$url/v2/models/digits/infer" -H 'Content-Type: application/json' -d '
{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
  "data": [0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,
           0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]}],
 "outputs": [{"name": "label"}]}') || fail "inference request failed"
echo "inference: $answer"
[[ $answer == *'"data":[0]'* ]] || fail "digits did not answer 0"
# Whole answer first: `curl | grep -q` under pipefail fails when grep stops reading early.
metrics=$(curl -sf "$url/metrics") || fail "GET /metrics failed"
grep -q '^onnxserve_requests_total' <<<"$metrics" || fail "no onnxserve_requests_total in /metrics"
wait_until 60 "Docker's healthcheck did not report healthy within 60 s" is_healthy
echo "healthcheck: healthy"
stop_start=$SECONDS
"$DOCKER" stop --time 30 "$container" >/dev/null
exit_code=$("$DOCKER" inspect -f '{{.State.ExitCode}}' "$container")
echo "docker stop: exit code $exit_code after $((SECONDS - stop_start)) s"
[[ $exit_code == 0 ]] || { "$DOCKER" logs "$container" 2>&1 | tail -20; fail "exit code $exit_code"; }

# -- 6. figures ----------------------------------------------------------------------------------
size=$("$DOCKER" image inspect -f '{{.Size}}' "$IMAGE")
base_size=$("$DOCKER" image inspect -f '{{.Size}}' "$BASE")
printf '\nOK %s: built in %d.%03d s%s; image %d MB (base %d MB)\n' "$IMAGE" \
    $((build_ms / 1000)) $((build_ms % 1000)) \
    "${NO_CACHE:+ (no cache)}" $((size / 1000000)) $((base_size / 1000000))
