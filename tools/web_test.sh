#!/usr/bin/env bash
# The web port end to end (issue 27): builds the page (web/build.sh), starts `./dit serve` with the fixture models,
# the bundled pixel model (fashion-dit) and the bundled text model (shapes), a bearer token, gRPC-Web on --set web_port and max_active=1 (so that a
# second generation of a model waits in the queue), then runs
#   web/test/browser.test.mjs  the page in Debian's chromium via chromium-driver and selenium-webdriver: generate
#                              (progress, >= 3 different preview frames before the result, seeds, download), queue
#                              position, Stop (the server counts CANCELLED), errors; first-preview latency measured
#   web/test/openai.test.mjs   the OpenAI Images API with the official `openai` npm client, streaming and not
# Screenshots and the measurements (results.json) go to target/web-test/.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash tools/install-packages.sh browser
bash web/build.sh

OUT="$ROOT/target/web-test"
rm -rf "$OUT" && mkdir -p "$OUT"
WORK="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2> /dev/null; then
    kill "$SERVER_PID" 2> /dev/null || true
    wait "$SERVER_PID" 2> /dev/null || true
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# the models: every fixture model folder, the bundled pixel model and the bundled text model, as links in one folder
mkdir -p "$WORK/models"
for d in tools/fixtures/*/ models/fashion-dit/ models/shapes/; do
  if [ -f "$d/config.json" ] || [ -f "$d/model_index.json" ]; then ln -s "$ROOT/$d" "$WORK/models/$(basename "$d")"; fi
done
TOKEN="web-test-$RANDOM$RANDOM"
echo "$TOKEN" > "$WORK/tokens"
chmod 600 "$WORK/tokens"

DIT_AUTH_TOKENS="" ./dit serve --models "$WORK/models" --port 0 --threads 2 \
  --set web_port=0 --set metrics_port=0 --set max_active=1 --set auth_tokens_file="$WORK/tokens" \
  > "$OUT/server.log" 2>&1 &
SERVER_PID=$!
WEB_URL="" METRICS_URL=""
for _ in $(seq 1 600); do
  WEB_URL=$(sed -n 's#.*web on \(https\?://[^/]*/\).*#\1#p' "$OUT/server.log" | head -1)
  METRICS_URL=$(sed -n 's#.*metrics on \(http://[^ ]*/metrics\).*#\1#p' "$OUT/server.log" | head -1)
  if grep -q "serving models" "$OUT/server.log" && [ -n "$WEB_URL" ]; then break; fi
  kill -0 "$SERVER_PID" 2> /dev/null || { echo "web_test: the server stopped:" >&2; cat "$OUT/server.log" >&2; exit 1; }
  sleep 0.5
done
[ -n "$WEB_URL" ] || { echo "web_test: the server did not start in time:" >&2; tail -20 "$OUT/server.log" >&2; exit 1; }
WEB_URL="${WEB_URL/localhost/127.0.0.1}"
echo "web_test: server up, web port $WEB_URL, metrics $METRICS_URL"

export DIT_WEB_URL="$WEB_URL" DIT_METRICS_URL="$METRICS_URL" DIT_TOKEN="$TOKEN" DIT_SCREENSHOTS="$OUT"
# selenium-webdriver uses the chromedriver it is given; SE_OFFLINE keeps Selenium Manager from looking online
export SE_OFFLINE=true
status=0
(cd web && node --test --test-concurrency=1 test/) || status=$?
if [ "$status" -ne 0 ]; then
  echo "web_test: failed; the server's log:" >&2
  tail -40 "$OUT/server.log" >&2
fi
exit "$status"
