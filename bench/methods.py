"""SFT vs logit KD vs on-policy distillation of the embedded pair, at a comparable teacher budget.

    .venv/bin/python bench/methods.py --sft-then-onpolicy   # ~2.5 h on 2 CPU cores; every stage resumable
    .venv/bin/python bench/methods.py --prompts 80 --onpolicy-steps 20   # a shorter run

Teacher Qwen2.5-Coder-0.5B-Instruct, student SmolLM2-135M-Instruct (two tokenizers: distill aligns them
by bytes, docs/DISTILLATION.md). The teacher's server runs while a stage needs it:
  1. `distill generate --logprobs K` on built-in train problems, then `distill filter`: verified traces
     that carry the teacher's top-K per token,
  2. SFT student on them (`--method sft`) and logit-KD student on the same rows (`--method logit-kd`),
  3. on-policy student (`--method onpolicy`): the student samples answers to the same prompts and the
     teacher's server scores them, for --onpolicy-steps steps,
  4. with --sft-then-onpolicy, also on-policy steps that start from the SFT student (the usual practice:
     on-policy distillation refines a student that already writes the teacher's format),
  5. each student (and the untrained one) evaluated on the built-in held-out split.
The table: pass@1 +- stderr, teacher tokens GENERATED (SFT and KD share one generation run) and teacher
tokens SCORED (on-policy's prefill), and each stage's wall time. Stages found in --run are skipped.
Run it alone: each training takes 8-11 GB and both cores.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._stages import Stages, decontam_skip  # noqa: E402


@contextlib.contextmanager
def teacher_server(port: int, log: Path):
    """`distill serve --model embedded:teacher` for the whole run; stopped at the end."""
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "distill.cli", "serve", "--model", "embedded:teacher", "--port", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(900):
            if proc.poll() is not None:
                raise SystemExit(f"the teacher server died; see {log}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(url + "/models", timeout=2)
                break
            time.sleep(2)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default="runs/methods")
    ap.add_argument("--prompts", type=int, default=160)
    ap.add_argument("--samples", type=int, default=4)
    ap.add_argument("--logprobs", type=int, default=20)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--epochs", type=float, default=1)
    ap.add_argument("--onpolicy-steps", type=int, default=40)
    ap.add_argument("--eval-prompts", type=int, default=150)
    ap.add_argument("--port", type=int, default=8331)
    ap.add_argument(
        "--sft-then-onpolicy", action="store_true", help="also: on-policy steps starting from the SFT student"
    )
    args = ap.parse_args()
    run = Path(args.run)
    run.mkdir(parents=True, exist_ok=True)
    stage = Stages(run, "methods")

    evals = ["--num-prompts", str(args.eval_prompts), "--max-tokens", str(args.max_tokens)]

    def teacher(*outputs: str):
        """The teacher's server while any of these outputs is missing; nothing when all are there."""
        if all((run / o).is_file() for o in outputs):
            return contextlib.nullcontext("")
        return teacher_server(args.port, run / "serve-teacher.log")

    def onpolicy(name: str, url: str, *extra: str) -> None:
        stage(
            f"train {name}", run / f"student-{name}/train_metrics.json", "train", "--method", "onpolicy",
            "--size", "tiny", "--teacher-url", url, "--data", str(run / "filtered"), "--output",
            str(run / f"student-{name}"), "--set", f"max_steps={args.onpolicy_steps}", *extra,
        )  # fmt: skip

    with teacher("gen/summary.json", "student-onpolicy/train_metrics.json") as url:
        stage(
            "generate", run / "gen/summary.json", "generate", "--server-url", url, "--output", str(run / "gen"),
            "--num-prompts", str(args.prompts), "--num-samples", str(args.samples), "--max-tokens", str(args.max_tokens),
            "--logprobs", str(args.logprobs),
        )  # fmt: skip
        stage(
            "filter", run / "filtered/report.json", "filter", str(run / "gen"), "--output", str(run / "filtered"),
            *decontam_skip(),
        )  # fmt: skip
        onpolicy("onpolicy", url)
    for method in ("sft", "logit-kd"):
        stage(
            f"train {method}", run / f"student-{method}/train_metrics.json", "train", "--method", method,
            "--size", "tiny", "--data", str(run / "filtered"), "--output", str(run / f"student-{method}"),
            "--set", f"num_train_epochs={args.epochs}",
        )  # fmt: skip
    methods = ["sft", "logit-kd", "onpolicy"]
    if args.sft_then_onpolicy:  # the usual practice (Qwen3's small models): SFT first, then on-policy
        methods.append("sft-onpolicy")
        with teacher("student-sft-onpolicy/train_metrics.json") as url:
            onpolicy("sft-onpolicy", url, "--model", str(run / "student-sft"))
    stage("eval untrained", run / "eval-untrained/results.json", "eval", "--model", "embedded:student", "--output",
          str(run / "eval-untrained"), *evals)  # fmt: skip
    for method in methods:
        stage(f"eval {method}", run / f"eval-{method}/results.json", "eval", "--model", str(run / f"student-{method}"),
              "--output", str(run / f"eval-{method}"), *evals)  # fmt: skip

    load = lambda p: json.loads((run / p).read_text())  # noqa: E731
    from distill.common.records import read_jsonl, write_json

    generated = sum(int(r.get("completion_tokens") or 0) for r in read_jsonl(run / "gen/traces.jsonl"))
    rows = []
    for method in ["untrained", *methods]:
        r = load(f"eval-{method}/results.json")
        m = load(f"student-{method}/train_metrics.json") if method != "untrained" else {}
        seconds = m.get("seconds")
        if method == "sft-onpolicy":  # its start, the SFT student, counts too
            seconds = round(seconds + load("student-sft/train_metrics.json")["seconds"], 1)
        uses_traces = method.startswith(("sft", "logit-kd"))
        rows.append(
            {
                "method": method,
                "pass@1": round(r["pass@1"], 3),
                "stderr": round(r.get("pass@1_stderr") or 0.0, 3),
                "correct": f"{r['correct']}/{r['samples']}",
                "teacher_tokens_generated": generated if uses_traces else 0,
                "teacher_tokens_scored": m.get("teacher_tokens", 0),
                "generate_seconds": stage.times.get("generate") if uses_traces else None,
                "train_seconds": seconds,
            }
        )
    write_json(run / "methods.json", {"table": rows, "times": stage.times})
    print(
        "\n| method | pass@1 | ± | correct | teacher tokens generated | teacher tokens scored | generate s | train s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['method']} | {r['pass@1']:.3f} | {r['stderr']:.3f} | {r['correct']} | {r['teacher_tokens_generated']} "
            f"| {r['teacher_tokens_scored']} | {r['generate_seconds'] or ''} | {r['train_seconds'] or ''} |"
        )


if __name__ == "__main__":
    main()
