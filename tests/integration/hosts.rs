//! Host fan-out and parallel groups against real OpenSSH servers on loopback
//! (`tests/support/sshd-harness.sh`): every "host" is an sshd on its own port of this machine,
//! so the hosts write their timestamps and markers into the test's temporary folder, and
//! `sshd-harness.sh procs` finds whatever a remote session left behind.

use crate::run_support::{events, only_run, run_measuring_peak};
use crate::support::{Output, Test, repo, skip};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// Running sshd servers, one per host; stopped (with everything their sessions left) on drop.
struct Fleet {
    dir: tempfile::TempDir,
    ports: Vec<u16>,
}

fn harness() -> PathBuf {
    repo().join("tests/support/sshd-harness.sh")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local address").port()
}

impl Fleet {
    /// `n` servers, or `None` (after printing why) when this machine cannot run them.
    fn start(n: usize) -> Option<Fleet> {
        Fleet::start_setting(n, "")
    }

    /// `n` servers whose sessions get the `NAME=VALUE` words of `setenv` too (see
    /// `SSHD_HARNESS_SETENV` in tests/support/README.md).
    fn start_setting(n: usize, setenv: &str) -> Option<Fleet> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            skip("the sshd tests need root (sshd must switch to the logged-in user)");
            return None;
        }
        if !Path::new("/usr/sbin/sshd").exists() || crate::support::which("ssh").is_none() {
            skip("sshd or ssh is not installed (apt-get install openssh-server openssh-client)");
            return None;
        }
        let dir = tempfile::Builder::new()
            .prefix("nixcmd-sshd")
            .tempdir()
            .expect("a temporary folder");
        let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let out = Command::new(harness())
            .env("SSHD_HARNESS_SETENV", setenv)
            .arg("start")
            .arg(dir.path())
            .args(ports.iter().map(|p| p.to_string()))
            .output()
            .expect("run sshd-harness.sh");
        assert!(
            out.status.success(),
            "sshd-harness start failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Some(Fleet { dir, ports })
    }

    fn ssh_config(&self) -> String {
        self.dir.path().join("ssh_config").display().to_string()
    }

    /// `nixcmd.toml` with hosts `h1`…`hN` (tag `even` on every second one) plus `extra`.
    fn config(&self, extra: &str) -> String {
        let mut s = format!(
            "[ssh]\nconnect_timeout = 5\noptions = [\"-F\", \"{}\"]\n",
            self.ssh_config()
        );
        for (i, port) in self.ports.iter().enumerate() {
            let tags = if i % 2 == 1 { "[\"even\"]" } else { "[]" };
            s.push_str(&format!(
                "\n[hosts.h{}]\ntarget = \"h-{port}\"\ntags = {tags}\n",
                i + 1
            ));
        }
        s.push_str(extra);
        s
    }

    /// Pids of processes that sessions on this port left, zombies excluded.
    fn leftovers(&self, port: u16) -> Vec<String> {
        let out = Command::new(harness())
            .arg("procs")
            .arg(self.dir.path())
            .arg(port.to_string())
            .output()
            .expect("run sshd-harness.sh procs");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
                let state = stat.rsplit_once(") ").map(|(_, r)| r.chars().next());
                matches!(state, Some(Some(s)) if s != 'Z')
            })
            .map(str::to_string)
            .collect()
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        let _ = Command::new(harness())
            .arg("stop")
            .arg(self.dir.path())
            .status();
    }
}

/// A test project with the fleet's `nixcmd.toml` and one runbook `fan.md`.
fn project(fleet: &Fleet, extra_config: &str, runbook: &str) -> Test {
    Test::new()
        .file("project/nixcmd.toml", fleet.config(extra_config))
        .dir("marks")
        .runbook("fan.md", runbook)
        .env("MARKS", "[TEMP]/marks")
        .timeout(Duration::from_secs(120))
}

/// The files the hosts wrote into `[TEMP]/marks`, name → contents.
fn marks(out: &Output) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for e in std::fs::read_dir(out.root.path().join("marks")).expect("marks folder") {
        let e = e.expect("entry");
        m.insert(
            e.file_name().to_string_lossy().into_owned(),
            std::fs::read_to_string(e.path()).unwrap_or_default(),
        );
    }
    m
}

fn names(m: &BTreeMap<String, String>, prefix: &str) -> Vec<String> {
    m.keys()
        .filter_map(|k| k.strip_prefix(prefix).map(str::to_string))
        .collect()
}

/// The runbook's steps write `$MARKS`; the argument carries the folder to the hosts (their
/// environment is the step's, not nixcmd's).
fn runbook(steps: &str, rollback: &str) -> String {
    format!(
        "---\ndescription: fan-out test\nnixcmd:\n  args:\n    marks: {{ required: true }}\n---\n# Fan\n\n## Steps\n{steps}\n## Rollback\n{rollback}"
    )
}

fn run(t: Test, extra: &[&str]) -> Output {
    let marks = t.root().join("marks").display().to_string();
    t.args(["run", "fan", &marks])
        .args(extra.iter().copied())
        .run()
}

#[test]
fn every_host_runs_once_never_more_than_parallel_at_once() {
    let Some(fleet) = Fleet::start(5) else { return };
    let steps = r#"### stamp
```bash {id=stamp hosts=all parallel=2}
m=$NIXCMD_ARG_MARKS
echo "start $(date +%s.%N)" >>"$m/run-$NIXCMD_HOST"
sleep 0.6
echo "end $(date +%s.%N)" >>"$m/run-$NIXCMD_HOST"
echo "$NIXCMD_HOST on $SSHD_HARNESS_HOST"
```
"#;
    let out = run(project(&fleet, "", &runbook(steps, "")), &[]);
    out.assert_status(0);
    let m = marks(&out);
    assert_eq!(names(&m, "run-"), ["h1", "h2", "h3", "h4", "h5"]);
    let mut events: Vec<(f64, i32)> = Vec::new();
    for (name, text) in &m {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{name} ran more than once:\n{text}");
        for l in lines {
            let (what, t) = l.split_once(' ').expect("stamp line");
            events.push((
                t.parse().expect("a time"),
                if what == "start" { 1 } else { -1 },
            ));
        }
    }
    events.sort_by(|a, b| a.partial_cmp(b).expect("comparable"));
    let (mut now, mut most) = (0, 0);
    for (_, d) in events {
        now += d;
        most = most.max(now);
    }
    assert_eq!(most, 2, "hosts at once (parallel=2)");
    // Each host really ran over its own sshd.
    for (i, port) in fleet.ports.iter().enumerate() {
        assert!(
            out.stdout.contains(&format!("stamp@h{}", i + 1)),
            "{}",
            out.stdout
        );
        let log = std::fs::read_dir(out.root.path().join("state/nixcmd/runs"))
            .expect("runs")
            .next()
            .expect("one run")
            .expect("entry")
            .path()
            .join(format!("logs/stamp@h{}.log", i + 1));
        let log = std::fs::read_to_string(&log).expect("per-host log");
        assert!(log.contains(&format!("h{} on h-{port}", i + 1)), "{log}");
    }
}

#[test]
fn a_failing_host_stops_new_ones_lets_others_finish_and_only_it_is_rolled_back() {
    let Some(fleet) = Fleet::start(4) else { return };
    let steps = r#"### change
```bash {id=change hosts=all parallel=2 rollback=undo}
m=$NIXCMD_ARG_MARKS
touch "$m/started-$NIXCMD_HOST"
if [ "$NIXCMD_HOST" = h2 ]; then echo "h2 breaks" >&2; exit 3; fi
sleep 1
touch "$m/done-$NIXCMD_HOST"
```
### later
```bash {id=later hosts=all}
touch "$NIXCMD_ARG_MARKS/later-$NIXCMD_HOST"
```
"#;
    let rollback = r#"### undo
```bash
touch "$NIXCMD_ARG_MARKS/undo-$NIXCMD_HOST"
```
"#;
    let out = run(project(&fleet, "", &runbook(steps, rollback)), &[]);
    out.assert_status(1);
    let m = marks(&out);
    assert_eq!(
        names(&m, "started-"),
        ["h1", "h2"],
        "h3 and h4 must not start"
    );
    assert_eq!(names(&m, "done-"), ["h1"], "h1 was in flight and finishes");
    assert_eq!(
        names(&m, "undo-"),
        ["h2"],
        "only the failed host is rolled back"
    );
    assert!(names(&m, "later-").is_empty());
    assert!(
        out.stdout
            .contains("failed on 1 of 4 hosts (h2; max-fail 0)"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("not started: 1 host failed (max-fail 0)")
    );

    // resume retries only the host that failed and the ones that did not start.
    let marks_dir = out.root.path().join("marks");
    for f in std::fs::read_dir(&marks_dir).expect("marks") {
        std::fs::remove_file(f.expect("entry").path()).expect("remove mark");
    }
    let run_id = std::fs::read_dir(out.root.path().join("state/nixcmd/runs"))
        .expect("runs")
        .next()
        .expect("one run")
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .into_owned();
    // h2 succeeds this time: the runbook reads a file the test now creates.
    let resumed = Command::new(crate::support::BIN)
        .args(["resume", &run_id])
        .current_dir(out.root.path().join("project"))
        .env("HOME", out.root.path().join("home"))
        .env("XDG_STATE_HOME", out.root.path().join("state"))
        .env("XDG_CONFIG_HOME", out.root.path().join("config"))
        .env("NO_COLOR", "1")
        .output()
        .expect("resume");
    let text = String::from_utf8_lossy(&resumed.stdout);
    // h2 fails again (same runbook): it is the only one of h2..h4 that may not finish.
    assert_eq!(resumed.status.code(), Some(1), "{text}");
    let m: BTreeMap<String, String> = std::fs::read_dir(&marks_dir)
        .expect("marks")
        .map(|e| {
            (
                e.expect("entry").file_name().to_string_lossy().into_owned(),
                String::new(),
            )
        })
        .collect();
    let started = names(&m, "started-");
    assert!(
        !started.contains(&"h1".to_string()),
        "h1 succeeded: not run again ({started:?})"
    );
    assert!(started.contains(&"h2".to_string()), "{started:?}");
}

#[test]
fn within_max_fail_the_run_goes_on_without_the_failed_host() {
    let Some(fleet) = Fleet::start(3) else { return };
    let steps = r#"### change
```bash {id=change hosts=all parallel=3 max-fail=1 rollback=undo}
[ "$NIXCMD_HOST" != h3 ] || exit 4
touch "$NIXCMD_ARG_MARKS/change-$NIXCMD_HOST"
```
### later
```bash {id=later hosts=all}
touch "$NIXCMD_ARG_MARKS/later-$NIXCMD_HOST"
```
"#;
    let rollback = "### undo\n```bash\ntouch \"$NIXCMD_ARG_MARKS/undo-$NIXCMD_HOST\"\n```\n";
    let out = run(project(&fleet, "", &runbook(steps, rollback)), &[]);
    out.assert_status(0);
    let m = marks(&out);
    assert_eq!(names(&m, "change-"), ["h1", "h2"]);
    assert_eq!(names(&m, "undo-"), ["h3"]);
    assert_eq!(
        names(&m, "later-"),
        ["h1", "h2"],
        "the failed host left the run"
    );
    assert!(
        out.stdout
            .contains("step `change` failed on h3 (within max-fail 1); it left the run"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_failing_canary_stops_the_rest() {
    let Some(fleet) = Fleet::start(3) else { return };
    let steps = r#"### activate
```bash {id=activate hosts=all canary=1 parallel=5 max-fail=50%}
touch "$NIXCMD_ARG_MARKS/ran-$NIXCMD_HOST"
[ "$NIXCMD_HOST" != h1 ]
```
"#;
    let out = run(project(&fleet, "", &runbook(steps, "")), &[]);
    out.assert_status(1);
    assert_eq!(names(&marks(&out), "ran-"), ["h1"]);
    assert!(out.stdout.contains("canary failed on h1"), "{}", out.stdout);
    assert!(out.stdout.contains("not started: the canary failed"));
}

#[test]
fn a_remote_timeout_leaves_no_process_behind() {
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### hang
```bash {id=hang hosts=all timeout=2s}
sleep 1000 &
setsid sleep 1001 &
echo "waiting on $SSHD_HARNESS_HOST"
sleep 1002
```
"#;
    let out = run(project(&fleet, "", &runbook(steps, "")), &[]);
    out.assert_status(1);
    assert!(out.stdout.contains("hang@h1 timed out"), "{}", out.stdout);
    assert!(out.elapsed < Duration::from_secs(20), "{:?}", out.elapsed);
    let mut left = fleet.leftovers(fleet.ports[0]);
    for _ in 0..30 {
        if left.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
        left = fleet.leftovers(fleet.ports[0]);
    }
    assert!(left.is_empty(), "remote processes left: {left:?}");
}

#[test]
fn an_unreachable_host_fails_fast_with_a_clear_message() {
    let Some(fleet) = Fleet::start(1) else { return };
    let closed = free_port();
    let extra = format!("\n[hosts.gone]\ntarget = \"root@127.0.0.1\"\nport = {closed}\n");
    let steps = r#"### hello
```bash {id=hello hosts=gone,h1 parallel=2}
touch "$NIXCMD_ARG_MARKS/ran-$NIXCMD_HOST"
```
"#;
    let out = run(project(&fleet, &extra, &runbook(steps, "")), &[]);
    out.assert_status(1);
    assert!(out.elapsed < Duration::from_secs(15), "{:?}", out.elapsed);
    assert!(out.stdout.contains("hello@gone failed"), "{}", out.stdout);
    assert!(
        out.stdout.contains(&format!(
            "cannot reach the host: ssh: connect to host 127.0.0.1 port {closed}: Connection refused"
        )),
        "{}",
        out.stdout
    );
    assert_eq!(names(&marks(&out), "ran-"), ["h1"]);
}

#[test]
fn secrets_stay_out_of_ps_and_logs() {
    let Some(fleet) = Fleet::start(1) else { return };
    let secret = "s3cr3t-Value-4711";
    let rb = "---\ndescription: secrets\nnixcmd:\n  args:\n    marks: { required: true }\n---\n# S\n\n## Steps\n### load\n```bash {id=load}\necho \"API_TOKEN=$(cat \"$NIXCMD_ARG_MARKS/secret\")\" >>\"$NIXCMD_ENV\"\n```\n### show\n```bash {id=show hosts=all}\nps -eo args >\"$NIXCMD_ARG_MARKS/ps\"\necho \"token is $API_TOKEN\"\n[ \"$API_TOKEN\" = \"$(cat \"$NIXCMD_ARG_MARKS/secret\")\" ]\n```\n";
    let t = project(&fleet, "", rb).file("marks/secret", secret);
    let marks_dir = t.root().join("marks").display().to_string();
    let out = t.args(["run", "fan", &marks_dir, "--verbose"]).run();
    out.assert_status(0);
    let ps = std::fs::read_to_string(out.root.path().join("marks/ps")).expect("ps output");
    assert!(ps.contains("bash -s"), "{ps}");
    assert!(
        !ps.contains(secret),
        "the secret is on a command line:\n{ps}"
    );
    assert!(!out.stdout.contains(secret) && !out.stderr.contains(secret));
    assert!(out.stdout.contains("token is [REDACTED]"), "{}", out.stdout);
    for entry in walk(&out.root.path().join("state/nixcmd/runs")) {
        let text = std::fs::read(&entry).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        // The `env` file is where the step put it (0600, like every file of the run).
        if entry.ends_with("env") {
            continue;
        }
        assert!(
            !text.contains(secret),
            "{} holds the secret",
            entry.display()
        );
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[test]
fn hosts_lists_the_inventory_and_warns_about_unknown_keys() {
    let config = "[hosts.web1]\ntarget = \"root@10.0.0.5\"\ntags = [\"web\"]\ncolour = \"blue\"\n\n[hosts.db1]\ntarget = \"root@10.0.0.9\"\nport = 2222\n";
    let out = Test::new()
        .file("project/nixcmd.toml", config)
        .args(["hosts"])
        .run();
    out.assert_status(0);
    assert_eq!(
        out.normalized(),
        "HOST  TARGET                   TAGS  SSH OPTIONS
web1  root@10.0.0.5            web
db1   root@10.0.0.9 port 2222
2 hosts from [TEMP]/project/nixcmd.toml
----- stderr -----
warning[config-unknown-key]: unknown key `colour` in [hosts.web1]; ignored
  --> [TEMP]/project/nixcmd.toml:4:1
  |
4 | colour = \"blue\"
  | ^^^^^^
  = hint: known keys: target, port, tags, ssh_options
[exit status: 0]
"
    );
}

#[test]
fn an_unknown_host_in_hosts_flag_is_a_usage_error() {
    let out = Test::new()
        .file(
            "project/nixcmd.toml",
            "[hosts.web1]\ntarget = \"root@10.0.0.5\"\n",
        )
        .runbook(
            "fan.md",
            "---\ndescription: x\nnixcmd: {}\n---\n# X\n## Steps\n```bash {hosts=all}\ntrue\n```\n",
        )
        .args(["run", "fan", "--hosts", "web2"])
        .run();
    out.assert_status(2);
    assert!(
        out.stderr
            .contains("--hosts web2: no host named `web2` in the inventory (did you mean `web1`?)"),
        "{}",
        out.stderr
    );
}

const GROUP: &str = r#"---
description: parallel steps
nixcmd: {}
---
# Group

## Steps
### a
```bash {id=a group=g parallel=PAR rollback=undo-a}
sleep 1; echo a done
```
### b
```bash {id=b group=g rollback=undo-b}
sleep 1; echo b done
```
### c
```bash {id=c group=g rollback=undo-c}
sleep 1; echo c done
```

## Rollback
### undo-a
```bash
echo "rolled back a" >>"$NIXCMD_STATE/undo.txt"
```
### undo-b
```bash
echo "rolled back b" >>"$NIXCMD_STATE/undo.txt"
```
### undo-c
```bash
echo "rolled back c" >>"$NIXCMD_STATE/undo.txt"
```
"#;

#[test]
fn a_group_runs_its_steps_at_the_same_time() {
    // A rendezvous, not a stopwatch: each step waits (up to 10 s) until all three have
    // started, which they can only do at the same time. Timing three 1 s steps made the test
    // depend on how busy the machine was.
    let mut rb = GROUP.replace("PAR", "3");
    for id in ["a", "b", "c"] {
        rb = rb.replace(
            &format!("sleep 1; echo {id} done"),
            &format!(
                r#"touch "$NIXCMD_STATE/started-{id}"
all() {{ [ -e "$NIXCMD_STATE/started-a" ] && [ -e "$NIXCMD_STATE/started-b" ] && [ -e "$NIXCMD_STATE/started-c" ]; }}
for _ in $(seq 200); do all && break; sleep 0.05; done
all
echo {id} done"#
            ),
        );
    }
    let out = Test::new()
        .runbook("grp.md", &rb)
        .args(["run", "grp"])
        .run();
    out.assert_status(0);
    for id in ["a", "b", "c"] {
        assert!(out.stdout.contains(&format!("✓ {id} ok")), "{}", out.stdout);
    }
}

#[test]
fn a_failing_group_member_rolls_back_the_siblings_that_started() {
    let rb = GROUP.replace("PAR", "2").replace(
        "sleep 1; echo b done",
        "sleep 0.2; echo b breaks >&2; exit 7",
    );
    let out = Test::new()
        .runbook("grp.md", &rb)
        .args(["run", "grp"])
        .run();
    out.assert_status(1);
    assert!(
        out.stdout.contains("✓ a ok"),
        "a was in flight and finishes:\n{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("- c skipped")
            && out
                .stdout
                .contains("not started: `b` of the same group failed"),
        "{}",
        out.stdout
    );
    let runs = out.root.path().join("state/nixcmd/runs");
    let run = std::fs::read_dir(&runs)
        .expect("runs")
        .next()
        .expect("a run")
        .expect("entry")
        .path();
    let undo = std::fs::read_to_string(run.join("state/undo.txt")).expect("rollbacks ran");
    let mut lines: Vec<&str> = undo.lines().collect();
    lines.sort_unstable();
    assert_eq!(lines, ["rolled back a", "rolled back b"], "c never started");
}

/// Lines each job of the chatty tests prints.
const CHATTY: u32 = 1_000_000;

/// A job's log: its start line (checked against `header`), then exactly `lines`, then the
/// `trailer` lines.
fn assert_log(path: &Path, header: &str, lines: &[String], trailer: &[&str]) {
    let log = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let log: Vec<&str> = log.lines().collect();
    assert!(log[0].starts_with(header), "{}: {}", path.display(), log[0]);
    let body = &log[1..log.len() - trailer.len()];
    assert_eq!(body.len(), lines.len(), "{}", path.display());
    if let Some(i) = body.iter().zip(lines).position(|(a, b)| a != b) {
        panic!(
            "{} line {}: {:?}, expected {:?}",
            path.display(),
            i + 2,
            body[i],
            lines[i]
        );
    }
    assert_eq!(
        &log[log.len() - trailer.len()..],
        trailer,
        "{}",
        path.display()
    );
}

/// The output events of a run, `(step, host, line)` in the order of `events.ndjson`; every
/// line of the file must be a whole event.
fn output_events(run: &Path) -> Vec<(String, Option<String>, String)> {
    let events = std::fs::read_to_string(run.join("events.ndjson")).expect("events");
    events
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("whole event lines"))
        .filter(|e| e["type"] == "output")
        .map(|e| {
            (
                e["step_id"].as_str().expect("step_id").to_string(),
                e["host"].as_str().map(str::to_string),
                e["line"].as_str().expect("line").to_string(),
            )
        })
        .collect()
}

/// What a chatty job prints: the secret (redacted), then 1…CHATTY.
fn chatty_lines() -> Vec<String> {
    std::iter::once("token [REDACTED]".to_string())
        .chain((1..=CHATTY).map(|n| n.to_string()))
        .collect()
}

#[test]
fn a_chatty_group_is_recorded_whole_in_bounded_memory() {
    let rb = format!(
        r#"---
description: chatty members
nixcmd: {{}}
---
# Chatty group

## Steps
### secret
```bash {{id=secret}}
echo "API_TOKEN=s3cr3t-t0ken" >>"$NIXCMD_ENV"
```
### a
```bash {{id=a group=g}}
echo "token $API_TOKEN"
seq 1 {CHATTY}
```
### b
```bash {{id=b group=g}}
echo "token $API_TOKEN"
seq 1 {CHATTY}
exit 3
```
"#
    );
    let t = Test::new()
        .runbook("chatty.md", &rb)
        .args(["run", "chatty"]);
    let (status, peak_kb, printed, root) = run_measuring_peak(t);
    assert_eq!(status, Some(1), "{printed}");
    // With a report per line the engine fell behind and the queue held the output (200 MB).
    assert!(peak_kb < 30 * 1024, "peak resident size {peak_kb} kB");

    let run = only_run(root.path());
    let expected = chatty_lines();
    assert_log(
        &run.join("logs/a.log"),
        "── a attempt 1 at ",
        &expected,
        &[],
    );
    assert_log(
        &run.join("logs/b.log"),
        "── b attempt 1 at ",
        &expected,
        &["── exited with status 3 ──"],
    );
    let events = output_events(&run);
    assert_eq!(events.len(), 2 * expected.len());
    for id in ["a", "b"] {
        let mine: Vec<&String> = events
            .iter()
            .filter(|(s, h, _)| s == id && h.is_none())
            .map(|(_, _, l)| l)
            .collect();
        assert!(mine.iter().copied().eq(expected.iter()), "events of {id}");
    }
    // The failure report: b's last 20 lines.
    let shown: Vec<&str> = printed
        .lines()
        .filter_map(|l| l.trim().strip_prefix("│ "))
        .collect();
    let tail: Vec<&str> = expected[expected.len() - 20..]
        .iter()
        .map(String::as_str)
        .collect();
    assert_eq!(shown, tail, "{printed}");
}

#[test]
fn a_chatty_fan_out_is_recorded_whole_in_bounded_memory() {
    let rb = format!(
        r#"---
description: chatty hosts
nixcmd: {{}}
---
# Chatty hosts

## Steps
### secret
```bash {{id=secret}}
echo "API_TOKEN=s3cr3t-t0ken" >>"$NIXCMD_ENV"
```
### spew
```bash {{id=spew hosts=all}}
echo "token $API_TOKEN"
seq 1 {CHATTY}
```
"#
    );
    let t = Test::new()
        .file(
            "project/nixcmd.toml",
            "[hosts.h1]\ntarget = \"local\"\n\n[hosts.h2]\ntarget = \"local\"\n",
        )
        .runbook("chatty.md", &rb)
        .args(["run", "chatty"]);
    let (status, peak_kb, printed, root) = run_measuring_peak(t);
    assert_eq!(status, Some(0), "{printed}");
    assert!(peak_kb < 30 * 1024, "peak resident size {peak_kb} kB");

    let run = only_run(root.path());
    let expected = chatty_lines();
    let events = output_events(&run);
    assert_eq!(events.len(), 2 * expected.len());
    for host in ["h1", "h2"] {
        assert_log(
            &run.join(format!("logs/spew@{host}.log")),
            &format!("── spew@{host} attempt 1 at "),
            &expected,
            &[],
        );
        let mine: Vec<&String> = events
            .iter()
            .filter(|(s, h, _)| s == "spew" && h.as_deref() == Some(host))
            .map(|(_, _, l)| l)
            .collect();
        assert!(mine.iter().copied().eq(expected.iter()), "events of {host}");
    }
}

#[test]
fn chatty_hosts_over_ssh_are_recorded_whole_in_bounded_memory() {
    let Some(fleet) = Fleet::start(2) else { return };
    let steps = format!(
        r#"### spew
```bash {{id=spew hosts=all}}
seq 1 {CHATTY} | sed "s/^/$NIXCMD_HOST /"
echo "$NIXCMD_HOST done" >&2
```
"#
    );
    let t = project(&fleet, "", &runbook(&steps, ""));
    let marks = t.root().join("marks").display().to_string();
    let (status, peak_kb, printed, root) = run_measuring_peak(t.args(["run", "fan", &marks]));
    assert_eq!(status, Some(0), "{printed}");
    assert!(peak_kb < 30 * 1024, "peak resident size {peak_kb} kB");
    let run = only_run(root.path());
    let events = output_events(&run);
    for host in ["h1", "h2"] {
        let numbers: Vec<String> = (1..=CHATTY).map(|n| format!("{host} {n}")).collect();
        let done = format!("{host} done");
        // Each stream in order; where stderr's one line falls among stdout's is best effort.
        let check = |what: &str, lines: Vec<&str>| {
            let (ended, rest): (Vec<&str>, Vec<&str>) = lines.into_iter().partition(|l| *l == done);
            assert_eq!(ended, [done.as_str()], "{what}");
            assert_eq!(rest.len(), numbers.len(), "{what}");
            assert!(
                rest.iter().copied().eq(numbers.iter().map(String::as_str)),
                "{what}"
            );
        };
        let log = std::fs::read_to_string(run.join(format!("logs/spew@{host}.log"))).expect("log");
        let log: Vec<&str> = log.lines().collect();
        assert!(
            log[0].starts_with(&format!("── spew@{host} attempt 1 at ")),
            "{}",
            log[0]
        );
        check(&format!("log of {host}"), log[1..].to_vec());
        check(
            &format!("events of {host}"),
            events
                .iter()
                .filter(|(s, h, _)| s == "spew" && h.as_deref() == Some(host))
                .map(|(_, _, l)| l.as_str())
                .collect(),
        );
    }
}

// ---- $NIXCMD_HOSTS_FILE: the run's hosts for the steps on this machine ----------------------

/// A runbook whose steps here print the hosts file, raw and as the documented `read -a` sees
/// it. Its fan-outs are rollback blocks: they select hosts but never run on a success.
const HOSTS_FILE_RUNBOOK: &str = r#"---
description: the hosts file
nixcmd: {}
---
# Hosts file

## Steps
### show
```bash {id=show CONFIRM}
cat "$NIXCMD_HOSTS_FILE"
while IFS=$'\t' read -r -a f; do echo "${f[0]}|${f[1]}|${f[2]}|${f[3]}|${f[*]:4}"; done <"$NIXCMD_HOSTS_FILE"
```

## Rollback
### web
```bash {id=undo-web hosts=@web}
true
```
### db
```bash {id=undo-db hosts=db1}
true
```
"#;

const HOSTS_FILE_CONFIG: &str = r#"[ssh]
connect_timeout = 3
options = ["-F", "/etc/fleet_ssh"]

[hosts.web1]
target = "root@10.0.0.5"
port = 2222
tags = ["web"]
ssh_options = ["-i", "/keys/deploy"]

[hosts.db1]
target = "db1.example"
tags = ["db"]

[hosts.local]
tags = ["web"]
"#;

/// Every host the run's fan-outs select, after `--hosts`, in inventory order, as nixcmd
/// reaches it: `$XDG_CONFIG_HOME/nixcmd/config.toml` (no project file), `[ssh]` options and
/// timeout, the port, the host's options, a host that runs here.
#[test]
fn local_steps_get_the_hosts_the_run_selected() {
    let out = Test::new()
        .file("config/nixcmd/config.toml", HOSTS_FILE_CONFIG)
        .runbook("hf.md", &HOSTS_FILE_RUNBOOK.replace(" CONFIRM", ""))
        .args(["run", "hf", "--hosts", "web1,local"])
        .run();
    out.assert_status(0);
    let run = only_run(out.root.path());
    let expected = "web1\tssh\troot@10.0.0.5\t2222\t-o\tBatchMode=yes\t-o\tConnectTimeout=3\t\
                    -o\tServerAliveInterval=15\t-o\tServerAliveCountMax=3\t-F\t/etc/fleet_ssh\t\
                    -i\t/keys/deploy\n\
                    local\tlocal\tlocal\t-\n";
    assert_eq!(
        std::fs::read_to_string(run.join("hosts.tsv")).unwrap(),
        expected
    );
    let log = std::fs::read_to_string(run.join("logs/show.log")).unwrap();
    let lines: Vec<&str> = log.lines().filter(|l| !l.starts_with("── ")).collect();
    assert_eq!(
        lines,
        [
            expected.lines().next().unwrap(),
            "local\tlocal\tlocal\t-",
            "web1|ssh|root@10.0.0.5|2222|-o BatchMode=yes -o ConnectTimeout=3 -o \
             ServerAliveInterval=15 -o ServerAliveCountMax=3 -F /etc/fleet_ssh -i /keys/deploy",
            "local|local|local|-|",
        ]
    );
}

/// A command without fan-outs (or whose only fan-out follows an empty `hosts=arg:`) gets no
/// variable and no file.
#[test]
fn a_run_without_fan_outs_has_no_hosts_file() {
    let out = Test::new()
        .file("project/nixcmd.toml", HOSTS_FILE_CONFIG)
        .runbook(
            "plain.md",
            "---\ndescription: x\nnixcmd: {}\n---\n# X\n## Steps\n```bash {id=show}\necho \"${NIXCMD_HOSTS_FILE-unset}\"\n```\n",
        )
        .args(["run", "plain"])
        .run();
    out.assert_status(0);
    let run = only_run(out.root.path());
    assert!(!run.join("hosts.tsv").exists());
    let log = std::fs::read_to_string(run.join("logs/show.log")).unwrap();
    assert_eq!(
        log.lines()
            .filter(|l| !l.starts_with("── "))
            .collect::<Vec<_>>(),
        ["unset"]
    );
}

/// A run paused at a gate, resumed after the inventory changed (a port, a new tagged host):
/// its steps here still see the hosts of the original run.
#[test]
fn a_resumed_run_keeps_the_hosts_of_the_original_run() {
    let out = Test::new()
        .file("config/nixcmd/config.toml", HOSTS_FILE_CONFIG)
        .runbook(
            "hf.md",
            &HOSTS_FILE_RUNBOOK.replace(" CONFIRM", " confirm=\"Show?\""),
        )
        .args(["run", "hf", "--hosts", "@web"])
        .run();
    out.assert_status(3);
    let root = out.root.path().to_path_buf();
    let run = only_run(&root);
    let before = std::fs::read_to_string(run.join("hosts.tsv")).unwrap();
    assert!(
        before.starts_with("web1\tssh\troot@10.0.0.5\t2222\t"),
        "{before}"
    );
    assert!(before.ends_with("\nlocal\tlocal\tlocal\t-\n"), "{before}");
    let changed = HOSTS_FILE_CONFIG.replace("port = 2222", "port = 2223")
        + "\n[hosts.web2]\ntarget = \"root@10.0.0.6\"\ntags = [\"web\"]\n";
    std::fs::write(root.join("config/nixcmd/config.toml"), changed).unwrap();
    let id = crate::run_support::run_id(&run);
    let out = out.then().args(["resume", &id, "--approve", "show"]).run();
    out.assert_status(0);
    assert_eq!(
        std::fs::read_to_string(run.join("hosts.tsv")).unwrap(),
        before
    );
    let log = std::fs::read_to_string(run.join("logs/show.log")).unwrap();
    let shown: String = log
        .lines()
        .filter(|l| !l.starts_with("── "))
        .take(2)
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(shown, before);
}

/// On a host over ssh the variable would name a file of this machine: it is not sent.
#[test]
fn a_host_over_ssh_gets_no_hosts_file() {
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### on-host
```bash {id=on-host hosts=all}
echo "remote: ${NIXCMD_HOSTS_FILE-unset}"
```
### here
```bash {id=here}
echo "here: $(basename "$NIXCMD_HOSTS_FILE")"
```
"#;
    let out = run(project(&fleet, "", &runbook(steps, "")), &[]);
    out.assert_status(0);
    let run = only_run(out.root.path());
    let read = |name: &str| {
        std::fs::read_to_string(run.join("logs").join(name))
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with("── "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(read("on-host@h1.log"), ["remote: unset"]);
    assert_eq!(read("here.log"), ["here: hosts.tsv"]);
}

/// A host added to the inventory while a run was paused was reached by the resumed run's
/// fan-outs, though nothing had been built or recorded for it (deploy-all then activated it
/// with no system and rolled it back to nothing: exit 5). A resumed run reaches the hosts it
/// started with, and names the newcomer.
#[test]
fn a_resumed_run_reaches_only_the_hosts_it_started_with() {
    let Some(fleet) = Fleet::start(2) else { return };
    let full = fleet.config("");
    let (first, _) = full.split_once("\n[hosts.h2]").expect("two hosts");
    let steps = r#"### gate
```bash {id=gate confirm="Go on?"}
true
```
### stamp
```bash {id=stamp hosts=all}
echo "$NIXCMD_HOST" > "$NIXCMD_ARG_MARKS/$NIXCMD_HOST"
```
"#;
    let test =
        project(&fleet, "", &runbook(steps, "")).file("project/nixcmd.toml", format!("{first}\n"));
    let paused = run(test, &[]);
    paused.assert_status(3);
    let root = paused.root.path().to_path_buf();
    std::fs::write(root.join("project/nixcmd.toml"), &full).unwrap();
    let id = crate::run_support::run_id(&only_run(&root));
    let out = paused
        .then()
        .timeout(Duration::from_secs(120))
        .args(["resume", &id, "--approve", "gate"])
        .run();
    out.assert_status(0);
    assert_eq!(marks(&out).keys().collect::<Vec<_>>(), ["h1"]);
    let warning = "host `h2` is not one of this run's hosts (it joined the inventory since the run started): left out; start a new run for it";
    assert_eq!(out.stdout.matches(warning).count(), 2, "{}", out.stdout);
}

/// On a host, `$NIXCMD_ENV` reads as on this machine: values of several lines
/// (`NAME<<DELIMITER`), a value ending in `=` kept whole, a last line without a newline, a
/// line that sets nothing warned about (once) with the host named; and an export that has
/// the name of one of the wrapper's own variables (`d`, its temporary folder, which it
/// removes) changes nothing but the step's environment.
#[test]
fn a_hosts_env_file_takes_values_of_several_lines_and_warns_about_bad_lines() {
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### export
```bash {id=export hosts=all}
mkdir -p "$NIXCMD_ARG_MARKS/keep" && touch "$NIXCMD_ARG_MARKS/keep/file"
{
  printf 'NOTES<<EOF\nline one\r\nA=inside\n\nEOF \nEOF\n'
  printf 'B64=YWJjZGU=\nd=%s/keep\nstate=/nonexistent\ntok=x\n' "$NIXCMD_ARG_MARKS"
  printf 'wrong line\nLAST=no newline'
} >> "$NIXCMD_ENV"
```
### use
```bash {id=use hosts=all}
printf '[%s]\n' "$NOTES" "$B64" "$LAST" "${A-unset}" > "$NIXCMD_ARG_MARKS/values"
echo "$d" > "$NIXCMD_ARG_MARKS/d"
printf '\nOPEN<<END\nx\n' >> "$NIXCMD_ENV"
```
"#;
    let out = run(
        project(&fleet, "", &runbook(steps, "")),
        &["--format", "json"],
    );
    out.assert_status(0);
    let m = marks(&out);
    assert_eq!(
        m["values"],
        "[line one\nA=inside\n\nEOF ]\n[YWJjZGU=]\n[no newline]\n[unset]\n"
    );
    let marks_dir = out.root.path().join("marks");
    assert_eq!(m["d"], format!("{}/keep\n", marks_dir.display()));
    assert!(
        marks_dir.join("keep/file").exists(),
        "the wrapper removed `$d`"
    );
    let warnings: Vec<String> = events(&out.stdout)
        .into_iter()
        .filter(|e| e["type"] == "warning")
        .map(|e| {
            format!(
                "{} {}",
                e["step_id"],
                e["message"].as_str().unwrap_or_default()
            )
        })
        .collect();
    assert_eq!(
        warnings,
        [
            "\"export\" step `export` on h1: $NIXCMD_ENV line 11: neither `NAME=VALUE` nor \
             `NAME<<DELIMITER`: ignored",
            "\"use\" step `use` on h1: $NIXCMD_ENV line 13: `OPEN<<END` has no line `END` after \
             it to end the value: `OPEN` not set",
        ]
    );
}

/// On a host as on this machine, an export of one of nixcmd's own names sets nothing and is
/// a warning: `NIXCMD_ENV` pointed elsewhere would lose every later export on that host.
#[test]
fn a_hosts_exports_of_nixcmds_own_names_set_nothing() {
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### export
```bash {id=export hosts=all}
printf 'NIXCMD_ENV=/tmp/elsewhere\nARGUMENTS=evil\nOK=1\n' >> "$NIXCMD_ENV"
```
### use
```bash {id=use hosts=all}
echo 'LATER=yes' >> "$NIXCMD_ENV"
```
### last
```bash {id=last hosts=all}
printf '[%s]\n' "${NIXCMD_ENV##*/}" "$ARGUMENTS" "$OK" "$LATER" > "$NIXCMD_ARG_MARKS/values"
```
"#;
    let out = run(
        project(&fleet, "", &runbook(steps, "")),
        &["--format", "json"],
    );
    out.assert_status(0);
    // `ARGUMENTS` keeps the run's arguments (the marks folder these tests pass).
    let marks_dir = out.root.path().join("marks");
    assert_eq!(
        marks(&out)["values"],
        format!("[env]\n[{}]\n[1]\n[yes]\n", marks_dir.display())
    );
    let warnings = crate::run_support::warning_messages(&out.stdout);
    assert_eq!(
        warnings,
        [
            "step `export` on h1: $NIXCMD_ENV line 1: `NIXCMD_ENV` is set by nixcmd itself: not set",
            "step `export` on h1: $NIXCMD_ENV line 2: `ARGUMENTS` is set by nixcmd itself: not set",
        ]
    );
}

/// A progress line a host's step redraws with `\r` is its last output at once (here in the
/// heartbeat), through ssh as on this machine; its log keeps the line whole.
#[test]
fn a_hosts_progress_line_is_its_last_output_before_the_line_ends() {
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### pull
```bash {id=pull hosts=all}
printf 'pulling 10%%\rpulling 55%%\r'
sleep 2.5
printf 'pulled\n'
```
"#;
    let t = project(&fleet, "", &runbook(steps, "")).env("NIXCMD_HEARTBEAT", "1s");
    let out = run(t, &[]);
    out.assert_status(0);
    // A beat before the host's first bytes arrive (ssh is slow on a busy machine) has no
    // last output yet; one of the beats after them must show the bar's newest state.
    let beats: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.contains("pull@h1 still running"))
        .collect();
    assert!(
        beats
            .iter()
            .any(|b| b.ends_with("; last output: pulling 55%)")),
        "{}",
        out.stdout
    );
    let log = std::fs::read_to_string(only_run(out.root.path()).join("logs/pull@h1.log"))
        .expect("the host's log");
    assert!(
        log.ends_with("\npulling 10%\rpulling 55%\rpulled\n"),
        "{log:?}"
    );
}

/// `when=`/`unless=` on a fan-out step is decided once, on this machine, before the fan-out:
/// from nixcmd's own environment (which the hosts do not get) and the run's exports. A step
/// whose condition does not hold reaches no host and asks nothing.
#[test]
fn a_condition_on_a_fan_out_step_is_decided_here_once() {
    let Some(fleet) = Fleet::start(2) else { return };
    let steps = r#"`LOCAL_ONLY` is set in nixcmd's own environment.

### decide
```bash {id=decide}
echo "FAN=0" >>"$NIXCMD_ENV"
```
### skipped
```bash {id=skipped hosts=all when=FAN confirm="Fan out?" irreversible}
echo skipped >"$NIXCMD_ARG_MARKS/skipped-$NIXCMD_HOST"
```
### ran
```bash {id=ran hosts=all when=LOCAL_ONLY unless=FAN}
echo "${LOCAL_ONLY:-unset}" >"$NIXCMD_ARG_MARKS/ran-$NIXCMD_HOST"
```
"#;
    let out = run(
        project(&fleet, "", &runbook(steps, ""))
            .env("CI", "true")
            .env("LOCAL_ONLY", "1"),
        &["--format", "json"],
    );
    out.assert_status(0);
    let m = marks(&out);
    assert_eq!(names(&m, "skipped-"), Vec::<String>::new());
    assert_eq!(names(&m, "ran-"), ["h1", "h2"]);
    // The hosts never saw LOCAL_ONLY: the condition was not decided there.
    assert!(m.values().all(|v| v == "unset\n"), "{m:?}");
    let stream = events(&out.stdout);
    assert!(!stream.iter().any(|e| e["type"] == "gate"));
    let skipped: Vec<_> = stream
        .iter()
        .filter(|e| e["step_id"] == "skipped" && e["type"] != "run_started")
        .map(|e| (e["type"].clone(), e["host"].clone(), e["reason"].clone()))
        .collect();
    assert_eq!(
        skipped,
        [(
            serde_json::json!("step_finished"),
            serde_json::Value::Null,
            serde_json::json!("when=FAN: FAN is not true")
        )]
    );
    let run = only_run(out.root.path());
    assert!(!run.join("logs/skipped@h1.log").exists());
}

/// The runbook of the host-secret tests: `export` puts three secrets into the host's
/// `$NIXCMD_ENV` (a secret name, a value of several lines, and a name listed in
/// `nixcmd.secrets`), read from files so that the runbook (copied into the run folder) does
/// not hold them; `gate` may pause the run there; `print` prints them on the host and `here`
/// on this machine.
const HOST_SECRETS: &str = r#"---
description: host secrets
nixcmd:
  secrets: [DB_CONN]
  args:
    marks: { required: true }
---
# Host secrets

## Steps
### export
```bash {id=export hosts=all}
m=$NIXCMD_ARG_MARKS
echo "API_TOKEN=$(cat "$m/token")" >>"$NIXCMD_ENV"
{ echo 'TLS_KEY<<EOF'; cat "$m/pem"; echo EOF; } >>"$NIXCMD_ENV"
echo "DB_CONN=$(cat "$m/conn")" >>"$NIXCMD_ENV"
echo exported
```
GATE
### print
```bash {id=print hosts=all}
exec 2>&1
echo "token: $API_TOKEN"
echo "key: $TLS_KEY"
echo "conn: $DB_CONN"
set -x
: "$API_TOKEN"
```
### here
```bash {id=here}
echo "here: $(cat "$NIXCMD_ARG_MARKS/token") $(cat "$NIXCMD_ARG_MARKS/conn")"
```
"#;

const TOKEN: &str = "s3cr3t-value";
const PEM: &str =
    "-----BEGIN PRIVATE KEY-----\nk3y-line-0ne\nk3y-line-tw0\n-----END PRIVATE KEY-----\n";
const CONN: &str = "postgres://app:c0nn-pw@db/app";

/// What `print` shows of the secrets, redacted.
const PRINTED: &[&str] = &[
    "token: [REDACTED]",
    "key: [REDACTED]",
    "[REDACTED]",
    "[REDACTED]",
    "[REDACTED]",
    "conn: [REDACTED]",
    "+ : [REDACTED]",
];

fn host_secrets(fleet: &Fleet, gate: &str) -> Test {
    project(fleet, "", &HOST_SECRETS.replace("GATE", gate))
        .file("marks/token", TOKEN)
        .file("marks/pem", PEM)
        .file("marks/conn", CONN)
}

/// Every file under the run folder, and the output, are free of the secrets' values (each
/// line of the key too).
fn assert_no_secret(run: &Path, out: &Output) {
    let values = [TOKEN, "k3y-line-0ne", "k3y-line-tw0", "c0nn-pw"];
    for file in walk(run) {
        let text = String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).into_owned();
        for v in values {
            assert!(!text.contains(v), "{} holds {v}:\n{text}", file.display());
        }
    }
    for v in values {
        assert!(!out.stdout.contains(v), "stdout holds {v}:\n{}", out.stdout);
        assert!(!out.stderr.contains(v), "stderr holds {v}:\n{}", out.stderr);
    }
}

/// A log's lines after its `── … ──` header lines.
fn log_lines(run: &Path, name: &str) -> Vec<String> {
    std::fs::read_to_string(run.join("logs").join(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .lines()
        .filter(|l| !l.starts_with("── "))
        .map(str::to_string)
        .collect()
}

/// Secrets a step exported on a host are redacted from then on, as those exported on this
/// machine: in the logs, the events, the JSON stream and the terminal, of that host, of the
/// others and of this machine; the values never reach the run folder.
#[test]
fn secrets_exported_on_a_host_are_redacted_everywhere() {
    let Some(fleet) = Fleet::start(2) else { return };
    for json in [false, true] {
        // `--verbose`: the plain stream shows the steps' output.
        let extra: &[&str] = if json {
            &["--format", "json"]
        } else {
            &["--verbose"]
        };
        let out = run(host_secrets(&fleet, ""), extra);
        out.assert_status(0);
        let run = only_run(out.root.path());
        assert_no_secret(&run, &out);
        // Nor the wrapper's own lines, which carry them (the record separator starts them).
        for file in walk(&run) {
            let text =
                String::from_utf8_lossy(&std::fs::read(&file).unwrap_or_default()).into_owned();
            assert!(
                !text.contains('\u{1e}') && !text.contains("\\u001e"),
                "{}:\n{text}",
                file.display()
            );
        }
        assert!(!out.stdout.contains('\u{1e}') && !out.stdout.contains("\\u001e"));
        assert!(!out.stderr.contains('\u{1e}'));
        for h in ["h1", "h2"] {
            assert_eq!(log_lines(&run, &format!("export@{h}.log")), ["exported"]);
            assert_eq!(log_lines(&run, &format!("print@{h}.log")), PRINTED);
        }
        assert_eq!(log_lines(&run, "here.log"), ["here: [REDACTED] [REDACTED]"]);
        let printed: Vec<(String, Option<String>, String)> = output_events(&run)
            .into_iter()
            .filter(|(step, _, _)| step == "print")
            .collect();
        assert_eq!(printed.len(), 2 * PRINTED.len(), "{printed:?}");
        for (_, _, line) in &printed {
            assert!(PRINTED.contains(&line.as_str()), "{line}");
        }
        if json {
            let streamed: Vec<String> = events(&out.stdout)
                .into_iter()
                .filter(|e| e["type"] == "output" && e["step_id"] == "print")
                .map(|e| e["line"].as_str().unwrap_or_default().to_string())
                .collect();
            assert_eq!(streamed.len(), 2 * PRINTED.len(), "{}", out.stdout);
            assert!(
                streamed.iter().all(|l| PRINTED.contains(&l.as_str())),
                "{streamed:?}"
            );
        } else {
            for shown in [
                "here: [REDACTED] [REDACTED]",
                "token: [REDACTED]",
                "+ : [REDACTED]",
            ] {
                assert!(out.stdout.contains(shown), "{shown}:\n{}", out.stdout);
            }
        }
    }
}

/// A run paused after the host exported its secrets, then resumed: the host's next step
/// still prints them redacted (nixcmd learns them again from the host before it starts).
#[test]
fn secrets_exported_on_a_host_are_redacted_after_a_resume() {
    let Some(fleet) = Fleet::start(1) else { return };
    let gate = "### gate\n```bash {id=gate confirm=\"Go on?\"}\ntrue\n```\n";
    let paused = run(host_secrets(&fleet, gate), &[]);
    paused.assert_status(3);
    let root = paused.root.path().to_path_buf();
    let run = only_run(&root);
    assert_no_secret(&run, &paused);
    let id = crate::run_support::run_id(&run);
    let out = paused
        .then()
        .timeout(Duration::from_secs(120))
        .args(["resume", &id, "--approve", "gate"])
        .run();
    out.assert_status(0);
    assert_no_secret(&run, &out);
    assert_eq!(log_lines(&run, "print@h1.log"), PRINTED);
    assert_eq!(log_lines(&run, "here.log"), ["here: [REDACTED] [REDACTED]"]);
}

/// A host step's own output is redacted of what that step exports, from the line it prints
/// after the export on, as on this machine: on stdout (also within a line it had started
/// before the export) and on stderr, in its log, the events, the JSON stream and the terminal.
#[test]
fn a_hosts_secret_is_redacted_from_the_output_of_the_step_that_exports_it() {
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### out
```bash {id=out hosts=all}
m=$NIXCMD_ARG_MARKS
echo before
echo "API_TOKEN=$(cat "$m/token")" >>"$NIXCMD_ENV"
echo "using $(cat "$m/token")"
printf 'half '
sleep 0.5
echo "DB_PASSWORD=$(cat "$m/conn")" >>"$NIXCMD_ENV"
echo "$(cat "$m/conn") end"
```
### err
```bash {id=err hosts=all}
exec 1>&2
{ echo 'TLS_KEY<<EOF'; cat "$NIXCMD_ARG_MARKS/pem"; echo EOF; } >>"$NIXCMD_ENV"
cat "$NIXCMD_ARG_MARKS/pem"
```
"#;
    let out_lines = ["before", "using [REDACTED]", "half [REDACTED] end"];
    let err_lines = ["[REDACTED]", "[REDACTED]", "[REDACTED]", "[REDACTED]"];
    for json in [false, true] {
        let extra: &[&str] = if json {
            &["--format", "json"]
        } else {
            &["--verbose"]
        };
        let t = project(&fleet, "", &runbook(steps, ""))
            .file("marks/token", TOKEN)
            .file("marks/pem", PEM)
            .file("marks/conn", CONN);
        let out = run(t, extra);
        out.assert_status(0);
        let run = only_run(out.root.path());
        assert_no_secret(&run, &out);
        assert_eq!(log_lines(&run, "out@h1.log"), out_lines);
        assert_eq!(log_lines(&run, "err@h1.log"), err_lines);
        let recorded: Vec<(String, String)> = output_events(&run)
            .into_iter()
            .map(|(step, _, line)| (step, line))
            .collect();
        let expected: Vec<(String, String)> = out_lines
            .iter()
            .map(|l| ("out".to_string(), l.to_string()))
            .chain(err_lines.iter().map(|l| ("err".to_string(), l.to_string())))
            .collect();
        assert_eq!(recorded, expected);
        if json {
            let streamed: Vec<(String, String)> = events(&out.stdout)
                .into_iter()
                .filter(|e| e["type"] == "output")
                .map(|e| {
                    (
                        e["step_id"].as_str().unwrap_or_default().to_string(),
                        e["line"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            assert_eq!(streamed, expected, "{}", out.stdout);
        } else {
            for shown in ["using [REDACTED]", "half [REDACTED] end"] {
                assert!(out.stdout.contains(shown), "{shown}:\n{}", out.stdout);
            }
        }
    }
}

/// A resumed run knows the secrets its hosts exported before the pause from its first step
/// on, before that host runs again: a step on this machine that prints them first shows
/// them redacted.
#[test]
fn a_hosts_secret_is_redacted_after_a_resume_before_that_host_runs_again() {
    let Some(fleet) = Fleet::start(1) else { return };
    let gate = "### gate\n```bash {id=gate confirm=\"Go on?\"}\ntrue\n```\n### early\n```bash {id=early}\necho \"early: $(cat \"$NIXCMD_ARG_MARKS/token\") $(cat \"$NIXCMD_ARG_MARKS/conn\")\"\n```\n";
    let paused = run(host_secrets(&fleet, gate), &[]);
    paused.assert_status(3);
    let root = paused.root.path().to_path_buf();
    let run = only_run(&root);
    // The run records which host told of secrets (never what they are): the host to ask.
    let progress: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(run.join("progress.json")).expect("progress.json"),
    )
    .expect("progress.json is JSON");
    let told: Vec<(String, String)> = progress["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| {
            let id = s["id"].as_str().unwrap_or_default().to_string();
            s["hosts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|h| h["exported_secrets"] == true)
                .map(move |h| {
                    (
                        id.clone(),
                        h["host"].as_str().unwrap_or_default().to_string(),
                    )
                })
        })
        .collect();
    assert_eq!(told, [("export".to_string(), "h1".to_string())]);
    let id = crate::run_support::run_id(&run);
    let out = paused
        .then()
        .timeout(Duration::from_secs(120))
        .args(["resume", &id, "--approve", "gate", "--format", "json"])
        .run();
    out.assert_status(0);
    assert_no_secret(&run, &out);
    assert_eq!(
        log_lines(&run, "early.log"),
        ["early: [REDACTED] [REDACTED]"]
    );
    let early: Vec<String> = output_events(&run)
        .into_iter()
        .filter(|(step, _, _)| step == "early")
        .map(|(_, _, line)| line)
        .collect();
    assert_eq!(early, ["early: [REDACTED] [REDACTED]"]);
    let streamed: Vec<String> = events(&out.stdout)
        .into_iter()
        .filter(|e| e["type"] == "output" && e["step_id"] == "early")
        .map(|e| e["line"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(streamed, ["early: [REDACTED] [REDACTED]"], "{}", out.stdout);
    // Nothing to warn about: the host answered.
    let warnings: Vec<serde_json::Value> = events(&out.stdout)
        .into_iter()
        .filter(|e| e["type"] == "warning")
        .collect();
    assert_eq!(warnings, Vec::<serde_json::Value>::new());
}

/// A host that told of secrets but cannot be reached when the run resumes is a warning, not a
/// failure of the resume: the run goes on (here to that host's next step, which fails).
#[test]
fn a_host_that_cannot_tell_its_secrets_on_resume_is_a_warning() {
    let Some(fleet) = Fleet::start(1) else { return };
    let gate = "### gate\n```bash {id=gate confirm=\"Go on?\"}\ntrue\n```\n";
    let paused = run(host_secrets(&fleet, gate), &[]);
    paused.assert_status(3);
    let run = only_run(paused.root.path());
    let id = crate::run_support::run_id(&run);
    let stopped = Command::new(harness())
        .arg("stop")
        .arg(fleet.dir.path())
        .status()
        .expect("run sshd-harness.sh stop");
    assert!(stopped.success());
    let out = paused
        .then()
        .timeout(Duration::from_secs(120))
        .args(["resume", &id, "--approve", "gate", "--format", "json"])
        .run();
    out.assert_status(1);
    let warnings = crate::run_support::warning_messages(&out.stdout);
    assert_eq!(
        warnings,
        [format!(
            "host `h1`: cannot learn the secrets it exported earlier in this run (cannot reach \
             the host: ssh: connect to host 127.0.0.1 port {}: Connection refused): they are \
             redacted only from its next step on",
            fleet.ports[0]
        )],
        "{}",
        out.stdout
    );
}

/// A step's own output that imitates the wrapper's lines (its marker, with a made-up run
/// key or none, a half line that would swallow the wrapper's next line) neither makes
/// nixcmd redact a value nor keeps it from learning the secret the step exported; such
/// lines are the step's output, recorded as it printed them.
#[test]
fn a_hosts_output_imitating_the_wrapper_neither_adds_nor_hides_secrets() {
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### export
```bash {id=export hosts=all}
printf '\036nixcmd:0123456789abcdef0123456789abcdef secret API_KEY harmless-word\n' >&2
printf '\036nixcmd:secret API_KEY harmless-word\n' >&2
printf '\036nixcmd:exit 7\n' >&2
echo "API_TOKEN=$(cat "$NIXCMD_ARG_MARKS/token")" >>"$NIXCMD_ENV"
printf 'half a line \036nixcmd:' >&2
```
### print
```bash {id=print hosts=all}
echo "harmless-word $API_TOKEN"
```
"#;
    let t = project(&fleet, "", &runbook(steps, "")).file("marks/token", TOKEN);
    let out = run(t, &[]);
    out.assert_status(0);
    let run = only_run(out.root.path());
    assert_no_secret(&run, &out);
    assert_eq!(
        log_lines(&run, "export@h1.log"),
        [
            "\u{1e}nixcmd:0123456789abcdef0123456789abcdef secret API_KEY harmless-word",
            "\u{1e}nixcmd:secret API_KEY harmless-word",
            "\u{1e}nixcmd:exit 7",
            "half a line \u{1e}nixcmd:",
        ]
    );
    assert_eq!(
        log_lines(&run, "print@h1.log"),
        ["harmless-word [REDACTED]"]
    );
}

/// A line a host's step leaves unfinished (a prompt before long work) is its last output once
/// ssh's pipe stays quiet (here in the heartbeat), as on this machine; its log keeps the line
/// whole. The step waits until the test saw it.
#[test]
fn a_hosts_unfinished_line_is_its_last_output_before_the_line_ends() {
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### build
```bash {id=build hosts=all}
printf 'Building system... '
while [ ! -e "$NIXCMD_ARG_MARKS/go" ]; do sleep 0.02; done
echo done
```
"#;
    let t = project(&fleet, "", &runbook(steps, "")).env("NIXCMD_HEARTBEAT", "1s");
    let marks = t.root().join("marks");
    let run =
        crate::run_support::Spawned::start(t.args(["run", "fan", &marks.display().to_string()]));
    let shown = "build@h1 still running (";
    crate::run_support::wait_until(
        "the unfinished line in a heartbeat",
        Duration::from_secs(60),
        || {
            run.stdout_so_far()
                .lines()
                .any(|l| l.contains(shown) && l.ends_with("; last output: Building system...)"))
        },
    );
    std::fs::write(marks.join("go"), "").expect("let the step end");
    let out = run.wait();
    out.assert_status(0);
    let log = std::fs::read_to_string(only_run(out.root.path()).join("logs/build@h1.log"))
        .expect("the host's log");
    assert!(log.ends_with(" ──\nBuilding system... done\n"), "{log:?}");
}

/// A compensation running on a host is not stopped by a first Ctrl-C either (the stop goes
/// through the wrapper, `remote.rs`); the held Ctrl-C is said once.
#[test]
fn a_first_ctrl_c_lets_a_host_compensation_finish() {
    use crate::run_support::{Spawned, wait_until};
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### change
```bash {id=change hosts=all rollback=restore}
touch "$NIXCMD_ARG_MARKS/changed-$NIXCMD_HOST"
```
### verify
```bash {id=verify}
exit 1
```
"#;
    let rollback = r#"### restore
```bash
m=$NIXCMD_ARG_MARKS
trap 'echo INT >> "$m/signals"' INT
trap 'echo TERM >> "$m/signals"' TERM
touch "$m/restoring-$NIXCMD_HOST"
while [ ! -e "$m/go" ]; do sleep 0.02; done
touch "$m/restored-$NIXCMD_HOST"
```
"#;
    let t = project(&fleet, "", &runbook(steps, rollback));
    let marks_dir = t.root().join("marks");
    let run = Spawned::start(t.args(["run", "fan", &marks_dir.display().to_string()]));
    wait_until("the host compensation", Duration::from_secs(60), || {
        marks_dir.join("restoring-h1").exists()
    });
    run.signal(libc::SIGINT);
    let held = "warning: rolling back: Ctrl-C again to stop at once (the rollback is left \
                unfinished)";
    wait_until(
        "the notice of the held Ctrl-C",
        Duration::from_secs(30),
        || run.stdout_so_far().contains(held),
    );
    std::fs::write(marks_dir.join("go"), "").expect("write go");
    let out = run.wait();
    out.assert_status(1);
    let m = marks(&out);
    assert_eq!(
        m.keys().map(String::as_str).collect::<Vec<_>>(),
        ["changed-h1", "go", "restored-h1", "restoring-h1"],
        "no signals reached the host's compensation"
    );
    assert_eq!(out.stdout.matches(held).count(), 1, "{}", out.stdout);
}

/// A host that accepts connections but never says anything: ssh hangs at connect.
fn silent_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind a silent listener")
}

/// A host nixcmd could not reach (connection refused, or hanging at connect) never started
/// the step: nothing is rolled back there (README "Failure policy"), the run ends 1, not 5.
#[test]
fn an_unreachable_host_is_not_rolled_back() {
    let Some(fleet) = Fleet::start(1) else { return };
    let closed = free_port();
    let silent = silent_listener();
    let hung = silent.local_addr().expect("address").port();
    let extra = format!(
        "\n[hosts.gone]\ntarget = \"root@127.0.0.1\"\nport = {closed}\n\
         \n[hosts.hung]\ntarget = \"root@127.0.0.1\"\nport = {hung}\n"
    );
    let steps = r#"### change
```bash {id=change hosts=gone,hung,h1 parallel=3 rollback=undo}
touch "$NIXCMD_ARG_MARKS/ran-$NIXCMD_HOST"
```
"#;
    let rollback = "### undo\n```bash\ntouch \"$NIXCMD_ARG_MARKS/undo-$NIXCMD_HOST\"\n```\n";
    let out = run(
        project(&fleet, "", &runbook(steps, rollback)).file(
            "project/nixcmd.toml",
            fleet
                .config(&extra)
                .replace("connect_timeout = 5", "connect_timeout = 2"),
        ),
        &[],
    );
    out.assert_status(1);
    // Both hosts were tried and not reached, each said so.
    for host in ["gone", "hung"] {
        assert!(
            out.stdout
                .lines()
                .any(|l| l.contains(&format!("@{host}")) && l.contains("cannot reach the host")),
            "{host}: {}",
            out.stdout
        );
    }
    assert!(
        !out.stdout.contains("rollback incomplete"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("run by hand"), "{}", out.stdout);
    assert!(!out.stdout.contains("undo@gone"), "{}", out.stdout);
    assert!(!out.stdout.contains("undo@hung"), "{}", out.stdout);
    let m = marks(&out);
    assert_eq!(names(&m, "ran-"), ["h1"]);
    assert!(names(&m, "undo-").is_empty(), "{m:?}");
    drop(silent);
}

/// Ctrl-C while a host hangs at connect: the run-wide rollback undoes the step only where it
/// started (h1), not on the host it never reached.
#[test]
fn a_run_wide_rollback_skips_a_host_the_step_never_reached() {
    use crate::run_support::{Spawned, wait_until};
    let Some(fleet) = Fleet::start(1) else { return };
    let silent = silent_listener();
    let hung = silent.local_addr().expect("address").port();
    let extra = format!("\n[hosts.hung]\ntarget = \"root@127.0.0.1\"\nport = {hung}\n");
    let steps = r#"### change
```bash {id=change hosts=h1,hung parallel=2 rollback=undo}
touch "$NIXCMD_ARG_MARKS/ran-$NIXCMD_HOST"
sleep 30
```
"#;
    let rollback = "### undo\n```bash\ntouch \"$NIXCMD_ARG_MARKS/undo-$NIXCMD_HOST\"\n```\n";
    let t = project(&fleet, &extra, &runbook(steps, rollback)).file(
        "project/nixcmd.toml",
        fleet
            .config(&extra)
            .replace("connect_timeout = 5", "connect_timeout = 30"),
    );
    let marks_dir = t.root().join("marks");
    let run = Spawned::start(t.args(["run", "fan", &marks_dir.display().to_string()]));
    wait_until("the step on h1", Duration::from_secs(60), || {
        marks_dir.join("ran-h1").exists()
    });
    run.signal(libc::SIGINT);
    let out = run.wait();
    assert!(
        !out.stdout.contains("rollback incomplete"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("run by hand"), "{}", out.stdout);
    out.assert_status(130);
    let m = marks(&out);
    assert_eq!(names(&m, "undo-"), ["h1"], "{}", out.stdout);
    drop(silent);
}

/// README "Failure policy": a run stopped by a host failure ends 5 when that host's rollback
/// failed, and `nixcmd resume RUN` still finishes the job, on the failed host only.
#[test]
fn a_run_stopped_by_a_host_whose_rollback_failed_can_be_resumed() {
    let Some(fleet) = Fleet::start(2) else { return };
    let steps = r#"### change
```bash {id=change hosts=all parallel=1 rollback=undo}
m=$NIXCMD_ARG_MARKS
echo x >>"$m/change-$NIXCMD_HOST"
[ "$NIXCMD_HOST" != h2 ] || [ -e "$m/fixed" ]
```
### later
```bash {id=later hosts=all}
touch "$NIXCMD_ARG_MARKS/later-$NIXCMD_HOST"
```
"#;
    let rollback = r#"### undo
```bash
[ -e "$NIXCMD_ARG_MARKS/fixed" ]
```
"#;
    let out = run(project(&fleet, "", &runbook(steps, rollback)), &[]);
    out.assert_status(5);
    assert!(out.stdout.contains("undo on host h2"), "{}", out.stdout);
    let run_id = only_run(out.root.path())
        .file_name()
        .expect("run id")
        .to_string_lossy()
        .into_owned();
    let marks_dir = out.root.path().join("marks");
    std::fs::write(marks_dir.join("fixed"), "").expect("fix h2");
    let resumed = out.then().args(["resume", &run_id]).run();
    resumed.assert_status(0);
    let m = marks(&resumed);
    assert_eq!(m["change-h1"], "x\n", "h1 succeeded: not run again");
    assert_eq!(m["change-h2"], "x\nx\n");
    assert_eq!(names(&m, "later-"), ["h1", "h2"]);
}

/// README "Failure policy": only a run that hosts stopped can be resumed. A host that left
/// within `max-fail`, then a local step that failed (run-wide rollback, exit 1): the run
/// ended, `state.json` says it was not stopped by hosts (`false`, written by every run, so
/// that only runs recorded before the field existed are judged by their failed hosts), and
/// `resume` refuses it as any other ended run.
#[test]
fn a_run_failed_by_a_local_step_after_a_host_left_is_not_resumable() {
    let rb = r#"---
description: a host leaves, then a local step fails
nixcmd: {}
---
# Leave

## Steps
### change
```bash {id=change hosts=all max-fail=1}
[ "$NIXCMD_HOST" != h2 ] || exit 4
```
### boom
```bash {id=boom}
exit 1
```
"#;
    let out = Test::new()
        .file(
            "project/nixcmd.toml",
            "[hosts.h1]\ntarget = \"local\"\n\n[hosts.h2]\ntarget = \"local\"\n",
        )
        .runbook("leave.md", rb)
        .args(["run", "leave"])
        .run();
    out.assert_status(1);
    let run = only_run(out.root.path());
    let state = crate::run_support::read_json(&run.join("state.json"));
    assert_eq!(
        state["fleet"],
        serde_json::json!({
            "failed": [{"host": "h2", "step": "change", "reason": "exited with status 4"}],
            "stopped_by_hosts": false
        })
    );
    let id = crate::run_support::run_id(&run);
    let refused = out.then().args(["resume", &id]).run();
    assert_eq!(
        (refused.status, refused.filter(&refused.stderr)),
        (
            2,
            format!(
                "error: run {id} already ended (failed); nothing to resume\n  hint: start a \
                 new run with `nixcmd /leave`\n"
            )
        )
    );
}

/// Hosts at ports where nothing listens: for checks made before anything runs.
fn unreachable_inventory() -> String {
    let mut s = String::from("[ssh]\nconnect_timeout = 2\n");
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        s.push_str(&format!(
            "\n[hosts.{name}]\ntarget = \"root@127.0.0.1\"\nport = {}\ntags = [\"t{i}\"]\n",
            free_port()
        ));
    }
    s
}

/// `--hosts` narrowing every fan-out of the run to no host is a usage error before anything
/// runs (README "Selecting hosts"), as is an empty entry.
#[test]
fn hosts_flag_that_leaves_no_host_is_a_usage_error() {
    let rb = "---\ndescription: narrow\nnixcmd:\n  args:\n    hosts: { variadic: true }\n---\n# N\n\n## Steps\n### here\n```bash {id=here}\ntouch \"$MARKS/here\"\n```\n### there\n```bash {id=there hosts=arg:hosts}\ntrue\n```\n";
    for (sel, said) in [
        (
            "c",
            "error: --hosts c names no host of this run: the fan-outs reach only `hosts` (a,b)\n",
        ),
        (",", "error: --hosts ,: `,` has an empty entry\n"),
    ] {
        let out = Test::new()
            .file("project/nixcmd.toml", unreachable_inventory())
            .dir("marks")
            .env("MARKS", "[TEMP]/marks")
            .runbook("narrow.md", rb)
            .args(["run", "narrow", "a", "b", "--hosts", sel])
            .run();
        out.assert_status(2);
        assert!(out.stderr.starts_with(said), "{}", out.stderr);
        assert!(!out.root.path().join("marks/here").exists(), "nothing ran");
    }
}

/// A literal selector naming no host of the inventory (`hosts=web9`) or malformed
/// (`hosts=@`) is refused before anything runs, not when the run reaches the block after
/// earlier steps changed things; `check` reports the malformed one whatever the inventory.
#[test]
fn a_bad_literal_selector_is_refused_before_anything_runs() {
    for (sel, why) in [
        ("web9", "no host named `web9`"),
        ("@", "`@` needs a tag name"),
        ("@nosuchtag", "no host has the tag `nosuchtag`"),
    ] {
        let rb = format!(
            "---\ndescription: late\n---\n# L\n\n## Steps\n### change\n```bash {{id=change}}\ntouch \"$MARKS/changed\"\n```\n### fan\n```bash {{id=fan hosts={sel}}}\ntrue\n```\n"
        );
        let out = Test::new()
            .file("project/nixcmd.toml", unreachable_inventory())
            .dir("marks")
            .env("MARKS", "[TEMP]/marks")
            .runbook("late.md", &rb)
            .args(["run", "late", "--yes"])
            .run();
        out.assert_status(2);
        assert!(out.stderr.contains(why), "{sel}: {}", out.stderr);
        assert!(
            !out.root.path().join("marks/changed").exists(),
            "{sel}: nothing ran"
        );
    }
    let out = Test::new()
        .runbook("late.md", "---\ndescription: late\n---\n# L\n\n## Steps\n### fan\n```bash {id=fan hosts=@}\ntrue\n```\n")
        .args(["check", ".nixcmd/commands/late.md"])
        .run();
    out.assert_status(1);
    assert!(
        out.stdout.contains("`@` needs a tag name"),
        "{}",
        out.stdout
    );
}

/// A run-wide rollback whose host compensation fails on one host names that host in what
/// is left to do, as a host's own rollback does.
#[test]
fn a_run_wide_rollback_names_the_host_its_compensation_failed_on() {
    let Some(fleet) = Fleet::start(2) else { return };
    let steps = r#"### change
```bash {id=change hosts=all rollback=undo}
true
```
### verify
```bash {id=verify}
exit 1
```
"#;
    let rollback = "### undo\n```bash\n[ \"$NIXCMD_HOST\" != h2 ]\n```\n";
    let out = run(project(&fleet, "", &runbook(steps, rollback)), &[]);
    out.assert_status(5);
    assert!(
        out.stdout.contains("undo on host h2: run by hand there:"),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("undo on host h1"), "{}", out.stdout);
    assert!(!out.stdout.contains("undo: run by hand:"), "{}", out.stdout);
}

/// A host's step that a signal killed ends as one on this machine does: "killed by signal N
/// (NAME)", its output only what it printed (none of the wrapper's job messages, `main: line
/// N: PID Killed …`), in the terminal, its log, the events and the warning. A step that
/// exited with 128+N is still an exit status.
#[test]
fn a_host_step_killed_by_a_signal_ends_as_a_local_one_does() {
    let Some(fleet) = Fleet::start(1) else { return };
    let steps = r#"### kill9
```bash {id=kill9 hosts=all on-fail=continue}
echo before; kill -9 $$
```
### term
```bash {id=term hosts=all on-fail=continue}
echo before; kill -TERM $$
```
### segv
```bash {id=segv hosts=all on-fail=continue}
echo before; sleep 0.3; kill -SEGV $$
```
### exit137
```bash {id=exit137 hosts=all on-fail=continue}
echo before; exit 137
```
"#;
    let out = run(project(&fleet, "", &runbook(steps, "")), &["--verbose"]);
    out.assert_status(0);
    let run = only_run(out.root.path());
    for step in ["kill9", "term", "segv", "exit137"] {
        assert_eq!(
            log_lines(&run, &format!("{step}@h1.log")),
            ["before"],
            "{step}"
        );
    }
    let lines: Vec<String> = output_events(&run).into_iter().map(|(_, _, l)| l).collect();
    assert_eq!(lines, ["before"; 4]);
    for text in [&out.stdout, &out.stderr] {
        assert!(!text.contains("main: line"), "{text}");
        assert!(!text.contains("NIXCMD_STEP_TOKEN"), "{text}");
    }
    let ended: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| {
            let (what, why) = l.split_once(" — ")?;
            let step = what.split_once("✗ ")?.1.split_once(' ')?.0;
            Some(format!("{step}: {why}"))
        })
        .collect();
    assert_eq!(
        ended,
        [
            "kill9@h1: killed by signal 9 (SIGKILL)",
            "term@h1: killed by signal 15 (SIGTERM)",
            "segv@h1: killed by signal 11 (SIGSEGV)",
            "exit137@h1: exited with status 137 (128 + 9: SIGKILL)",
        ],
        "{}",
        out.stdout
    );
    let progress = crate::run_support::read_json(&run.join("progress.json"));
    let recorded: Vec<String> = progress["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| {
            let h = &s["hosts"][0];
            format!(
                "{} {} {} {}",
                s["id"], h["host"], h["exit_code"], h["reason"]
            )
        })
        .collect();
    assert_eq!(
        recorded,
        [
            r#""kill9" "h1" 137 "killed by signal 9 (SIGKILL)""#,
            r#""term" "h1" 143 "killed by signal 15 (SIGTERM)""#,
            r#""segv" "h1" 139 "killed by signal 11 (SIGSEGV)""#,
            r#""exit137" "h1" 137 "exited with status 137 (128 + 9: SIGKILL)""#,
        ]
    );
}

/// A host that is this machine and user with the same state folder (here the harness gives
/// its sessions the test's `XDG_STATE_HOME`) keeps its folder for the run inside this run's
/// own folder, in `hosts/`: hosts named like the run folder's entries (`env`, `logs`,
/// `scripts`, `state`) get their own `$NIXCMD_STATE` and `$NIXCMD_ENV` and leave the run's
/// files alone.
#[test]
fn a_host_named_like_an_entry_of_the_run_folder_gets_a_folder_of_its_own() {
    let t = Test::new();
    let state = t.root().join("state");
    let setenv = format!("XDG_STATE_HOME={}", state.display());
    let Some(fleet) = Fleet::start_setting(1, &setenv) else {
        return;
    };
    let names = ["env", "logs", "scripts", "state"];
    let mut config = format!(
        "[ssh]\nconnect_timeout = 5\noptions = [\"-F\", \"{}\"]\n",
        fleet.ssh_config()
    );
    for name in names {
        config.push_str(&format!(
            "\n[hosts.{name}]\ntarget = \"h-{}\"\n",
            fleet.ports[0]
        ));
    }
    let steps = r#"### one
```bash {id=one hosts=all}
echo "state $NIXCMD_STATE"
echo "env $NIXCMD_ENV"
echo "MARK_$NIXCMD_HOST=$NIXCMD_HOST" >>"$NIXCMD_ENV"
touch "$NIXCMD_STATE/before"
```
### two
```bash {id=two hosts=all}
v=MARK_$NIXCMD_HOST
echo "got ${!v-} $(ls "$NIXCMD_STATE")"
```
"#;
    let out = t
        .file("project/nixcmd.toml", config)
        .runbook(
            "fan.md",
            &format!("---\ndescription: fan-out test\nnixcmd:\n  timeout: 60s\n---\n# Fan\n\n## Steps\n{steps}"),
        )
        .timeout(Duration::from_secs(120))
        .args(["run", "fan"])
        .run();
    out.assert_status(0);
    let run = only_run(out.root.path());
    let ls = |dir: &Path| -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    for name in names {
        let folder = run.join("hosts").join(name);
        assert_eq!(
            log_lines(&run, &format!("one@{name}.log")),
            [
                format!("state {}", folder.join("state").display()),
                format!("env {}", folder.join("env").display()),
            ]
        );
        assert_eq!(
            log_lines(&run, &format!("two@{name}.log")),
            [format!("got {name} before")]
        );
        assert_eq!(ls(&folder), ["env", "state"], "{name}");
    }
    assert_eq!(
        ls(&run),
        [
            "env",
            "events.ndjson",
            "hosts",
            "hosts.tsv",
            "logs",
            "progress.json",
            "scripts",
            "state",
            "state.json"
        ]
    );
    assert!(run.join("env").is_file());
    assert_eq!(std::fs::read_to_string(run.join("env")).expect("env"), "");
    assert!(ls(&run.join("state")).is_empty());
    let logs: Vec<String> = ["one", "two"]
        .iter()
        .flat_map(|s| names.map(|n| format!("{s}@{n}.log")))
        .collect();
    let mut logs_sorted = logs.clone();
    logs_sorted.sort();
    assert_eq!(ls(&run.join("logs")), logs_sorted);
    assert!(
        ls(&run.join("scripts")).iter().all(|f| f.ends_with(".sh")),
        "{:?}",
        ls(&run.join("scripts"))
    );
}
