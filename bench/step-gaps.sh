#!/usr/bin/env bash
# Where a step's time goes, per step of a 50-step run, from the kernel's own trace points
# (sched_process_exit, _fork, _exec; `perf` from Debian's linux-perf, as root):
#   exit->fork  from a step's bash exiting to the next step's clone (the runner's own work)
#   fork->exec  from that clone to the new bash's exec (the spawn)
#   exec->exit  bash's own lifetime
# Medians and quartiles over 20 runs (980 step boundaries). Trace points make every fork and
# exec slower: compare tools measured in the same session, not with hyperfine's numbers.
# nixcmd runs with NIXCMD_PRESTART=0: a bash started ahead (during the step before) has no
# exit->fork gap to measure; this measures the path of a step whose bash starts in its turn.
#
#   bench/step-gaps.sh [NIXCMD_BIN]      # nixcmd run vs just on bench/work/steps50
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$here/../target/x86_64-unknown-linux-gnu/release/nixcmd}
work=$here/work
[[ -d $work/steps50 ]] || python3 "$here/gen.py" "$work" >/dev/null
state=$(mktemp -d)
trap 'rm -rf "$state" "$state.data"' EXIT

gaps() {
  local label=$1; shift
  perf record -q -e sched:sched_process_exec -e sched:sched_process_exit \
    -e sched:sched_process_fork -o "$state.data" -- \
    bash -c "cd '$work'; for i in \$(seq 20); do $* >/dev/null 2>&1; done" 2>/dev/null
  perf script -i "$state.data" -F comm,pid,time,event,trace 2>/dev/null |
    python3 -c '
import sys, re, statistics as st
label = sys.argv[1]
forked, start, last_exit = {}, {}, None
g1, g2, life = [], [], []
for line in sys.stdin:
    m = re.match(r"\s*(\S+)\s+(\d+)\s+([\d.]+):\s+(\S+):\s*(.*)", line)
    if not m:
        continue
    comm, pid, t, event, rest = m.groups()
    pid, t, event = int(pid), float(t), event.split(":")[-1]
    if event == "sched_process_fork":
        child = int(re.search(r"child_pid=(\d+)", rest).group(1))
        forked[child] = (t, last_exit)
    elif event == "sched_process_exec":
        if "filename=/usr/bin/bash" in rest and pid in forked:
            at, exited = forked[pid]
            if exited is not None and at - exited < 0.01:
                g1.append(at - exited)
                g2.append(t - at)
            start[pid] = t
        last_exit = None
    elif event == "sched_process_exit" and comm == "bash" and pid in start:
        life.append(t - start.pop(pid))
        last_exit = t
def q(a):
    q1, _, q3 = st.quantiles(a, n=4)
    return "%4.0f µs [%.0f–%.0f]" % (st.median(a) * 1e6, q1 * 1e6, q3 * 1e6)
print("%-8s n=%d  exit->fork %s  fork->exec %s  exec->exit %s" % (label, len(g1), q(g1), q(g2), q(life)))
' "$label"
}

for round in 1 2 3; do
  gaps nixcmd env NIXCMD_PRESTART=0 XDG_STATE_HOME="$state" "$bin" --commands-dir steps50 run run50 --yes
  gaps just "$here/.peers/bin/just" -f steps50/justfile run50
done
