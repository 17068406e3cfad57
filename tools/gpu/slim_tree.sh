#!/usr/bin/env bash
# What travels to the GPU machine, and making it fit (docs/gpu/README.md, "Carrying the checks"). The device tool
# sends the working tree with every call (the tracked files that are there, the untracked files git does not
# ignore, and the paths named in `carry`) and refuses more than 64 MiB. The tracked files alone are about 150 MB,
# most of it in four folders the GPU checks do not read from the working tree: the bundled models, the test
# fixtures (the bundle's data carries the ones the checks need), the judge's classifier and the pipeline
# fixtures. This script leaves those out for the device calls and puts them back afterwards, with git's sparse
# checkout: nothing is deleted from the repository, and `git status` stays clean meanwhile.
#
#   tools/gpu/slim_tree.sh out [KEEP...]    leave the big folders out, except the files KEEP (paths in them)
#   tools/gpu/slim_tree.sh back             put everything back
#   tools/gpu/slim_tree.sh size [CARRY...]  bytes that would travel with the carried paths CARRY (default .bundle),
#                                           against the limit; exit status 1 when over it
#
# The fashion-dit call (run_cuda_checks.sh --fashion-dit) keeps that model's files:
#   tools/gpu/slim_tree.sh out models/fashion-dit/config.json models/fashion-dit/weights.safetensors \
#     tools/fixtures/fashion-dit.forward.safetensors
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT"
BIG=(models tools/fixtures tools/eval tools/pipeline-fixtures)
LIMIT=$((64 * 1024 * 1024))

# the sum of the sizes of the NUL-separated paths on stdin that exist (links count as links)
sum_sizes() {
  local total=0 f s
  while IFS= read -r -d '' f; do
    if [ -L "$f" ] || [ -f "$f" ]; then
      s=$(stat -c %s -- "$f")
      total=$((total + s))
    fi
  done
  echo "$total"
}

size() {
  local carry=("$@")
  [ ${#carry[@]} -gt 0 ] || carry=(.bundle)
  local tracked untracked carried=0 c
  tracked=$(git ls-files -z | sum_sizes)
  untracked=$(git ls-files -z --others --exclude-standard | sum_sizes)
  for c in "${carry[@]}"; do
    [ -e "$c" ] || { echo "slim_tree: carried path $c is not here" >&2; continue; }
    carried=$((carried + $(find "$c" \( -type f -o -type l \) -print0 | sum_sizes)))
  done
  local all=$((tracked + untracked + carried))
  printf 'slim_tree: tracked %d MB, untracked %d MB, carried (%s) %d MB: %d MB of %d MB\n' \
    $((tracked / 1000000)) $((untracked / 1000000)) "${carry[*]}" $((carried / 1000000)) $((all / 1000000)) \
    $((LIMIT / 1000000))
  if [ "$all" -gt "$LIMIT" ]; then
    echo "slim_tree: over the device tool's limit of 64 MiB"
    return 1
  fi
}

case "${1:-}" in
  out)
    shift
    patterns=('/*')
    for d in "${BIG[@]}"; do patterns+=("!/$d/*"); done
    for k in "$@"; do
      git ls-files --error-unmatch -- "$k" >/dev/null || { echo "slim_tree: $k is not a tracked file" >&2; exit 2; }
      patterns+=("/$k")
    done
    git sparse-checkout set --no-cone "${patterns[@]}"
    echo "slim_tree: left out ${BIG[*]}${1:+, keeping $*}; back with: tools/gpu/slim_tree.sh back"
    size .bundle || true
    ;;
  back)
    git sparse-checkout disable
    echo "slim_tree: every tracked file is back"
    ;;
  size)
    shift
    size "$@"
    ;;
  *)
    echo "usage: $0 out [KEEP...] | back | size [CARRY...]" >&2
    exit 2
    ;;
esac
