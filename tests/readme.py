"""The README's shell blocks, as the walkthrough test runs them.

Every ```` ```sh ```` block of README.md, in order, in one bash script (so the variables one
block sets are there for the next), with ``set -euo pipefail``, except the two commands of
``NOT_RUN``. ``make`` runs the repository's Makefile (the blocks run in a scratch folder that
stands for the repository's, holding ``var/``), with the interpreter running the tests.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# The two commands themselves: the test starts the system `make run` starts (tests/test_make_run.py
# runs `make run`'s entry point), and `make test` is what runs this test.
NOT_RUN = frozenset({"make run", "make test"})
BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def shell_blocks(text: str | None = None) -> list[str]:
    return BLOCK.findall(README.read_text() if text is None else text)


def runnable(block: str) -> str:
    """The block without the lines of ``NOT_RUN`` (a comment after a command included)."""
    kept = [line for line in block.splitlines() if line.split("#", 1)[0].strip() not in NOT_RUN]
    return "\n".join(kept) + "\n"


def script(bin_dir: Path) -> str:
    """One bash script of every block; ``make`` is the Makefile's, run with ``bin_dir``'s tools."""
    preamble = f"""set -euo pipefail
make() {{ command make --no-print-directory -C {shlex.quote(str(ROOT))} -o .venv/.installed \\
  BIN={shlex.quote(str(bin_dir))} "$@"; }}
"""
    parts = [preamble]
    for number, block in enumerate(shell_blocks(), 1):
        parts.append(f"echo '>>> README block {number}' >&2\n")
        parts.append(runnable(block))
    return "".join(parts)
