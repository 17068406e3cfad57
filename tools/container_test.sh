#!/usr/bin/env bash
# Containers for real, with podman (no Docker engine, no image registry needed):
#   1. a Debian base image made locally (mmdebstrap, cached in ~/.cache/ditserve/containers) and a jlink-ed Java
#      runtime (cached in target/container/jre); the image is built from the Dockerfile with BUILD=prebuilt (this
#      checkout's server/target) and the nginx balancer image from deploy/nginx.Dockerfile (apt inside the build);
#   2. one container with the image's defaults: its HEALTHCHECK reports healthy (polled, with a deadline), a
#      generation through the published port gives a PNG, the metrics port answers, `podman stop -t 60` during a
#      stream drains it (the stream completes) and the container exits with 0;
#   3. deploy/compose-nginx.yml with podman-compose: two replicas behind nginx; calls reach both, both metrics
#      ports answer, SIGKILL of one replica's container under streams (its clients get an error, the resumable
#      stream completes on the other), the replica started again gets calls, `podman stop` of it drains it
#      (tools/container/ContainerCheck.java).
# Installs the group `containers` of tools/packages.txt when missing (tools/install-packages.sh; as root or with
# sudo; failing to install fails the test). Skips, saying why, only where podman cannot run containers. Everything
# started here is removed on exit; images stay (cache).
# Environment: DIT_RUNTIME_BASE=IMAGE uses that base image (e.g. debian:bookworm-slim from a registry) instead of
# the local one; KEEP=1 keeps the logs in the scratch folder.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
export JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
say() { echo "container_test: $*"; }
skip() { say "SKIPPED: podman cannot run containers here: $*"; exit 0; }
phase() { say "[$((SECONDS - START)) s] $*"; }
# podman's complaints that there is no systemd to run health check timers (the checks are run on demand here)
quiet() { grep --line-buffered -v -e "unable to get systemd connection" -e "failed to connect to syslog" || true; }

# --- tools ------------------------------------------------------------------------------------------------------
[ "$(uname -s)" = Linux ] || skip "not Linux ($(uname -s))"
# every package of the group `containers` of tools/packages.txt, the CNI DNS plugin included (without it compose
# services cannot reach each other by name); a package that cannot be installed fails the test, it never skips it
bash tools/install-packages.sh containers || { say "the container packages could not be installed"; exit 1; }
# runc with cgroupfs (crun refuses hybrid cgroups), no raised ulimits: tools/container/containers.conf
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/tools/container/containers.conf}"
podman info > /dev/null 2>&1 || skip "\`podman info\` fails: $(podman info 2>&1 | tail -1)"
unset DIT_AUTH_TOKENS DIT_METRICS_TOKEN   # the compose file passes them on to the replicas when set

WORK="$(mktemp -d)"
TAG="ci-$(printf %s "$ROOT" | md5sum | cut -c1-8)"   # per checkout, so that two checkouts' runs do not mix
IMAGE="localhost/ditserve:$TAG"
LB_IMAGE="localhost/ditserve-nginx:$TAG"
RUN="ditct$$"
SINGLE="$RUN-single"
cleanup() {
  local rc=$?
  if [ "$rc" -ne 0 ]; then
    for c in $(podman ps -a --format '{{.Names}}' --filter "name=$RUN" 2> /dev/null); do
      echo "---- podman logs $c (last 40 lines)"; podman logs "$c" 2>&1 | tail -40
    done
    KEEP=1
  fi
  podman ps -aq --filter "name=$RUN" 2> /dev/null | xargs -r podman rm -f -t 0 > /dev/null 2>&1 || true
  podman network rm -f "${RUN}_default" "${RUN}_dns" > /dev/null 2>&1 || true
  if [ "${KEEP:-0}" = 0 ]; then rm -rf "$WORK"; else say "logs in $WORK"; fi
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# --- base image, Java runtime, build outputs -----------------------------------------------------------------
BASE="${DIT_RUNTIME_BASE:-localhost/ditserve-base:bookworm}"
if [ -z "${DIT_RUNTIME_BASE:-}" ] && ! podman image exists "$BASE"; then
  CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/ditserve/containers"
  ROOTFS="$CACHE/bookworm-minbase-v1.tar"
  if [ ! -s "$ROOTFS" ]; then
    phase "making the Debian base with mmdebstrap (once; cached in $CACHE)"
    mkdir -p "$CACHE"
    # minbase like the official slim image: no documentation, manuals or locales; merged /usr without usrmerge
    # (which would pull in perl)
    mmdebstrap --quiet --format=tar --variant=minbase --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
      --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
      --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
      --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
      bookworm "$ROOTFS.part" || { say "mmdebstrap failed (is the Debian mirror reachable?)"; exit 1; }
    mv "$ROOTFS.part" "$ROOTFS"   # complete tar files only
  fi
  podman import --quiet "$ROOTFS" "$BASE" > /dev/null
fi
podman run --rm --network none "$BASE" true 2>&1 | quiet || skip "\`podman run $BASE true\` fails"
phase "name resolution on a fresh user network (what the compose topology needs: the CNI DNS plugin)"
podman network create "${RUN}_dns" > /dev/null
podman run -d --name "$RUN-dns-a" --network "${RUN}_dns" "$BASE" sleep 60 2>&1 > /dev/null | quiet
if ! podman run --rm --name "$RUN-dns-b" --network "${RUN}_dns" "$BASE" getent hosts "$RUN-dns-a" > /dev/null 2>&1; then
  say "a container cannot resolve another by name on a user network: is the CNI DNS plugin installed (tools/packages.txt)?"
  exit 1
fi
podman rm -f -t 0 "$RUN-dns-a" > /dev/null 2>&1; podman network rm -f "${RUN}_dns" > /dev/null 2>&1
say "ok: containers on a user network resolve each other by name"

phase "build outputs: server (./dit builds what is missing), Java runtime (jlink), probe and check programs"
./dit --version > /dev/null
bash web/build.sh | quiet   # the page the image serves on web_port (web/dist, copied by the Dockerfile)
mkdir -p target/container
MODULES=$(sed -n 's/^ARG JLINK_MODULES=//p' Dockerfile)
JLINK_OPTS=(--strip-java-debug-attributes --no-header-files --no-man-pages --compress=zip-6)   # = the Dockerfile's
KEY="$("$JAVA_HOME/bin/java" -version 2>&1 | tr '\n' ' ') $MODULES ${JLINK_OPTS[*]}"
if [ "$(cat target/container/jre.key 2> /dev/null)" != "$KEY" ]; then
  rm -rf target/container/jre
  "$JAVA_HOME/bin/jlink" --add-modules "$MODULES" "${JLINK_OPTS[@]}" --output target/container/jre 2>&1 \
    | grep -v -e "incubator" || true
  echo "$KEY" > target/container/jre.key
fi
CP="server/target/classes:server/target/lib/*"
compile() { # OUT SOURCE...: javac when the first source's class is missing or older than a source or the build
  local out="$1"; shift
  local cls="$out/$(basename "$1" .java).class" stale=0 src
  for src in "$@" server/target/.dit-built; do [ -f "$cls" ] && [ ! "$src" -nt "$cls" ] || stale=1; done
  if [ "$stale" = 1 ]; then
    rm -rf "$out"; "$JAVA_HOME/bin/javac" --release 25 -nowarn -cp "$CP" -d "$out" "$@"
  fi
}
compile target/container/probe tools/container/HealthProbe.java
compile target/container/check tools/container/ContainerCheck.java tools/failover/Failover.java
CHECK=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "target/container/check:$CP" ContainerCheck)

phase "podman build: $IMAGE (Dockerfile, BUILD=prebuilt, RUNTIME_BASE=$BASE)"
OLD=$(podman image inspect --format '{{.Id}}' "$IMAGE" 2> /dev/null || true)
podman build --quiet --format docker --build-arg BUILD=prebuilt --build-arg RUNTIME_BASE="$BASE" \
  -t "$IMAGE" . > "$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; say "image build failed"; exit 1; }
NEW=$(podman image inspect --format '{{.Id}}' "$IMAGE")
# what a rebuild left behind: the previous image and the build stage's intermediate images (labelled)
if [ -n "$OLD" ] && [ "$OLD" != "$NEW" ]; then podman rmi "$OLD" > /dev/null 2>&1 || true; fi
podman image prune -f --filter label=io.ditserve.build-stage > /dev/null 2>&1 || true
phase "podman build: $LB_IMAGE (deploy/nginx.Dockerfile: nginx with apt inside the build)"
podman build --quiet --format docker --build-arg BASE="$BASE" -t "$LB_IMAGE" -f deploy/nginx.Dockerfile deploy \
  > "$WORK/build-lb.log" 2>&1 || { cat "$WORK/build-lb.log"; say "nginx image build failed"; exit 1; }
SIZE=$(podman image inspect --format '{{.Size}}' "$IMAGE")
USER_=$(podman image inspect --format '{{.Config.User}}' "$IMAGE")
HC=$(podman image inspect --format '{{.Config.Healthcheck}}' "$IMAGE")
say "image $IMAGE: $((SIZE / 1000000)) MB, user $USER_, health check $HC"
[ "${USER_%%:*}" = 10001 ] || { say "the image does not run as the non-root user 10001: '$USER_'"; exit 1; }
[[ "$HC" == *HealthProbe* ]] || { say "the image has no HEALTHCHECK (built without --format docker?)"; exit 1; }
[ "$SIZE" -lt 400000000 ] || { say "the image is larger than 400 MB"; exit 1; }

# --- the Kubernetes manifests under podman kube play (deploy/k8s/: health, token, a PNG, metrics, drain on stop) ---
phase "podman kube play: deploy/k8s/ (tools/k8s/kube_play_test.sh)"
source tools/k8s/kube_play_test.sh && kube_play_test "$IMAGE"

# --- one container --------------------------------------------------------------------------------------------
phase "podman run $IMAGE (its defaults, and web_port 8081), wait for its HEALTHCHECK"
GPORT=$(free_port); MPORT=$(free_port); WPORT=$(free_port)
podman run -d --name "$SINGLE" -p "127.0.0.1:$GPORT:50051" -p "127.0.0.1:$MPORT:9090" -p "127.0.0.1:$WPORT:8081" \
  "$IMAGE" --port 50051 --set metrics_host=0.0.0.0 --set web_port=8081 2>&1 > /dev/null | quiet
deadline=$((SECONDS + 120)); checks=0
until podman healthcheck run "$SINGLE" > /dev/null 2>&1; do
  checks=$((checks + 1))
  [ "$(podman inspect --format '{{.State.Running}}' "$SINGLE")" = true ] || { say "the container exited"; exit 1; }
  [ "$SECONDS" -lt "$deadline" ] || { say "not healthy within 120 s"; exit 1; }
done
say "ok: healthy (HealthProbe: grpc.health.v1 SERVING) after $checks unhealthy checks"
[ "$(podman exec "$SINGLE" id -u)" = 10001 ] || { say "the server does not run as uid 10001"; exit 1; }
say "ok: the server runs as uid 10001"
/usr/bin/python3 - "$WPORT" <<'PY'
import sys, time, urllib.request
base = f"http://127.0.0.1:{sys.argv[1]}/"
deadline = time.time() + 60
while True:  # the published port may answer a moment after the health check (podman's port forwarding)
    try:
        page = urllib.request.urlopen(base, timeout=10).read().decode()
        break
    except OSError as e:
        if time.time() > deadline:
            raise SystemExit(f"container_test: the web port {base} did not answer within 60 s: {e}")
        time.sleep(0.5)
assert "<script" in page and "app.js" in page, page[:200]
js = urllib.request.urlopen(base + "app.js", timeout=10).read()
assert len(js) > 10_000, len(js)
print(f"container_test: ok: the image serves the web page on web_port ({len(page)} B page, {len(js) // 1024} KiB script)")
PY
DIT_SKIP_BUILD=1 ./dit generate --target "127.0.0.1:$GPORT" --model fashion-dit --label Bag --steps 20 --seed 5 \
  --out "$WORK/out" > "$WORK/generate.log" 2>&1 || { cat "$WORK/generate.log"; say "generation failed"; exit 1; }
/usr/bin/python3 - "$WORK/out/fashion-dit-Bag-5.png" <<'PY'
import struct, sys
data = open(sys.argv[1], "rb").read()
assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
w, h = struct.unpack(">II", data[16:24])
assert (w, h) == (28, 28), (w, h)
try:
    from PIL import Image
    lo, hi = Image.open(sys.argv[1]).getextrema()
    assert hi - lo > 100, (lo, hi)
    extra = f", pixel range {lo}..{hi}"
except ImportError:
    extra = ""
print(f"container_test: ok: ./dit generate through the published port wrote a {w}x{h} PNG{extra}")
PY
phase "metrics, then podman stop -t 60 during a stream"
"${CHECK[@]}" single "$GPORT" "$MPORT" "$SINGLE" 2>&1 | quiet
podman logs "$SINGLE" 2>&1 | grep -q "i.d.server.DitServer - stopped" || { say "no 'stopped' in the log"; exit 1; }
podman rm "$SINGLE" > /dev/null 2>&1

# --- the compose topology -------------------------------------------------------------------------------------
phase "podman-compose up: deploy/compose-nginx.yml (two replicas, nginx)"
LB=$(free_port); A=$(free_port); B=$(free_port); MA=$(free_port); MB=$(free_port)
export DIT_IMAGE="$IMAGE" DIT_LB_IMAGE="$LB_IMAGE" DIT_LB_PORT="127.0.0.1:$LB" DIT1_GRPC_PORT="127.0.0.1:$A" \
  DIT2_GRPC_PORT="127.0.0.1:$B" DIT1_METRICS_PORT="127.0.0.1:$MA" DIT2_METRICS_PORT="127.0.0.1:$MB"
# --no-build: the images were built above (podman-compose would build only missing ones, without --format docker)
podman-compose --no-ansi -p "$RUN" -f deploy/compose-nginx.yml up -d --no-build > "$WORK/compose-up.log" 2>&1 \
  || { cat "$WORK/compose-up.log"; say "podman-compose up failed"; exit 1; }
container() { podman ps -a --format '{{.Names}}' --filter "label=io.podman.compose.project=$RUN" \
  --filter "label=com.docker.compose.service=$1"; }
C1=$(container dit-1); C2=$(container dit-2)
say "containers: $(podman ps --format '{{.Names}}' --filter "label=io.podman.compose.project=$RUN" | tr '\n' ' ')"
phase "through the balancer: spread, SIGKILL of a replica under streams, its restart, its drain"
"${CHECK[@]}" compose "$LB" "$A" "$B" "$MA" "$MB" "$C1" "$C2" 2>&1 | quiet
podman logs "$C2" 2>&1 | grep -q "i.d.server.DitServer - stopped" || { say "no 'stopped' in $C2's log"; exit 1; }
podman logs "$(container lb)" > "$WORK/lb.log" 2>&1
grep "dit-nginx:" "$WORK/lb.log" | sed 's/^/container_test: balancer: /' || true
say "passed in $((SECONDS - START)) s"
