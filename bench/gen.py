#!/usr/bin/env python3
"""Generate the benchmark workloads of bench/run.sh (issues 2 and 3, "Performance").

    python3 bench/gen.py [OUT]      (default OUT: bench/work, git-ignored)

Writes, deterministically (same bytes every time):

  OUT/cmds1000/cmd-NNNN.md   1000 annotated command files (DESIGN.md §1): YAML frontmatter with a
                             description and `nixcmd:` settings, an overview, prerequisites, 3 steps
                             (one with a rollback), success criteria, a rollback block
  OUT/maskfile1000.md        the same 1000 commands as one maskfile (`## name`, `> description`,
                             the same prose, the 3 step lines as one bash block: mask runs one
                             block per command)
  OUT/cmds5/                 the first 5 of cmds1000 (start-up cost of `list`)
  OUT/big/big.md             one command file of ~5 MB (many `###` steps with prose and code);
                             mask reads the very same file as a maskfile
  OUT/steps50/run50.md       a command of 50 one-line steps, each its own block
  OUT/steps50/justfile       recipe `run50`: the same 50 lines, one new bash per line
  OUT/steps50/lines.sh       the same 50 lines, one per line (for the `bash -c` loop baseline)
"""

import os
import shutil
import sys

BIG_TARGET = 5 * 1024 * 1024
WORDS = (
    "flake input host closure generation rollback store path profile switch build "
    "deploy activation unit service journal lock revision channel derivation output "
    "evaluation substituter cache garbage boot kernel module option overlay package"
).split()


def words(seed: int, n: int) -> str:
    out = []
    x = seed * 2654435761 % 2**32 or 1
    for _ in range(n):
        x = (x * 1103515245 + 12345) % 2**31
        out.append(WORDS[x % len(WORDS)])
    return " ".join(out)


def command_file(i: int) -> tuple[str, str, str]:
    name = f"cmd-{i:04d}"
    desc = f"Maintenance task {i}, check, update and verify the {WORDS[i % len(WORDS)]}"
    overview = f"What this does: {words(i, 30)}."
    text = f"""---
description: {desc}
nixcmd:
  timeout: 5m
---
# {name}

{overview}

## Prerequisites
```bash {{id=check-tools readonly}}
command -v nix >/dev/null
```

## Steps
### Record the current state
```bash {{id=record}}
echo "record {i}" > "$NIXCMD_STATE/before"
```
### Apply the change
```bash {{id=apply rollback=restore}}
echo "apply {i}"
```
### Verify
```bash {{id=verify}}
test -f "$NIXCMD_STATE/before"
```

## Success Criteria
- [ ] The service answers
```bash
echo ok
```

## Rollback
### restore
```bash
echo "restore {i}"
```
"""
    mask = f"""## {name}

> {desc}

{overview}

**Record the current state**, **Apply the change**, **Verify**:

```bash
echo "record {i}" > "$NIXCMD_STATE/before"
echo "apply {i}"
test -f "$NIXCMD_STATE/before"
```

"""
    return name, text, mask


def big_file() -> str:
    parts = [
        """---
description: A very long runbook (benchmark input, ~5 MB)
nixcmd:
  timeout: 10m
---
# Big

""" + words(1, 200) + """.

## Steps
"""
    ]
    size = len(parts[0])
    n = 0
    while size < BIG_TARGET:
        n += 1
        step = f"""### Step {n}
{words(n, 120)}.

{words(n + 7, 80)}.

```bash {{id=step-{n}}}
echo "step {n}: {words(n, 6)}"
test -n "${{NIXCMD_RUN_ID:-}}" || true
```

"""
        parts.append(step)
        size += len(step)
    parts.append(
        """## Rollback
### undo
```bash
echo undo
```
"""
    )
    return "".join(parts)


def steps50() -> tuple[str, str, str]:
    lines = [f"echo step {i}" for i in range(1, 51)]
    md = ["---\ndescription: Fifty one-line steps (benchmark)\nnixcmd:\n  timeout: 1m\n---\n# run50\n\n",
          "Each step is its own block and its own process.\n\n## Steps\n"]
    for i, line in enumerate(lines, 1):
        md.append(f"### Step {i}\n```bash\n{line}\n```\n")
    # A linewise recipe (no shebang): just runs every line in a new shell, here the same bash
    # invocation nixcmd uses for a step. `@` only stops just from echoing the line.
    just = [
        'set shell := ["bash", "--noprofile", "--norc", "-Eeuo", "pipefail", "-c"]\n\n',
        "run50:\n",
    ]
    just += [f"    @{line}\n" for line in lines]
    return "".join(md), "".join(just), "\n".join(lines) + "\n"


def write(path: str, text: str) -> None:
    """Writes `text` unless the file holds it already. Inputs are made again for every session,
    and rewriting (or deleting) a thousand files right before a benchmark makes the next file
    creations slow on some file systems (ext4 without a journal walks past recently freed
    inodes), which `run`, creating its records, pays and its peers do not."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    data = text.encode("utf-8")
    try:
        with open(path, "rb") as f:
            if f.read() == data:
                return
    except FileNotFoundError:
        pass
    with open(path, "wb") as f:
        f.write(data)


def main() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    out = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "work"))
    # Files a former version of this generator left, and only those, are removed.
    expected = {"cmds1000": 1000, "cmds5": 5}
    for sub, count in expected.items():
        folder = os.path.join(out, sub)
        if os.path.isdir(folder):
            names = {command_file(i)[0] + ".md" for i in range(1, count + 1)}
            for name in os.listdir(folder):
                if name not in names:
                    path = os.path.join(folder, name)
                    if os.path.isdir(path):
                        shutil.rmtree(path)
                    else:
                        os.remove(path)

    mask = ["# Maintenance tasks\n\n"]
    for i in range(1, 1001):
        name, text, mask_part = command_file(i)
        write(os.path.join(out, "cmds1000", name + ".md"), text)
        if i <= 5:
            write(os.path.join(out, "cmds5", name + ".md"), text)
        mask.append(mask_part)
    write(os.path.join(out, "maskfile1000.md"), "".join(mask))

    write(os.path.join(out, "big", "big.md"), big_file())

    md, just, lines = steps50()
    write(os.path.join(out, "steps50", "run50.md"), md)
    write(os.path.join(out, "steps50", "justfile"), just)
    write(os.path.join(out, "steps50", "lines.sh"), lines)

    big = os.path.getsize(os.path.join(out, "big", "big.md"))
    total = sum(
        os.path.getsize(os.path.join(out, "cmds1000", f)) for f in os.listdir(os.path.join(out, "cmds1000"))
    )
    print(f"gen: {out}: 1000 files ({total} bytes), maskfile "
          f"{os.path.getsize(os.path.join(out, 'maskfile1000.md'))} bytes, big.md {big} bytes, 50-step command")


if __name__ == "__main__":
    main()
