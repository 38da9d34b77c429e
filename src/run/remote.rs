//! Running one step on one host over OpenSSH: the wrapper script sent on stdin to
//! `ssh … TARGET bash -s`, and the local side that feeds it, streams its output and stops it.
//!
//! The step's environment travels inside the wrapper as `export K=$'…'` lines (quoted here,
//! in Rust), never on the remote command line, so secrets stay out of `ps`. On the host the
//! wrapper runs the step in its own session (`setsid`), keeps reading its stdin, and kills the
//! step's process group when a `stop` line arrives, when stdin reaches EOF (nixcmd died or the
//! connection dropped — sshd does not signal a session's processes when its client goes away),
//! or when its own deadline passes (a partitioned network). When the step ends, whatever it
//! left in its group, or anywhere with its token in the environment, is stopped too.
//!
//! The wrapper reports to nixcmd among the step's output, in lines that start with [`MARK`]
//! and a key made anew for each attempt, which the step never sees (it is in no environment
//! and no file): a step whose output imitates those lines is only printing. Among them are
//! the exports of the host's `$NIXCMD_ENV` whose names mark them as secrets: before the step
//! starts and after it ended (on stderr), and while it runs, whenever the file changed, on
//! the stream the step prints on, before what it printed next (the step's stdout and stderr
//! pass through a filter of the wrapper). nixcmd redacts them from then on, as it does the
//! exports of this machine. Their values travel over the same connection as the step's
//! output, which is where they would otherwise be printed.

use crate::process::{Cancel, Observed, Stream};
use crate::run::redact::MARKERS;
use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Marks the wrapper's own lines in the output stream (ASCII record separator), followed by
/// the attempt's key and a space.
const MARK: &str = "\u{1e}nixcmd:";

/// The longest part of a value in one line of the wrapper (in characters, escaped): a line
/// longer than the longest output line nixcmd takes whole (64 KiB) would be cut, and the rest
/// shown as output.
const CHUNK_CHARS: usize = 8192;

/// A key for one attempt's wrapper lines: 128 random bits, hex.
pub fn new_key() -> String {
    crate::mcp::approver::new_token()
}

/// Quotes any string for bash as `$'…'`: every byte that is not a safe printable ASCII
/// character is written as an escape, so nothing in the value is ever interpreted.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 3);
    out.push_str("$'");
    for b in s.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'\'' => out.push_str("\\'"),
            b'\n' => out.push_str("\\n"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out.push('\'');
    out
}

fn valid_name(k: &str) -> bool {
    !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !k.starts_with(|c: char| c.is_ascii_digit())
}

/// The host's folder for one run under its `nixcmd/runs/`, `RUN_ID/hosts/HOST`: per run *and*
/// inventory host (two inventory names for one machine, or loopback test hosts, must not
/// share a `$NIXCMD_STATE`). In `hosts/`, a folder of its own: when the host is this machine
/// and user with the same state folder, `RUN_ID/` is this run's own folder, whose `env`,
/// `logs`, `scripts` and `state` a host of that name would have collided with.
pub fn state_key(run_id: &str, host: &str) -> String {
    format!("{run_id}/hosts/{host}")
}

/// What the wrapper needs to know.
pub struct Wrapper<'a> {
    pub script: &'a str,
    /// Exported to the step (names that are not shell identifiers are dropped).
    pub env: &'a [(String, String)],
    pub token: &'a str,
    /// Starts the wrapper's own lines (see [`new_key`]).
    pub key: &'a str,
    /// The names listed in `nixcmd.secrets`: their exports are reported as secrets too.
    pub secrets: &'a [String],
    /// The folder under the host's `nixcmd/runs/`: see [`state_key`].
    pub state_key: &'a str,
    pub timeout: Duration,
    pub grace: Duration,
}

/// The bash program sent on stdin. It is one function definition and one call, so that bash
/// has read all of it before running anything, and what follows on stdin (nothing, or a
/// `stop` line) is left for the watcher.
pub fn wrapper(w: &Wrapper) -> String {
    let mut env = String::new();
    for (k, v) in w.env {
        // NIXCMD_STATE and NIXCMD_ENV name local paths: on the host they are per-run folders.
        if valid_name(k) && k != "NIXCMD_STATE" && k != "NIXCMD_ENV" {
            env.push_str(&format!("  export {k}={}\n", quote(v)));
        }
    }
    let ticks = (w.grace.as_millis() / 100).max(1);
    // The host enforces the limit on its own too, a little later than nixcmd does, for when
    // nixcmd cannot reach it any more.
    let deadline = w.timeout.as_secs() + 3 * w.grace.as_secs() + 30;
    format!(
        r#"__nixcmd_main() {{
  umask 077
  local __nixcmd_tok={tok} __nixcmd_d __nixcmd_state __nixcmd_seen= pid po pe rc w n
  printf '{mark}started\n' >&2
  # A relative XDG_STATE_HOME is ignored, as the XDG Base Directory spec says.
  case ${{XDG_STATE_HOME-}} in /*) __nixcmd_state=$XDG_STATE_HOME ;; *) __nixcmd_state=${{HOME:-/tmp}}/.local/state ;; esac
  __nixcmd_state="$__nixcmd_state/nixcmd/runs/"{run}
  mkdir -p "$__nixcmd_state/state" && : >>"$__nixcmd_state/env" || __nixcmd_state=$(mktemp -d "${{TMPDIR:-/tmp}}/nixcmd-state.XXXXXXXX")
  mkdir -p "$__nixcmd_state/state"; : >>"$__nixcmd_state/env"
  __nixcmd_d=$(mktemp -d "${{TMPDIR:-/tmp}}/nixcmd.XXXXXXXX") || {{ echo "nixcmd: cannot create a temporary folder on $(hostname)" >&2; exit 125; }}
{env}  export NIXCMD_STATE="$__nixcmd_state/state" NIXCMD_ENV="$__nixcmd_state/env"
  # $NIXCMD_ENV read as nixcmd reads it (src/run/env_file.rs): `export` sets what it
  # exports, `check` warns about each line that sets nothing, `tell` does neither; all
  # tell the secrets.
  __nixcmd_warn() {{ printf '{mark}warn $NIXCMD_ENV line %s\n' "$1" >&2; }}
  # An export whose name marks it as a secret (the rule of src/run/redact.rs), to nixcmd:
  # backslashes, newlines and carriage returns escaped, in parts of a line each.
  __nixcmd_secret() {{
    case $1 in {secret_names}) ;; *) return 0 ;; esac
    local v=$2 bs='\'
    v=${{v//"$bs"/"$bs$bs"}} v=${{v//$'\n'/"${{bs}}n"}} v=${{v//$'\r'/"${{bs}}r"}}
    while ((${{#v}} > {chunk})); do
      printf '{mark}secret+ %s %s\n' "$1" "${{v:0:{chunk}}}" >&2
      v=${{v:{chunk}}}
    done
    printf '{mark}secret %s %s\n' "$1" "$v" >&2
  }}
  # Whether NAME=VALUE is short enough for Linux to pass to a program (`too_long` in
  # src/run/env_file.rs); else it is not exported, and `check` says so.
  __nixcmd_fits() {{
    local LC_ALL=C
    __nixcmd_len=$(( ${{#1}} + ${{#2}} + 2 ))
    (( __nixcmd_len <= {max_env} ))
  }}
  __nixcmd_too_long() {{
    __nixcmd_warn "$1: \`$2\` would be $__nixcmd_len bytes, and Linux passes at most 128 KiB per environment variable: not set (write a large value to a file and export its path)"
  }}
  __nixcmd_env() {{
    local __l __n=0 __k __v __d= __at=0 __first __name __eq __own __nixcmd_len
    while IFS= read -r __l || [[ -n $__l ]]; do
      __n=$((__n + 1))
      __l=${{__l%$'\r'}}
      if [[ -n $__d ]]; then
        if [[ $__l == "$__d" ]]; then
          if [[ -n $__name && -z $__own ]] && ! __nixcmd_fits "$__name" "$__v"; then
            [[ $1 == check ]] && __nixcmd_too_long "$__at" "$__name"
          else
            [[ -n $__name && $1 == export && -z $__own ]] && export "$__name=$__v"
          fi
          [[ -n $__name && $1 == check && -n $__own ]] && __nixcmd_warn "$__at: \`$__name\` is set by nixcmd itself: not set"
          [[ -n $__name ]] && __nixcmd_secret "$__name" "$__v"
          __d=
        elif [[ -n $__first ]]; then
          __v=$__l __first=
        else
          __v+=$'\n'$__l
        fi
        continue
      fi
      __k=${{__l%%=*}}
      if [[ $__l == *=* && $__k != *'<<'* ]]; then
        __v=${{__l#*=}} __eq=1
      elif [[ $__l == *'<<'* ]]; then
        __k=${{__l%%<<*}} __d=${{__l#*<<}} __v= __first=1 __at=$__n __eq=
      else
        [[ $1 == check && $__l == *[![:space:]]* ]] && __nixcmd_warn "$__n: neither \`NAME=VALUE\` nor \`NAME<<DELIMITER\`: ignored"
        continue
      fi
      __k=${{__k#"${{__k%%[![:space:]]*}}"}} __k=${{__k%"${{__k##*[![:space:]]}}"}}
      # `export` and any blanks after it, as bash takes it.
      [[ $__k =~ ^export[[:space:]]+(.*)$ ]] && __k=${{BASH_REMATCH[1]}}
      __name= __own=
      [[ $__k =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && __name=$__k
      # nixcmd's own names set nothing (`is_nixcmd_own` in src/run/env_file.rs).
      [[ $__name == NIXCMD_* || $__name == ARGUMENTS ]] && __own=1
      if [[ -n $__eq ]]; then
        if [[ -n $__name && -z $__own ]] && ! __nixcmd_fits "$__name" "$__v"; then
          [[ $1 == check ]] && __nixcmd_too_long "$__n" "$__name"
          __nixcmd_secret "$__name" "$__v"
        elif [[ -n $__name ]]; then
          [[ $1 == export && -z $__own ]] && export "$__name=$__v"
          [[ $1 == check && -n $__own ]] && __nixcmd_warn "$__n: \`$__name\` is set by nixcmd itself: not set"
          __nixcmd_secret "$__name" "$__v"
        else
          [[ $1 == check ]] && __nixcmd_warn "$__n: the text before \`=\` is not a variable name (letters, digits and \`_\`, not starting with a digit): ignored"
        fi
      elif [[ $1 != check ]]; then
        :
      elif [[ -z $__d && -n $__name ]]; then
        __nixcmd_warn "$__n: \`$__name<<\` has no delimiter after \`<<\`: ignored"
      elif [[ -z $__d ]]; then
        __nixcmd_warn "$__n: a \`<<\` without a delimiter after it: ignored"
      elif [[ -z $__name ]]; then
        __nixcmd_warn "$__n: the text before \`<<\` is not a variable name (letters, digits and \`_\`, not starting with a digit): ignored"
      fi
    done <"$NIXCMD_ENV"
    # A value not ended yet may be printed all the same: redacted too, as on this machine.
    [[ -n $__d && -n $__name ]] && __nixcmd_secret "$__name" "$__v"
    if [[ -n $__d && -n $__name && $1 == check ]]; then
      __nixcmd_warn "$__at: \`$__name<<$__d\` has no line \`$__d\` after it to end the value: \`$__name\` not set"
    fi
  }}
  # What the file holds as the step starts: the secrets in it are told already.
  {{ IFS= read -r -d '' __nixcmd_seen; }} 2>/dev/null <"$NIXCMD_ENV"
  __nixcmd_env export
  # The secrets are told: nixcmd may show the step's output from here on.
  printf '{mark}ready\n' >&2
  # The step's stdout (`out`) or stderr (`err`) on its way to nixcmd, a read at a time:
  # before passing on what it read, it tells the secrets of the file if the file changed
  # since, on that same stream (sshd's two pipes reach nixcmd in no set order), so nixcmd
  # knows them before it sees the output. Reading first makes that sure: output printed
  # after an export was written is read after it. A read is one `dd` (whatever the pipe
  # holds, partial lines and `\r` included, NUL bytes too); after a small one it waits a
  # little, so a step that prints a line at a time does not cost a process per line.
  __nixcmd_pass() {{
    local f="$__nixcmd_d/$1.read" l n p
    while LC_ALL=C dd bs=65536 count=1 of="$f" 2>"$f.dd"; do
      {{ IFS= read -r l; read -r _; read -r n _; }} <"$f.dd"
      [[ $l == 0+0* ]] && break
      {{ IFS= read -r -d '' p; }} 2>/dev/null <"$NIXCMD_ENV"
      if [[ $p != "$__nixcmd_seen" ]]; then
        __nixcmd_seen=$p
        [[ -f $NIXCMD_ENV ]] && __nixcmd_env tell 2>&1
      fi
      while IFS= read -r -d '' p; do printf '%s\0' "$p"; done <"$f"
      printf '%s' "$p"
      [[ $n =~ ^[0-9]+$ ]] && ((n < 4096)) && read -r -t 0.02 _ <>"$__nixcmd_d/nap"
    done
  }}
  printf '%s' {script} >"$__nixcmd_d/step.sh"
  # Is anything but a zombie left in the group? (init may reap late; kill -0 sees zombies.)
  __nixcmd_group() {{
    kill -0 -- "-$1" 2>/dev/null || return 1
    local f l st pg
    for f in /proc/[0-9]*/stat; do
      {{ read -r l <"$f"; }} 2>/dev/null || continue
      l=${{l##*) }}
      read -r st _ pg _ <<<"$l"
      [ "$pg" = "$1" ] && [ "$st" != Z ] && return 0
    done
    return 1
  }}
  __nixcmd_stop() {{
    local sig i
    for sig in INT TERM KILL; do
      __nixcmd_group "$1" || return 0
      kill -s "$sig" -- "-$1" 2>/dev/null
      for ((i = 0; i < {ticks}; i++)); do __nixcmd_group "$1" || return 0; sleep 0.1; done
    done
  }}
  mkfifo "$__nixcmd_d/out" "$__nixcmd_d/err" "$__nixcmd_d/nap" "$__nixcmd_d/wait" "$__nixcmd_d/tick" || {{ echo "nixcmd: cannot create a pipe on $(hostname)" >&2; exit 125; }}
  __nixcmd_pass out <"$__nixcmd_d/out" &
  po=$!
  __nixcmd_pass err <"$__nixcmd_d/err" >&2 &
  pe=$!
  if command -v setsid >/dev/null; then
    NIXCMD_STEP_TOKEN=$__nixcmd_tok setsid bash --noprofile --norc -Eeuo pipefail "$__nixcmd_d/step.sh" </dev/null >"$__nixcmd_d/out" 2>"$__nixcmd_d/err" &
  else
    NIXCMD_STEP_TOKEN=$__nixcmd_tok bash --noprofile --norc -Eeuo pipefail "$__nixcmd_d/step.sh" </dev/null >"$__nixcmd_d/out" 2>"$__nixcmd_d/err" &
  fi
  pid=$!
  (
    trap '' INT TERM HUP
    read -r -t {deadline} _ || true
    __nixcmd_stop "$pid"
  ) &
  w=$!
  disown "$w"
  # Waited for with builtins only, not with `wait`: bash's `wait` (or the next program it
  # runs) reports a step that a signal killed as `main: line N: PID Killed …` on stderr,
  # among the step's output, and its status is 128+N like that of a step that exited with
  # it. `jobs -l` tells the two apart (a status of its own or the exit code) and marks the
  # job as reported, so bash says nothing. The naps grow from 1 ms to 50 ms: a short step is
  # not held up, a long one costs few wake-ups.
  local nap=1 t
  while kill -0 "$pid" 2>/dev/null; do
    printf -v t '0.%03d' "$nap"
    read -r -t "$t" _ <>"$__nixcmd_d/tick"
    nap=$((nap * 2 > 50 ? 50 : nap * 2))
  done
  LC_ALL=C jobs -l >"$__nixcmd_d/jobs"
  wait "$pid"
  rc=$?
  if ((rc > 128)); then
    local j p st
    while read -r j p st; do
      [[ $p == "$pid" ]] || continue
      [[ $st =~ (^|[^0-9])$rc([^0-9]|$) ]] || printf '{mark}signal %s\n' "$((rc - 128))" >&2
    done <"$__nixcmd_d/jobs"
  fi
  kill -KILL "$w" 2>/dev/null
  if __nixcmd_group "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null; sleep 0.2; kill -KILL -- "-$pid" 2>/dev/null
  fi
  local left
  left=$(grep -lsazxF -- "NIXCMD_STEP_TOKEN=$__nixcmd_tok" /proc/[0-9]*/environ 2>/dev/null | sed -n 's,^/proc/\([0-9]*\)/environ$,\1,p')
  if [ -n "$left" ]; then
    kill -TERM $left 2>/dev/null; sleep 0.2; kill -KILL $left 2>/dev/null
  fi
  # All the step's output reaches nixcmd before the wrapper's last lines. A process that
  # escaped both group and token (it cleared its environment) may hold the pipes open: it
  # is not waited for long.
  ( read -r -t 5 _ <>"$__nixcmd_d/wait"; kill "$po" "$pe" ) 2>/dev/null &
  w=$!
  # A filter waiting after a small read stops waiting: nothing more is coming.
  exec {{n}}<>"$__nixcmd_d/nap"
  printf '\n\n' >&"$n"
  wait "$po" "$pe"
  exec {{n}}>&-
  kill "$w" 2>/dev/null
  rm -rf "$__nixcmd_d"
  # A short line first: a last line the step left unended is joined to it, not to a secret's
  # (a line longer than nixcmd takes whole would be cut, and its end shown as output).
  printf '{mark}ended\n' >&2
  __nixcmd_env check
  printf '{mark}exit %s\n' "$rc" >&2
  exit "$rc"
}}
__nixcmd_main
"#,
        tok = quote(w.token),
        mark = format!("{}{} ", MARK.replace('\u{1e}', "\\036"), w.key),
        secret_names = secret_name_pattern(w.secrets),
        chunk = CHUNK_CHARS,
        max_env = crate::run::env_file::MAX_ENV_STRING,
        run = quote(w.state_key),
        script = quote(w.script),
    )
}

/// The bash `case` patterns of the names whose values are secrets: those of
/// [`crate::run::redact::is_secret_name`], built from the same list.
fn secret_name_pattern(extra: &[String]) -> String {
    let mut patterns: Vec<String> = MARKERS
        .iter()
        .map(|m| {
            let letters: String = m
                .chars()
                .map(|c| format!("[{}{}]", c.to_ascii_uppercase(), c.to_ascii_lowercase()))
                .collect();
            format!("*{letters}*")
        })
        .collect();
    // A name that is not a shell identifier is never exported: it has nothing to match.
    patterns.extend(extra.iter().filter(|e| valid_name(e)).cloned());
    patterns.join("|")
}

/// A secret the wrapper reports in lines `secret+ NAME PART` … `secret NAME PART`.
#[derive(Default)]
struct SecretParts {
    name: String,
    value: String,
}

impl SecretParts {
    /// Takes one such line (`word`: `secret` or `secret+`; `rest`: `NAME PART`); at the last
    /// part, the secret's name and value.
    fn take(&mut self, word: &str, rest: &str) -> Option<(String, String)> {
        let (name, part) = rest.split_once(' ').unwrap_or((rest, ""));
        if self.name != name {
            self.name = name.to_string();
            self.value.clear();
        }
        self.value.push_str(part);
        if word == "secret+" {
            return None;
        }
        let SecretParts { name, value } = std::mem::take(self);
        Some((name, unescape(&value)))
    }
}

/// Undoes the wrapper's escapes of a secret's value (`\\`, `\n`, `\r`).
fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `ssh` arguments for a host: batch mode (never a prompt), a connect timeout, the port and
/// the host's options, then the target and `bash -s`.
pub fn ssh_args(host: &crate::hosts::inventory::Host, connect_timeout: u32) -> Vec<String> {
    let mut args = crate::run::hosts_file::default_ssh_options(connect_timeout);
    args.push("-T".to_string());
    if let Some(p) = host.port {
        args.push("-p".into());
        args.push(p.to_string());
    }
    args.extend(host.ssh_options.iter().cloned());
    args.push("--".into());
    args.push(host.target.clone());
    args.push("bash -s".into());
    args
}

/// Reads of ssh's output received but not yet handled before its readers wait.
const READS_IN_FLIGHT: usize = 16;

/// Output before the wrapper is ready held back at most (a login script's chatter).
const HELD_MAX: usize = 1 << 20;

/// What [`run_ssh`] passes on.
pub enum Seen<'a> {
    Out(Observed<'a>),
    /// An export of the host's `$NIXCMD_ENV` whose name marks it as a secret: name, value.
    Secret(&'a str, &'a str),
    /// The wrapper's `started` line: ssh connected and the wrapper runs on the host, so the
    /// attempt may have changed something there (what makes its compensation due).
    Began,
}

/// How a remote attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEnded {
    /// The step exited with this code on the host.
    Exited(i32),
    /// A signal killed the step on the host (the wrapper tells it from an exit with 128+N).
    Killed(i32),
    TimedOut,
    Cancelled(usize),
    /// ssh could not connect (or authenticate): the wrapper never started.
    Unreachable(String),
    /// The connection broke while the step ran.
    Dropped(String),
}

enum Msg {
    /// The lines of one read of one pipe, each ended by a newline.
    Lines(Stream, String),
    /// A piece of an over-long line (see [`Observed::Cut`]).
    Cut(Stream, String),
    /// The newest segment of a progress line (see [`Observed::Progress`]).
    Progress(Stream, String),
    Eof,
    Exited(std::process::ExitStatus),
}

/// A progress text as shown: not the start of the wrapper's own line, cut by a read.
fn progress_text(text: &str) -> &str {
    text.split('\u{1e}').next().unwrap_or_default()
}

/// Runs `ssh args…` with `wrapper` (made with `key`) on stdin, streaming lines to `observe`
/// (each read of ssh's output as its lines then [`Observed::ReadDone`]), and the secrets the
/// wrapper reports, until the remote step ends, times out (then a `stop` line asks the host to
/// stop it), or is cancelled.
///
/// The step's output comes on both streams, the wrapper's lines among it (see [`Wire`]): what
/// comes on stdout before the wrapper is ready (sshd reads the two pipes on its own, in no set
/// order) is held back until then, so that the host's secrets are known before any of the
/// step's output is; the secrets the step exports are told on the stream it prints on, before
/// what it prints next.
pub fn run_ssh(
    args: &[String],
    wrapper: String,
    key: &str,
    timeout: Duration,
    grace: Duration,
    cancel: &Cancel,
    observe: &mut dyn FnMut(Seen),
) -> std::io::Result<RemoteEnded> {
    let at_start = cancel.level();
    let mut child = crate::process::spawn_group("ssh", args, None, &[], true)?;
    let pgid = child.id() as i32;
    // Bounded, as the jobs' channel is: a host that prints faster than the run records waits.
    let (tx, rx) = mpsc::sync_channel::<Msg>(READS_IN_FLIGHT);
    // stdin stays open while the step runs: closing it (or a `stop` line) stops the step.
    let (stop_tx, stop_rx) = mpsc::channel::<()>();
    if let Some(mut pipe) = child.stdin.take() {
        std::thread::spawn(move || {
            if pipe.write_all(wrapper.as_bytes()).is_err() {
                return;
            }
            let _ = pipe.flush();
            if stop_rx.recv().is_ok() {
                let _ = pipe.write_all(b"stop\n");
                let _ = pipe.flush();
                // Keep the pipe open until told otherwise, so the host stops gracefully.
                let _ = stop_rx.recv();
            }
        });
    }
    crate::process::read_lines(&mut child, &tx, Msg::Lines, Msg::Cut, Msg::Progress, || {
        Msg::Eof
    });
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            if let Ok(status) = child.wait() {
                let _ = tx.send(Msg::Exited(status));
            }
        });
    }
    drop(tx);

    let deadline = Instant::now() + timeout;
    let mut stop_tx = Some(stop_tx);
    let mut ended: Option<RemoteEnded> = None;
    let mut hard_deadline: Option<Instant> = None;
    let mut exit: Option<std::process::ExitStatus> = None;
    let mut exited_at: Option<Instant> = None;
    // After ssh exited, the last time output still came: what it wrote before exiting is
    // read at the pace the run records it, which may take longer than the second that
    // whatever else holds the pipes open is given.
    let mut heard_at: Option<Instant> = None;
    let mut eofs = 0;
    let mut killed = false;
    let mut wire = Wire::new(format!("{MARK}{key} "));
    loop {
        if exit.is_some()
            && (eofs == 2
                || heard_at.is_some_and(|t| t.elapsed() > Duration::from_secs(1))
                || exited_at.is_some_and(|t| t.elapsed() > Duration::from_secs(10)))
        {
            break;
        }
        if exit.is_none() {
            let level = cancel.level();
            if level > at_start && level >= 2 && !killed {
                // A second Ctrl-C: stop at once. The host sees EOF and stops the step.
                signal(pgid, libc::SIGKILL);
                killed = true;
                ended.get_or_insert(RemoteEnded::Cancelled(level));
            } else if ended.is_none() && (level > at_start || Instant::now() >= deadline) {
                ended = Some(if level > at_start {
                    RemoteEnded::Cancelled(level)
                } else {
                    RemoteEnded::TimedOut
                });
                if let Some(tx) = &stop_tx {
                    let _ = tx.send(());
                }
                hard_deadline = Some(Instant::now() + grace * 3 + Duration::from_secs(5));
            } else if ended.is_none() && cancel.take_held() {
                observe(Seen::Out(Observed::Held));
            }
            if hard_deadline.is_some_and(|t| Instant::now() >= t) {
                // The host did not answer the stop: drop the connection (its watcher sees
                // EOF and stops the step), then make sure ssh is gone.
                if stop_tx.take().is_some() {
                    signal(pgid, libc::SIGTERM);
                    hard_deadline = Some(Instant::now() + grace);
                } else {
                    signal(pgid, libc::SIGKILL);
                    hard_deadline = None;
                }
            }
        }
        let wait = if exit.is_some() {
            Duration::from_millis(20)
        } else {
            Duration::from_millis(100)
        };
        match rx.recv_timeout(wait) {
            Ok(Msg::Lines(stream, lines)) => {
                wire.lines(stream, &lines, observe);
                if heard_at.is_some() {
                    heard_at = Some(Instant::now());
                }
            }
            Ok(Msg::Cut(stream, piece)) => {
                wire.cut(stream, &piece, observe);
                if heard_at.is_some() {
                    heard_at = Some(Instant::now());
                }
            }
            Ok(Msg::Progress(stream, text)) => wire.progress(stream, text, observe),
            Ok(Msg::Eof) => eofs += 1,
            Ok(Msg::Exited(status)) => {
                exit = Some(status);
                exited_at = Some(Instant::now());
                heard_at = exited_at;
                stop_tx = None;
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    drop(stop_tx);
    // The wrapper never got ready (it could not start, or the connection broke).
    wire.finish(observe);
    if let Some(e) = ended {
        return Ok(e);
    }
    if let Some(code) = wire.remote_exit {
        return Ok(match wire.remote_signal {
            Some(sig) => RemoteEnded::Killed(sig),
            None => RemoteEnded::Exited(code),
        });
    }
    let status = exit.map(|s| s.code().unwrap_or(255)).unwrap_or(255);
    let detail = wire
        .ssh_errors
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| format!("ssh exited with status {status}"));
    Ok(if wire.started {
        RemoteEnded::Dropped(detail)
    } else {
        RemoteEnded::Unreachable(detail)
    })
}

/// ssh's output as the wrapper sends it: the step's output, and among it (on either stream)
/// the wrapper's own lines, which start with the attempt's mark.
struct Wire {
    /// [`MARK`], the attempt's key and a space.
    mark: String,
    started: bool,
    ready: bool,
    remote_exit: Option<i32>,
    /// The signal that killed the step, when one did.
    remote_signal: Option<i32>,
    /// ssh's stderr before the wrapper started: why it could not connect.
    ssh_errors: Vec<String>,
    /// stdout before the wrapper is ready (sshd reads the two pipes on its own, in no set
    /// order), held back until then so that the host's secrets are known before any of the
    /// step's output is.
    held: String,
    /// The newest state of stdout's unfinished line (a progress bar) while held back: a bar
    /// drawn once before the wrapper's `ready` line is read would otherwise never be shown.
    held_progress: Option<String>,
    /// Per stream (stdout, stderr): the start of a line that one of the wrapper's lines
    /// interrupted. The wrapper tells a secret between two reads of the step's output,
    /// which may split a line: the line is passed on whole, when it ends.
    carry: [String; 2],
    /// Per stream: a secret told in several lines (each stream tells its own).
    secret: [SecretParts; 2],
}

fn slot(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

impl Wire {
    fn new(mark: String) -> Self {
        Wire {
            mark,
            started: false,
            ready: false,
            remote_exit: None,
            remote_signal: None,
            ssh_errors: Vec::new(),
            held: String::new(),
            held_progress: None,
            carry: Default::default(),
            secret: Default::default(),
        }
    }

    /// The lines of one read of one stream, each ended by a newline.
    fn lines(&mut self, stream: Stream, lines: &str, observe: &mut dyn FnMut(Seen)) {
        if stream == Stream::Stdout && !self.ready {
            // A newer read: its own unfinished tail, if any, comes as the next progress.
            self.held_progress = None;
            self.held.push_str(lines);
            if self.held.len() > HELD_MAX {
                self.release(observe);
            }
            return;
        }
        for line in lines.split_terminator('\n') {
            self.line(stream, line, observe);
        }
        observe(Seen::Out(Observed::ReadDone));
    }

    /// A piece of an over-long line of the step's output: passed on as one (see
    /// [`Observed::Cut`]), so that a secret across the cut is redacted. Before the wrapper
    /// is ready, or holding a wrapper's line, it is taken as a line as before.
    fn cut(&mut self, stream: Stream, piece: &str, observe: &mut dyn FnMut(Seen)) {
        if (stream == Stream::Stdout && !self.ready) || piece.contains(&self.mark) {
            let mut line = piece.to_string();
            line.push('\n');
            return self.lines(stream, &line, observe);
        }
        let carry = &mut self.carry[slot(stream)];
        if carry.is_empty() {
            observe(Seen::Out(Observed::Cut(stream, piece)));
        } else {
            carry.push_str(piece);
            let whole = std::mem::take(carry);
            observe(Seen::Out(Observed::Cut(stream, &whole)));
        }
        observe(Seen::Out(Observed::ReadDone));
    }

    fn line(&mut self, stream: Stream, line: &str, observe: &mut dyn FnMut(Seen)) {
        // Only the wrapper knows the key.
        let Some(pos) = line.find(&self.mark) else {
            if stream == Stream::Stderr && !self.started {
                self.ssh_errors.push(line.to_string());
            }
            let carry = &mut self.carry[slot(stream)];
            if carry.is_empty() {
                observe(Seen::Out(Observed::Line(stream, line)));
            } else {
                carry.push_str(line);
                let whole = std::mem::take(carry);
                observe(Seen::Out(Observed::Line(stream, &whole)));
            }
            return;
        };
        let (before, what) = (&line[..pos], &line[pos + self.mark.len()..]);
        self.carry[slot(stream)].push_str(before);
        let (word, rest) = what.split_once(' ').unwrap_or((what, ""));
        match word {
            "started" if !self.started => {
                self.started = true;
                observe(Seen::Began);
            }
            "ready" => {
                self.ready = true;
                self.release(observe);
            }
            // The step's output is all told: a line it left unended ends here.
            "ended" => self.flush(stream, observe),
            "exit" => self.remote_exit = rest.trim().parse().ok(),
            "signal" => self.remote_signal = rest.trim().parse().ok(),
            "warn" => observe(Seen::Out(Observed::Warning(rest))),
            "secret" | "secret+" => {
                if let Some((name, value)) = self.secret[slot(stream)].take(word, rest) {
                    observe(Seen::Secret(&name, &value));
                }
            }
            _ => {}
        }
    }

    /// The newest segment of a progress line: held back with the lines of its stream
    /// before the wrapper is ready (only the newest state matters).
    fn progress(&mut self, stream: Stream, text: String, observe: &mut dyn FnMut(Seen)) {
        if stream == Stream::Stdout && !self.ready {
            self.held_progress = Some(text);
        } else {
            observe(Seen::Out(Observed::Progress(stream, progress_text(&text))));
        }
    }

    /// Passes on the stdout held back.
    fn release(&mut self, observe: &mut dyn FnMut(Seen)) {
        if !self.held.is_empty() {
            let held = std::mem::take(&mut self.held);
            for line in held.split_terminator('\n') {
                self.line(Stream::Stdout, line, observe);
            }
            observe(Seen::Out(Observed::ReadDone));
        }
        if let Some(text) = self.held_progress.take() {
            observe(Seen::Out(Observed::Progress(
                Stream::Stdout,
                progress_text(&text),
            )));
        }
    }

    /// Passes on the start of a line a wrapper's line interrupted, if any.
    fn flush(&mut self, stream: Stream, observe: &mut dyn FnMut(Seen)) {
        let carry = std::mem::take(&mut self.carry[slot(stream)]);
        if !carry.is_empty() {
            observe(Seen::Out(Observed::Line(stream, &carry)));
            observe(Seen::Out(Observed::ReadDone));
        }
    }

    /// After the last read: whatever is still held back or unended.
    fn finish(&mut self, observe: &mut dyn FnMut(Seen)) {
        self.release(observe);
        self.flush(Stream::Stdout, observe);
        self.flush(Stream::Stderr, observe);
    }
}

fn signal(pgid: i32, sig: i32) {
    // SAFETY: signalling the process group of the ssh client we started.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting_round_trips_through_bash() {
        let nasty = "a'b\"c $(rm -rf /) `x` \\ \n\ttab é \x01 ${HOME}";
        let out = std::process::Command::new("bash")
            .args(["-c", &format!("printf '%s' {}", quote(nasty))])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }

    /// The wrapper's test of a name is the redactor's: same answer for every name.
    #[test]
    fn the_wrappers_secret_names_are_the_redactors() {
        let extra = vec!["MY_VAR".to_string(), "not a name".to_string()];
        let names = [
            "API_TOKEN",
            "db_password",
            "Passwd",
            "mykey",
            "SECRET_X",
            "KEYS",
            "HOME",
            "PATH",
            "TOKE",
            "MY_VAR",
            "MY_VARX",
            "my_var",
            "not",
        ];
        let script = format!(
            "for n in {}; do case $n in {}) echo \"$n yes\" ;; *) echo \"$n no\" ;; esac; done",
            names.join(" "),
            secret_name_pattern(&extra)
        );
        let out = std::process::Command::new("bash")
            .args(["-c", &script])
            .output()
            .unwrap();
        let expected: String = names
            .iter()
            .map(|n| {
                let yes = crate::run::redact::is_secret_name(n, &extra);
                format!("{n} {}\n", if yes { "yes" } else { "no" })
            })
            .collect();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), expected);
    }

    /// The wrapper's lines are taken on either stream, also from stdout held back before the
    /// wrapper is ready; a line one of them split is passed on whole; a line that imitates
    /// them without the attempt's key is output.
    #[test]
    fn the_wire_takes_the_wrappers_lines_on_either_stream_and_joins_a_line_they_split() {
        let mark = format!("{MARK}{} ", "k".repeat(32));
        let mut wire = Wire::new(mark.clone());
        let mut seen: Vec<String> = Vec::new();
        let mut observe = |s: Seen| match s {
            Seen::Out(Observed::Line(stream, l)) => seen.push(format!("{}: {l}", stream.name())),
            Seen::Out(Observed::Warning(w)) => seen.push(format!("warn: {w}")),
            Seen::Out(_) | Seen::Began => {}
            Seen::Secret(n, v) => seen.push(format!("secret {n}={v}")),
        };
        let (out, err) = (Stream::Stdout, Stream::Stderr);
        wire.lines(
            out,
            &format!("chatter\n{mark}secret A_TOKEN v1\n"),
            &mut observe,
        );
        let ready = format!("{mark}started\n{mark}secret B_KEY v2\n{mark}ready\n");
        wire.lines(err, &ready, &mut observe);
        let split = format!("half {mark}secret+ C_KEY v\nx{mark}secret C_KEY 3\nv3 end\n");
        wire.lines(out, &split, &mut observe);
        let forged = "\u{1e}nixcmd:00 secret D_KEY x\n";
        wire.lines(
            err,
            &format!("{forged}left {mark}ended\n{mark}exit 3\n"),
            &mut observe,
        );
        wire.finish(&mut observe);
        assert_eq!(
            seen,
            [
                "secret B_KEY=v2",
                "stdout: chatter",
                "secret A_TOKEN=v1",
                "secret C_KEY=v3",
                "stdout: half xv3 end",
                "stderr: \u{1e}nixcmd:00 secret D_KEY x",
                "stderr: left ",
            ]
        );
        assert_eq!(wire.remote_exit, Some(3));
    }

    /// A piece of an over-long line of a host's step is passed on as one (its redaction
    /// holds back a secret's start for the next piece), after a line start a wrapper's line
    /// interrupted; before the wrapper is ready it is a line, as it was.
    #[test]
    fn the_wire_passes_the_pieces_of_a_cut_line_on_as_such() {
        let mark = format!("{MARK}{} ", "k".repeat(32));
        let mut wire = Wire::new(mark.clone());
        let mut seen: Vec<String> = Vec::new();
        let mut observe = |s: Seen| match s {
            Seen::Out(Observed::Line(stream, l)) => seen.push(format!("{}: {l}", stream.name())),
            Seen::Out(Observed::Cut(stream, l)) => seen.push(format!("{} cut: {l}", stream.name())),
            _ => {}
        };
        let out = Stream::Stdout;
        wire.cut(out, "early", &mut observe);
        wire.lines(Stream::Stderr, &format!("{mark}ready\n"), &mut observe);
        wire.lines(out, &format!("start {mark}exit 0\n"), &mut observe);
        wire.cut(out, "piece1", &mut observe);
        wire.cut(Stream::Stderr, "e1", &mut observe);
        wire.cut(out, "piece2", &mut observe);
        wire.lines(out, "end\n", &mut observe);
        wire.lines(Stream::Stderr, "e2\n", &mut observe);
        wire.finish(&mut observe);
        assert_eq!(
            seen,
            [
                "stdout: early",
                "stdout cut: start piece1",
                "stderr cut: e1",
                "stdout cut: piece2",
                "stdout: end",
                "stderr: e2",
            ]
        );
    }

    /// The wrapper of `script`, run by bash here as on a host whose state is under `state`:
    /// its key, stdout and stderr, once it exited 0.
    fn run_wrapper(
        state: &std::path::Path,
        script: &str,
        secrets: &[&str],
    ) -> (String, String, String) {
        use std::io::Read;
        let key = new_key();
        let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
        // A token of its own: the wrapper's last sweep stops every process carrying its token,
        // and tests run at once (a shared token let one test's sweep kill another's step).
        let token = format!("remote-unit-test-{key}");
        let text = wrapper(&Wrapper {
            script,
            env: &[],
            token: &token,
            key: &key,
            secrets: &secrets,
            state_key: &state_key("r", "h"),
            timeout: Duration::from_secs(30),
            grace: Duration::from_secs(1),
        });
        let mut child = std::process::Command::new("bash")
            .arg("-s")
            .env("XDG_STATE_HOME", state)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        // Kept open while the step runs: its end stops the step.
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(text.as_bytes()).unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            let mut out = String::new();
            stdout.read_to_string(&mut out).unwrap();
            out
        });
        let mut err = String::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        drop(stdin);
        assert!(child.wait().unwrap().success(), "{err}");
        (key, reader.join().unwrap(), err)
    }

    /// On a host as here (`env_file::parse`): `export` takes any blanks after it, and an
    /// export too long for Linux to pass sets nothing and is warned about, naming it: later
    /// blocks on that host still start.
    #[test]
    fn the_wrapper_exports_as_nixcmd_does() {
        let dir = tempfile::tempdir().unwrap();
        let big = "x".repeat(crate::run::env_file::MAX_ENV_STRING);
        let script =
            format!("printf 'export  D=v4\\nexport\\tE=v5\\nBIG=%s\\n' {big} >>\"$NIXCMD_ENV\"");
        let (key, _, err) = run_wrapper(dir.path(), &script, &[]);
        let mark = format!("{MARK}{key} ");
        let warnings: Vec<&str> = err
            .lines()
            .filter_map(|l| l.strip_prefix(&mark)?.strip_prefix("warn "))
            .collect();
        let bytes = crate::run::env_file::MAX_ENV_STRING + 5;
        assert_eq!(
            warnings,
            [format!(
                "$NIXCMD_ENV line 3: `BIG` would be {bytes} bytes, and Linux passes at most 128 \
                 KiB per environment variable: not set (write a large value to a file and \
                 export its path)"
            )]
        );
        let (_, out, _) = run_wrapper(dir.path(), "big=${BIG-}; echo \"$D $E ${#big}\"", &[]);
        assert_eq!(out, "v4 v5 0\n");
    }

    /// The wrapper, run by bash here as on a host, tells the secret exports of `$NIXCMD_ENV`
    /// before the step starts and after it ended, each value whole whatever it holds (a value
    /// longer than a line, backslashes, carriage returns, lines, one not ended yet); other
    /// exports it does not tell.
    #[test]
    fn the_wrapper_tells_the_secret_exports_of_the_env_file() {
        let dir = tempfile::tempdir().unwrap();
        let env_dir = dir.path().join("nixcmd/runs/r/hosts/h");
        std::fs::create_dir_all(&env_dir).unwrap();
        std::fs::write(
            env_dir.join("env"),
            "API_TOKEN=before\nPLAIN=not a secret\n",
        )
        .unwrap();
        let long: String = (0..3000).map(|i| format!("\\{i}é")).collect();
        assert!(long.chars().count() > CHUNK_CHARS);
        let lines = "one\\n\ttwo\rstill two\nthree \\";
        let script = format!(
            "printf 'LONG_SECRET=%s\\nDb_Password<<EOF\\n%s\\nEOF\\nMY_VAR=listed\\nOPEN_KEY<<END\\nunended\\n' {} {} >>\"$NIXCMD_ENV\"",
            quote(&long),
            quote(lines)
        );
        let (key, _, err) = run_wrapper(dir.path(), &script, &["MY_VAR"]);
        let mark = format!("{MARK}{key} ");
        let mut parts = SecretParts::default();
        let mut told: Vec<String> = Vec::new();
        for line in err.lines() {
            let what = line
                .strip_prefix(&mark)
                .unwrap_or_else(|| panic!("{line:?}"));
            let (word, rest) = what.split_once(' ').unwrap_or((what, ""));
            match word {
                "secret" | "secret+" => {
                    if let Some((name, value)) = parts.take(word, rest) {
                        // Named, not shown, when right: a failure would print it 3 times.
                        let value = if value == long { "(long)" } else { &value };
                        told.push(format!("{name}={value}"));
                    }
                }
                _ => told.push(what.to_string()),
            }
        }
        assert_eq!(
            told,
            [
                "started".to_string(),
                "API_TOKEN=before".into(),
                "ready".into(),
                "ended".into(),
                "API_TOKEN=before".into(),
                "LONG_SECRET=(long)".into(),
                format!("Db_Password={lines}"),
                "MY_VAR=listed".into(),
                "OPEN_KEY=unended".into(),
                "warn $NIXCMD_ENV line 9: `OPEN_KEY<<END` has no line `END` after it to end the \
                 value: `OPEN_KEY` not set"
                    .into(),
                "exit 0".into(),
            ]
        );
    }
}
