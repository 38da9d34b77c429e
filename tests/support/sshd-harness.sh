#!/usr/bin/env bash
# Start and stop real OpenSSH servers on loopback for nixcmd's multi-host tests.
#
#   sshd-harness.sh start DIR PORT...   start one sshd per PORT, write DIR/ssh_config
#   sshd-harness.sh stop DIR            stop every sshd started in DIR, and what its sessions left
#   sshd-harness.sh procs DIR [PORT]    list pids of processes started by sessions (see README.md)
#   sshd-harness.sh status DIR          one line per port: PORT PID up|down
#
# After `start`, `ssh -F DIR/ssh_config h-PORT CMD` runs CMD as root on "host" h-PORT.
# Must run as root (sshd drops privileges into the logged-in user; only root can do that).
# See tests/support/README.md.
set -euo pipefail

SSHD=${SSHD:-/usr/sbin/sshd}
# How long `start` waits for each port to answer with an SSH banner.
WAIT_SECONDS=${SSHD_HARNESS_WAIT:-10}
# More variables every session gets at `start` (`NAME=VALUE` words, no blanks in a value), e.g.
# `XDG_STATE_HOME=…` for a host whose state folder is the test's own.
SSHD_HARNESS_SETENV=${SSHD_HARNESS_SETENV:-}

die() {
  echo "sshd-harness: $*" >&2
  exit 1
}

usage() {
  sed -n '2,11p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
  exit 2
}

abs_dir() {
  mkdir -p -- "$1"
  (cd -- "$1" && pwd -P)
}

check_port() {
  if ! [[ $1 =~ ^[0-9]+$ ]] || (($1 < 1 || $1 > 65535)); then
    die "not a port number: '$1'"
  fi
}

# Alive and not a zombie (an exited daemon stays a zombie until init reaps it).
pid_alive() {
  local state
  [[ ${1:-} =~ ^[0-9]+$ ]] || return 1
  state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $state != Z* ]]
}

# Does 127.0.0.1:PORT answer with an SSH banner?
banner_ok() {
  local banner
  # shellcheck disable=SC2016 # $1 is expanded by the inner bash
  banner=$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && head -c 4 <&3' _ "$1" 2>/dev/null) || return 1
  [[ $banner == "SSH-" ]]
}

# Every descendant of the given pids (children first listed after their parent).
descendants() {
  local -a queue=("$@") out=()
  local pid child
  while ((${#queue[@]})); do
    pid=${queue[0]}
    queue=("${queue[@]:1}")
    while read -r child; do
      [[ -n $child ]] || continue
      out+=("$child")
      queue+=("$child")
    done < <(ps -o pid= --ppid "$pid" 2>/dev/null | tr -d ' ')
  done
  ((${#out[@]})) && printf '%s\n' "${out[@]}"
  return 0
}

# Processes whose environment carries this harness's marker (set by sshd's SetEnv in every
# session, so it survives `setsid`, `nohup`, double forks and re-parenting to init).
marked_procs() {
  local dir=$1 port=${2:-} env_file pid
  for env_file in /proc/[0-9]*/environ; do
    pid=${env_file#/proc/}
    pid=${pid%/environ}
    [[ $pid == "$$" || $pid == "${BASHPID:-}" ]] && continue
    # Unreadable (gone, or a kernel thread): skip.
    grep -qsazxF "SSHD_HARNESS_DIR=$dir" "$env_file" || continue
    if [[ -n $port ]]; then
      grep -qsazxF "SSHD_HARNESS_HOST=h-$port" "$env_file" || continue
    fi
    echo "$pid"
  done
}

listener_pids() {
  local dir=$1 f pid
  for f in "$dir"/sshd-*.pid; do
    [[ -e $f ]] || continue
    pid=$(<"$f")
    pid_alive "$pid" && echo "$pid"
  done
  return 0
}

kill_all() {
  local sig=$1
  shift
  (($#)) || return 0
  kill "-$sig" "$@" 2>/dev/null || true
}

stop_dir() {
  local dir=$1 i
  local -a listeners sessions marked left
  mapfile -t listeners < <(listener_pids "$dir")
  mapfile -t sessions < <(((${#listeners[@]})) && descendants "${listeners[@]}")
  # Listeners first, so that nothing new connects while the sessions go.
  kill_all TERM "${listeners[@]}"
  mapfile -t marked < <(marked_procs "$dir")
  kill_all TERM "${sessions[@]}" "${marked[@]}"
  for ((i = 0; i < 50; i++)); do
    left=()
    for pid in "${listeners[@]}" "${sessions[@]}" "${marked[@]}"; do
      pid_alive "$pid" && left+=("$pid")
    done
    ((${#left[@]})) || break
    sleep 0.1
  done
  kill_all KILL "${left[@]}"
  mapfile -t marked < <(marked_procs "$dir")
  kill_all KILL "${marked[@]}"
  rm -f "$dir"/sshd-*.pid
}

write_sshd_config() {
  local dir=$1 port=$2
  cat >"$dir/sshd_config-$port" <<EOF
# Written by tests/support/sshd-harness.sh: a throwaway sshd for tests, loopback only.
Port $port
ListenAddress 127.0.0.1
HostKey $dir/ssh_host_ed25519_key
PidFile $dir/sshd-$port.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
HostbasedAuthentication no
StrictModes no
UsePAM no
UseDNS no
PrintMotd no
PrintLastLog no
X11Forwarding no
AllowTcpForwarding no
LogLevel ERROR
# Fan-out tests open many connections at once: the default (10:30:100) drops some at random.
MaxStartups 200
MaxSessions 100
AcceptEnv LANG LC_* NIXCMD_*
# Marks every process a session starts (a client cannot override SetEnv); then the test's own
# NAME=VALUE words, if any.
SetEnv SSHD_HARNESS_DIR=$dir SSHD_HARNESS_HOST=h-$port${SSHD_HARNESS_SETENV:+ $SSHD_HARNESS_SETENV}
Subsystem sftp internal-sftp
EOF
}

write_ssh_config() {
  local dir=$1 port
  {
    echo "# Written by tests/support/sshd-harness.sh: one Host h-PORT per running sshd."
    while read -r port; do
      [[ -f $dir/sshd-$port.pid ]] || continue
      pid_alive "$(<"$dir/sshd-$port.pid")" || continue
      cat <<EOF

Host h-$port
  HostName 127.0.0.1
  Port $port
  User root
  IdentityFile $dir/id_ed25519
  IdentitiesOnly yes
  PasswordAuthentication no
  StrictHostKeyChecking no
  UserKnownHostsFile /dev/null
  BatchMode yes
  LogLevel ERROR
EOF
    done <"$dir/ports"
  } >"$dir/ssh_config.tmp"
  mv "$dir/ssh_config.tmp" "$dir/ssh_config"
}

start() {
  (($# >= 2)) || usage
  [[ $(id -u) == 0 ]] || die "must run as root (sshd needs it to start sessions)"
  [[ -x $SSHD ]] || die "$SSHD not found: apt-get install openssh-server"
  command -v ssh-keygen >/dev/null || die "ssh-keygen not found: apt-get install openssh-client"
  local dir port pid
  dir=$(abs_dir "$1")
  shift
  for port in "$@"; do check_port "$port"; done
  chmod 700 "$dir"
  # sshd's privilege-separation directory (normally made by systemd's RuntimeDirectory).
  mkdir -p /run/sshd
  chmod 755 /run/sshd

  [[ -f $dir/ssh_host_ed25519_key ]] ||
    ssh-keygen -q -t ed25519 -N '' -C "sshd-harness host key" -f "$dir/ssh_host_ed25519_key"
  [[ -f $dir/id_ed25519 ]] ||
    ssh-keygen -q -t ed25519 -N '' -C "sshd-harness client key" -f "$dir/id_ed25519"
  cp "$dir/id_ed25519.pub" "$dir/authorized_keys"
  chmod 600 "$dir/authorized_keys" "$dir/id_ed25519"

  for port in "$@"; do
    # Restarting a port of this DIR: stop the old listener first.
    if [[ -f $dir/sshd-$port.pid ]]; then
      pid=$(<"$dir/sshd-$port.pid")
      if pid_alive "$pid"; then
        kill "$pid" 2>/dev/null || true
        for _ in {1..50}; do pid_alive "$pid" || break; sleep 0.1; done
      fi
      rm -f "$dir/sshd-$port.pid"
    fi
    if banner_ok "$port" || (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      die "port $port on 127.0.0.1 is already in use by another process"
    fi
    write_sshd_config "$dir" "$port"
    "$SSHD" -t -f "$dir/sshd_config-$port" || die "sshd rejected $dir/sshd_config-$port"
    : >"$dir/sshd-$port.log"
    # sshd daemonizes itself once it listens, and writes its pid file.
    "$SSHD" -f "$dir/sshd_config-$port" -E "$dir/sshd-$port.log" ||
      die "sshd failed to start on port $port: $(cat "$dir/sshd-$port.log")"
  done

  local deadline=$((SECONDS + WAIT_SECONDS))
  for port in "$@"; do
    until banner_ok "$port"; do
      if ((SECONDS >= deadline)); then
        echo "sshd-harness: port $port did not answer within ${WAIT_SECONDS}s; its log:" >&2
        cat "$dir/sshd-$port.log" >&2 || true
        stop_dir "$dir"
        exit 1
      fi
      sleep 0.05
    done
  done

  # Remember the ports, so that a second `start` on the same DIR keeps the earlier ones.
  printf '%s\n' "$@" >>"$dir/ports"
  sort -un -o "$dir/ports" "$dir/ports"
  write_ssh_config "$dir"
  echo "sshd-harness: up on 127.0.0.1 port(s) $*; use: ssh -F $dir/ssh_config h-$1 true"
}

main() {
  (($#)) || usage
  local cmd=$1 dir port pid
  shift
  case $cmd in
    start) start "$@" ;;
    stop)
      (($# == 1)) || usage
      [[ -d $1 ]] || exit 0
      stop_dir "$(abs_dir "$1")"
      ;;
    procs)
      (($# == 1 || $# == 2)) || usage
      dir=$(abs_dir "$1")
      marked_procs "$dir" "${2:-}"
      ;;
    status)
      (($# == 1)) || usage
      dir=$(abs_dir "$1")
      [[ -f $dir/ports ]] || exit 0
      while read -r port; do
        pid=$(cat "$dir/sshd-$port.pid" 2>/dev/null || true)
        if pid_alive "$pid"; then echo "$port $pid up"; else echo "$port - down"; fi
      done <"$dir/ports"
      ;;
    -h | --help | help) usage ;;
    *) usage ;;
  esac
}

main "$@"
