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

use crate::process::{Cancel, Observed, Stream};
use std::io::Write;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Marks the wrapper's own lines in the output stream (ASCII record separator).
const MARK: &str = "\u{1e}nixcmd:";

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

/// What the wrapper needs to know.
pub struct Wrapper<'a> {
    pub script: &'a str,
    /// Exported to the step (names that are not shell identifiers are dropped).
    pub env: &'a [(String, String)],
    pub token: &'a str,
    /// The folder under the host's `nixcmd/runs/`: `RUN_ID/HOST`.
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
  local __nixcmd_tok={tok} __nixcmd_d __nixcmd_state pid rc w
  printf '{mark}started\n' >&2
  __nixcmd_state="${{XDG_STATE_HOME:-${{HOME:-/tmp}}/.local/state}}/nixcmd/runs/"{run}
  mkdir -p "$__nixcmd_state/state" && : >>"$__nixcmd_state/env" || __nixcmd_state=$(mktemp -d "${{TMPDIR:-/tmp}}/nixcmd-state.XXXXXXXX")
  mkdir -p "$__nixcmd_state/state"; : >>"$__nixcmd_state/env"
  __nixcmd_d=$(mktemp -d "${{TMPDIR:-/tmp}}/nixcmd.XXXXXXXX") || {{ echo "nixcmd: cannot create a temporary folder on $(hostname)" >&2; exit 125; }}
{env}  export NIXCMD_STATE="$__nixcmd_state/state" NIXCMD_ENV="$__nixcmd_state/env"
  # $NIXCMD_ENV read as nixcmd reads it (src/run/env_file.rs): `export` sets what it
  # exports, `check` warns about each line that sets nothing.
  __nixcmd_warn() {{ printf '{mark}warn $NIXCMD_ENV line %s\n' "$1" >&2; }}
  __nixcmd_env() {{
    local __l __n=0 __k __v __d= __at=0 __first __name __eq
    while IFS= read -r __l || [[ -n $__l ]]; do
      __n=$((__n + 1))
      __l=${{__l%$'\r'}}
      if [[ -n $__d ]]; then
        if [[ $__l == "$__d" ]]; then
          [[ -n $__name && $1 == export ]] && export "$__name=$__v"
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
      __k=${{__k#"${{__k%%[![:space:]]*}}"}} __k=${{__k%"${{__k##*[![:space:]]}}"}} __k=${{__k#export }}
      __name=
      [[ $__k =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] && __name=$__k
      if [[ -n $__eq ]]; then
        if [[ -n $__name ]]; then
          [[ $1 == export ]] && export "$__name=$__v"
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
    if [[ -n $__d && -n $__name && $1 == check ]]; then
      __nixcmd_warn "$__at: \`$__name<<$__d\` has no line \`$__d\` after it to end the value: \`$__name\` not set"
    fi
  }}
  __nixcmd_env export
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
  if command -v setsid >/dev/null; then
    NIXCMD_STEP_TOKEN=$__nixcmd_tok setsid bash --noprofile --norc -Eeuo pipefail "$__nixcmd_d/step.sh" </dev/null &
  else
    NIXCMD_STEP_TOKEN=$__nixcmd_tok bash --noprofile --norc -Eeuo pipefail "$__nixcmd_d/step.sh" </dev/null &
  fi
  pid=$!
  (
    trap '' INT TERM HUP
    read -r -t {deadline} _ || true
    __nixcmd_stop "$pid"
  ) &
  w=$!
  disown "$w"
  wait "$pid"
  rc=$?
  kill -KILL "$w" 2>/dev/null
  if __nixcmd_group "$pid"; then
    kill -TERM -- "-$pid" 2>/dev/null; sleep 0.2; kill -KILL -- "-$pid" 2>/dev/null
  fi
  local left
  left=$(grep -lsazxF -- "NIXCMD_STEP_TOKEN=$__nixcmd_tok" /proc/[0-9]*/environ 2>/dev/null | sed -n 's,^/proc/\([0-9]*\)/environ$,\1,p')
  if [ -n "$left" ]; then
    kill -TERM $left 2>/dev/null; sleep 0.2; kill -KILL $left 2>/dev/null
  fi
  rm -rf "$__nixcmd_d"
  __nixcmd_env check
  printf '{mark}exit %s\n' "$rc" >&2
  exit "$rc"
}}
__nixcmd_main
"#,
        tok = quote(w.token),
        mark = MARK.replace('\u{1e}', "\\036"),
        run = quote(w.state_key),
        script = quote(w.script),
    )
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

/// How a remote attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteEnded {
    /// The step exited with this code on the host.
    Exited(i32),
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
    /// The newest segment of a progress line (see [`Observed::Progress`]).
    Progress(Stream, String),
    Eof,
    Exited(std::process::ExitStatus),
}

/// Runs `ssh args…` with `wrapper` on stdin, streaming lines to `observe` (each read of ssh's
/// output as its lines then [`Observed::ReadDone`]), until the remote step ends, times out
/// (then a `stop` line asks the host to stop it), or is cancelled.
pub fn run_ssh(
    args: &[String],
    wrapper: String,
    timeout: Duration,
    grace: Duration,
    cancel: &Cancel,
    observe: &mut dyn FnMut(Observed),
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
    crate::process::read_lines(&mut child, &tx, Msg::Lines, Msg::Progress, || Msg::Eof);
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
    let mut started = false;
    let mut remote_exit: Option<i32> = None;
    let mut ssh_errors: Vec<String> = Vec::new();
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
                for line in lines.split_terminator('\n') {
                    if let Some(pos) = line.find(MARK) {
                        let (before, mark) = line.split_at(pos);
                        if !before.is_empty() {
                            observe(Observed::Line(stream, before));
                        }
                        let what = &mark[MARK.len()..];
                        if what == "started" {
                            started = true;
                        } else if let Some(code) = what.strip_prefix("exit ") {
                            remote_exit = code.trim().parse().ok();
                        } else if let Some(problem) = what.strip_prefix("warn ") {
                            observe(Observed::Warning(problem));
                        }
                        continue;
                    }
                    if stream == Stream::Stderr && !started {
                        ssh_errors.push(line.to_string());
                    }
                    observe(Observed::Line(stream, line));
                }
                observe(Observed::ReadDone);
                if heard_at.is_some() {
                    heard_at = Some(Instant::now());
                }
            }
            Ok(Msg::Progress(stream, text)) => {
                // Not the start of the wrapper's own line, cut by a read.
                let text = text.split('\u{1e}').next().unwrap_or_default();
                observe(Observed::Progress(stream, text));
            }
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
    if let Some(e) = ended {
        return Ok(e);
    }
    if let Some(code) = remote_exit {
        return Ok(RemoteEnded::Exited(code));
    }
    let status = exit.map(|s| s.code().unwrap_or(255)).unwrap_or(255);
    let detail = ssh_errors
        .iter()
        .rev()
        .find(|l| !l.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| format!("ssh exited with status {status}"));
    Ok(if started {
        RemoteEnded::Dropped(detail)
    } else {
        RemoteEnded::Unreachable(detail)
    })
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
}
