#!/usr/bin/env bash
# Install the peer tools the benchmarks compare nixcmd against (just, mask)
# into bench/.peers (git-ignored). Idempotent: does nothing when both are there.
# Compiles from crates.io with the machine's cargo; takes a few minutes the first time.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/.peers"

missing=()
for tool in just mask; do
  if [[ ! -x "$root/bin/$tool" ]]; then
    missing+=("$tool")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "peers already installed in $root: $("$root/bin/just" --version), $("$root/bin/mask" --version)"
  exit 0
fi

echo "==> cargo install --root $root ${missing[*]} --locked"
# A separate target dir keeps these builds out of the project's target/.
CARGO_TARGET_DIR="${PEERS_TARGET_DIR:-$root/target}" \
  cargo install --root "$root" --locked "${missing[@]}"
# The build folder (~270 MB) is not needed once the binaries are installed.
[[ -n ${PEERS_TARGET_DIR:-} ]] || rm -rf "$root/target"
"$root/bin/just" --version
"$root/bin/mask" --version
