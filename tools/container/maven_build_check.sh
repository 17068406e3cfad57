#!/usr/bin/env bash
# The Dockerfile's default path (BUILD=maven: Maven and jlink inside the build) without a registry: a stand-in for
# maven:3.9-eclipse-temurin-25 made from the local Debian base (run tools/container_test.sh first), this machine's
# JDK 25 and Apache Maven 3.9.9 (fetched from Maven Central with mvn), a stand-in for node:20-bookworm-slim (Debian's
# nodejs and npm on the local base, for the web page's stage), then `podman build --build-arg BUILD=maven`
# with ~/.m2 mounted as the Maven repository, and one container: healthy, one generation, `podman stop` exits 0.
# Not part of CI (about 2 minutes on 2 cores); docs/CONTAINERS.md.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
START=$SECONDS
export JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
export CONTAINERS_CONF="${CONTAINERS_CONF:-$ROOT/tools/container/containers.conf}"
BASE=localhost/ditserve-base:bookworm
podman image exists "$BASE" || { echo "maven_build_check: no $BASE: run tools/container_test.sh first"; exit 1; }
WORK="$(mktemp -d)"
NAME="ditmvn$$"
trap 'podman rm -f -t 0 "$NAME" > /dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
if ! podman image exists localhost/maven-jdk25; then
  mvn -B -q org.apache.maven.plugins:maven-dependency-plugin:3.8.1:copy \
    -Dartifact=org.apache.maven:apache-maven:3.9.9:tar.gz:bin -DoutputDirectory="$WORK" > /dev/null
  mkdir "$WORK/ctx"
  tar xzf "$WORK/apache-maven-3.9.9-bin.tar.gz" -C "$WORK/ctx"
  cp -a "$JAVA_HOME" "$WORK/ctx/jdk"
  # Debian's Temurin package links cacerts to /etc/ssl/certs/java: the image needs the file (jlink copies it)
  rm -f "$WORK/ctx/jdk/lib/security/cacerts"; cp -L "$JAVA_HOME/lib/security/cacerts" "$WORK/ctx/jdk/lib/security/"
  printf '%s\n' "FROM $BASE" 'COPY jdk /opt/java/openjdk' 'COPY apache-maven-3.9.9 /usr/share/maven' \
    'ENV JAVA_HOME=/opt/java/openjdk PATH=/opt/java/openjdk/bin:/usr/share/maven/bin:$PATH' > "$WORK/ctx/Containerfile"
  podman build -q -t localhost/maven-jdk25 "$WORK/ctx" > /dev/null
fi
# a stand-in for node:20-bookworm-slim (the web stage): Debian's nodejs and npm on the local base
if ! podman image exists localhost/node-stand-in; then
  printf '%s\n' "FROM $BASE" 'RUN apt-get update && apt-get install -y --no-install-recommends nodejs npm && apt-get clean' \
    > "$WORK/Containerfile.node"
  podman build -q -t localhost/node-stand-in -f "$WORK/Containerfile.node" "$WORK" > /dev/null
fi
# BUILD=maven spelt out: buildah 1.28 (podman 4.3) skips a stage named by an ARG's default value
podman build --format docker -v "$HOME/.m2:/root/.m2" --build-arg BUILD=maven --build-arg WEB_BASE=localhost/node-stand-in \
  --build-arg BUILD_BASE=localhost/maven-jdk25 --build-arg RUNTIME_BASE="$BASE" -t localhost/ditserve:maven . \
  > "$WORK/build.log" 2>&1 || { tail -40 "$WORK/build.log"; echo "maven_build_check: build failed"; exit 1; }
podman image prune -f --filter label=io.ditserve.build-stage > /dev/null 2>&1 || true
echo "maven_build_check: built localhost/ditserve:maven ($(($(podman image inspect --format '{{.Size}}' \
  localhost/ditserve:maven) / 1000000)) MB) in $((SECONDS - START)) s"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
podman run -d --name "$NAME" -p "127.0.0.1:$PORT:50051" localhost/ditserve:maven > /dev/null 2>&1
deadline=$((SECONDS + 120))
until podman healthcheck run "$NAME" > /dev/null 2>&1; do
  [ "$SECONDS" -lt "$deadline" ] || { podman logs "$NAME"; echo "maven_build_check: not healthy in 120 s"; exit 1; }
done
DIT_SKIP_BUILD=1 ./dit generate --target "127.0.0.1:$PORT" --model fashion-dit --label Bag --steps 10 --seed 1 \
  --out "$WORK/out" | tail -1
[ -s "$WORK/out/fashion-dit-Bag-1.png" ] || { echo "maven_build_check: no PNG"; exit 1; }
podman stop -t 60 "$NAME" > /dev/null 2>&1
CODE=$(podman inspect --format '{{.State.ExitCode}}' "$NAME")
[ "$CODE" = 0 ] || { echo "maven_build_check: exit code $CODE after podman stop"; exit 1; }
echo "maven_build_check: passed in $((SECONDS - START)) s (healthy, one PNG, exit code 0 after podman stop)"
