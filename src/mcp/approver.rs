//! Who answers a run's `confirm` gates when the MCP server runs it: the human, never the
//! model. When the client declared elicitation the gate is put to the user as an elicitation
//! (the question, the step's code, default "no"); the `confirm_gate` tool with the gate's
//! one-time token answers it too. Without either answer the run pauses at
//! `awaiting_confirmation`. `nixcmd mcp --confirm=deny` refuses every gate.
//!
//! The engine calls [`McpApprover::ask`] on its own thread and may block there; answers come
//! in through the run's [`GateBox`]. This module decides nothing else about the run.

use crate::mcp::run_handle::RunHandle;
use crate::run::approve::{Answer, Approver, GateRequest};
use crate::terminal_text::visible;
use rmcp::model::{
    CancelledNotificationParam, ClientResult, ElicitRequest, ElicitRequestParams,
    ElicitationAction, ElicitationSchema, RequestId, ServerRequest,
};
use rmcp::service::{PeerRequestOptions, ServiceError};
use rmcp::{Peer, RoleServer};
use std::io::Read;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

pub const CHANNEL_ELICITATION: &str = "mcp-elicitation";
pub const CHANNEL_CONFIRM_GATE: &str = "mcp-confirm-gate";
/// A gate refused by the server's gate policy (`deny`), nobody asked.
pub const CHANNEL_POLICY: &str = "mcp-policy";

/// How gates are answered (`nixcmd mcp --confirm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GatePolicy {
    /// Ask the human (elicitation, or `confirm_gate`).
    Ask,
    /// Refuse every gate: runs stop before any `confirm` step and roll back.
    Deny,
}

/// An answer to a gate.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    Approve { channel: &'static str },
    Decline { channel: &'static str },
}

/// The gate a run waits at.
#[derive(Debug, Clone)]
struct Pending {
    gate_id: String,
    token: String,
}

#[derive(Debug, Default)]
struct Slot {
    pending: Option<Pending>,
    /// The engine thread is in `ask`: an answer reaches it through `answer`.
    asking: bool,
    /// The engine thread is blocked in `ask`, waiting for `answer`.
    waiting: bool,
    answer: Option<Reply>,
    /// The elicitation of the pending gate ended without an answer.
    elicitation_gave_up: bool,
    /// An answer given while the run was paused, for the gate asked again on resume.
    preset: Option<(String, Reply)>,
    /// The elicitation asking the pending gate, while it has not been answered.
    asked: Option<Asked>,
}

/// An elicitation in flight: the token of the gate it asks, and once it was sent, the
/// request to withdraw (`notifications/cancelled`) when the gate is settled another way.
#[derive(Debug)]
struct Asked {
    token: String,
    request: Option<(Peer<RoleServer>, RequestId)>,
}

/// The mailbox between the tools (`confirm_gate`, `run_cancel`, elicitation results) and the
/// engine thread blocked at a gate.
#[derive(Debug, Default)]
pub struct GateBox {
    slot: Mutex<Slot>,
    cv: Condvar,
}

/// What became of an answer handed to [`GateBox::answer`].
#[derive(Debug, PartialEq)]
pub enum Delivery {
    /// The engine was waiting and has it.
    Delivered,
    /// The run is paused: resume it, and the gate asked again gets this answer.
    NeedsResume,
}

impl GateBox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The gate the run waits at, if any: (gate id, token).
    pub fn pending(&self) -> Option<(String, String)> {
        self.lock()
            .pending
            .as_ref()
            .map(|p| (p.gate_id.clone(), p.token.clone()))
    }

    /// Answers the pending gate when `gate_id` and `token` match. The token is used up.
    pub fn answer(&self, gate_id: &str, token: &str, reply: Reply) -> Result<Delivery, String> {
        let mut slot = self.lock();
        let Some(p) = slot.pending.as_ref() else {
            return Err("the run is not waiting for a confirmation".into());
        };
        if p.gate_id != gate_id {
            return Err(format!(
                "the run waits at gate `{}`, not `{gate_id}`",
                p.gate_id
            ));
        }
        if p.token != token {
            return Err(format!(
                "wrong token for gate `{gate_id}`: use the token from the latest run_status"
            ));
        }
        slot.pending = None;
        if slot.asking {
            slot.answer = Some(reply);
            self.cv.notify_all();
            Ok(Delivery::Delivered)
        } else {
            slot.preset = Some((gate_id.to_string(), reply));
            Ok(Delivery::NeedsResume)
        }
    }

    /// An elicitation result for the gate with this token. An answer that comes after the
    /// gate was settled another way (`confirm_gate`, `run_cancel`) is ignored, and said so.
    fn elicited(&self, token: &str, reply: Option<Reply>) {
        let mut slot = self.lock();
        if slot.asked.as_ref().is_some_and(|a| a.token == token) {
            slot.asked = None;
        }
        if slot.pending.as_ref().is_none_or(|p| p.token != token) {
            if reply.is_some() {
                crate::output::eprint_quietly(
                    "nixcmd mcp: an answer through elicitation came after its gate was settled another way; ignored\n",
                );
            }
            return;
        }
        match reply {
            Some(reply) => {
                slot.pending = None;
                slot.answer = Some(reply);
            }
            None => slot.elicitation_gave_up = true,
        }
        self.cv.notify_all();
    }

    /// The elicitation for the gate with this token went out as request `id`: it can be
    /// withdrawn from now on. False when the gate was settled meanwhile: withdraw it now.
    fn elicitation_sent(&self, token: &str, peer: Peer<RoleServer>, id: RequestId) -> bool {
        let mut slot = self.lock();
        match slot.asked.as_mut() {
            Some(a) if a.token == token => {
                a.request = Some((peer, id));
                true
            }
            _ => false,
        }
    }

    /// The elicitation still in flight for the gate that was just settled, taken to be
    /// withdrawn.
    fn unanswered_elicitation(&self) -> Option<(Peer<RoleServer>, RequestId)> {
        self.lock().asked.take().and_then(|a| a.request)
    }

    /// Wakes a waiting engine so it sees a cancellation.
    pub fn wake(&self) {
        self.cv.notify_all();
    }

    /// Whether the engine is blocked at a gate right now.
    pub fn engine_waiting(&self) -> bool {
        self.lock().waiting
    }

    /// Whether an engine that is not waiting still holds a gate open (it is pausing).
    pub fn pausing(&self) -> bool {
        let slot = self.lock();
        slot.pending.is_some() && !slot.waiting
    }
}

/// Why an elicitation is withdrawn, for the client.
const SETTLED: &str = "the confirmation was settled another way (confirm_gate or run_cancel)";

/// The approver of one engine segment (a run, or a resume of it).
pub struct McpApprover {
    pub run: Arc<RunHandle>,
    pub policy: GatePolicy,
    /// The client, when it declared form elicitation.
    pub elicit: Option<Peer<RoleServer>>,
    /// The client's name (from `initialize`), recorded with every approval.
    pub client: Option<String>,
    pub rt: tokio::runtime::Handle,
}

impl McpApprover {
    fn approve(&self, channel: &str) -> Answer {
        Answer::Approve {
            channel: channel.to_string(),
            client: self.client.clone(),
        }
    }

    fn to_answer(&self, reply: Reply) -> Answer {
        match reply {
            Reply::Approve { channel } => self.approve(channel),
            Reply::Decline { channel } => Answer::declined(channel, self.client.clone()),
        }
    }

    fn start_elicitation(&self, peer: Peer<RoleServer>, gate: &GateRequest, token: &str) {
        // The person decides on what this shows: the runbook's control and bidirectional
        // characters are shown rather than passed to the client's screen (they can reorder
        // or hide what the code says), and the fence is longer than any run of backticks in
        // the code, which would otherwise close it early and turn the rest into Markdown.
        let code = visible(gate.code.trim_end());
        let fence = "`".repeat(longest_backtick_run(&code).max(2) + 1);
        let message = format!(
            "{}\n\nnixcmd run {} wants to run step `{}`:\n\n{fence}bash\n{code}\n{fence}\n\nApprove only if this should run now (default: no).",
            visible(&gate.message),
            gate.run_id,
            gate.step_id,
        );
        let schema = ElicitationSchema::builder()
            .required_bool_with("approve", |b| {
                b.title("Run this step?")
                    .description("Yes runs the step; No stops the run and rolls back.")
                    .with_default(false)
            })
            .build();
        let schema = match schema {
            Ok(s) => s,
            Err(e) => {
                crate::output::eprint_quietly(&format!(
                    "nixcmd mcp: cannot build the confirmation form: {e}\n"
                ));
                self.run.gates.elicited(token, None);
                return;
            }
        };
        let params = ElicitRequestParams::FormElicitationParams {
            meta: None,
            message,
            requested_schema: schema,
        };
        let run = self.run.clone();
        let token = token.to_string();
        self.run.gates.lock().asked = Some(Asked {
            token: token.clone(),
            request: None,
        });
        self.rt.spawn(async move {
            let request = ServerRequest::ElicitRequest(ElicitRequest::new(params));
            let sent = peer
                .send_cancellable_request(request, PeerRequestOptions::no_options())
                .await;
            let answer = match sent {
                Ok(handle) => {
                    if !run
                        .gates
                        .elicitation_sent(&token, peer.clone(), handle.id.clone())
                    {
                        // Settled while it was being sent: the user is not to answer it.
                        let _ = handle.cancel(Some(SETTLED.to_string())).await;
                        return;
                    }
                    match handle.await_response().await {
                        Ok(ClientResult::ElicitResult(result)) => Ok(result),
                        Ok(_) => Err(ServiceError::UnexpectedResponse),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            let reply = match answer {
                // Withdrawn by this server (the gate was settled another way): nothing to do.
                Err(ServiceError::Cancelled { .. }) => return,
                Ok(result) => match result.action {
                    ElicitationAction::Accept => {
                        let yes = result
                            .content
                            .as_ref()
                            .and_then(|c| c.get("approve"))
                            .and_then(|v| v.as_bool())
                            .unwrap_or(false);
                        Some(if yes {
                            Reply::Approve {
                                channel: CHANNEL_ELICITATION,
                            }
                        } else {
                            Reply::Decline {
                                channel: CHANNEL_ELICITATION,
                            }
                        })
                    }
                    ElicitationAction::Decline => Some(Reply::Decline {
                        channel: CHANNEL_ELICITATION,
                    }),
                    // Cancelled or dismissed: no answer, the run stays waiting.
                    _ => None,
                },
                Err(e) => {
                    crate::output::eprint_quietly(&format!(
                        "nixcmd mcp: the confirmation request failed: {e}\n"
                    ));
                    None
                }
            };
            run.gates.elicited(&token, reply);
        });
    }
}

impl McpApprover {
    /// Sends `notifications/cancelled` for the elicitation still asking the gate just
    /// settled (MCP: a request no longer wanted is cancelled), waiting a moment for it to go
    /// out, so the client hears of it before the answer of the call that settled the gate.
    /// Its answer, should it come anyway, is dropped.
    fn withdraw_elicitation(&self) {
        let Some((peer, id)) = self.run.gates.unanswered_elicitation() else {
            return;
        };
        let reason = Some(SETTLED.to_string());
        let _ = self.rt.block_on(async move {
            tokio::time::timeout(
                Duration::from_secs(2),
                peer.notify_cancelled(CancelledNotificationParam::new(Some(id), reason)),
            )
            .await
        });
    }
}

impl Approver for McpApprover {
    fn ask(&mut self, gate: &GateRequest) -> Answer {
        if self.policy == GatePolicy::Deny {
            return Answer::declined(CHANNEL_POLICY, self.client.clone());
        }
        if self.run.cancel.level() > 0 {
            // Stopping: the engine records an interruption, not a "no".
            return Answer::declined(CHANNEL_CONFIRM_GATE, self.client.clone());
        }
        // Gates of nested runs (guided files calling other commands) cannot pause the parent
        // run: they wait for an answer instead.
        let top = gate.run_id == self.run.run_id;
        let gate_id = if top {
            gate.step_id.clone()
        } else {
            format!("{}/{}", gate.run_id, gate.step_id)
        };
        let token = new_token();
        {
            let mut slot = self.run.gates.lock();
            if let Some((id, reply)) = slot.preset.take()
                && id == gate_id
            {
                return self.to_answer(reply);
            }
            slot.pending = Some(Pending {
                gate_id: gate_id.clone(),
                token: token.clone(),
            });
            slot.answer = None;
            slot.elicitation_gave_up = false;
            slot.asking = true;
        }
        let asked = self.elicit.clone();
        self.run.show_gate(
            &gate_id,
            gate,
            &token,
            if asked.is_some() {
                "elicitation"
            } else {
                "confirm_gate"
            },
        );
        match asked {
            Some(peer) => self.start_elicitation(peer, gate, &token),
            None if top => {
                // Nobody can be asked now: the engine pauses; `confirm_gate` resumes it.
                self.run.gates.lock().asking = false;
                return Answer::Unavailable;
            }
            None => {}
        }
        let mut slot = self.run.gates.lock();
        slot.waiting = true;
        let reply = loop {
            if let Some(reply) = slot.answer.take() {
                break Some(reply);
            }
            if self.run.cancel.level() > 0 {
                slot.pending = None;
                // Stopping: the engine records an interruption, not a "no".
                break Some(Reply::Decline {
                    channel: CHANNEL_CONFIRM_GATE,
                });
            }
            if slot.elicitation_gave_up {
                slot.elicitation_gave_up = false;
                if top {
                    // The user did not answer: the run waits, paused, for `confirm_gate`.
                    break None;
                }
                drop(slot);
                self.run.show_gate(&gate_id, gate, &token, "confirm_gate");
                slot = self.run.gates.lock();
                continue;
            }
            slot = self
                .run
                .gates
                .cv
                .wait_timeout(slot, Duration::from_millis(200))
                .map(|(s, _)| s)
                .unwrap_or_else(|e| e.into_inner().0);
        };
        slot.waiting = false;
        slot.asking = false;
        drop(slot);
        // Settled another way while the user was being asked: the client closes its dialog.
        self.withdraw_elicitation();
        match reply {
            Some(reply) => {
                self.run.clear_gate();
                self.to_answer(reply)
            }
            None => {
                self.run.show_gate(&gate_id, gate, &token, "confirm_gate");
                Answer::Unavailable
            }
        }
    }
}

/// A one-time token: 128 random bits, hex.
pub(crate) fn new_token() -> String {
    let mut bytes = [0u8; 16];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom: time and address entropy, still never shown to anyone but the user.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let addr = &bytes as *const _ as usize as u128;
        bytes = (nanos ^ (addr << 64) ^ u128::from(std::process::id())).to_le_bytes();
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The length of the longest run of backticks in `text`.
fn longest_backtick_run(text: &str) -> usize {
    text.split(|c| c != '`').map(str::len).max().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DECLINE: Reply = Reply::Decline {
        channel: CHANNEL_CONFIRM_GATE,
    };

    #[test]
    fn a_gate_is_answered_only_with_its_token() {
        let gates = GateBox::default();
        gates.lock().pending = Some(Pending {
            gate_id: "push".into(),
            token: "t1".into(),
        });
        assert!(gates.answer("push", "nope", DECLINE).is_err());
        assert!(gates.answer("other", "t1", DECLINE).is_err());
        assert_eq!(
            gates.answer("push", "t1", DECLINE),
            Ok(Delivery::NeedsResume)
        );
        // Used up.
        assert!(gates.answer("push", "t1", DECLINE).is_err());
    }

    #[test]
    fn tokens_differ() {
        let a = new_token();
        assert_eq!(a.len(), 32);
        assert_ne!(a, new_token());
    }
}
