"""Rerun the commands whose output README.md quotes, and rewrite those output blocks.

A generated block in README.md sits between two marker comments; the first names the command::

    <!-- output: structops check --quick -->
    ```text
    $ structops check --quick
    ...what the command printed...
    ```
    <!-- end output -->

Usage::

    python docs/update_readme.py                          # every block
    python docs/update_readme.py --only "structops check"   # blocks whose command starts with this
    python docs/update_readme.py --check                  # exit 1 if the markers are malformed

It also writes the table of families between ``<!-- families table -->`` and
``<!-- end families table -->`` from the registry of built-in families,
:func:`structops.families.families_table` (a family added there appears in the README).

The commands run in the repository root without a terminal (so progress bars print one line per
epoch), without a shell; ``structops ...`` runs as ``python -m structops ...`` with this
interpreter, so the installed entry point is not needed. A command that fails leaves README.md
untouched and exits with its status.
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"

START = re.compile(r"^<!-- output: (?P<command>.+?) -->[ \t]*$", re.M)
END = "<!-- end output -->"


TABLE_START = "<!-- families table -->\n"
TABLE_END = "<!-- end families table -->"


class MarkerError(ValueError):
    """README.md's output markers are malformed (unterminated, nested or empty command)."""


@dataclass(frozen=True)
class Block:
    """One generated block: the command and the span of text between its two markers."""

    command: str
    start: int  # first character after the opening marker's line
    stop: int  # first character of the closing marker


def find_blocks(text: str) -> list[Block]:
    """The output blocks of ``text`` in order.

    Raises
    ------
    MarkerError
        If an opening marker has no closing marker before the next opening one, or a closing
        marker has no opening one.
    """
    blocks: list[Block] = []
    pos = 0
    for match in START.finditer(text):
        if match.start() < pos:  # pragma: no cover - finditer never goes back
            continue
        body_start = match.end() + 1 if text[match.end() : match.end() + 1] == "\n" else match.end()
        stop = text.find(END, body_start)
        following = START.search(text, body_start)
        line = text.count("\n", 0, match.start()) + 1
        if stop < 0 or (following is not None and following.start() < stop):
            raise MarkerError(f"README line {line}: `<!-- output: {match['command']} -->` has no `{END}` after it.")
        if text.count(END, pos, match.start()):
            raise MarkerError(f"README line {line}: a `{END}` before it has no opening marker.")
        blocks.append(Block(match["command"].strip(), body_start, stop))
        pos = stop + len(END)
    if END in text[pos:]:
        line = text.count("\n", 0, text.index(END, pos)) + 1
        raise MarkerError(f"README line {line}: `{END}` has no opening `<!-- output: ... -->` marker.")
    return blocks


def render(command: str, output: str) -> str:
    """The text between the markers: a ``text`` code block with the prompt and the output."""
    body = output.rstrip("\n")
    return f"```text\n$ {command}\n{body}\n```\n" if body else f"```text\n$ {command}\n```\n"


def run_command(command: str, cwd: Path = ROOT) -> str:
    """Run ``command`` (no shell) and return what it printed on stdout.

    Raises
    ------
    subprocess.CalledProcessError
        If the command exits with a nonzero status (its stderr is printed).
    """
    argv = shlex.split(command)
    if argv and argv[0] == "structops":
        argv = [sys.executable, "-m", "structops", *argv[1:]]
    elif argv and argv[0] == "python":
        argv = [sys.executable, *argv[1:]]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    env.pop("COLUMNS", None)
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise subprocess.CalledProcessError(proc.returncode, argv, proc.stdout, proc.stderr)
    return proc.stdout


def update(text: str, run: Callable[[str], str] = run_command, only: Sequence[str] | None = None) -> str:
    """``text`` with every output block (or those whose command starts with one of ``only``) regenerated."""
    out, last = [], 0
    for block in find_blocks(text):
        out.append(text[last : block.start])
        if only is None or any(block.command.startswith(prefix) for prefix in only):
            out.append(render(block.command, run(block.command)))
        else:
            out.append(text[block.start : block.stop])
        last = block.stop
    out.append(text[last:])
    return "".join(out)


def update_table(text: str, table: str | None = None) -> str:
    """``text`` with the families table between its markers replaced by ``table`` (default: the registry's).

    A text without the markers is returned as it is; a marker without its partner is an error.
    """
    if table is None:
        sys.path.insert(0, str(ROOT))  # this checkout's structops, not an installed one
        from structops.families import families_table

        table = families_table()
    start, stop = text.find(TABLE_START), text.find(TABLE_END)
    if start < 0 and stop < 0:
        return text  # a file without the table
    if start < 0 or stop < start:
        raise MarkerError(f"no `{TABLE_START.strip()}` ... `{TABLE_END}` pair in the README.")
    return text[: start + len(TABLE_START)] + table + text[stop:]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--readme", type=Path, default=README, help="file to rewrite (default: README.md)")
    parser.add_argument("--only", action="append", metavar="PREFIX", help="regenerate only these commands")
    parser.add_argument("--check", action="store_true", help="only check the markers; write nothing")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    try:
        blocks = find_blocks(text)
        if args.check:
            print("\n".join(b.command for b in blocks))
            return 0
        new = update(text, only=args.only)
        if args.only is None:
            new = update_table(new)
    except MarkerError as err:
        print(err, file=sys.stderr)
        return 1
    except subprocess.CalledProcessError as err:
        failed = " ".join(map(str, err.cmd))
        print(f"`{failed}` failed with status {err.returncode}; README unchanged.", file=sys.stderr)
        return err.returncode or 1
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
        print(f"rewrote {len(blocks) if args.only is None else 'the selected'} output block(s) of {args.readme}")
    else:
        print(f"{args.readme} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
