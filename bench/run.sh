#!/usr/bin/env bash
# nixcmd benchmarks (issue 2 and issue 3, "Performance"): nixcmd against mask, just, grep -r
# and a bash loop on the same inputs, in one run, with hyperfine; peak memory with GNU time.
#
#   bench/run.sh [list|show|startup|run|fanout]...     (default: all five)
#
# fanout (issue 4) starts 20 real sshd on loopback ports 22100-22119 with
# tests/support/sshd-harness.sh (root only) and stops them at the end.
#
# Environment:
#   NIXCMD_BIN=PATH     benchmark this binary instead of building the release artifact
#                       (`cargo static-release` on x86_64, else `cargo build --release`)
#   BENCH_WORK=DIR      where inputs and results go (default bench/work, git-ignored)
#   BENCH_RUNS=N        runs of each command in all (default: hyperfine's own choice, at least
#                       10, in each round)
#   BENCH_ROUNDS=K      rounds of each group (default 5): the commands of a group take turns,
#                       K rounds of N/K runs each, and a ratio is the median of the ratios of
#                       the rounds. On a shared VM one command's runs all taken in one stretch,
#                       then the other's, measured the neighbours' load as much as the tools.
#
# Prints a summary table (medians, ratios, targets) and writes it to $BENCH_WORK/results/summary.md
# for BENCHMARKS.md; the raw hyperfine JSON is next to it.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)
work=${BENCH_WORK:-$here/work}
results=$work/results
peers=$here/.peers/bin

groups=("$@")
((${#groups[@]})) || groups=(list show startup run fanout)
for g in "${groups[@]}"; do
  case $g in list | show | startup | run | fanout) ;; *)
    echo "unknown group '$g' (list, show, startup, run, fanout)" >&2
    exit 2
    ;;
  esac
done

say() { printf '\n==> %s\n' "$*"; }

# --- tools ---------------------------------------------------------------------------------
say "tools"
need_apt=()
command -v hyperfine >/dev/null || need_apt+=(hyperfine)
[[ -x /usr/bin/time ]] || need_apt+=(time)
if ((${#need_apt[@]})); then
  echo "installing ${need_apt[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${need_apt[@]}"
fi
"$here/install-peers.sh"

# --- nixcmd ----------------------------------------------------------------------------------
if [[ -n ${NIXCMD_BIN:-} ]]; then
  nixcmd=$NIXCMD_BIN
else
  # The release artifact (.cargo/config.toml): static and position-dependent on x86_64.
  if [[ $(uname -m) == x86_64 ]]; then
    say "cargo static-release"
    nixcmd=${CARGO_TARGET_DIR:-$root/target}/x86_64-unknown-linux-gnu/release/nixcmd
    build=(cargo static-release)
  else
    say "cargo build --release"
    nixcmd=${CARGO_TARGET_DIR:-$root/target}/release/nixcmd
    build=(cargo build --release)
  fi
  if ! (cd "$root" && "${build[@]}"); then
    echo "cargo build --release failed: benchmarking the peers only" >&2
    nixcmd=""
  fi
fi
if [[ -n $nixcmd && ! -x $nixcmd ]]; then
  echo "no nixcmd binary at $nixcmd: benchmarking the peers only" >&2
  nixcmd=""
fi
[[ -n $nixcmd ]] && echo "nixcmd: $nixcmd ($("$nixcmd" --version 2>/dev/null | head -1))"

# --- inputs ----------------------------------------------------------------------------------
say "inputs"
python3 "$here/gen.py" "$work"
rm -rf "$results"
mkdir -p "$results"
state=$(mktemp -d)
harness=$root/tests/support/sshd-harness.sh
cleanup() {
  if [[ -d $state/sshd ]]; then "$harness" stop "$state/sshd" || true; fi
  rm -rf "$state"
}
trap cleanup EXIT
# Run records stay in the work folder between sessions: removing the thousands of files a
# session's runs leave would make the next session's file creations slow (ext4 without a
# journal walks past recently freed inodes), which `nixcmd run` pays and its peers do not.
# Remove bench/work/state by hand when it grows too large, well before measuring.
mkdir -p "$work/state"
export XDG_STATE_HOME=$work/state XDG_CONFIG_HOME=$state/config
# A loop of the 50 lines, each in a new bash exactly as nixcmd starts a step.
cat >"$work/steps50/loop.sh" <<'EOF'
while IFS= read -r line; do
  bash --noprofile --norc -Eeuo pipefail -c "$line"
done <"$(dirname "$0")/lines.sh"
EOF

# Does this nixcmd command work? (The subcommand may not exist yet.) Prints why not.
works() {
  [[ -n $nixcmd ]] || return 1
  local out rc=0
  out=$("$@" </dev/null 2>&1 >/dev/null) || rc=$?
  if ((rc != 0)); then
    echo "SKIP (exit $rc): $*" >&2
    [[ -n $out ]] && printf '%s\n' "$out" | tail -3 | sed 's/^/    /' >&2
    return 1
  fi
}

# hyperfine NAME -- "label=command" ...   (no shell in between: -N)
bench() {
  local name=$1
  shift
  local -a args=()
  local spec
  for spec in "$@"; do
    args+=(-n "${spec%%=*}" "${spec#*=}")
  done
  local rounds=${BENCH_ROUNDS:-5} k
  local -a runs=()
  if [[ -n ${BENCH_RUNS:-} ]]; then
    local per=$(((BENCH_RUNS + rounds - 1) / rounds))
    ((per >= 3)) || per=3
    runs=(--runs "$per")
  fi
  for ((k = 1; k <= rounds; k++)); do
    echo "-- round $k of $rounds"
    hyperfine -N --warmup 3 "${runs[@]}" --style basic --export-json "$results/$name.r$k.json" "${args[@]}"
  done
}

# Peak resident memory in kB over 5 runs (GNU time's "Maximum resident set size").
peak_rss() {
  local label=$1 max=0 kb
  shift
  for _ in 1 2 3 4 5; do
    /usr/bin/time -f '%M' -o "$state/rss" "$@" </dev/null >/dev/null 2>&1 || true
    kb=$(tail -1 "$state/rss")
    [[ $kb =~ ^[0-9]+$ ]] && ((kb > max)) && max=$kb
  done
  echo "$label $max" >>"$results/rss.txt"
  echo "peak RSS $label: $((max / 1024)) MB ($max kB)"
}

w=$work
for g in "${groups[@]}"; do
  case $g in
    list)
      say "list: 1000 command files (nixcmd list vs mask --help vs grep -r)"
      specs=()
      works "$nixcmd" --commands-dir "$w/cmds1000" list &&
        specs+=("nixcmd list (1000)=$nixcmd --commands-dir $w/cmds1000 list")
      specs+=("mask --help (1000)=$peers/mask --maskfile $w/maskfile1000.md --help")
      specs+=("grep -r (1000)=grep -r ^description: $w/cmds1000")
      bench list "${specs[@]}"
      ;;
    show)
      say "show: one 5 MB command file (nixcmd show vs mask --introspect)"
      specs=()
      works "$nixcmd" --commands-dir "$w/big" show big &&
        specs+=("nixcmd show (5 MB)=$nixcmd --commands-dir $w/big show big")
      works "$nixcmd" --commands-dir "$w/big" show big --format json &&
        specs+=("nixcmd show --format json (5 MB)=$nixcmd --commands-dir $w/big show big --format json")
      specs+=("mask --introspect (5 MB)=$peers/mask --maskfile $w/big/big.md --introspect")
      specs+=("mask --help (5 MB)=$peers/mask --maskfile $w/big/big.md --help")
      bench show "${specs[@]}"
      works "$nixcmd" --commands-dir "$w/big" show big &&
        peak_rss "nixcmd-show-5MB" "$nixcmd" --commands-dir "$w/big" show big
      peak_rss "mask-introspect-5MB" "$peers/mask" --maskfile "$w/big/big.md" --introspect
      ;;
    startup)
      say "start-up: nixcmd --version and list of 5 files vs grep -r of the same 5"
      specs=()
      works "$nixcmd" --version && specs+=("nixcmd --version=$nixcmd --version")
      works "$nixcmd" --commands-dir "$w/cmds5" list &&
        specs+=("nixcmd list (5)=$nixcmd --commands-dir $w/cmds5 list")
      specs+=("grep -r (5)=grep -r ^description: $w/cmds5")
      bench startup "${specs[@]}"
      ;;
    run)
      say "run: 50 one-line steps (nixcmd run vs just, one bash per line, vs a bash loop)"
      specs=()
      if works "$nixcmd" --commands-dir "$w/steps50" run run50 --yes; then
        specs+=("nixcmd run (50 steps)=$nixcmd --commands-dir $w/steps50 run run50 --yes")
        # Each bash started in its turn, as before the next step's bash started early (an
        # `env` exec more, ~0.5 ms of the ~80).
        specs+=("nixcmd run, no prestart=env NIXCMD_PRESTART=0 $nixcmd --commands-dir $w/steps50 run run50 --yes")
      fi
      specs+=("just (50 lines)=$peers/just --justfile $w/steps50/justfile --working-directory $w/steps50 run50")
      specs+=("bash -c loop (50 lines)=bash $w/steps50/loop.sh")
      bench run "${specs[@]}"
      works "$nixcmd" --commands-dir "$w/steps50" run run50 --yes &&
        peak_rss "nixcmd-run-50" "$nixcmd" --commands-dir "$w/steps50" run run50 --yes
      peak_rss "just-50" "$peers/just" --justfile "$w/steps50/justfile" --working-directory "$w/steps50" run50
      ;;
    fanout)
      say "fanout: a trivial step on 20 loopback sshd hosts, parallel=10 (nixcmd vs xargs -P 10 ssh)"
      if [[ $(id -u) != 0 || ! -x /usr/sbin/sshd ]]; then
        echo "SKIP: needs root and openssh-server" >&2
        continue
      fi
      ports=()
      for ((p = 22100; p < 22120; p++)); do ports+=("$p"); done
      "$harness" start "$state/sshd" "${ports[@]}"
      fan=$w/fanout
      rm -rf "$fan"
      mkdir -p "$fan/commands"
      {
        echo "[ssh]"
        echo "options = [\"-F\", \"$state/sshd/ssh_config\"]"
        for p in "${ports[@]}"; do
          printf '\n[hosts.h-%s]\ntarget = "h-%s"\n' "$p" "$p"
        done
      } >"$fan/nixcmd.toml"
      cat >"$fan/commands/fan20.md" <<'EOF'
---
description: A trivial step on every host (benchmark)
nixcmd:
  timeout: 1m
---
# fan20

## Steps
### Touch every host
```bash {hosts=all parallel=10}
echo "$SSHD_HARNESS_HOST" >>@FAN@/touched
```
EOF
      sed -i "s|@FAN@|$fan|" "$fan/commands/fan20.md"
      printf 'h-%s\n' "${ports[@]}" >"$fan/hosts.txt"
      cat >"$fan/xargs.sh" <<EOF
xargs -P 10 -I{} ssh -F $state/sshd/ssh_config {} 'echo "\$SSHD_HARNESS_HOST" >>$fan/touched' <$fan/hosts.txt
EOF
      # SSHD_HARNESS_HOST is set by the harness's sshd: a line per host proves the step went
      # through ssh. The remote side is this machine, so the file is the same one.
      specs=()
      rm -f "$fan/touched"
      if works "$nixcmd" --config "$fan/nixcmd.toml" --commands-dir "$fan/commands" run fan20 --yes --dir "$fan" &&
        [[ $(sort -u "$fan/touched" 2>/dev/null | grep -c '^h-') == 20 ]]; then
        specs+=("nixcmd fan-out (20 hosts)=$nixcmd --config $fan/nixcmd.toml --commands-dir $fan/commands run fan20 --yes --dir $fan")
      fi
      if ((${#specs[@]} == 0)) && [[ -n $nixcmd ]]; then
        echo "SKIP: nixcmd did not run the step once per host over ssh ($(sort -u "$fan/touched" 2>/dev/null | grep -c '^h-') of 20 hosts)" >&2
      fi
      specs+=("xargs -P 10 ssh (20 hosts)=bash $fan/xargs.sh")
      bench fanout "${specs[@]}"
      "$harness" stop "$state/sshd"
      ;;
  esac
done

# --- summary ---------------------------------------------------------------------------------
say "summary"
python3 - "$results" "$nixcmd" "$peers" <<'PY'
import datetime, glob, json, os, platform, statistics, subprocess, sys

results, nixcmd, peers = sys.argv[1], sys.argv[2], sys.argv[3]


class Rounds(dict):
    """Each command's median over the rounds (the dict), and the rounds' own medians."""

    def __init__(self, rounds):
        cmds = [c for r in rounds for c in r]
        super().__init__(
            (c, statistics.median(r[c] for r in rounds if c in r)) for c in dict.fromkeys(cmds)
        )
        self.rounds = rounds


def load(name):
    paths = sorted(glob.glob(os.path.join(results, name + ".r*.json")))
    rounds = []
    for path in paths:
        with open(path) as f:
            rounds.append({r["command"]: r["median"] for r in json.load(f)["results"]})
    return Rounds(rounds) if rounds else {}


rss = {}
if os.path.exists(os.path.join(results, "rss.txt")):
    for line in open(os.path.join(results, "rss.txt")):
        k, v = line.split()
        rss[k] = int(v)

rows = []  # (group, command, median ms, compared with, ratio, target, verdict)


def compare(group, med, cmd, ref, limit):
    if cmd not in med:
        rows.append((group, cmd, None, ref, None, f"<= {limit}x", "n/a (did not run)"))
        return
    if ref not in med:
        rows.append((group, cmd, med[cmd], ref, None, f"<= {limit}x", "n/a"))
        return
    # The median of the rounds' ratios: each round's two medians were taken minutes apart at
    # most, so a change in the VM's load between rounds moves both.
    ratios = [r[cmd] / r[ref] for r in med.rounds if cmd in r and ref in r]
    ratio = statistics.median(ratios)
    passed = sum(x <= limit for x in ratios)
    spread = f" (rounds {min(ratios):.2f}-{max(ratios):.2f}x, {passed} of {len(ratios)} within)"
    verdict = ("PASS" if ratio <= limit else "FAIL") + spread
    rows.append((group, cmd, med[cmd], ref, ratio, f"<= {limit}x", verdict))


def plain(group, med):
    for cmd, m in med.items():
        rows.append((group, cmd, m, "", None, "", ""))


m = load("list")
if m:
    plain("list", m)
    compare("list", m, "nixcmd list (1000)", "mask --help (1000)", 1.0)
    compare("list", m, "nixcmd list (1000)", "grep -r (1000)", 1.3)
m = load("show")
if m:
    plain("show", m)
    compare("show", m, "nixcmd show (5 MB)", "mask --introspect (5 MB)", 1.0)
m = load("startup")
if m:
    plain("startup", m)
    compare("startup", m, "nixcmd --version", "grep -r (5)", 1.5)
    compare("startup", m, "nixcmd list (5)", "grep -r (5)", 1.5)
m = load("fanout")
if m:
    plain("fanout", m)
    compare("fanout", m, "nixcmd fan-out (20 hosts)", "xargs -P 10 ssh (20 hosts)", 1.2)
m = load("run")
overhead = None
if m:
    plain("run", m)
    compare("run", m, "nixcmd run (50 steps)", "just (50 lines)", 1.0)
    compare("run", m, "nixcmd run, no prestart", "just (50 lines)", 1.0)
    compare("run", m, "nixcmd run (50 steps)", "nixcmd run, no prestart", 1.0)
    per_round = [
        (r["nixcmd run (50 steps)"] - r["bash -c loop (50 lines)"]) / 50
        for r in m.rounds
        if "nixcmd run (50 steps)" in r and "bash -c loop (50 lines)" in r
    ]
    if per_round:
        overhead = statistics.median(per_round)


def ms(x):
    return "" if x is None else f"{x * 1000:.1f}"


cpu = ""
try:
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
except OSError:
    pass
out = []
out.append(f"Date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M UTC}  ")
out.append(f"Machine: {os.cpu_count()} cores, {cpu}, {platform.system()} {platform.release()}  ")


def ver(*cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except OSError:
        return "?"
    # mask prints a warning line when there is no maskfile.md in the current folder.
    lines = [l for l in p.stdout.strip().splitlines() if not l.startswith("WARNING")]
    return lines[0] if p.returncode == 0 and lines else "?"


tools = []
if nixcmd:
    tools.append(ver(nixcmd, "--version"))
for t in ("mask", "just"):
    tools.append(ver(os.path.join(peers, t), "--version"))
tools.append(ver("hyperfine", "--version"))
tools.append(ver("grep", "--version"))
out.append("Tools: " + ", ".join(tools) + "  ")
out.append("Load average at the end: " + " ".join(open("/proc/loadavg").read().split()[:3]))
out.append("")
out.append("| group | command | median ms |")
out.append("|---|---|---:|")
for g, c, med, ref, ratio, target, verdict in rows:
    if not ref:
        out.append(f"| {g} | {c} | {ms(med)} |")
out.append("")
out.append("| target | nixcmd ms | baseline ms | ratio | limit | verdict |")
out.append("|---|---:|---:|---:|---|---|")
medians = {(g, c): m for g, c, m, ref, *_ in rows if not ref}
for g, c, med, ref, ratio, target, verdict in rows:
    if ref:
        base = medians.get((g, ref))
        r = "" if ratio is None else f"{ratio:.2f}x"
        out.append(f"| {c} vs {ref} | {ms(med)} | {ms(base)} | {r} | {target} | {verdict} |")
out.append("")
limits = {"nixcmd-show-5MB": 40, "nixcmd-run-50": 15}
for k, v in rss.items():
    lim = limits.get(k)
    verdict = "" if lim is None else (f" (target < {lim} MB: " + ("PASS" if v < lim * 1024 else "FAIL") + ")")
    out.append(f"- peak RSS {k}: {v / 1024:.1f} MB{verdict}")
if overhead is not None:
    out.append(f"- nixcmd overhead per step over a bash -c loop: {overhead * 1000:.2f} ms")
text = "\n".join(out) + "\n"
print(text)
with open(os.path.join(results, "summary.md"), "w") as f:
    f.write(text)
PY
echo "raw results: $results"
