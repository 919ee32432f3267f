"""Benchmark definitions: eval/<name>.yaml says where a benchmark's problems come from.

    distill eval --tasks builtin            # eval/builtin.yaml: the built-in held-out split
    distill eval --tasks sample             # eval/sample.yaml: data/sample_problems.jsonl
    distill eval --tasks aime24             # eval/aime24.yaml: a Hugging Face Hub dataset
    distill eval --tasks path/to/bench.yaml # any definition file of your own

A definition holds the fields of `Benchmark`; an unknown key is an error naming the key and the file.
A relative `dataset` path that exists beside the definition file is read from there (so the shipped
definitions work from any working directory); otherwise it is taken as given (a Hub id, or a path
from the working directory). A relative `local` path is always taken relative to the definition file.

`load_benchmark_prompts` turns a definition into prompt dicts (id, problem, answer, domain, level, and
`extra` when the definition names extra columns). A Hub benchmark that cannot be loaded (offline, gated,
removed) falls back to its `local` copy; without one the error says how to provide it.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import os
import pickle
import random
import re
import socket
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from huggingface_hub import constants

from distill.common.config import build, load_yaml
from distill.common.errors import DistillError
from distill.common.resources import EVAL_DIR
from distill.problems.prompts import compile_answer_regex, extract_answer, load_local, load_prompts, parse_level

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet")
VERIFIERS = ("math", "multiple_choice", "code")
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TRUE = ("1", "ON", "YES", "TRUE")


@dataclass
class Benchmark:
    """Where a benchmark's problems come from and how its answers are checked."""

    name: str = field(default="", metadata={"help": "short name shown in results"})
    description: str = field(default="", metadata={"help": "one line: what the benchmark measures"})
    dataset: str = field(default="builtin", metadata={"help": "'builtin', a local .jsonl/.parquet file or a Hub id"})
    config: str = field(
        default="", metadata={"help": "Hub dataset config (subset) name, passed to load_dataset as `name`"}
    )
    split: str = field(default="test", metadata={"help": "split to evaluate on"})
    local: str = field(
        default="",
        metadata={
            "help": "local .jsonl/.parquet copy of a Hub dataset (the same columns), used when the Hub cannot be "
            "reached; relative to the definition file"
        },
    )
    problem_column: str = field(default="problem", metadata={"help": "column holding the problem text"})
    answer_column: str = field(default="answer", metadata={"help": "column holding the gold answer"})
    id_column: str = field(default="", metadata={"help": "column holding a stable id ('' for the row index)"})
    answer_regex: str = field(
        default="",
        metadata={
            "help": "regular expression that extracts the gold answer from the answer column (its one group, or "
            "the whole match), e.g. '####\\s*(.+?)\\s*$' for GSM8K; '' keeps the column as it is"
        },
    )
    choice_columns: list[str] = field(
        default_factory=list,
        metadata={
            "help": "multiple choice: columns holding the wrong options. The answer column holds the correct "
            "option's text; the options are shuffled (seeded per problem), listed as A) B) ... under the problem, "
            "and the gold answer becomes the correct letter"
        },
    )
    extra_columns: list[str] = field(
        default_factory=list,
        metadata={"help": "columns copied into each problem's `extra` dict (e.g. tests and starter code for code)"},
    )
    verifier: str = field(
        default="math",
        metadata={"help": "how answers are checked: math (math-verify), multiple_choice (a letter) or code (tests)"},
    )
    domain: str = field(
        default="",
        metadata={"help": "domain of every problem, e.g. math, science, code ('': the row's domain column, else math)"},
    )
    # The benchmark's evaluation protocol: `distill eval` uses these unless its own flags say otherwise.
    prompt_template: str = field(
        default="",
        metadata={"help": "user message; {problem} is replaced by the problem ('': eval's default for the verifier)"},
    )
    temperature: float | None = field(default=None, metadata={"help": "sampling temperature (unset: greedy)"})
    top_p: float | None = field(default=None, metadata={"help": "nucleus sampling (unset: 1.0)"})
    max_tokens: int | None = field(default=None, metadata={"help": "max new tokens per answer (unset: 1024)"})
    num_samples: int | None = field(
        default=None, metadata={"help": "samples per problem, k: pass@1 is averaged over them (unset: 1)"}
    )
    definition: str = field(default="", metadata={"help": "(set when loaded) the definition file; not a YAML key"})

    @property
    def is_hub(self) -> bool:
        """True when the problems come from the Hugging Face Hub (not builtin, not a local file)."""
        return not (self.dataset == "builtin" or _is_local_path(self.dataset))


def _is_local_path(dataset: str) -> bool:
    """The rule load_prompts uses: a file suffix or an existing path means a local file."""
    path = Path(dataset).expanduser()
    return path.suffix in LOCAL_SUFFIXES or path.exists()


def available() -> list[str]:
    return sorted(p.stem for p in EVAL_DIR.glob("*.yaml"))


def load_benchmark(spec: str) -> Benchmark:
    """A benchmark by name (eval/<name>.yaml) or by the path of a definition file."""
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
    values = load_yaml(path)
    if "definition" in values:
        raise DistillError(f"{path}: key 'definition' is set by distill, not in the file; remove it")
    bench = build(Benchmark, values, source=str(path))
    bench.name = bench.name or path.stem
    bench.definition = str(path)
    _check(bench, path)
    if bench.dataset != "builtin" and not Path(bench.dataset).is_absolute():
        beside = path.parent / bench.dataset
        if beside.exists():
            bench.dataset = str(beside.resolve())
    if bench.local:
        local = Path(bench.local).expanduser()
        bench.local = str(local if local.is_absolute() else (path.parent / local).resolve())
    return bench


def _check(bench: Benchmark, path: Path) -> None:
    """Field values that parse but cannot work: an error naming the file and the key."""
    check_protocol(
        bench.prompt_template, bench.temperature, bench.top_p, bench.max_tokens, bench.num_samples, str(path)
    )
    if bench.verifier not in VERIFIERS:
        raise DistillError(
            f"{path}: key 'verifier': unknown verifier {bench.verifier!r} (known: {', '.join(VERIFIERS)})"
        )
    if bench.answer_regex:
        try:
            groups = re.compile(bench.answer_regex).groups
        except re.error as e:
            raise DistillError(f"{path}: key 'answer_regex': not a valid regular expression ({e})") from None
        if groups > 1:
            raise DistillError(
                f"{path}: key 'answer_regex': {groups} groups; use one group for the answer and (?:...) for others"
            )
    if bench.choice_columns:
        if bench.verifier != "multiple_choice":
            raise DistillError(f"{path}: key 'choice_columns' needs verifier: multiple_choice (the gold is a letter)")
        if not bench.answer_column:
            raise DistillError(f"{path}: key 'choice_columns' needs answer_column (the correct option's text)")
        if len(bench.choice_columns) + 1 > len(LETTERS):
            raise DistillError(f"{path}: key 'choice_columns': at most {len(LETTERS) - 1} wrong options")
    if bench.config and (bench.dataset == "builtin" or _is_local_path(bench.dataset)):
        raise DistillError(
            f"{path}: key 'config' names a config of a Hub dataset, but dataset {bench.dataset!r} is not a Hub id"
        )


def check_protocol(
    template: str, temperature: float | None, top_p: float | None, max_tokens: int | None, k: int | None, where: str
) -> None:
    """Sampling values and a prompt template that cannot work: an error naming `where` and the key."""
    if template and "{problem}" not in template:
        raise DistillError(f"{where}: key 'prompt_template' must contain {{problem}}, got {template!r}")
    if template:
        try:
            template.format(problem="")
        except (KeyError, IndexError, ValueError) as e:
            raise DistillError(
                f"{where}: key 'prompt_template': only {{problem}} is filled in; write other braces doubled, "
                f"{{{{ and }}}} ({type(e).__name__}: {e})"
            ) from None
    if temperature is not None and temperature < 0:
        raise DistillError(f"{where}: key 'temperature' must be 0 or more, got {temperature}")
    if top_p is not None and not 0 < top_p <= 1:
        raise DistillError(f"{where}: key 'top_p' must be in (0, 1], got {top_p}")
    if max_tokens is not None and max_tokens < 1:
        raise DistillError(f"{where}: key 'max_tokens' must be at least 1, got {max_tokens}")
    if k is not None and k < 1:
        raise DistillError(f"{where}: key 'num_samples' must be at least 1, got {k}")


# --------------------------------------------------------------------------------------------------
# Problems of a benchmark


def load_benchmark_prompts(
    bench: Benchmark, num_prompts: int = 0, levels: list[int] | None = None, seed: int = 0
) -> list[dict]:
    """The benchmark's problems as prompt dicts (id, problem, answer, domain, level[, extra]).

    builtin is generated by distill.problems.prompts.load_prompts (`levels` and `seed` apply to it only; a file or
    Hub dataset is taken whole, as load_prompts does). A local file or a Hub dataset is read as rows and
    mapped like load_prompts maps them, plus config, answer_regex, choice_columns and extra_columns.
    `seed` also fixes the order of multiple-choice options. `num_prompts` > 0 keeps the first that many.
    """
    if bench.dataset == "builtin":
        return load_prompts(
            "builtin", split=bench.split, num_prompts=num_prompts, levels=levels, seed=seed
        )  # problems, answers and domain are generated
    if not bench.is_hub:
        path = Path(bench.dataset).expanduser()
        if not path.is_file():
            raise DistillError(f"benchmark {bench.name}: dataset file {path} does not exist")
        return _prompts_from_rows(load_local(path), str(path), bench, num_prompts, seed)
    try:
        rows = _load_hub_rows(bench, num_prompts)
        source = f"{bench.dataset} ({f'config {bench.config}, ' if bench.config else ''}split {bench.split})"
    except _HubUnavailable as e:
        rows, source = _load_local_copy(bench, str(e)), bench.local
    return _prompts_from_rows(rows, source, bench, num_prompts, seed)


class _HubUnavailable(Exception):
    """The Hub dataset could not be loaded; the message is the first line of the cause."""


def _offline_env() -> bool:
    """HF_HUB_OFFLINE / HF_DATASETS_OFFLINE as set now (datasets reads them only once, at import)."""
    return any(os.environ.get(v, "").upper() in _TRUE for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))


@functools.lru_cache(maxsize=1)
def hub_unreachable() -> str:
    """'' when the Hub's host answers a TCP connect within 5 s, else why not (checked once per process).

    Without this, `datasets` spends ~25 s in retries per dataset on a machine with no route to the Hub."""
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=5):
            return ""
    except OSError as e:
        return f"the Hugging Face Hub at {constants.ENDPOINT} is unreachable from here ({e})"


def _load_hub_rows(bench: Benchmark, num_prompts: int) -> list[dict]:
    import datasets  # heavy (~1 s, pyarrow): only Hub benchmarks need it

    if _offline_env() and not datasets.config.HF_HUB_OFFLINE:
        # The variable was set after datasets was imported: honour it instead of waiting on the network.
        raise _HubUnavailable("offline mode is set (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE)")
    if not _offline_env() and (why := hub_unreachable()):
        raise _HubUnavailable(why)
    try:
        ds = datasets.load_dataset(bench.dataset, bench.config or None, split=bench.split)
    except Exception as e:  # offline, gated, unknown id/config/split: all surface as different types
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise _HubUnavailable(first) from None
    if num_prompts and num_prompts < len(ds):
        ds = ds.select(range(num_prompts))  # never materialize a large dataset (LiveCodeBench's tests) whole
    return ds.to_list()


def _load_local_copy(bench: Benchmark, cause: str) -> list[dict]:
    """Rows of the definition's `local` copy, or an error saying how to provide one."""
    what = f"{bench.dataset!r}" + (f" config {bench.config!r}" if bench.config else "") + f" split {bench.split!r}"
    if not bench.local:
        raise DistillError(
            f"benchmark {bench.name}: cannot load {what} from the Hugging Face Hub ({cause}). For offline use, "
            f"save that split as .jsonl or .parquet on a machine with access (datasets.load_dataset(...).to_json(...))"
            f" and set `local: <file>` in {bench.definition or 'the definition file'} (relative to it); a gated "
            "dataset also needs `hf auth login` and its terms accepted on the Hub"
        )
    local = Path(bench.local)
    if not local.is_file():
        raise DistillError(
            f"benchmark {bench.name}: cannot load {what} from the Hugging Face Hub ({cause}), and its local copy "
            f"{local} does not exist (key 'local' in {bench.definition or 'the definition file'})"
        )
    print(
        f"[distill] benchmark {bench.name}: the Hub is unavailable ({cause}); using the local copy {local}",
        file=sys.stderr,
        flush=True,
    )
    return load_local(local)


def _prompts_from_rows(rows: list[dict], source: str, bench: Benchmark, num_prompts: int, seed: int) -> list[dict]:
    """Map dataset rows to prompt dicts the way load_prompts does, with the definition's extras."""
    if not rows:
        raise DistillError(f"{source}: the dataset is empty")
    where = bench.definition or "the definition file"
    columns = set(rows[0])
    wanted = [("problem", bench.problem_column), ("answer", bench.answer_column), ("id", bench.id_column)]
    wanted += [("choice", c) for c in bench.choice_columns] + [("extra", c) for c in bench.extra_columns]
    for what, col in wanted:
        if col and col not in columns:
            key = f"{what}_column" if what in ("problem", "answer", "id") else f"{what}_columns"
            raise DistillError(
                f"{source}: no column '{col}' for the {what} (columns: {', '.join(sorted(columns))}); "
                f"set '{key}' in {where}"
            )
    pattern = compile_answer_regex(bench.answer_regex, f"{where}: key 'answer_regex'")
    prompts: list[dict] = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        problem = row.get(bench.problem_column)
        if not isinstance(problem, str) or not problem.strip():
            raise DistillError(f"{source}, row {i + 1}: '{bench.problem_column}' is empty or not text")
        pid = str(row[bench.id_column]) if bench.id_column else f"row-{i:06d}"
        if pid in seen:
            raise DistillError(f"{source}, row {i + 1}: duplicate id {pid!r} in column '{bench.id_column}'")
        seen.add(pid)
        raw = row.get(bench.answer_column) if bench.answer_column else ""
        answer = extract_answer("" if raw is None else str(raw), pattern, f"{source}, row {i + 1}")
        if bench.choice_columns:
            problem, answer = _with_choices(problem, answer, [row.get(c) for c in bench.choice_columns], pid, seed)
        prompt = {
            "id": pid,
            "problem": problem,
            "answer": answer,
            "domain": bench.domain or str(row.get("domain") or "math"),
            "level": parse_level(row.get("level")),
        }
        if bench.extra_columns:
            prompt["extra"] = {c: _plain(row.get(c)) for c in bench.extra_columns}
        prompts.append(prompt)
        if num_prompts and len(prompts) >= num_prompts:
            break
    return prompts


def _plain(value: object) -> object:
    """A JSON-ready value: Hub rows can hold timestamps or other objects that JSONL rows cannot."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    return str(value)


def _with_choices(question: str, correct: str, wrong: list, pid: str, seed: int) -> tuple[str, str]:
    """The question with lettered options in a seeded order, and the correct option's letter.
    The order depends on (seed, id) only, so it is the same in every run and process."""
    options = [(True, correct.strip())] + [(False, "" if w is None else str(w).strip()) for w in wrong]
    random.Random(seed * 1_000_003 + zlib.crc32(pid.encode())).shuffle(options)
    lines = [f"{LETTERS[k]}) {text}" for k, (_, text) in enumerate(options)]
    letter = LETTERS[next(k for k, (ok, _) in enumerate(options) if ok)]
    return f"{question.strip()}\n\n" + "\n".join(lines), letter


# --------------------------------------------------------------------------------------------------
# Code benchmarks: tests and instructions from LiveCodeBench-style rows

CODE_PROMPT_TEMPLATE = (
    "{problem}\n\nWrite a Python program that solves the problem. Think it through, then give the complete "
    "solution in one ```python code block at the end of your answer."
)
STDIN_NOTE = "Read the input from standard input and write the answer to standard output."
STARTER_NOTE = "Use this starter code and complete the method:"


def code_tests(prompt: dict) -> dict | list | str:
    """The tests `distill.verification.code_verify` runs for a code problem.

    A LiveCodeBench row's answer column (public_test_cases) is a JSON list of {input, output, testtype};
    "functional" cases call the method named in the row's metadata (``{"func_name": ...}``), "stdin"
    cases run the program. Hidden tests in an extra `private_test_cases` column are added (JSON, or
    LiveCodeBench's base64 of a zlib-compressed pickle of JSON, unpickled with only plain types allowed).
    Any other format (APPS' input_output, {"inputs", "outputs"}, ...) is passed on as it is."""
    answer = prompt.get("answer", "")
    extra = prompt.get("extra") or {}
    cases = _json_or_none(answer) if isinstance(answer, str) else answer
    if not (isinstance(cases, list) and cases and all(isinstance(c, dict) and "testtype" in c for c in cases)):
        return answer
    private = extra.get("private_test_cases")
    if private:
        cases = cases + _private_cases(private, prompt.get("id", "?"))
    if any(c.get("testtype") == "functional" for c in cases):
        meta = extra.get("metadata")
        meta = _json_or_none(meta) if isinstance(meta, str) else meta
        name = (meta or {}).get("func_name") if isinstance(meta, dict) else None
        if not name:
            raise DistillError(
                f"code problem {prompt.get('id', '?')}: functional tests need the function's name in the "
                "'metadata' column ({\"func_name\": ...}); add metadata to extra_columns"
            )
        return {"fn_name": name, "cases": [{"input": c["input"], "output": c["output"]} for c in cases]}
    return [{"input": c["input"], "output": c["output"]} for c in cases]


def code_problem(prompt: dict) -> str:
    """The problem text a code model sees: the statement, then how the solution is run (stdin/stdout,
    or the starter code to complete when the row has one)."""
    extra = prompt.get("extra") or {}
    starter = str(extra.get("starter_code") or "").strip()
    if starter:
        return f"{prompt['problem'].rstrip()}\n\n{STARTER_NOTE}\n```python\n{starter}\n```"
    return f"{prompt['problem'].rstrip()}\n\n{STDIN_NOTE}"


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def _private_cases(value: object, pid: str) -> list[dict]:
    """LiveCodeBench's private_test_cases: JSON text, or base64(zlib(pickle(JSON text)))."""
    if isinstance(value, list):
        return value
    text = str(value)
    decoded = _json_or_none(text)
    if decoded is None:

        class _PlainOnly(pickle.Unpickler):
            def find_class(self, module: str, name: str) -> object:  # no code from a dataset runs here
                raise pickle.UnpicklingError(f"refusing to load {module}.{name}")

        try:
            raw = zlib.decompress(base64.b64decode(text))
            decoded = _PlainOnly(io.BytesIO(raw)).load()
            if isinstance(decoded, (str, bytes)):
                decoded = json.loads(decoded)
        except Exception as e:  # noqa: BLE001 - any decoding failure is a bad row
            raise DistillError(
                f"code problem {pid}: cannot decode private_test_cases ({type(e).__name__}: {e})"
            ) from None
    if not isinstance(decoded, list):
        raise DistillError(f"code problem {pid}: private_test_cases is not a list of test cases")
    return decoded
