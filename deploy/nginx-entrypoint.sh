#!/bin/sh
# Entry point of the nginx image (deploy/nginx.Dockerfile). nginx resolves the replicas' names (dit-1, dit-2) only
# when it loads its configuration, and a replica container that is restarted or recreated comes back with a new
# address: a loop resolves $DIT_LB_REPLICAS every $DIT_LB_RESOLVE_SECONDS and reloads nginx when an address changed
# (a reload while a name does not resolve fails, and nginx keeps its configuration until the name is back).
set -eu
REPLICAS="${DIT_LB_REPLICAS:-dit-1 dit-2}"
EVERY="${DIT_LB_RESOLVE_SECONDS:-5}"
resolve() {
  for h in $REPLICAS; do echo "$h=$(getent hosts "$h" | awk '{print $1}' | sort | tr '\n' ' ')"; done
}
# nginx does not start while a name is unknown: wait for the replicas' names (up to 120 s)
i=0
while resolve | grep -q '= *$' && [ "$i" -lt 240 ]; do i=$((i + 1)); sleep 0.5; done
(
  last=$(resolve)
  while sleep "$EVERY"; do
    now=$(resolve)
    if [ "$now" != "$last" ]; then
      echo "dit-nginx: replica addresses changed: $(echo $now); reloading" >&2
      nginx -e stderr -s reload || true
      last=$now
    fi
  done
) &
exec nginx -e stderr -g 'daemon off;'
