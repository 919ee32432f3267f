"""Verification throughput: `distill filter` against a single-process math-verify loop, same rows, same run.

    .venv/bin/python bench/verify.py                          # 2000 synthetic rows from built-in problems
    .venv/bin/python bench/verify.py --input runs/demo/gen    # real teacher traces

The baseline is what a hand-rolled script does: for each row, parse the gold and the last boxed answer
with math-verify and call `verify`, one row after another in one process. `distill filter` runs the
whole curation stage (format, safety, dedup, math verification in worker processes with a hard time
bound). The script prints two ratios against the baseline's samples/s: the verification stage alone (rows
it verified / its seconds, from the filter's report.json) and the whole filter (all rows / wall time,
every stage included), and the slowest sample's verification time. Decontamination is off (it needs
benchmark data, not verification).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import math_verify  # noqa: E402

from distill.common.client import build_messages  # noqa: E402
from distill.common.records import read_jsonl, write_jsonl  # noqa: E402
from distill.curation import filter as filter_  # noqa: E402
from distill.curation.config import FilterConfig  # noqa: E402
from distill.problems.tasks import builtin_problems  # noqa: E402
from distill.verification.answers import final_part, last_boxed  # noqa: E402

FORMS = [  # how teachers write the same number, and some wrong or hard answers
    lambda a: rf"\boxed{{{a}}}",
    lambda a: rf"\boxed{{\text{{{a} dollars}}}}",
    lambda a: rf"\boxed{{\frac{{{2 * int(a)}}}{{2}}}}",
    lambda a: rf"\boxed{{{int(a) + 1}}}",
    lambda a: rf"\boxed{{{a}.0}}",
    lambda a: rf"\boxed{{x = {a}}}",
    lambda a: rf"\boxed{{\sqrt{{{int(a) ** 2}}}}}",
]


def synthetic_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    problems = builtin_problems("train", max(1, n // 4), seed=seed)
    rows = []
    for i in range(n):
        p = problems[i % len(problems)]
        steps = " ".join(f"Step {k}: we compute part {k} of the problem carefully." for k in range(rng.randint(3, 12)))
        text = f"{steps}\n\nSo the answer is {rng.choice(FORMS)(p['answer'])}."
        rows.append(
            {
                **p,
                "sample": i // len(problems),
                "messages": build_messages(p["problem"], "{problem}") + [{"role": "assistant", "content": text}],
                "completion": text,
                "finish_reason": "stop",
                "completion_tokens": len(text.split()),
            }
        )
    return rows


def baseline(rows: list[dict]) -> tuple[float, float]:
    """Single process, no time bound: math-verify's parse + verify per row. Returns (samples/s, slowest s)."""
    slowest = 0.0
    t0 = time.perf_counter()
    for r in rows:
        s = time.perf_counter()
        final = final_part(r["completion"]) or ""
        box = last_boxed(final)
        if box is not None:
            gold = math_verify.parse("\\boxed{" + r["answer"] + "}", parsing_timeout=None)
            pred = math_verify.parse("\\boxed{" + box + "}", parsing_timeout=None)
            math_verify.verify(gold, pred, timeout_seconds=None)
        slowest = max(slowest, time.perf_counter() - s)
    return len(rows) / (time.perf_counter() - t0), slowest


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--input", default="", help="traces.jsonl or a generate folder (default: synthetic rows)")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=0, help="filter's verification workers (0: one per core)")
    args = ap.parse_args()

    if args.input:
        src = filter_.input_file(args.input)
        rows = list(read_jsonl(src))
    else:
        rows = synthetic_rows(args.rows)
    print(f"{len(rows)} rows", flush=True)
    base_rate, base_slowest = baseline(rows)
    print(f"baseline (one process): {base_rate:.0f} samples/s, slowest {base_slowest:.3f} s", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "traces.jsonl"
        write_jsonl(src, rows)
        cfg = FilterConfig(output=str(Path(tmp) / "out"), workers=args.workers, decontaminate=[])
        t0 = time.perf_counter()
        report = filter_.run(cfg, str(src))
        rate = len(rows) / (time.perf_counter() - t0)
        slowest = report.get("slowest_verify_seconds", 0.0)
    verify = report["stages"]["verify"]
    verified = sum(verify.get("verifiers", {}).values())
    stage_rate = verified / max(verify["seconds"], 1e-9)
    print(
        json.dumps(
            {
                "rows": len(rows),
                "baseline_samples_per_s": round(base_rate, 1),
                "verify_stage_rows": verified,
                "verify_stage_samples_per_s": round(stage_rate, 1),
                "verify_stage_ratio": round(stage_rate / base_rate, 3),
                "filter_samples_per_s": round(rate, 1),
                "filter_ratio": round(rate / base_rate, 3),
                "slowest_sample_s": round(slowest, 3),
                "kept": report["kept"],
            }
        )
    )
    print(
        f"verification stage / baseline: {stage_rate / base_rate:.2f}x ({stage_rate:.0f} vs {base_rate:.0f} samples/s); "
        f"whole filter / baseline: {rate / base_rate:.2f}x ({rate:.0f}/s, every stage included)"
    )


if __name__ == "__main__":
    main()
