"""The trace row and JSONL helpers shared by every stage.

A trace row (one teacher sample) carries:
  id, sample            stable prompt id and the sample's index among n
  problem, answer       the problem text and its gold answer ('' when unknown)
  domain, level         e.g. "math" and a difficulty level (0 when unknown)
  messages              chat format ready for SFT: the prompt turns, then the assistant turn
                        (`<think>reasoning</think>\n\nanswer` when the server separated reasoning)
  completion            the raw teacher text of the assistant turn
  reasoning             the server's separated reasoning, '' when it sent none
  finish_reason         "stop", "length", ... (from the server)
  prompt_tokens, completion_tokens
  teacher               served model name
  sampling              {temperature, top_p, max_tokens, seed}
`distill filter` adds: correct, verify_reason, extracted, and for rejected rows reject_reason.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from distill.common.errors import DistillError

# The files the stages hand on: generate writes traces, filter writes kept and rejected rows.
TRACES = "traces.jsonl"
KEPT = "kept.jsonl"
REJECTED = "rejected.jsonl"

TRACE_KEYS = (
    "id",
    "sample",
    "problem",
    "answer",
    "domain",
    "level",
    "messages",
    "completion",
    "reasoning",
    "finish_reason",
    "prompt_tokens",
    "completion_tokens",
    "teacher",
    "sampling",
)


def assistant_text(completion: str, reasoning: str = "") -> str:
    """The assistant turn for SFT: R1's `<think>…</think>` then the answer when reasoning is separate."""
    if reasoning:
        return f"<think>\n{reasoning.strip()}\n</think>\n\n{completion.strip()}"
    return completion


def check_input_file(path: Path) -> None:
    """A DistillError that says what is wrong when `path` is not a readable file."""
    if path.is_file():
        return
    if path.is_dir():
        raise DistillError(f"{path} is a folder; pass a JSONL file (or a folder holding {TRACES} or {KEPT})")
    parent = path.parent
    if parent.is_dir() and str(parent) not in ("", "."):
        held = sorted(p.name for p in parent.iterdir())[:8]
        raise DistillError(f"{path} does not exist ({parent} holds: {', '.join(held) or 'nothing'})")
    raise DistillError(f"input file {path} does not exist")


def read_jsonl(path: str | Path, *, allow_torn_tail: bool = False) -> Iterator[dict]:
    """Rows of a JSONL file, read one line at a time (memory does not grow with the file). A bad line is
    an error naming file and line (text that is not UTF-8, as a binary file has, included), except a torn
    last line (no newline at the end of the file) when `allow_torn_tail`, which a killed writer can leave."""
    path = Path(path)
    check_input_file(path)
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DistillError(f"{path}, line {n}: not UTF-8 text (byte {e.start}); is it a JSONL file?") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if allow_torn_tail and not line.endswith("\n"):  # only the last line can lack its newline
                    return
                raise DistillError(f"{path}, line {n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DistillError(f"{path}, line {n}: expected a JSON object, got {type(row).__name__}")
            yield row


def truncate_torn_tail(path: Path, block: int = 1 << 20) -> int:
    """Cut a partial last line (left by a killed writer) so appends start on a fresh line; returns the bytes
    cut. Reads back from the end of the file a block at a time: a torn tail costs a block, not the file."""
    if not path.exists():
        return 0
    with open(path, "rb+") as f:
        size = f.seek(0, os.SEEK_END)
        if size == 0:
            return 0
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return 0
        cut, end = 0, size
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            newline = f.read(end - start).rfind(b"\n")
            if newline >= 0:
                cut = start + newline + 1
                break
            end = start
        f.truncate(cut)
    return size - cut


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> int:
    """Write rows atomically (temp file then rename): readers never see a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    tmp.replace(path)
    return n


def write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    tmp.replace(path)
