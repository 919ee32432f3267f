"""R1 scale on this machine: rows/s and peak memory of `distill filter` (each stage), generate's resume scan
and train's data preparation, on synthetic rows written to a temporary folder and removed after.

    .venv/bin/python bench/scale.py                       # the issue's sizes: 10k and 100k R1-length rows, 1M short
    .venv/bin/python bench/scale.py --long 2000 20000 --short 100000 --skip train   # a quicker look

R1-length rows carry ~20 KB of reasoning (the length the R1 report's traces average); short rows ~1 KB,
to expose what costs per row rather than per byte. Each measurement runs in its own process and its peak
memory is the peak of the summed resident memory of that process and its children (the filter's worker
processes), sampled every 0.1 s. Printed per size: rows/s, peak RSS, and per run pair the memory growth
per row: (peak at the larger size - peak at the smaller) / (rows added). The targets (from the issue):
filter >= 200 R1-length rows/s with both cores, peak memory within 20% from 10k to 100k R1-length rows and
from 100k to 1M short rows, and generate's resume scan of 1M rows under a minute.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SENTENCES = [
    "First, we identify the quantities given in the problem and write them down carefully.",
    "Wait, let me check that step again to make sure the arithmetic is right.",
    "Next, we multiply the price of one item by the number of items bought in total.",
    "Then we subtract what was spent from the amount of money at the start of the day.",
    "Let me verify the result by adding the parts back together and comparing with the total.",
    "Hmm, the units need care here: the rate is per hour, so we convert minutes to hours first.",
    "So far the running total is consistent with every condition stated in the problem.",
]


def write_rows(path: Path, n: int, reasoning_bytes: int, seed: int = 0) -> int:
    """n trace rows (4 samples per prompt), each with ~reasoning_bytes of reasoning; returns the file's bytes."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            pid, sample = f"p{i // 4:07d}", i % 4
            a, b = 3 + (i // 4) % 97, 5 + (i // 4) % 89
            problem = f"A store sells {a} boxes of {b} pencils and a further {i // 4} loose pencils. How many pencils?"
            answer = a * b + i // 4
            parts, size, step = [], 0, 0
            while size < reasoning_bytes:  # varied numbers: real reasoning does not loop (the format stage checks)
                step += 1
                x, y = rng.randint(10, 9999), rng.randint(10, 9999)
                s = f"{rng.choice(SENTENCES)} Step {step}: {x} + {y} = {x + y}, and {x} times {y % 97} is {x * (y % 97)}."
                parts.append(s)
                size += len(s) + 1
            got = answer if rng.random() < 0.6 else answer + 1
            text = "<think>\n" + " ".join(parts) + f"\n</think>\n\nSo the answer is \\boxed{{{got}}}."
            row = {
                "id": pid, "sample": sample, "problem": problem, "answer": str(answer), "domain": "math", "level": 1,
                "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": text}],
                "completion": text, "finish_reason": "stop", "prompt_tokens": 40, "completion_tokens": len(text) // 4,
                "teacher": "synthetic", "sampling": {"temperature": 0.6, "top_p": 1.0, "max_tokens": 32768},
            }  # fmt: skip
            f.write(json.dumps(row) + "\n")
    return path.stat().st_size


def measure(cmd: list[str]) -> tuple[float, int, str]:
    """Run cmd to the end: (seconds, peak summed RSS of it and its children in bytes, its stdout)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    parent = psutil.Process(proc.pid)
    peak = 0
    while proc.poll() is None:
        try:
            procs = [parent, *parent.children(recursive=True)]
            peak = max(peak, sum(p.memory_info().rss for p in procs if p.is_running()))
        except psutil.Error:
            pass
        time.sleep(0.1)
    out = proc.stdout.read() if proc.stdout else ""
    if proc.returncode:
        raise SystemExit(f"failed (exit {proc.returncode}): {' '.join(cmd)}\n{out[-2000:]}")
    return time.monotonic() - t0, peak, out


def bench_filter(data: Path, rows: int, tmp: Path) -> dict:
    out = tmp / f"filtered-{rows}"
    cmd = [sys.executable, "-m", "distill.cli", "filter", str(data), "--output", str(out), "--decontaminate", "none"]
    seconds, peak, _ = measure(cmd)
    report = json.loads((out / "report.json").read_text())
    stages = {name: s["seconds"] for name, s in report["stages"].items()}
    return {"rows": rows, "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds, 1), "peak_mib": peak >> 20,
            "stage_seconds": stages, "kept": report["kept"]}  # fmt: skip


def bench_resume(data: Path, rows: int) -> dict:
    code = (  # the request a resume of this file makes: its prompts (4 samples each), as generate lays them out
        "import sys, time; from pathlib import Path; from distill.generation import generate as g\n"
        "n = int(sys.argv[2]); position = {f'p{k:07d}': k for k in range((n + 3) // 4)}\n"
        "t = time.monotonic(); w = g.scan_written(Path(sys.argv[1]), position, 4)\n"
        "print(w.written, round(time.monotonic() - t, 2))"
    )
    seconds, peak, out = measure([sys.executable, "-c", code, str(data), str(rows)])
    n, scan = out.split()
    return {"rows": rows, "found": int(n), "scan_seconds": float(scan), "rows_per_s": round(rows / float(scan), 1),
            "peak_mib": peak >> 20}  # fmt: skip


def bench_train_data(data: Path, rows: int, tmp: Path) -> dict:
    code = (  # the kept traces as train reads them: Arrow, checked, token lengths, the length policy
        "import sys, time; from transformers import AutoTokenizer\n"
        "from distill.common.config import build; from distill.common.models import resolve_model\n"
        "from distill.training.config import TrainConfig; from distill.training.train import sft_fields\n"
        "from distill.training import base, sft_data\n"
        "cfg = build(TrainConfig, {'data': sys.argv[1], 'output': sys.argv[2], 'dataset_cache': sys.argv[3]},"
        " extra=sft_fields())\n"
        "tok = AutoTokenizer.from_pretrained(resolve_model(cfg.model)); base.configure_tokenizer(tok, cfg, cfg.model)\n"
        "t = time.monotonic(); data = sft_data.sft_dataset(cfg, tok, 32768, 0)\n"
        "print(len(data.dataset), round(time.monotonic() - t, 2))"
    )
    args = [str(data), str(tmp / "student"), str(tmp / "datasets")]
    seconds, peak, out = measure([sys.executable, "-c", code, *args])
    n, prep = out.split()[-2:]
    _, _, again = measure([sys.executable, "-c", code, *args])  # the same files: the cache is read back
    return {
        "second_prep_seconds": float(again.split()[-1]),
        "rows": rows,
        "prep_seconds": float(prep),
        "rows_per_s": round(rows / float(prep), 1),
        "peak_mib": peak >> 20,
    }


def growth(a: dict, b: dict) -> dict:
    return {
        "peak_growth": round(b["peak_mib"] / max(a["peak_mib"], 1) - 1, 3),
        "bytes_per_added_row": round(((b["peak_mib"] - a["peak_mib"]) << 20) / max(b["rows"] - a["rows"], 1), 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--long", type=int, nargs=2, default=[10_000, 100_000], help="two sizes of R1-length rows")
    ap.add_argument("--short", type=int, nargs=2, default=[100_000, 1_000_000], help="two sizes of short rows")
    ap.add_argument(
        "--skip", nargs="*", default=[], choices=["filter", "resume", "train", "long", "short"],
        help="measurements (filter, resume, train) or row kinds (long, short) to skip",
    )  # fmt: skip
    args = ap.parse_args()
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="distill-scale-") as tmp_s:
        tmp = Path(tmp_s)
        for kind, sizes, nbytes in (("long", args.long, 20_000), ("short", args.short, 1_000)):
            for n in [] if kind in args.skip else sizes:
                data = tmp / f"{kind}-{n}.jsonl"
                mib = write_rows(data, n, nbytes) >> 20
                print(f"[scale] {n:,} {kind} rows ({mib:,} MiB)", flush=True)
                if "filter" not in args.skip:
                    r = bench_filter(data, n, tmp)
                    results.setdefault(f"filter_{kind}", []).append(r)
                    print(f"[scale]   filter: {json.dumps(r)}", flush=True)
                if "resume" not in args.skip:
                    r = bench_resume(data, n)
                    results.setdefault(f"resume_{kind}", []).append(r)
                    print(f"[scale]   resume scan: {json.dumps(r)}", flush=True)
                if "train" not in args.skip and kind == "long" and n == sizes[0]:
                    r = bench_train_data(data, n, tmp)
                    results.setdefault("train_data", []).append(r)
                    print(f"[scale]   train data: {json.dumps(r)}", flush=True)
                data.unlink()
    for key, runs in list(results.items()):
        if len(runs) == 2:
            results[f"{key}_growth"] = growth(*runs)
    print(json.dumps(results, indent=1))
    long_ = results.get("filter_long", [])
    if long_:
        rates = ", ".join(f"{r['rows']:,}: {r['rows_per_s']} rows/s" for r in long_)
        grown = results.get("filter_long_growth", {}).get("peak_growth")
        print(f"filter, R1-length rows: {rates} (target >= 200); peak memory growth {grown} (target <= 0.2)")
    if results.get("filter_short_growth"):
        print(f"filter, short rows: peak memory growth {results['filter_short_growth']['peak_growth']} (target <= 0.2)")
    for r in results.get("resume_short", []):
        print(f"resume scan of {r['rows']:,} rows: {r['scan_seconds']} s (target < 60 s for 1M)")


if __name__ == "__main__":
    main()
