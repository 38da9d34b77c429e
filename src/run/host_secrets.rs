//! On resume, the secrets the run's hosts exported earlier in the run: nixcmd keeps them only in
//! memory, so a resumed run would not know them until each host runs its next step, and
//! would show them wherever they are printed first (another host's step, a step on this
//! machine). Before the first step, each host that told of secrets earlier in the run (the run's
//! progress records that, never a name or a value) is asked once, over one ssh session that
//! runs the wrapper with an empty step: it tells the secret exports of that host's
//! `$NIXCMD_ENV` as it does before every step. Other hosts are not called: a resume after a
//! host went down does not wait for it. The values stay in memory; nothing is written on this
//! machine.

use crate::event::EventKind;
use crate::hosts::inventory::Host;
use crate::process::Cancel;
use crate::run::engine::Engine;
use crate::run::remote::{self, RemoteEnded, Seen};
use std::sync::Mutex;
use std::time::Duration;

/// Hosts asked at a time.
const AT_ONCE: usize = crate::run::fanout::DEFAULT_PARALLEL;

/// What one host told: its secrets, and why it could not tell (them all), if so.
type Told = (Vec<(String, String)>, Option<String>);

impl Engine<'_> {
    /// Learns the secrets the run's hosts exported (see the module's text). A host that cannot
    /// be reached now is a warning, not a failure: the run may not need it again, and if it
    /// does, its next step tells them before it prints anything.
    pub(super) fn learn_host_secrets(&mut self) {
        if !self.resumed {
            return;
        }
        // The hosts that told of secrets earlier in the run; others are not called.
        let mut names: Vec<String> = Vec::new();
        for step in &self.progress.steps {
            for h in &step.hosts {
                if h.exported_secrets && !names.contains(&h.host) {
                    names.push(h.host.clone());
                }
            }
        }
        if names.is_empty() {
            return;
        }
        let Ok(inv) = self.inventory() else {
            // Each fan-out says why when it runs.
            return;
        };
        let connect_timeout = inv.connect_timeout;
        let hosts: Vec<Host> = inv
            .hosts
            .iter()
            .filter(|h| !h.local && names.contains(&h.name))
            .cloned()
            .collect();
        let secrets = self.extra_secrets();
        let told = ask(
            &hosts,
            connect_timeout,
            &self.state.run_id,
            &secrets,
            self.opts.grace,
            &self.cancel,
        );
        for (host, told) in hosts.iter().zip(told) {
            let (pairs, problem) = told;
            // Even from a host that broke off: what it told is known.
            self.em.redactor.add(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                &secrets,
            );
            if let Some(why) = problem {
                let message = format!(
                    "host `{}`: cannot learn the secrets it exported earlier in this run ({why}): \
                     they are redacted only from its next step on",
                    host.name
                );
                self.warnings.push(message.clone());
                self.emit(EventKind::Warning {
                    step_id: None,
                    message,
                });
            }
        }
    }
}

/// Asks each host, [`AT_ONCE`] at a time; the answers in the order of `hosts`.
fn ask(
    hosts: &[Host],
    connect_timeout: u32,
    run_id: &str,
    secrets: &[String],
    grace: Duration,
    cancel: &Cancel,
) -> Vec<Told> {
    let next = Mutex::new(0usize);
    let answers: Mutex<Vec<Option<Told>>> = Mutex::new(vec![None; hosts.len()]);
    std::thread::scope(|s| {
        for _ in 0..AT_ONCE.min(hosts.len()) {
            s.spawn(|| {
                loop {
                    let i = {
                        let mut n = next.lock().unwrap_or_else(|e| e.into_inner());
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(host) = hosts.get(i) else { break };
                    let told = ask_one(host, connect_timeout, run_id, secrets, grace, cancel);
                    answers.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(told);
                }
            });
        }
    });
    answers
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|a| a.unwrap_or_else(|| (Vec::new(), Some("not asked".into()))))
        .collect()
}

fn ask_one(
    host: &Host,
    connect_timeout: u32,
    run_id: &str,
    secrets: &[String],
    grace: Duration,
    cancel: &Cancel,
) -> Told {
    let key = remote::new_key();
    let state_key = remote::state_key(run_id, &host.name);
    let token = format!("{run_id}/secrets@{}", host.name);
    // Long enough to connect and read a file; the host gives up on its own a little later.
    let timeout = Duration::from_secs(u64::from(connect_timeout.max(1)) + 30);
    let wrapper = remote::wrapper(&remote::Wrapper {
        script: ":",
        env: &[],
        token: &token,
        key: &key,
        secrets,
        state_key: &state_key,
        timeout,
        grace,
    });
    let mut pairs: Vec<(String, String)> = Vec::new();
    // The wrapper's warnings about the file were given when its steps ran; nothing else is
    // output of the run.
    let mut seen = |seen: Seen| {
        if let Seen::Secret(name, value) = seen {
            pairs.push((name.to_string(), value.to_string()));
        }
    };
    let args = remote::ssh_args(host, connect_timeout);
    let problem = match remote::run_ssh(&args, wrapper, &key, timeout, grace, cancel, &mut seen) {
        Ok(RemoteEnded::Exited(_) | RemoteEnded::Killed(_)) => None,
        Ok(RemoteEnded::TimedOut) => Some(format!(
            "no answer within {}",
            crate::duration::display(timeout)
        )),
        Ok(RemoteEnded::Cancelled(_)) => Some("interrupted".into()),
        Ok(RemoteEnded::Unreachable(d)) => Some(format!("cannot reach the host: {d}")),
        Ok(RemoteEnded::Dropped(d)) => Some(format!("the connection dropped: {d}")),
        Err(e) => Some(format!("cannot start ssh: {e}")),
    };
    (pairs, problem)
}
