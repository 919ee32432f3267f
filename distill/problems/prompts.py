"""Prompt sources: the built-in tasks, a local JSONL/Parquet file, or a Hugging Face dataset id.

Every source yields the same prompt dict: id, problem, answer, domain, level.
"""

from __future__ import annotations

import re
from pathlib import Path

from distill.common.errors import DistillError
from distill.common.records import read_jsonl
from distill.problems.tasks import builtin_problems


def load_prompts(
    dataset: str,
    split: str = "train",
    num_prompts: int = 0,
    problem_column: str = "problem",
    answer_column: str = "answer",
    id_column: str = "",
    levels: list[int] | None = None,
    seed: int = 0,
    answer_regex: str = "",
) -> list[dict]:
    """Load prompts; raises DistillError naming the file/dataset and column on bad input. `answer_regex`
    takes the gold out of a longer answer text (its one group, e.g. GSM8K's '####\\s*(.+?)\\s*$')."""
    if dataset == "builtin":
        if num_prompts <= 0:
            raise DistillError("builtin prompts need --num-prompts > 0 (they are generated on demand)")
        return builtin_problems(split, num_prompts, seed=seed, levels=levels or [1, 2, 3, 4, 5])

    path = Path(dataset).expanduser()
    if path.suffix in (".jsonl", ".json", ".parquet") or path.exists():
        if not path.is_file():
            raise DistillError(f"prompt file {path} does not exist")
        rows, source = load_local(path), str(path)
    else:
        rows, source = _load_hub(dataset, split), f"{dataset} (split {split})"

    if not rows:
        raise DistillError(f"{source}: the dataset is empty")
    columns = set(rows[0])
    for what, col in (("problem", problem_column), ("answer", answer_column), ("id", id_column)):
        if col and col not in columns:
            raise DistillError(
                f"{source}: no column '{col}' for the {what} (columns: {', '.join(sorted(columns))}); "
                f"set --{what}-column"
            )
    pattern = compile_answer_regex(answer_regex, "--answer-regex")
    prompts = []
    seen: set[str] = set()
    for i, row in enumerate(rows):
        problem = row.get(problem_column)
        if not isinstance(problem, str) or not problem.strip():
            raise DistillError(f"{source}, row {i + 1}: '{problem_column}' is empty or not text")
        pid = str(row[id_column]) if id_column else f"row-{i:06d}"
        if pid in seen:
            raise DistillError(f"{source}, row {i + 1}: duplicate id {pid!r} in column '{id_column}'")
        seen.add(pid)
        answer = row.get(answer_column) if answer_column else ""
        answer = extract_answer("" if answer is None else str(answer), pattern, f"{source}, row {i + 1}")
        prompts.append(
            {
                "id": pid,
                "problem": problem,
                "answer": answer,
                "domain": str(row.get("domain") or "math"),
                "level": parse_level(row.get("level")),
            }
        )
        if num_prompts and len(prompts) >= num_prompts:
            break
    return prompts


def compile_answer_regex(answer_regex: str, where: str) -> re.Pattern | None:
    """The compiled regex (one group at most), or None when empty; a bad one is an error naming `where`."""
    if not answer_regex:
        return None
    try:
        pattern = re.compile(answer_regex)
    except re.error as e:
        raise DistillError(f"{where}: not a valid regular expression ({e})") from None
    if pattern.groups > 1:
        raise DistillError(f"{where}: {pattern.groups} groups; use one group for the answer and (?:...) for others")
    return pattern


def extract_answer(answer: str, pattern: re.Pattern | None, where: str) -> str:
    """The gold in `answer`: the regex's group (or whole match) when a pattern is given, else the text as it is."""
    if pattern is None:
        return answer
    m = pattern.search(answer)
    if m is None:
        raise DistillError(f"{where}: answer_regex {pattern.pattern!r} does not match the answer {answer[-80:]!r}")
    return (m.group(1) if pattern.groups else m.group(0)).strip()


def parse_level(value) -> int:
    """Accept 3, "3" or MATH's "Level 3"; 0 when unknown."""
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        digits = "".join(c for c in value if c.isdigit())
        return int(digits) if digits else 0
    return 0


def load_local(path: Path) -> list[dict]:
    """The rows of a local .parquet or .jsonl file."""
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq  # optional: only Parquet files need pyarrow

        try:
            return pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several types for a bad file
            raise DistillError(f"{path}: cannot read as Parquet ({e})") from None
    return list(read_jsonl(path))


def _load_hub(name: str, split: str) -> list[dict]:
    import datasets  # heavy (~1 s, pyarrow): only Hub datasets need it

    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as e:  # offline, unknown id, unknown split: all surface as different types
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DistillError(
            f"cannot load dataset {name!r} split {split!r} from the Hugging Face Hub ({first}); "
            "for offline use pass a local .jsonl or .parquet file"
        ) from None
    return ds.to_list()
