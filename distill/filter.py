"""`distill filter`: keep only verified-correct traces.

    distill filter runs/gen --output runs/filtered

Reads trace rows (a traces.jsonl file or a generate folder), verifies each math row's final answer
with math-verify in worker processes with a hard time bound per sample, and writes
DIR/kept.jsonl, DIR/rejected.jsonl (each with `reject_reason`), DIR/report.json and the config.
"""

from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from pathlib import Path

from tqdm import tqdm

from distill import config as config_mod
from distill.config import FilterConfig
from distill.errors import DistillError
from distill.generate import TRACES
from distill.records import read_jsonl, write_json, write_jsonl
from distill.verify import verify_many


def input_file(path: str | Path) -> Path:
    p = Path(path)
    if p.is_dir():
        for name in (TRACES, "kept.jsonl"):
            if (p / name).is_file():
                return p / name
        raise DistillError(f"{p} holds no {TRACES}: pass the traces file or a `distill generate` folder")
    if not p.exists():
        raise DistillError(f"input {p} does not exist")
    return p


def malformed(row: dict) -> str:
    """Why a row cannot be verified at all ('' when it is well-formed)."""
    for key in ("id", "problem", "completion"):
        if key not in row:
            return f"malformed: missing '{key}'"
    if not isinstance(row["completion"], str):
        return f"malformed: 'completion' is {type(row['completion']).__name__}, not text"
    if not isinstance(row.get("messages"), list) or not row["messages"]:
        return "malformed: missing 'messages'"
    answer = row.get("answer")
    if not isinstance(answer, (str, int, float)) or str(answer).strip() == "":
        return "no_gold_answer"
    return ""


def run(cfg: FilterConfig, input_path: str) -> dict:
    src = input_file(input_path)
    rows = list(read_jsonl(src, allow_torn_tail=True))
    if not rows:
        raise DistillError(f"{src}: no rows to filter")
    out = Path(cfg.output)
    if out.resolve() == src.parent.resolve() and src.name in ("kept.jsonl", "rejected.jsonl"):
        raise DistillError(f"--output {out} would overwrite the input {src}; choose another folder")
    start = time.monotonic()

    reasons = [malformed(r) for r in rows]
    todo = [i for i, why in enumerate(reasons) if not why]
    items = [(str(rows[i]["answer"]), rows[i]["completion"], rows[i].get("finish_reason")) for i in todo]
    workers = cfg.workers or os.cpu_count() or 1
    with tqdm(total=len(items), desc="verify", unit="sample", dynamic_ncols=True, mininterval=1.0) as bar:
        verdicts = verify_many(items, timeout=cfg.timeout, workers=workers, progress=bar.update)
    for i, v in zip(todo, verdicts, strict=True):
        rows[i]["correct"] = v.correct
        rows[i]["verify_reason"] = v.reason
        rows[i]["extracted"] = v.extracted
        if not v.correct:
            reasons[i] = v.reason
    kept, rejected = [], []
    for row, why in zip(rows, reasons, strict=True):
        if why:
            row.setdefault("correct", False)
            row["reject_reason"] = why
            rejected.append(row)
        else:
            kept.append(row)

    report = make_report(rows, kept, rejected, time.monotonic() - start)
    report["input"] = str(src)
    write_jsonl(out / "kept.jsonl", kept)
    write_jsonl(out / "rejected.jsonl", rejected)
    write_json(out / "report.json", report)
    config_mod.save(cfg, out, extra={"input": str(src)})
    slowest = max((v.seconds for v in verdicts), default=0.0)
    print(
        f"[distill] filter: kept {len(kept)}/{len(rows)} ({report['pass_rate']:.1%}) -> {out}/kept.jsonl; "
        f"rejected: {dict(report['reject_reasons'])}; slowest sample {slowest:.2f} s",
        flush=True,
    )
    if cfg.push_to_hub:
        from distill.hub import push_dataset

        url = push_dataset(out, cfg.push_to_hub)
        print(f"[distill] pushed {out} to {url}", flush=True)
    return report


def make_report(rows: list[dict], kept: list[dict], rejected: list[dict], seconds: float) -> dict:
    by_level: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    prompts_solved: dict[str, bool] = {}
    for r in rows:
        ok = r.get("reject_reason") is None
        lvl = r.get("level", 0) if isinstance(r.get("level"), int) else 0
        by_level[lvl][0] += ok
        by_level[lvl][1] += 1
        pid = str(r.get("id"))
        prompts_solved[pid] = prompts_solved.get(pid, False) or ok
    return {
        "total": len(rows),
        "kept": len(kept),
        "rejected": len(rejected),
        "pass_rate": len(kept) / len(rows) if rows else 0.0,
        "prompts": len(prompts_solved),
        "prompts_with_a_kept_sample": sum(prompts_solved.values()),
        "reject_reasons": dict(Counter(r["reject_reason"] for r in rejected).most_common()),
        "pass_rate_by_level": {
            str(k): {"kept": v[0], "total": v[1], "pass_rate": v[0] / v[1]} for k, v in sorted(by_level.items())
        },
        "seconds": round(seconds, 2),
    }
