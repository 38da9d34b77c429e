//! `nixcmd new NAME`: a well-formed annotated command file that passes `check --strict`.

/// The skeleton's text for a command called `name`.
pub fn text(name: &str) -> String {
    format!(
        r#"---
description: Describe in one line what {name} does
argument-hint: "[target]"
nixcmd:
  timeout: 10m
  args:
    target:
      pattern: "^[A-Za-z0-9._-]+$"
      default: "default"
      help: what to act on
---
# {name}

What this runbook does, when to use it, what it changes and how it rolls back.

## Prerequisites

### Tools are installed
```bash {{id=tools}}
command -v git >/dev/null
```

## Steps

### Record the current state
```bash {{id=record readonly}}
date -u +%Y-%m-%dT%H:%M:%SZ > "$NIXCMD_STATE/started"
echo "target: $NIXCMD_ARG_TARGET"
```

### Make the change
```bash {{id=change confirm="Apply the change to $NIXCMD_ARG_TARGET?" rollback=undo-change timeout=5m}}
echo "changing $NIXCMD_ARG_TARGET"
```

## Success Criteria
- [ ] The change is visible where you expect it

```bash {{id=verify}}
test -s "$NIXCMD_STATE/started"
```

## Rollback

### undo-change
```bash
echo "restoring $NIXCMD_ARG_TARGET"
```

## Troubleshooting

### The change step fails
Read its log with `nixcmd log RUN change`, fix the cause, then `nixcmd resume RUN`.
"#
    )
}
