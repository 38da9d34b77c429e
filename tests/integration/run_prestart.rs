//! The next step's bash started while the step before it runs (`process::prestart`): it is
//! the very process that runs the step, it runs exactly what a bash started then would (same
//! script path as `$0`, environment, folder, timeout, `SECONDS`), nobody reading the run's
//! scripts meets it, and it is gone — having run nothing — whenever its step does not run.

use crate::run_support::{Spawned, only_run, processes, project_file, wait_until};
use crate::support::Test;
use std::path::Path;
use std::time::Duration;

/// Shell that prints the pids of the processes (other than itself) whose command line ends
/// in this run's `scripts/$1.sh`: the bash waiting for step `$1`'s script.
const WAITING_FOR: &str = r#"waiting_for() {
  for p in /proc/[0-9]*; do
    [ "${p#/proc/}" = "$$" ] && continue
    c=$(tr '\0' ' ' < "$p/cmdline" 2>/dev/null) || continue
    case $c in *" ${NIXCMD_STATE%/state}/scripts/$1.sh ") echo "${p#/proc/}";; esac
  done
}
# Waits up to 5 s for such a bash (it is started once this step has started).
await_waiting() {
  for _ in $(seq 100); do [ -n "$(waiting_for "$1")" ] && break; sleep 0.05; done
}"#;

fn runbook(steps: &str) -> String {
    format!(
        "---\ndescription: Steps one after the other\nnixcmd: {{}}\n---\n# Pre\n\n## Steps\n{steps}"
    )
}

/// Whether process `pid` still runs: a zombie has ended (an orphan's zombie waits for init,
/// which in some containers reaps late).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid).join("stat"))
        .ok()
        .and_then(|stat| {
            let (_, after) = stat.rsplit_once(')')?;
            after.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// Runs `pre` (the runbook `text`) and checks that it ends with `code`.
fn run_pre(text: &str, code: i32) -> crate::support::Output {
    let out = Test::new()
        .runbook("pre.md", text)
        .args(["run", "pre"])
        .run();
    out.assert_status(code);
    out
}

/// A trace whose first line is step one's `waiting PID` (one bash waited for step two):
/// that pid and the lines after it.
fn after_waiting(trace: &str) -> (&str, Vec<&str>) {
    let mut lines = trace.lines();
    let first = lines.next().unwrap_or_default();
    let pid = first.strip_prefix("waiting ").unwrap_or_default();
    assert!(
        !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()),
        "one bash waited for step two: {trace}"
    );
    (pid, lines.collect())
}

/// The names in the run's `scripts/` folder, sorted, each with its kind.
fn scripts(root: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(only_run(root).join("scripts"))
        .expect("scripts folder")
        .map(|e| {
            let e = e.expect("entry");
            let kind = if e.file_type().expect("type").is_file() {
                "file"
            } else {
                "other"
            };
            format!("{} {kind}", e.file_name().to_string_lossy())
        })
        .collect();
    names.sort();
    names
}

/// The bash that runs step `two` is the one started while `one` ran, and it runs the script
/// file as its `$0`, a regular file by then; `scripts/` holds the three scripts and nothing
/// else. With `NIXCMD_PRESTART=0` no bash waits.
#[test]
fn the_next_steps_bash_waits_during_the_step_before_and_runs_it() {
    let text = runbook(&format!(
        r#"### One
```bash {{id=one}}
{WAITING_FOR}
await_waiting two
echo "waiting $(waiting_for two)" >> trace
```
### Two
```bash {{id=two}}
echo "two $$ $(basename "$0") $([ -f "$0" ] && echo file)" >> trace
```
### Three
```bash {{id=three}}
echo three >> trace
```
"#
    ));
    let out = run_pre(&text, 0);
    let root = out.root.path();
    let trace = project_file(root, "trace");
    let (waiting, rest) = after_waiting(&trace);
    assert_eq!(
        rest,
        [format!("two {waiting} two.sh file").as_str(), "three"]
    );
    assert_eq!(
        scripts(root),
        ["one.sh file", "three.sh file", "two.sh file"]
    );

    // Nothing to wait for: a second is long enough for a bash that would be started.
    let text = text.replace("await_waiting two", "sleep 1");
    let out = Test::new()
        .runbook("pre.md", &text)
        .env("NIXCMD_PRESTART", "0")
        .args(["run", "pre"])
        .run();
    out.assert_status(0);
    let trace = project_file(out.root.path(), "trace");
    assert!(trace.starts_with("waiting \ntwo "), "{trace}");
}

/// An export through `$NIXCMD_ENV` changes the next step's environment: the bash started
/// with the old one is not used (and is gone), a new one gets the value.
#[test]
fn after_an_export_the_next_step_gets_a_bash_with_the_new_environment() {
    let text = runbook(&format!(
        r#"### One
```bash {{id=one}}
{WAITING_FOR}
echo GREETING=hello >> "$NIXCMD_ENV"
await_waiting two
waiting_for two > waited
```
### Two
```bash {{id=two}}
echo "$$ $GREETING" > two
```
"#
    ));
    let out = run_pre(&text, 0);
    let root = out.root.path();
    let waited = project_file(root, "waited");
    let waited = waited.trim();
    assert!(!waited.is_empty(), "a bash waited for step two");
    let two = project_file(root, "two");
    let (pid, greeting) = two.trim().split_once(' ').expect("pid and value");
    assert_eq!(greeting, "hello");
    assert_ne!(pid, waited);
    assert!(
        !alive(waited),
        "the bash started with the old environment is gone"
    );
}

/// A step that fails: the bash waiting for the next one is gone, ran nothing, and left no
/// script; a `--dir` folder removed and made again is where the next step runs.
#[test]
fn a_failed_step_leaves_no_bash_waiting_and_no_script_of_the_next() {
    let text = runbook(&format!(
        r#"### One
```bash {{id=one}}
{WAITING_FOR}
await_waiting two
waiting_for two > waited
exit 3
```
### Two
```bash {{id=two}}
touch ran-two
```
"#
    ));
    let out = run_pre(&text, 1);
    let root = out.root.path();
    let waited = project_file(root, "waited");
    assert!(!waited.trim().is_empty(), "a bash waited for step two");
    assert!(!alive(waited.trim()));
    assert!(!root.join("project/ran-two").exists());
    assert_eq!(scripts(root), ["one.sh file"]);
    assert_eq!(processes(&root.display().to_string()), Vec::<String>::new());
}

/// The working folder removed and made again by a step (a fresh checkout): the next step
/// runs in the new folder, not in the old one its waiting bash was started in.
#[test]
fn a_working_folder_made_again_is_where_the_next_step_runs() {
    let text = runbook(&format!(
        r#"### One
```bash {{id=one}}
{WAITING_FOR}
await_waiting two
cd .. && rm -rf work && mkdir work && echo new > work/marker
```
### Two
```bash {{id=two}}
cat marker > ../seen
```
"#
    ));
    let out = Test::new()
        .runbook("pre.md", &text)
        .dir("project/work")
        .args(["run", "pre", "--dir", "work"])
        .run();
    out.assert_status(0);
    assert_eq!(project_file(out.root.path(), "seen"), "new\n");
}

/// A step's timeout counts from its own start, not from when its bash was started: step
/// `two` (timeout 1s, runs 0.5 s) waited 1.5 s for `one` and still passes.
#[test]
fn a_timeout_counts_from_the_steps_start_not_its_bashs() {
    let text = runbook(
        r#"### One
```bash {id=one}
sleep 1.5
```
### Two
```bash {id=two timeout=1s}
sleep 0.5
echo done > two
```
"#,
    );
    let out = run_pre(&text, 0);
    assert_eq!(project_file(out.root.path(), "two"), "done\n");
}

/// What bash fixes as it starts is as of the step's start, not of the wait: `SECONDS` counts
/// from 0 (a bash that waited through a 2 s step would say 2), also in a file the script
/// sources; `BASH_ENV` (how the bash waits) is gone.
#[test]
fn a_step_started_early_sees_seconds_from_its_own_start() {
    let text = runbook(&format!(
        r#"### One
```bash {{id=one}}
{WAITING_FOR}
await_waiting two
sleep 2
echo "waiting $(waiting_for two)" >> trace
```
### Two
```bash {{id=two}}
echo 'echo "sourced $SECONDS"' > lib.sh
echo "two $SECONDS ${{BASH_ENV-unset}}" >> trace
. ./lib.sh >> trace
```
"#
    ));
    let out = run_pre(&text, 0);
    let trace = project_file(out.root.path(), "trace");
    let (_, rest) = after_waiting(&trace);
    assert_eq!(rest, ["two 0 unset", "sourced 0"]);
}

/// Nothing is at the next step's script path while its bash waits: a step that reads the run's
/// scripts (all of them, the next one's path too) neither blocks nor takes any of it, and the
/// next step runs every line of its script.
#[test]
fn reading_the_run_scripts_while_a_bash_waits_takes_nothing_from_it() {
    let text = runbook(&format!(
        r#"### One
```bash {{id=one timeout=10s}}
{WAITING_FOR}
await_waiting two
echo "waiting $(waiting_for two)" >> trace
cat "$(dirname "$0")"/*.sh > /dev/null
cat "$(dirname "$0")/two.sh" 2>/dev/null || echo "no two.sh yet" >> trace
```
### Two
```bash {{id=two}}
echo two-1 >> trace
echo two-2 >> trace
echo two-3 >> trace
```
"#
    ));
    let out = run_pre(&text, 0);
    let trace = project_file(out.root.path(), "trace");
    let (_, rest) = after_waiting(&trace);
    assert_eq!(rest, ["no two.sh yet", "two-1", "two-2", "two-3"]);
}

/// No bash is started ahead when the environment sets `BASH_ENV` (the user's start-up file,
/// read as bash starts: it must be read after the step before ended); a script bigger than a
/// pipe's buffer gets one (the script is read from its file).
#[test]
fn no_bash_waits_with_bash_env_but_one_does_for_a_big_script() {
    let text = runbook(&format!(
        r#"### One
```bash {{id=one}}
{WAITING_FOR}
sleep 1
echo "waiting $(waiting_for two)" >> trace
```
### Two
```bash {{id=two}}
echo "two $STARTUP" >> trace
```
"#
    ));
    let out = Test::new()
        .runbook("pre.md", &text)
        .file("project/startup.sh", "STARTUP=read\n")
        .env("BASH_ENV", "startup.sh")
        .args(["run", "pre"])
        .run();
    out.assert_status(0);
    assert_eq!(
        project_file(out.root.path(), "trace"),
        "waiting \ntwo read\n"
    );

    let padding = "# padding to make the script bigger than a pipe's buffer\n".repeat(1300);
    let text = runbook(&format!(
        r#"### One
```bash {{id=one}}
{WAITING_FOR}
await_waiting two
echo "waiting $(waiting_for two)" >> trace
```
### Two
```bash {{id=two}}
{padding}echo "two $LINENO" >> trace
```
"#
    ));
    let out = run_pre(&text, 0);
    let trace = project_file(out.root.path(), "trace");
    let (_, rest) = after_waiting(&trace);
    assert_eq!(rest, ["two 1301"]);
}

/// `kill -9` of nixcmd while a step runs: the bash waiting for the next step sees end of file
/// and ends having run nothing; `resume` (once the killed step's own process is stopped) runs
/// the next step once.
#[test]
fn a_killed_nixcmd_leaves_the_waiting_bash_to_end_having_run_nothing() {
    let text = runbook(&format!(
        r#"### One
```bash {{id=one}}
{WAITING_FOR}
await_waiting two
waiting_for two > waited.tmp && mv waited.tmp waited
if [ ! -e resumed ]; then touch resumed; sleep 1234; fi
```
### Two
```bash {{id=two}}
echo two >> trace
```
"#
    ));
    let run = Spawned::start(Test::new().runbook("pre.md", &text).args(["run", "pre"]));
    let root = run.root().to_path_buf();
    wait_until("step one", Duration::from_secs(30), || {
        root.join("project/waited").exists() && root.join("project/resumed").exists()
    });
    let waited = project_file(&root, "waited").trim().to_string();
    assert!(!waited.is_empty(), "a bash waited for step two");
    run.signal(libc::SIGKILL);
    let out = run.wait();
    // The killed step's `sleep` is left behind, as for any killed run: stopped by hand, and
    // the run resumed at once, while the waiting bash may still be on its way out (resume
    // waits for it, instead of refusing as for a step's process left running).
    let sleeper = std::process::Command::new("pkill")
        .args(["-KILL", "-f", "^sleep 1234$"])
        .status()
        .expect("pkill is installed");
    assert!(sleeper.success(), "the killed step's sleep was running");
    let id = crate::run_support::run_id(&only_run(&root));
    let resumed = out.then().args(["resume", &id]).run();
    resumed.assert_status(0);
    assert!(!alive(&waited), "the waiting bash ended");
    assert_eq!(project_file(resumed.root.path(), "trace"), "two\n");
}

/// What a `kill -9` can leave of a step made ready ahead (`scripts/.<step>.sh.ahead`, a link
/// to a pipe of the dead nixcmd, whose pid may be reused) is removed when the run resumes.
#[test]
fn a_resumed_run_removes_what_a_killed_session_left_ahead() {
    let text = runbook(
        r#"### One
```bash {id=one confirm}
echo one >> trace
```
### Two
```bash {id=two}
echo two >> trace
```
"#,
    );
    let out = run_pre(&text, 3);
    let dir = only_run(out.root.path());
    std::fs::create_dir_all(dir.join("scripts")).expect("scripts folder");
    std::os::unix::fs::symlink("/proc/1/fd/9", dir.join("scripts/.two.sh.ahead"))
        .expect("plant a link");
    std::fs::write(dir.join("scripts/.one.sh.ahead"), "echo stale\n").expect("plant a file");
    let id = crate::run_support::run_id(&dir);
    let resumed = out.then().args(["resume", &id, "--approve", "one"]).run();
    resumed.assert_status(0);
    let root = resumed.root.path();
    assert_eq!(project_file(root, "trace"), "one\ntwo\n");
    assert_eq!(scripts(root), ["one.sh file", "two.sh file"]);
}
