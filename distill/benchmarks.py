"""Benchmark definitions: eval/<name>.yaml says where a benchmark's problems come from.

    distill eval --tasks builtin            # eval/builtin.yaml: the built-in held-out split
    distill eval --tasks sample             # eval/sample.yaml: data/sample_problems.jsonl
    distill eval --tasks path/to/bench.yaml # any definition file of your own

A definition holds the fields of `Benchmark`; an unknown key is an error naming the key and the file.
A relative `dataset` path that exists beside the definition file is read from there (so the shipped
definitions work from any working directory); otherwise it is taken as given (a Hub id, or a path
from the working directory).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from distill.errors import DistillError

EVAL_DIR = Path(__file__).resolve().parent.parent / "eval"


@dataclass
class Benchmark:
    """Where a benchmark's problems come from and how its answers are checked."""

    name: str = field(default="", metadata={"help": "short name shown in results"})
    description: str = field(default="", metadata={"help": "one line: what the benchmark measures"})
    dataset: str = field(default="builtin", metadata={"help": "'builtin', a local .jsonl/.parquet file or a Hub id"})
    split: str = field(default="test", metadata={"help": "split to evaluate on"})
    problem_column: str = field(default="problem", metadata={"help": "column holding the problem text"})
    answer_column: str = field(default="answer", metadata={"help": "column holding the gold answer"})
    id_column: str = field(default="", metadata={"help": "column holding a stable id ('' for the row index)"})
    verifier: str = field(default="math", metadata={"help": "how answers are checked: math (math-verify)"})


VERIFIERS = ("math",)


def available() -> list[str]:
    return sorted(p.stem for p in EVAL_DIR.glob("*.yaml"))


def load_benchmark(spec: str) -> Benchmark:
    """A benchmark by name (eval/<name>.yaml) or by the path of a definition file."""
    from distill import config as C

    path = Path(spec).expanduser()
    if spec.endswith((".yaml", ".yml")) or path.is_file():
        if not path.is_file():
            raise DistillError(f"benchmark definition {path} does not exist")
    else:
        path = EVAL_DIR / f"{spec}.yaml"
        if not path.is_file():
            raise DistillError(
                f"unknown benchmark {spec!r}: use one of {', '.join(available())} or the path of a definition file"
            )
    bench = C.build(Benchmark, C.load_yaml(path), source=str(path))
    bench.name = bench.name or path.stem
    if bench.verifier not in VERIFIERS:
        raise DistillError(
            f"{path}: key 'verifier': unknown verifier {bench.verifier!r} (known: {', '.join(VERIFIERS)})"
        )
    if bench.dataset != "builtin" and not Path(bench.dataset).is_absolute():
        beside = path.parent / bench.dataset
        if beside.exists():
            bench.dataset = str(beside.resolve())
    return bench
