//! `nixcmd log RUN [STEP] --follow`: a run started in the background, followed by a second
//! nixcmd while it runs. Runs move on when the test creates a file (`go`, `go2`), so what the
//! follower has seen at each moment is known without fixed sleeps; the whole output is
//! compared at the end (the follower prints each log's lines once, in order, with a header
//! whenever the output switches to another log, then how the run ended).

use crate::run_support::{
    KillLeftBehindOnPanic, Spawned, WAIT_FOR_GO, normalize, only_run, project_file, run_id,
    wait_until,
};
use crate::support::{Output, Test};
use std::path::Path;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(30);

/// Three steps; the second waits for `go`.
const THREE: &str = r#"---
description: Three steps, the second waits
nixcmd: {}
---
# Three

## Steps
### First
```bash {id=first}
echo first-1
sleep 0.2
echo first-2
```
### Second
```bash {id=second}
echo second-1
touch second-started
while [ ! -e go ]; do sleep 0.02; done
echo second-2
```
### Third
```bash {id=third}
echo third-1
sleep 0.3
echo third-2
```
"#;

/// `nixcmd ARGS` on the runs under `root`'s state folder, started now.
fn follower(root: &Path, args: &[&str]) -> Spawned {
    Spawned::start(Test::sharing_state(root).args(args))
}

/// A run of `test` started, and once `started` holds for its root, a follower of it
/// (`log -f ID ARGS…`) that has printed `seen`: the run, the follower, the root, the run id.
fn start_following(
    test: Test,
    started: impl Fn(&Path) -> bool,
    args: &[&str],
    seen: &str,
) -> (Spawned, Spawned, std::path::PathBuf, String) {
    let run = Spawned::start(test);
    let root = run.root().to_path_buf();
    wait_until("the step", LIMIT, || started(&root));
    let id = run_id(&only_run(&root));
    let mut follow_args = vec!["log", "-f", id.as_str()];
    follow_args.extend_from_slice(args);
    let follow = follower(&root, &follow_args);
    wait_until("the follower", LIMIT, || {
        follow.stdout_so_far().contains(seen)
    });
    (run, follow, root, id)
}

/// Like [`follower`], run to its end.
fn finished(root: &Path, args: &[&str]) -> Output {
    Test::sharing_state(root).args(args).run()
}

/// The follower's stdout, its run ids and step times normalized.
fn stdout(out: &Output, root: &Path) -> String {
    normalize(&out.stdout, root)
}

fn touch(root: &Path, name: &str) {
    std::fs::write(root.join("project").join(name), "").expect("create a file in the project");
}

fn exists(root: &Path, name: &str) -> bool {
    root.join("project").join(name).exists()
}

#[test]
fn follow_prints_every_step_log_as_the_run_writes_it_and_how_it_ended() {
    let run = Spawned::start(
        Test::new()
            .runbook("three.md", THREE)
            .args(["run", "three"]),
    );
    let root = run.root().to_path_buf();
    wait_until("the second step", LIMIT, || exists(&root, "second-started"));
    let id = run_id(&only_run(&root));
    let follow = follower(&root, &["log", "--follow", &id]);
    wait_until("the follower", LIMIT, || {
        follow.stdout_so_far().contains("second-1\n")
    });
    // The third step's log does not exist yet: it is found when the run starts it.
    assert!(
        !root
            .join(format!("state/nixcmd/runs/{id}/logs/third.log"))
            .exists()
    );
    touch(&root, "go");
    let ran = run.wait();
    ran.assert_status(0);
    let out = follow.wait();
    out.assert_status(0);
    assert_eq!(
        stdout(&out, &root),
        "==> first <==\n\
         ── first attempt 1/1 at [TIMESTAMP] ──\n\
         first-1\n\
         first-2\n\
         ==> second <==\n\
         ── second attempt 1/1 at [TIMESTAMP] ──\n\
         second-1\n\
         second-2\n\
         ==> third <==\n\
         ── third attempt 1/1 at [TIMESTAMP] ──\n\
         third-1\n\
         third-2\n\
         run three-[ID]: succeeded\n"
    );
    assert_eq!(out.stderr, "");
    // What `log` prints, then the last line.
    let log = finished(&root, &["log", &id]);
    assert_eq!(
        format!("{}run {id}: succeeded\n", log.stdout),
        out.stdout,
        "follow ends with what log prints"
    );
}

#[test]
fn follow_of_a_finished_run_prints_its_logs_and_ends_at_once() {
    let out = Test::new()
        .runbook("three.md", THREE)
        .file("project/go", "")
        .args(["run", "three"])
        .run();
    out.assert_status(0);
    let root = out.root.path().to_path_buf();
    let id = run_id(&only_run(&root));
    let log = finished(&root, &["log", &id]);
    for args in [["log", "-f", &id], ["log", &id, "--follow"]] {
        let follow = finished(&root, &args);
        follow.assert_status(0);
        assert_eq!(
            follow.stdout,
            format!("{}run {id}: succeeded\n", log.stdout)
        );
        assert!(
            follow.elapsed < Duration::from_secs(5),
            "{:?}",
            follow.elapsed
        );
    }
    // One step: its log, without a header, as `log RUN STEP` prints it.
    let follow = finished(&root, &["log", "-f", "last", "second"]);
    follow.assert_status(0);
    assert_eq!(
        stdout(&follow, &root),
        "── second attempt 1/1 at [TIMESTAMP] ──\n\
         second-1\n\
         second-2\n\
         run three-[ID]: succeeded\n"
    );
    // Bad input: the errors of `log`, exit 2.
    for args in [
        vec!["nope"],
        vec![id.as_str(), "secnd"],
        vec!["last", "never"],
    ] {
        let plain = finished(&root, &[&["log"], args.as_slice()].concat());
        let follow = finished(&root, &[&["log", "-f"], args.as_slice()].concat());
        plain.assert_status(2);
        follow.assert_status(2);
        assert_eq!(follow.stderr, plain.stderr, "{args:?}");
        assert_eq!(follow.stdout, "");
    }
}

#[test]
fn follow_of_one_step_waits_for_its_log_and_prints_only_it() {
    let run = Spawned::start(
        Test::new()
            .runbook("three.md", THREE)
            .args(["run", "three"]),
    );
    let root = run.root().to_path_buf();
    wait_until("the second step", LIMIT, || exists(&root, "second-started"));
    let id = run_id(&only_run(&root));
    let mut follow = follower(&root, &["log", "-f", &id, "third"]);
    // A step that is not in the run is refused at once, as `log` refuses it.
    let wrong = finished(&root, &["log", "-f", &id, "thrid"]);
    wrong.assert_status(2);
    let plain = finished(&root, &["log", &id, "thrid"]);
    assert_eq!(wrong.stderr, plain.stderr);
    assert!(
        wrong.stderr.contains("has no log for step `thrid`"),
        "{}",
        wrong.stderr
    );
    // The step has not started: its follower waits for its log, printing nothing yet.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        follow.is_running(),
        "the follower ended before the step started"
    );
    assert_eq!(follow.stdout_so_far(), "");
    touch(&root, "go");
    let ran = run.wait();
    ran.assert_status(0);
    let out = follow.wait();
    out.assert_status(0);
    assert_eq!(
        stdout(&out, &root),
        "── third attempt 1/1 at [TIMESTAMP] ──\n\
         third-1\n\
         third-2\n\
         run three-[ID]: succeeded\n"
    );
}

/// A step, then one that asks for confirmation: without a terminal the run pauses there.
const GATED: &str = r#"---
description: A gate after a wait
nixcmd: {}
---
# Gated

## Steps
### Build
```bash {id=build}
echo building
touch build-started
while [ ! -e go ]; do sleep 0.02; done
echo built
```
### Push
```bash {id=push confirm="Push?"}
echo pushing
```
"#;

#[test]
fn follow_of_a_run_that_pauses_at_a_gate_ends_with_the_resume_command() {
    let (run, follow, root, _) = start_following(
        Test::new()
            .runbook("gated.md", GATED)
            .args(["run", "gated"]),
        |root| exists(root, "build-started"),
        &[],
        "building\n",
    );
    touch(&root, "go");
    let ran = run.wait();
    ran.assert_status(3);
    let out = follow.wait();
    out.assert_status(0);
    assert_eq!(
        stdout(&out, &root),
        "==> build <==\n\
         ── build attempt 1/1 at [TIMESTAMP] ──\n\
         building\n\
         built\n\
         run gated-[ID]: awaiting confirmation (`nixcmd resume gated-[ID] --approve push` continues it)\n"
    );
}

/// `log -f RUN STEP` of a paused run's gated step (or a later one) said "no log for step"
/// (exit 2): it ends as following the whole run does, with how the run goes on. A `logs`
/// folder that cannot be read is said, where `log` printed nothing (exit 0) and `log RUN
/// STEP` said "no log" with an empty list.
#[test]
fn following_a_step_of_a_paused_run_and_unreadable_logs_are_told() {
    let out = Test::new()
        .runbook(
            "gated.md",
            &(GATED.replace("while [ ! -e go ]; do sleep 0.02; done\n", "")
                + "### After\n```bash {id=after}\necho after\n```\n"),
        )
        .args(["run", "gated"])
        .run();
    out.assert_status(3);
    let root = out.root.path().to_path_buf();
    // The gated step, a later one, and one that ran (its log, then the same last line).
    for step in ["push", "after", "build"] {
        let followed = finished(&root, &["log", "-f", "last", step]);
        followed.assert_status(0);
        let text = stdout(&followed, &root);
        assert!(
            text.ends_with(
                "run gated-[ID]: awaiting confirmation (`nixcmd resume gated-[ID] --approve push` \
                 continues it)\n"
            ),
            "{step}: {text}"
        );
    }
    let logs = only_run(&root).join("logs");
    std::fs::remove_dir_all(&logs).expect("remove logs");
    std::fs::write(&logs, "").expect("a file where the folder was");
    for args in [
        &["log", "last"][..],
        &["log", "last", "build"],
        &["log", "-f", "last"],
    ] {
        let refused = finished(&root, args);
        refused.assert_status(2);
        assert!(
            refused
                .stderr
                .starts_with(&format!("error: cannot read {}: ", logs.display())),
            "{args:?}: {}",
            refused.stderr
        );
    }
}

#[test]
fn follow_of_a_run_whose_nixcmd_was_killed_ends_and_says_so() {
    let (run, follow, root, _) = start_following(
        Test::new()
            .runbook("wait.md", WAIT_FOR_GO)
            .args(["run", "wait"]),
        |root| project_file(root, "trace") == "waiting\n",
        &[],
        "── wait attempt",
    );
    let _left = KillLeftBehindOnPanic(root.to_path_buf());
    run.signal(libc::SIGKILL);
    let _ran = run.wait();
    let out = follow.wait();
    // A kill -9 orphans the step's shell: let it finish.
    touch(&root, "go");
    out.assert_status(0);
    // The orphaned step still runs: the last line names its processes.
    let text = stdout(&out, &root);
    let pids = regex::Regex::new(r"pid [0-9 ]+;").expect("valid regex");
    assert_eq!(
        pids.replace(&text, "pid [PIDS];"),
        "==> wait <==\n\
         ── wait attempt 1/1 at [TIMESTAMP] ──\n\
         run wait-[ID]: stopped (nixcmd was killed; its step still runs: pid [PIDS]; \
         `nixcmd resume wait-[ID]` once it ends)\n"
    );
    wait_until("the orphaned step", LIMIT, || {
        project_file(&root, "trace") == "waiting\ndone\n"
    });
}

#[test]
fn a_torn_last_line_is_printed_once_its_newline_comes_or_the_run_ends() {
    use std::io::Write;
    let (run, follow, root, id) = start_following(
        Test::new()
            .runbook("wait.md", WAIT_FOR_GO)
            .args(["run", "wait"]),
        |root| project_file(root, "trace") == "waiting\n",
        &["wait"],
        "── wait attempt",
    );
    // Bytes of a line whose write is still going on, as a reader may see them.
    let log = root.join(format!("state/nixcmd/runs/{id}/logs/wait.log"));
    let mut append = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open the step's log");
    append.write_all(b"half-").unwrap();
    // Several polls: the half line is not printed.
    std::thread::sleep(Duration::from_millis(800));
    assert!(
        !follow.stdout_so_far().contains("half"),
        "{}",
        follow.stdout_so_far()
    );
    append.write_all(b"done\nnext ").unwrap();
    wait_until("the completed line", LIMIT, || {
        follow.stdout_so_far().contains("half-done\n")
    });
    // The run ends with a line still torn: it is printed then, on a line of its own.
    append.write_all(b"torn").unwrap();
    touch(&root, "go");
    let ran = run.wait();
    ran.assert_status(0);
    let out = follow.wait();
    out.assert_status(0);
    assert_eq!(
        stdout(&out, &root),
        "── wait attempt 1/1 at [TIMESTAMP] ──\n\
         half-done\n\
         next torn\n\
         run wait-[ID]: succeeded\n"
    );
}

#[test]
fn ctrl_c_ends_following_with_130_and_leaves_the_run_alone() {
    let (run, follow, root, _) = start_following(
        Test::new()
            .runbook("wait.md", WAIT_FOR_GO)
            .args(["run", "wait"]),
        |root| project_file(root, "trace") == "waiting\n",
        &[],
        "── wait attempt",
    );
    follow.signal(libc::SIGINT);
    let out = follow.wait();
    out.assert_status(130);
    assert!(!out.stdout.contains("run wait-"), "{}", out.stdout);
    // The run goes on, and ends as it would have.
    assert_eq!(project_file(&root, "trace"), "waiting\n");
    touch(&root, "go");
    let ran = run.wait();
    ran.assert_status(0);
    assert_eq!(project_file(&root, "trace"), "waiting\ndone\n");
}

#[test]
fn a_closed_pipe_ends_following_quietly_while_the_run_is_silent() {
    use std::io::Read;
    let run = Spawned::start(
        Test::new()
            .runbook("wait.md", WAIT_FOR_GO)
            .args(["run", "wait"]),
    );
    let root = run.root().to_path_buf();
    wait_until("the step", LIMIT, || {
        project_file(&root, "trace") == "waiting\n"
    });
    let id = run_id(&only_run(&root));
    let (mut cmd, _dir) = Test::sharing_state(&root)
        .args(["log", "-f", &id])
        .into_command();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the follower");
    // `| head -1`: one line read, then the pipe closed.
    let mut pipe = child.stdout.take().expect("stdout");
    let mut first = [0u8; 10];
    pipe.read_exact(&mut first).expect("the first line");
    assert_eq!(&first, b"==> wait <");
    drop(pipe);
    let mut status = None;
    wait_until("the follower to end", LIMIT, || {
        status = child.try_wait().expect("wait for the follower");
        status.is_some()
    });
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .expect("stderr")
        .read_to_string(&mut stderr)
        .unwrap();
    assert_eq!(
        (status.and_then(|s| s.code()), stderr.as_str()),
        (Some(0), "")
    );
    assert_eq!(project_file(&root, "trace"), "waiting\n", "the run goes on");
    touch(&root, "go");
    let ran = run.wait();
    ran.assert_status(0);
}

/// Two hosts on this machine (`target = "local"`), one after the other: each writes its own
/// log, `<step>@<host>.log`.
const FAN: &str = r#"---
description: A fan-out after a wait
nixcmd: {}
---
# Fan

## Steps
### Wait
```bash {id=wait}
touch wait-started
while [ ! -e go ]; do sleep 0.02; done
```
### Stamp
```bash {id=stamp hosts=all parallel=1}
echo "$NIXCMD_HOST-1"
sleep 0.3
echo "$NIXCMD_HOST-2"
```
"#;

#[test]
fn follow_finds_the_host_logs_of_a_fan_out_as_they_start() {
    let (run, follow, root, id) = start_following(
        Test::new()
            .file(
                "project/nixcmd.toml",
                "[hosts.a]\ntarget = \"local\"\n\n[hosts.b]\ntarget = \"local\"\n",
            )
            .runbook("fan.md", FAN)
            .args(["run", "fan"]),
        |root| exists(root, "wait-started"),
        &[],
        "── wait attempt",
    );
    touch(&root, "go");
    let ran = run.wait();
    ran.assert_status(0);
    let out = follow.wait();
    out.assert_status(0);
    let text = stdout(&out, &root);
    let log = finished(&root, &["log", &id]);
    assert_eq!(
        text,
        format!("{}run fan-[ID]: succeeded\n", stdout(&log, &root))
    );
    assert!(
        text.contains("==> stamp@a <==\n") && text.contains("a-1\na-2\n==> stamp@b <==\n"),
        "{text}"
    );
}

/// A fan-out step has no log of its own, one per host: with its id, `log` and `log -f` print
/// its hosts' logs, each after its header, including hosts that had not started yet.
#[test]
fn the_step_of_a_fan_out_names_its_hosts_logs() {
    let (run, mut follow, root, id) = start_following(
        Test::new()
            .file(
                "project/nixcmd.toml",
                "[hosts.a]\ntarget = \"local\"\n\n[hosts.b]\ntarget = \"local\"\n",
            )
            .runbook("fan.md", FAN)
            .args(["run", "fan"]),
        |root| exists(root, "wait-started"),
        &["stamp"],
        "",
    );
    // No host has started: the follower waits, printing nothing yet.
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        follow.is_running(),
        "the follower ended before the hosts started"
    );
    assert_eq!(follow.stdout_so_far(), "");
    touch(&root, "go");
    // Kept: it holds the test's folder.
    let ran = run.wait();
    ran.assert_status(0);
    let out = follow.wait();
    out.assert_status(0);
    let hosts = |out: &Output| {
        out.stdout
            .lines()
            .filter(|l| !l.starts_with("── "))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(
        normalize(&hosts(&out), &root),
        "==> stamp@a <==\na-1\na-2\n==> stamp@b <==\nb-1\nb-2\nrun fan-[ID]: succeeded"
    );
    let log = finished(&root, &["log", &id, "stamp"]);
    log.assert_status(0);
    assert_eq!(
        hosts(&log),
        "==> stamp@a <==\na-1\na-2\n==> stamp@b <==\nb-1\nb-2"
    );
}

/// Two steps of a group run at the same time, each printing in turns.
const GROUP: &str = r#"---
description: Two steps at once
nixcmd: {}
---
# Group

## Steps
### Wait
```bash {id=wait}
touch wait-started
while [ ! -e go ]; do sleep 0.02; done
```
### Left
```bash {id=left group=both}
for i in 1 2 3 4 5; do echo "left-$i"; sleep 0.15; done
```
### Right
```bash {id=right group=both}
for i in 1 2 3 4 5; do echo "right-$i"; sleep 0.1; done
```
"#;

/// Parallel steps write their logs at the same time: the output switches between them, each
/// switch under the header of the log it switches to (as `tail -f` of several files), and
/// every log comes out whole, once, in order.
#[test]
fn follow_of_steps_running_at_once_marks_each_switch_with_a_header() {
    let (run, follow, root, _) = start_following(
        Test::new()
            .runbook("group.md", GROUP)
            .args(["run", "group"]),
        |root| exists(root, "wait-started"),
        &[],
        "── wait attempt",
    );
    touch(&root, "go");
    let ran = run.wait();
    ran.assert_status(0);
    let out = follow.wait();
    out.assert_status(0);
    let text = stdout(&out, &root);
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.pop(), Some("run group-[ID]: succeeded"), "{text}");
    // Back into sections: (log, its lines), in the order printed.
    let mut sections: Vec<(&str, Vec<&str>)> = Vec::new();
    for line in lines {
        match line
            .strip_prefix("==> ")
            .and_then(|l| l.strip_suffix(" <=="))
        {
            Some(name) => sections.push((name, Vec::new())),
            None => sections.last_mut().expect("a header first").1.push(line),
        }
    }
    for pair in sections.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "a header without a switch:\n{text}");
    }
    assert!(
        sections.iter().skip(1).all(|(_, l)| !l.is_empty()),
        "{text}"
    );
    for (step, n) in [("wait", 0), ("left", 5), ("right", 5)] {
        let followed: Vec<&str> = sections
            .iter()
            .filter(|(name, _)| *name == step)
            .flat_map(|(_, l)| l.iter().copied())
            .collect();
        let log = normalize(
            &std::fs::read_to_string(only_run(&root).join(format!("logs/{step}.log")))
                .expect("the step's log"),
            &root,
        );
        assert_eq!(followed, log.lines().collect::<Vec<_>>(), "{step}:\n{text}");
        assert_eq!(followed.len(), n + 1, "{step}:\n{text}");
    }
}

/// A huge log and a line longer than all the memory nixcmd should use: the follower holds a
/// buffer, not the log nor the line, and prints the line whole once its newline comes.
#[test]
fn following_a_huge_log_holds_a_buffer_not_the_log_nor_a_long_line() {
    use std::io::Write;
    const LINES: usize = 300_000;
    const LONG: usize = 40 << 20;
    let run = Spawned::start(
        Test::new()
            .runbook("wait.md", WAIT_FOR_GO)
            .args(["run", "wait"]),
    );
    let root = run.root().to_path_buf();
    wait_until("the step", LIMIT, || {
        project_file(&root, "trace") == "waiting\n"
    });
    let id = run_id(&only_run(&root));
    let log = only_run(&root).join("logs/wait.log");
    let header = std::fs::read(&log).expect("the step's log");
    let mut append = std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .expect("open the step's log");
    let mut numbers = String::new();
    for n in 1..=LINES {
        numbers.push_str(&format!("{n}\n"));
    }
    append.write_all(numbers.as_bytes()).unwrap();
    append.write_all(&vec![b'y'; LONG]).unwrap();
    let printed = root.join("followed.txt");
    let (mut cmd, _dir) = Test::sharing_state(&root)
        .args(["log", "-f", &id, "wait"])
        .into_command();
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::fs::File::create(&printed).expect("a file for stdout"))
        .spawn()
        .expect("spawn the follower");
    let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len() as usize);
    let whole = header.len() + numbers.len();
    wait_until("the whole lines", LIMIT, || size(&printed) == whole);
    // Several polls with the long line still open: none of it is printed.
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(size(&printed), whole);
    append.write_all(b"\nlast\n").unwrap();
    wait_until("the long line", LIMIT, || {
        size(&printed) == whole + LONG + 6
    });
    let peak_kb = crate::run_support::peak_kb(child.id()).expect("VmHWM");
    touch(&root, "go");
    let ran = run.wait();
    ran.assert_status(0);
    assert_eq!(child.wait().expect("wait for the follower").code(), Some(0));
    assert!(
        peak_kb < 18 * 1024,
        "the follower held {peak_kb} kB for a line of {LONG} bytes"
    );
    let text = std::fs::read(&printed).expect("what the follower printed");
    let mut expected = header;
    expected.extend_from_slice(numbers.as_bytes());
    expected.extend_from_slice(&vec![b'y'; LONG]);
    expected.extend_from_slice(format!("\nlast\nrun {id}: succeeded\n").as_bytes());
    assert!(
        text == expected,
        "{} bytes printed, {} expected",
        text.len(),
        expected.len()
    );
}
