#!/usr/bin/env bash
# Benchmark (issue 4): a trivial step fanned out to 20 loopback hosts with parallel=10, against
# the same 20 `ssh … bash -s` calls run by `xargs -P 10`, in the same hyperfine session.
# Needs root, sshd, ssh, hyperfine, python3. Appends the result to BENCHMARKS.md.
#
#   bench/fanout.sh [RUNS]     (default 10 runs each; NIXCMD=path/to/nixcmd to skip the build)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
repo=$PWD
runs=${1:-10}
hosts=20
for tool in hyperfine ssh python3; do
  command -v "$tool" >/dev/null || { echo "fanout.sh: $tool is not installed" >&2; exit 1; }
done
if [[ -z ${NIXCMD:-} ]]; then
  cargo build --release --quiet
  NIXCMD=$repo/target/release/nixcmd
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/nixcmd-bench-fanout.XXXXXX")
cleanup() {
  tests/support/sshd-harness.sh stop "$work/sshd" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# 20 free loopback ports.
mapfile -t ports < <(python3 - "$hosts" <<'PY'
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
PY
)
tests/support/sshd-harness.sh start "$work/sshd" "${ports[@]}" >/dev/null

mkdir -p "$work/project/.nixcmd/commands" "$work/state" "$work/config"
{
  printf '[ssh]\noptions = ["-F", "%s"]\n' "$work/sshd/ssh_config"
  for p in "${ports[@]}"; do printf '\n[hosts.h%s]\ntarget = "h-%s"\n' "$p" "$p"; done
} >"$work/project/nixcmd.toml"
cat >"$work/project/.nixcmd/commands/fanout.md" <<'MD'
---
description: trivial fan-out for the benchmark
nixcmd: {}
---
# Fan-out benchmark
## Steps
```bash {id=trivial hosts=all parallel=10}
true
```
MD
printf '%s\n' "${ports[@]}" >"$work/ports"
printf 'true\n' >"$work/script"

export XDG_STATE_HOME=$work/state XDG_CONFIG_HOME=$work/config NO_COLOR=1
cd "$work/project"
# Warm both paths once (host keys, page cache), and check nixcmd succeeds.
"$NIXCMD" run fanout >/dev/null
hyperfine --style basic --warmup 1 --runs "$runs" --export-json "$work/result.json" \
  -n nixcmd "$NIXCMD run fanout >/dev/null" \
  -n "xargs -P 10 ssh" "xargs -P 10 -I{} sh -c 'ssh -F $work/sshd/ssh_config -o BatchMode=yes h-{} bash -s <$work/script' <$work/ports"

read -r nix xargs ratio < <(python3 - "$work/result.json" <<'PY'
import json, sys
r = {x["command"]: x["median"] for x in json.load(open(sys.argv[1]))["results"]}
n, x = r["nixcmd"], r["xargs -P 10 ssh"]
print(f"{n:.3f} {x:.3f} {n / x:.2f}")
PY
)
cd "$repo"
[[ -f BENCHMARKS.md ]] || printf '# Benchmarks\n' >BENCHMARKS.md
{
  printf '\n## Fan-out: 20 loopback hosts, parallel=10 (`bench/fanout.sh`)\n\n'
  printf -- '- date: %s\n' "$(date -u +%Y-%m-%dT%H:%MZ)"
  printf -- '- machine: %s, %s CPUs, %s\n' "$(uname -sr)" "$(nproc)" "$(ssh -V 2>&1)"
  printf -- '- nixcmd %s, %s runs each (hyperfine, median wall time)\n\n' "$("$NIXCMD" --version | awk '{print $2}')" "$runs"
  printf '| command | median |\n|---|---|\n'
  printf '| `nixcmd run fanout` (hosts=all parallel=10, 20 hosts) | %s s |\n' "$nix"
  printf '| the same 20 `ssh … bash -s` with `xargs -P 10` | %s s |\n' "$xargs"
  printf '\nratio nixcmd / xargs: **%s×** (target: within 1.2×)\n' "$ratio"
} >>BENCHMARKS.md
echo "nixcmd ${nix}s, xargs ${xargs}s, ratio ${ratio}x (appended to BENCHMARKS.md)"
