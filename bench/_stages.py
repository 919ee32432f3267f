"""What bench/quality.py and bench/methods.py share: run a `distill` command, and skip a stage already done."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path


def distill(tag: str, *args: str) -> float:
    """Run `distill ARGS...` to the end (raising on a non-zero exit); return its wall time in seconds."""
    print(f"[{tag}] $ distill " + " ".join(args), flush=True)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-m", "distill.cli", *args], check=True)
    return time.monotonic() - t0


class Stages:
    """Stages of a resumable bench run: one is skipped when its output file exists; wall times go to times.json."""

    def __init__(self, run: Path, tag: str):
        self.tag = tag
        self.file = run / "times.json"
        self.times: dict[str, float] = json.loads(self.file.read_text()) if self.file.is_file() else {}

    def __call__(self, name: str, done: Path, *args: str) -> None:
        if done.is_file():
            return
        self.times[name] = round(distill(self.tag, *args), 1)
        self.file.write_text(json.dumps(self.times, indent=1))
