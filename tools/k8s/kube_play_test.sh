#!/usr/bin/env bash
# `podman kube play` of deploy/k8s/: the Deployment with its ConfigMap (and the Secret's tokens file) started as a
# pod from the image under test; tools/k8s/KubePlayCheck.java then checks that it serves with that configuration
# (health, a call without a token refused, the token accepted, a generation, dit_queue_depth on the metrics port) and
# that `podman stop -t terminationGracePeriodSeconds` of the server's container during a stream drains it
# (NOT_SERVING, the stream completes, exit code 0); then the pod is removed (`podman kube down`). What podman 4.3 cannot play, and what the test therefore changes or does itself, is
# listed in tools/k8s/kube_play.mjs (the Secret as a folder, one replica, host ports, no probes or preStop hook).
#
# From tools/container_test.sh, once its image is built (podman, CONTAINERS_CONF and the server build are ready):
#   source tools/k8s/kube_play_test.sh && kube_play_test "$IMAGE"
# Alone, with an image built by tools/container_test.sh (`podman images localhost/ditserve`):
#   bash tools/k8s/kube_play_test.sh localhost/ditserve:TAG
# Needs: podman with catatonit (the pod's infra container), Node.js (tools/k8s/node_modules, installed from the lock
# file when missing), JDK 25 and server/target (the check's class path). KEEP=1 keeps the scratch folder.
kube_play_test() (
  set -euo pipefail
  local image="${1:?usage: kube_play_test IMAGE}"
  local root start
  root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
  start=$SECONDS
  cd "$root"
  export JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
  export CONTAINERS_CONF="${CONTAINERS_CONF:-$root/tools/container/containers.conf}"
  say() { echo "kube_play_test: [$((SECONDS - start)) s] $*"; }
  fail() { echo "kube_play_test: FAILED: $*" >&2; exit 1; }

  podman image exists "$image" || fail "no image $image (build it first: tools/container_test.sh)"
  command -v catatonit > /dev/null || [ -x /usr/libexec/podman/catatonit ] \
    || fail "podman kube play needs catatonit for the pod's infra container (Debian package catatonit)"
  if [ ! -f tools/k8s/node_modules/yaml/package.json ]; then
    (cd tools/k8s && npm ci --no-audit --no-fund --loglevel=error)
  fi

  local run="${RUN:-ditkp$$}-kube"   # under container_test.sh's RUN, so that its clean-up also finds what is left
  local pod="$run-pod-0" container="$run-pod-0-ditserve" work token gport mport grace
  work="$(mktemp -d)"
  cleanup() {
    local rc=$?
    if [ "$rc" -ne 0 ]; then
      echo "---- podman logs $container (last 40 lines)"; podman logs "$container" 2>&1 | tail -40 || true
      KEEP=1
    fi
    podman kube down "$work/play.yaml" > /dev/null 2>&1 || true
    podman pod rm -f -t 0 "$pod" > /dev/null 2>&1 || true
    podman volume rm -f "$run-config" > /dev/null 2>&1 || true
    if [ "${KEEP:-0}" = 0 ]; then rm -rf "$work"; else echo "kube_play_test: files in $work"; fi
  }
  trap cleanup EXIT

  # the Secret's file, with a token of this run (readable by the pod's user 10001)
  token="kube-play-$(od -An -tx1 -N16 /dev/urandom | tr -d ' \n')"
  mkdir -m 0755 "$work/tokens"
  printf '# tokens of tools/k8s/kube_play_test.sh\n%s\n' "$token" > "$work/tokens/tokens"
  chmod 0444 "$work/tokens/tokens"
  free_port() { node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => {
    console.log(s.address().port); s.close(); })'; }
  gport=$(free_port); mport=$(free_port)
  grace=$(sed -n 's/^ *terminationGracePeriodSeconds: *\([0-9][0-9]*\).*/\1/p' deploy/k8s/deployment.yaml)
  [ -n "$grace" ] || fail "no terminationGracePeriodSeconds in deploy/k8s/deployment.yaml"
  node tools/k8s/kube_play.mjs --name "$run" --image "$image" --grpc-port "$gport" --metrics-port "$mport" \
    --tokens-dir "$work/tokens" > "$work/play.yaml"

  say "podman kube play: deploy/k8s/ ConfigMap + Deployment, image $image, gRPC 127.0.0.1:$gport, metrics :$mport"
  podman kube play "$work/play.yaml" > "$work/play.log" 2>&1 || { cat "$work/play.log"; fail "podman kube play"; }
  [ "$(podman inspect --format '{{.State.Running}}' "$container")" = true ] || fail "$container is not running"
  # The user and the read-only root are read from the server process itself (/proc of its host PID), not with
  # `podman exec`: inside tools/fresh_test.sh's chroot, runc joins the pod container's mount namespace at the
  # namespace's root (the host's, as the chroot is no mount point) and `podman exec` fails with "chdir to cwd /app:
  # no such file"; /proc needs no such join and checks the same facts.
  local pid uid rootopts
  pid=$(podman inspect --format '{{.State.Pid}}' "$container")
  [ -n "$pid" ] && [ "$pid" -gt 0 ] && [ -r "/proc/$pid/status" ] || fail "no process for $container (pid '$pid')"
  uid=$(awk '/^Uid:/ { print $3 }' "/proc/$pid/status")   # the effective uid
  rootopts=$(awk '$5 == "/" { print $6 }' "/proc/$pid/mountinfo" | tail -1)
  say "ok: pod $pod, container $container: pid $pid, uid $uid, memory limit" \
    "$(( $(podman inspect --format '{{.HostConfig.Memory}}' "$container") / 1048576 )) MiB," \
    "root mounted $rootopts (ReadonlyRootfs $(podman inspect --format '{{.HostConfig.ReadonlyRootfs}}' "$container"))"
  [ "$uid" = 10001 ] || fail "the server runs as uid $uid, not 10001"
  case ",$rootopts," in *,ro,*) ;; *) fail "the container's root file system is mounted '$rootopts', not read-only";; esac

  local cp="server/target/classes:server/target/lib/*" out=target/k8s/check
  if [ ! -f "$out/KubePlayCheck.class" ] || [ tools/k8s/KubePlayCheck.java -nt "$out/KubePlayCheck.class" ] \
    || [ tools/failover/Failover.java -nt "$out/KubePlayCheck.class" ]; then
    rm -rf "$out"
    "$JAVA_HOME/bin/javac" --release 25 -nowarn -cp "$cp" -d "$out" tools/k8s/KubePlayCheck.java \
      tools/failover/Failover.java
  fi
  say "the pod: health, tokens, a generation, metrics, then podman stop -t $grace of $container during a stream"
  "$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "$out:$cp" KubePlayCheck "$gport" "$mport" "$token" \
    "$container" "$grace" 2>&1 \
    | grep --line-buffered -v -e "unable to get systemd connection" -e "failed to connect to syslog"
  podman logs "$container" 2>&1 | grep -q "i.d.server.DitServer - stopped" || fail "no 'stopped' in the server's log"
  say "passed"
)

if [ "${BASH_SOURCE[0]}" = "$0" ]; then kube_play_test "$@"; fi
