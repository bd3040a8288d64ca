"""The browser of the browser tests: Debian's Chromium driven by Playwright.

Playwright's own browser download cannot work on this project's machines, so the tests launch
the system's ``chromium`` (``SEEDBED_CHROMIUM``, default ``/usr/bin/chromium``). When it is
missing, as root with apt-get, they try to install it once (``apt-get install chromium``), as
``.ci/run`` does; they fail, saying why, when it cannot be installed.

Screenshots go to ``$SEEDBED_TEST_OUTPUT/screenshots`` (default ``test-output/screenshots`` at
the repository's root).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
CHROMIUM = Path(os.environ.get("SEEDBED_CHROMIUM", "/usr/bin/chromium"))


def screenshots_dir() -> Path:
    folder = Path(os.environ.get("SEEDBED_TEST_OUTPUT", ROOT / "test-output")) / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def chromium_or_reason() -> tuple[Path | None, str]:
    """The browser to launch, or why there is none."""
    if CHROMIUM.exists():
        return CHROMIUM, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, f"{CHROMIUM} is missing and cannot be installed here (needs root and apt-get)"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for command in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "chromium"]):
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if done.returncode != 0:
            return None, f"installing chromium failed ({' '.join(command)}): {done.stderr.strip()[-500:]}"
    if CHROMIUM.exists():
        return CHROMIUM, ""
    return None, f"apt-get installed chromium but {CHROMIUM} is still missing"
