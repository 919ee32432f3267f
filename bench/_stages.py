"""What bench/quality.py and bench/methods.py share: run a `distill` command, and skip a stage already done."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from distill.common.records import write_json

# Hub benchmarks `distill filter` cannot load offline; decontamination fails closed unless they are named.
HUB_BENCHMARKS = ("aime24", "aime25", "math500", "gpqa-diamond", "livecodebench")


def decontam_skip() -> list[str]:
    """`--decontam-skip ...` for a machine without Hub access (HF_HUB_OFFLINE=1, as `make` sets), else nothing."""
    return ["--decontam-skip", *HUB_BENCHMARKS] if os.environ.get("HF_HUB_OFFLINE") == "1" else []


def distill(tag: str, *args: str) -> float:
    """Run `distill ARGS...` to the end; return its wall time in seconds. A failing command stops the bench
    with its exit status and the command line (the command's own error is printed above it)."""
    line = "distill " + " ".join(args)
    print(f"[{tag}] $ {line}", flush=True)
    t0 = time.monotonic()
    rc = subprocess.run([sys.executable, "-m", "distill.cli", *args]).returncode
    if rc != 0:
        raise SystemExit(f"[{tag}] failed (exit {rc}): {line}\nrerun the bench to continue from this stage")
    return time.monotonic() - t0


class Stages:
    """Stages of a resumable bench run: one is skipped when its output file exists (distill writes its
    outputs atomically, so an interrupted stage leaves none and runs again); wall times go to times.json."""

    def __init__(self, run: Path, tag: str):
        self.tag = tag
        self.file = run / "times.json"
        self.times: dict[str, float] = json.loads(self.file.read_text()) if self.file.is_file() else {}

    def __call__(self, name: str, done: Path, *args: str) -> None:
        if done.is_file():
            return
        self.times[name] = round(distill(self.tag, *args), 1)
        write_json(self.file, self.times)
