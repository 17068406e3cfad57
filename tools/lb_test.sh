#!/usr/bin/env bash
# A real gRPC load balancer in front of two `./dit serve` replicas, all on loopback: nginx (Debian's package,
# installed here if missing) with deploy/nginx-grpc.conf. tools/lb/LbCheck.java (with the scenarios of
# tools/failover/Failover.java) checks that calls are spread over both replicas, that kill -9 of one during a stream
# ends that stream with an error (nginx: INTERNAL) while calls through the proxy go on and a resumable stream is sent
# again and completes, and that after SIGTERM to one its health goes NOT_SERVING, new calls go to the other and its
# running generations finish. Everything started here is stopped on exit. Needs a built server (./dit builds it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS
bash tools/install-packages.sh lb   # nginx (tools/packages.txt); its own service is not started here
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
export JAVA_HOME="${JAVA_HOME:-/usr/lib/jvm/temurin-25-jdk-amd64}"
WORK="$(mktemp -d)"
PIDS=()
cleanup() { # replicas are killed; nginx's master is told to stop (TERM), so that it stops its worker too
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 0 ]; then rm -rf "$WORK"; else echo "lb_test: logs in $WORK"; fi
}
trap cleanup EXIT
free_port() { /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_listening() { # LOG PID
  for _ in $(seq 1 240); do
    grep -q "listening on port" "$1" && return 0
    kill -0 "$2" 2>/dev/null || { cat "$1"; echo "lb_test: replica exited"; KEEP=1; exit 1; }
    sleep 0.25
  done
  cat "$1"; echo "lb_test: replica did not start"; KEEP=1; exit 1
}
serve() { # PORT LOG -> sets REPLICA
  DIT_SKIP_BUILD=1 ./dit serve --port "$1" --threads 1 --set metrics_port=-1 > "$2" 2>&1 &
  REPLICA=$!
  PIDS+=("$REPLICA")
}
PORT_A=$(free_port); PORT_B=$(free_port); LB=$(free_port)
serve "$PORT_A" "$WORK/a.log"; A=$REPLICA
serve "$PORT_B" "$WORK/b.log"; B=$REPLICA
sed -e "s|@PREFIX@|$WORK|g" -e "s|@PORT_A@|$PORT_A|g" -e "s|@PORT_B@|$PORT_B|g" -e "s|@LB_PORT@|$LB|g" \
  deploy/nginx-grpc.conf > "$WORK/nginx.conf"
"$NGINX" -t -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' 2>&1 | grep -v "^$" || true
"$NGINX" -p "$WORK" -c "$WORK/nginx.conf" -g 'daemon off;' &
PIDS+=($!)
wait_listening "$WORK/a.log" "$A"
wait_listening "$WORK/b.log" "$B"
CP="server/target/classes:server/target/lib/*"
rm -rf target/lb/check
"$JAVA_HOME/bin/javac" --release 25 -nowarn -cp "$CP" -d target/lb/check tools/lb/LbCheck.java tools/failover/Failover.java
CHECK=("$JAVA_HOME/bin/java" --enable-native-access=ALL-UNNAMED -cp "target/lb/check:$CP" LbCheck)
"${CHECK[@]}" spread-kill "$LB" "$PORT_A" "$PORT_B" "$B" || { KEEP=1; exit 1; }
# a new replica B on the same port (nginx keeps the address), then the drain check
serve "$PORT_B" "$WORK/b2.log"; B=$REPLICA
wait_listening "$WORK/b2.log" "$B"
"${CHECK[@]}" drain "$LB" "$PORT_A" "$PORT_B" "$B" || { KEEP=1; exit 1; }
for _ in $(seq 1 200); do kill -0 "$B" 2>/dev/null || break; sleep 0.1; done
grep -q "stopped" "$WORK/b2.log" || { cat "$WORK/b2.log"; echo "lb_test: replica B did not stop gracefully"; KEEP=1; exit 1; }
echo "lb_test: passed in $((SECONDS - START)) s (nginx $("$NGINX" -v 2>&1 | sed 's|.*/||'))"
