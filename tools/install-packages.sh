#!/usr/bin/env bash
# Installs the Debian packages of the named groups of tools/packages.txt that are missing (apt-get; as root, or
# with sudo when not root). With no group: all of them. `--list GROUP...` prints the packages and installs nothing;
# `--check GROUP...` exits 1 naming the missing ones. Fails (exit 1) when a package cannot be installed: a test that
# needs it must not turn green by skipping.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LIST="${DIT_PACKAGE_LIST:-$ROOT/tools/packages.txt}"
mode=install
case "${1:-}" in --list) mode=list; shift ;; --check) mode=check; shift ;; esac
groups=("$@")
known=$(sed -e 's/#.*//' "$LIST" | awk 'NF { print $1 }' | sort -u | tr '\n' ' ')
for g in "${groups[@]}"; do
  [[ " $known" == *" $g "* ]] || { echo "install-packages: unknown group '$g' (known: $known)" >&2; exit 2; }
done
pkgs=()
while read -r group pkg _; do
  [ -n "${pkg:-}" ] || continue
  if [ "${#groups[@]}" -eq 0 ] || [[ " ${groups[*]} " == *" $group "* ]]; then pkgs+=("$pkg"); fi
done < <(sed -e 's/#.*//' "$LIST")
if [ "$mode" = list ]; then printf '%s\n' "${pkgs[@]}"; exit 0; fi
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ "${#missing[@]}" -eq 0 ] && exit 0
if [ "$mode" = check ]; then echo "install-packages: missing: ${missing[*]}" >&2; exit 1; fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo > /dev/null || { echo "install-packages: not root and no sudo; install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
echo "install-packages: installing ${missing[*]}" >&2
$SUDO apt-get update -qq
# --no-install-recommends: only what the list names and its dependencies, so the list is the whole truth
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" > /dev/null
still=()
for p in "${missing[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || still+=("$p")
done
[ "${#still[@]}" -eq 0 ] || { echo "install-packages: still missing after apt-get: ${still[*]}" >&2; exit 1; }
