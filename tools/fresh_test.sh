#!/usr/bin/env bash
# `./dit test --fresh`: proves that the README's two commands work from nothing. It
#   1. builds a fresh minimal Debian bookworm root with mmdebstrap (directory format, under
#      ~/.cache/ditserve/fresh/run-PID, rebuilt every run: nothing is reused from an earlier one);
#   2. gives it what a new machine of this kind has and nothing else (see "what a new machine has" below);
#   3. copies in a clean clone of this repository's HEAD (`git clone`: uncommitted and ignored files never leak in;
#      no ~/.m2, no npm cache, no container images: the root downloads its own);
#   4. enters it in a private mount namespace (`unshare --mount` + pivot_root; /proc, /sys with its cgroups, /dev and
#      /dev/pts, a fresh /run) and runs the commands of the README's "Two commands" block there, in order
#      (`./dit demo`, then `./dit test`: the whole suite, the podman image and compose leg included).
# Every mount is made inside the private namespace, so none can outlive the run on the host; the EXIT trap also
# ends any process still running inside the root (containers' conmon), checks that nothing is left mounted under
# it (unmounting what is) and deletes it. Needs root (mmdebstrap, mount, chroot) and the Debian mirror.
# The root shares this machine's network namespace (it downloads through it): its podman makes its bridges and
# firewall rules here, and its default network is podman's usual 10.88.0.0/16 on cni-podman0, so do not run it while
# a tools/container_test.sh of this machine runs (the two would hand out the same container addresses).
#
# Environment:
#   FRESH_KEEP=1             keep the root afterwards (for debugging; its path is printed; delete it with
#                            `rm -rf --one-file-system DIR` once nothing is mounted under it)
#   FRESH_DIR=DIR            where the run folders go (default ~/.cache/ditserve/fresh; outside the repository)
#   FRESH_COMMAND='CMD'      run CMD in the clone instead of the README's commands (to check a piece cheaply, e.g.
#                            FRESH_COMMAND='java -version; mvn -v; podman info')
#   DIT_PACKAGE_LIST=FILE    passed through into the root (the file is copied in): tools/install-packages.sh installs
#                            from it instead of tools/packages.txt. The negative check: a copy of tools/packages.txt
#                            without the dnsname line must make the run fail, in tools/container_test.sh's
#                            name-resolution check on a fresh network (or, without it, in the compose step):
#                              grep -v dnsname tools/packages.txt > /tmp/no-dnsname.txt
#                              DIT_PACKAGE_LIST=/tmp/no-dnsname.txt FRESH_COMMAND='bash tools/container_test.sh' \
#                                ./dit test --fresh      # must exit 1 (about 3 min: no Maven build is reached)
#   FRESH_REUSE=DIR          enter the root kept by an earlier FRESH_KEEP=1 run (DIR/root) instead of building one,
#                            with a new clone of HEAD; implies FRESH_KEEP=1 (for debugging only: the root is not fresh)
#   FRESH_JDK=DIR            the JDK 25 to bind-mount (default /usr/lib/jvm/temurin-25-jdk-amd64)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
START=$SECONDS
say() { echo "fresh_test: $*"; }
die() { say "FAILED: $*"; exit 1; }

# --- phases and their timings ---------------------------------------------------------------------------------
TIMINGS=()
PHASE=""; PHASE_START=$SECONDS
phase() {
  end_phase
  PHASE="$1"; PHASE_START=$SECONDS
  say "[$((SECONDS - START)) s] == $PHASE"
}
end_phase() {
  if [ -n "$PHASE" ]; then TIMINGS+=("$(printf '%6d s  %s' $((SECONDS - PHASE_START)) "$PHASE")"); fi
  PHASE=""
}

[ "$#" -eq 0 ] || die "usage: ./dit test --fresh (settings through the environment, see tools/fresh_test.sh)"
[ "$(uname -s)" = Linux ] || die "needs Linux"
[ "$(id -u)" -eq 0 ] || die "needs root (mmdebstrap, mount, chroot): run it as root or with sudo"
JDK="${FRESH_JDK:-/usr/lib/jvm/temurin-25-jdk-amd64}"
[ -x "$JDK/bin/java" ] || die "no JDK 25 at $JDK (FRESH_JDK=DIR)"
if [ -n "${DIT_PACKAGE_LIST:-}" ]; then
  DIT_PACKAGE_LIST="$(realpath "$DIT_PACKAGE_LIST")"
  [ -f "$DIT_PACKAGE_LIST" ] || die "DIT_PACKAGE_LIST=$DIT_PACKAGE_LIST is not a file"
fi
COMMIT=$(git -C "$ROOT" rev-parse HEAD)
if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no 2> /dev/null)" ]; then
  say "note: the working tree has uncommitted changes; they are NOT tested (the root gets a clone of HEAD $COMMIT)"
fi

WORKDIR="${FRESH_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/ditserve/fresh}/run-$$"
if [ -n "${FRESH_REUSE:-}" ]; then
  WORKDIR="$(realpath "$FRESH_REUSE")"; FRESH_KEEP=1
  [ -x "$WORKDIR/root/bin/bash" ] || die "FRESH_REUSE=$FRESH_REUSE: no root in $WORKDIR/root"
fi
R="$WORKDIR/root"
case "$R/" in "$ROOT"/*) die "the root must be outside the repository ($R)";; esac

# --- cleanup: processes inside the root, mounts under it, the root itself --------------------------------------
mounted_under() { # the mount points under $R in this (the host's) namespace, deepest first
  awk -v r="$R" '{ gsub(/\\040/, " ", $5); if ($5 == r || index($5, r "/") == 1) print $5 }' /proc/self/mountinfo \
    | sort -r
}
cleanup() {
  local rc=$? pid root left
  trap - EXIT INT TERM
  end_phase
  # processes whose root directory is the fresh root (what the run started there and left behind: conmon and its
  # containers, a server): they would keep the private mount namespace, and its mounts, alive
  for pid in $(ls /proc | grep -E '^[0-9]+$'); do
    root=$(readlink "/proc/$pid/root" 2> /dev/null) || continue
    case "$root/" in "$R"/*) kill -KILL "$pid" 2> /dev/null || true;; esac
  done
  # nothing should be mounted under the root in this namespace (all mounts were made in the private one); if
  # something is, unmount it (lazily: a process may still be leaving) before anything is deleted
  for m in $(mounted_under); do umount -l "$m" 2> /dev/null || true; done
  left=$(mounted_under)
  if [ -d "$WORKDIR" ]; then
    if [ "${FRESH_KEEP:-0}" = 1 ]; then
      say "kept the root: $R (FRESH_KEEP=1)"
    elif [ -n "$left" ]; then
      say "NOT deleting $WORKDIR: still mounted under it: $left"
    else
      rm -rf --one-file-system "$WORKDIR"
    fi
  fi
  if [ "${#TIMINGS[@]}" -gt 0 ]; then
    say "timings:"; printf '%s\n' "${TIMINGS[@]}" | sed 's/^/fresh_test:   /'
  fi
  if [ "$rc" -eq 0 ]; then say "passed in $((SECONDS - START)) s (HEAD $COMMIT)"
  else say "FAILED (exit $rc) after $((SECONDS - START)) s (HEAD $COMMIT)"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- what a new machine has ------------------------------------------------------------------------------------
# A new machine of this kind (/work/.library/env/machines/java-maven.md, "On a new machine" and the versions read
# off one) is Debian bookworm with: OpenJDK 17 as the default java and Temurin 25 under /usr/lib/jvm; Apache Maven
# 3.8.7 (Debian's package); gcc/g++ 12 and make; git and curl; Node.js 20 with npm 11 (from NodeSource, not from
# Debian); nvcc (CUDA 13.0 under /usr/local/cuda, no GPU); root without sudo. The root gets exactly these:
#   - from Debian (mmdebstrap --include): ca-certificates, curl, git, gcc, g++, make, procps, and `maven`. Maven is
#     installed, not bind-mounted: Debian's /usr/share/maven/lib is a folder of symbolic links into /usr/share/java
#     (about 30 library packages), so a bind mount of /usr/share/maven and /usr/bin/mvn alone would not run; the
#     package is the very 3.8.7 a new machine has, and its dependency default-jre-headless brings OpenJDK 17 as the
#     default `java`, as on a new machine (so a script that forgets JAVA_HOME fails here as it would there).
#   - bind-mounted read-only from this machine: Temurin 25 (not a Debian package), Node.js and npm (NodeSource's
#     build; its apt source is not reachable here) and CUDA 13.0 (NVIDIA's, not Debian's).
#   - this machine's trust anchors (/usr/local/share/ca-certificates: the network's egress certificate authority,
#     without which no HTTPS download works here) and npm's global config (/usr/etc/npmrc: its cafile), because a
#     new machine of this kind has them too; they are the machine's, not the project's.
# Not given: Python (the project's list brings Debian's python3 with python3-torch & co.; the pyenv python of a new
# machine is not what the tools use, they call /usr/bin/python3), podman & co., nginx, docker-compose: everything
# the tests need beyond the above must come from tools/packages.txt through tools/install-packages.sh. The other
# tools of a new machine (cmake, perl, valgrind, a PostgreSQL client, ...) are left out: a missing one can only make
# this check fail where a new machine passes, never pass where it fails.
INCLUDE="ca-certificates,curl,git,gcc,g++,make,procps,maven"
MIRRORS=("deb http://deb.debian.org/debian bookworm main"
         "deb http://deb.debian.org/debian bookworm-updates main"
         "deb http://deb.debian.org/debian-security bookworm-security main")
NODE=$(command -v node || true); NODE_MODULES=""
if [ -n "$NODE" ]; then NODE=$(readlink -f "$NODE"); NODE_MODULES="$(dirname "$(dirname "$NODE")")/lib/node_modules"; fi
if [ -z "$NODE" ] || [ ! -d "$NODE_MODULES/npm" ]; then
  NODE=""; NODE_MODULES=""; say "note: no Node.js/npm here to give the root (a new machine has them)"
fi
CUDA=""; [ -d /usr/local/cuda ] && CUDA=$(readlink -f /usr/local/cuda)

# --- 1. the root ------------------------------------------------------------------------------------------------
phase "host: mmdebstrap present (group 'containers' of tools/packages.txt)"
command -v mmdebstrap > /dev/null || bash "$ROOT/tools/install-packages.sh" containers
if [ -n "${FRESH_REUSE:-}" ]; then
  say "FRESH_REUSE: entering the kept root $R (not fresh: for debugging)"
  rm -rf "$R/root/ditserve"
else
phase "mmdebstrap: Debian bookworm minbase + $INCLUDE -> $R"
mkdir -p "$WORKDIR"
mmdebstrap --quiet --mode=root --format=directory --variant=minbase --include="$INCLUDE" \
  --customize-hook='mkdir -p "$1/usr/local/share/ca-certificates"' \
  --customize-hook='cp /usr/local/share/ca-certificates/*.crt "$1/usr/local/share/ca-certificates/" 2> /dev/null || true' \
  --customize-hook='chroot "$1" update-ca-certificates > /dev/null 2>&1' \
  bookworm "$R" "${MIRRORS[@]}" < /dev/null || die "mmdebstrap failed (is the Debian mirror reachable?)"
say "root: $(du -sm --one-file-system "$R" | cut -f1) MB, $(chroot "$R" dpkg-query -W | wc -l) packages"
fi

phase "prepare the root: mount points, Node.js/npm links, network files, a clean clone of HEAD"
mkdir -p "$R$JDK"
if [ -n "$NODE" ]; then
  mkdir -p "$R$NODE_MODULES" "$R/usr/etc"; touch "$R$NODE"
  ln -sfn ../lib/node_modules/npm/bin/npm-cli.js "$R/usr/bin/npm"
  ln -sfn ../lib/node_modules/npm/bin/npx-cli.js "$R/usr/bin/npx"
  [ -f /usr/etc/npmrc ] && cp /usr/etc/npmrc "$R/usr/etc/npmrc"
fi
if [ -n "$CUDA" ]; then mkdir -p "$R$CUDA"; ln -sfn "$CUDA" "$R/usr/local/cuda"; fi
# the machine's network settings: its resolver, and /etc/hosts with its host name (the root shares the host name
# and network; Java's InetAddress.getLocalHost() must resolve it as on the machine)
cp -L /etc/resolv.conf "$R/etc/resolv.conf"
if [ -s /etc/hosts ]; then cp -L /etc/hosts "$R/etc/hosts"
else printf '127.0.0.1\tlocalhost %s\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' "$(hostname)" > "$R/etc/hosts"; fi
git clone --quiet "$ROOT" "$R/root/ditserve"
say "clone: $(git -C "$R/root/ditserve" log -1 --format='%h %s' | cut -c1-100)"
INNER_ENV=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
  TERM="${TERM:-dumb}" DEBIAN_FRONTEND=noninteractive)
if [ -n "${DIT_PACKAGE_LIST:-}" ]; then
  cp "$DIT_PACKAGE_LIST" "$R/root/dit-package-list.txt"
  INNER_ENV+=(DIT_PACKAGE_LIST=/root/dit-package-list.txt)
  say "DIT_PACKAGE_LIST: $DIT_PACKAGE_LIST, as /root/dit-package-list.txt in the root"
fi

# --- 2. the commands ---------------------------------------------------------------------------------------------
# The README's "Two commands" block, in its order (comments stripped); `./dit test` must be among them.
mapfile -t COMMANDS < <(awk '/^## Two commands/ { s = 1; next } s && /^## / { exit }
  s && /^```/ { if (++f == 2) exit; next } s && f == 1 { sub(/#.*/, ""); gsub(/^ +| +$/, ""); if (length) print }' \
  "$R/root/ditserve/README.md")
if [ -n "${FRESH_COMMAND:-}" ]; then
  COMMANDS=("$FRESH_COMMAND"); say "FRESH_COMMAND instead of the README's commands: $FRESH_COMMAND"
else
  printf '%s\n' "${COMMANDS[@]}" | grep -qx '\./dit test' || die "no \`./dit test\` in README.md's 'Two commands' block"
  say "the README's commands: $(printf '%s; ' "${COMMANDS[@]}")"
fi

# Runs in the private mount namespace: mounts, then chroot. Its mounts vanish with the namespace.
enter() { # COMMAND
  unshare --mount --propagation private -- /bin/bash -euo pipefail -c '
    R=$1; JDK=$2; NODE=$3; NODE_MODULES=$4; CUDA=$5; shift 5
    ro_bind() { mount --bind "$1" "$2"; mount -o remount,bind,ro "$2"; }
    # the root a mount point of its own: podman (containers/storage) makes "/" private before it unpacks a layer,
    # which fails with EINVAL ("remount /, flags: 0x44000") when "/" of the chroot is a plain folder
    mount --bind "$R" "$R"
    mount -t proc proc "$R/proc"
    mount --rbind /sys "$R/sys"; mount --make-rslave "$R/sys"      # with /sys/fs/cgroup (podman, runc)
    mount --rbind /dev "$R/dev"; mount --make-rslave "$R/dev"      # with /dev/pts, /dev/shm
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs "$R/run"; mkdir -m 1777 "$R/run/lock"
    ro_bind "$JDK" "$R$JDK"
    if [ -n "$NODE" ]; then ro_bind "$NODE" "$R$NODE"; ro_bind "$NODE_MODULES" "$R$NODE_MODULES"; fi
    if [ -n "$CUDA" ]; then ro_bind "$CUDA" "$R$CUDA"; fi
    # pivot_root, not a plain chroot: the root must be the root of this mount namespace, because runc (podman exec,
    # podman healthcheck run) joins a container by setns() into its mount namespace, which puts the joining process
    # at the root of that namespace; under a plain chroot that is the host root, and `podman exec` failed with
    # "chdir to cwd /app: no such file". The host root, moved to /.fresh-oldroot, is then detached.
    mkdir -p "$R/.fresh-oldroot"
    cd "$R"
    pivot_root . .fresh-oldroot
    exec chroot . /bin/sh -c '"'"'umount -l /.fresh-oldroot && rmdir /.fresh-oldroot && exec "$@"'"'"' sh \
      /usr/bin/env -i "$@"
  ' enter "$R" "$JDK" "$NODE" "$NODE_MODULES" "$CUDA" "${INNER_ENV[@]}" /bin/bash -euo pipefail -c "cd /root/ditserve; $1"
}

phase "inside: what the root has (java, mvn, node, npm, apt sources)"
enter 'java -version 2>&1 | sed -n 1p; '"$JDK"'/bin/java -version 2>&1 | sed -n 1p
  mvn -B -v 2>&1 | sed -n "1s/\x1b\[[0-9;]*m//g;1p"
  if command -v node > /dev/null; then echo "node $(node -v), npm $(npm -v)"; fi
  command -v python3 podman nginx docker-compose || true; grep -h "^deb " /etc/apt/sources.list' \
  | sed 's/^/fresh_test:   /'

for cmd in "${COMMANDS[@]}"; do
  phase "inside: $cmd"
  enter "$cmd"
done
end_phase
