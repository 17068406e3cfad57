#!/usr/bin/env bash
# Builds the page served on the web port (web_port) into web/dist/: installs the pinned npm packages from
# package-lock.json when the lock file changed, generates the gRPC-Web client code from proto/ (buf generate with
# @bufbuild/protoc-gen-es), and bundles it with the page's script (esbuild). Nothing is fetched at run time: the
# page works offline. Needs Node.js and npm (a new machine has Node.js 20).
set -euo pipefail
WEB="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$WEB"
command -v node > /dev/null && command -v npm > /dev/null \
  || { echo "web/build.sh: node and npm are needed (a new machine has Node.js 20 and npm)" >&2; exit 1; }
# npm ci only when the lock file changed since the last install (openai 7.55 declares Node >= 22 and runs on 20:
# --loglevel=error hides that warning)
if ! cmp -s package-lock.json node_modules/.ditserve-installed-lock 2> /dev/null; then
  npm ci --no-audit --no-fund --loglevel=error
  cp package-lock.json node_modules/.ditserve-installed-lock
fi
rm -rf src/gen dist.tmp
./node_modules/.bin/buf generate --template buf.gen.yaml ../proto/src/main/proto
mkdir -p dist.tmp
./node_modules/.bin/esbuild src/main.js --bundle --format=esm --target=es2022 --minify --sourcemap \
  --outfile=dist.tmp/app.js --log-level=warning
cp src/index.html src/style.css dist.tmp/
rm -rf dist && mv dist.tmp dist
echo "web/build.sh: page built in $WEB/dist ($(du -sk dist | cut -f1) KiB)"
