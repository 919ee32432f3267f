"""`distill push`: publish a `distill generate` or `distill filter` output folder as a Hugging Face dataset.

    distill push DIR --repo-id NAME [--private]

What goes up is the folder's data and the records that say how it was made, plus a generated README.md
dataset card: a generate folder sends traces.jsonl, summary.json and distill_config.yaml; a filter folder
sends kept.jsonl (the "default" config), rejected.jsonl (the "rejected" config), report.json and
distill_config.yaml. Logs, failures.jsonl, temp and lock files stay behind. The card's front matter names
the data files, so `datasets.load_dataset("NAME")` loads the data without further arguments.

The upload is built in a temporary staging folder (see `stage`): the user's folder is never written to.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub import CommitOperationAdd, HfApi, get_token
from huggingface_hub import errors as hf_errors

from distill import __version__
from distill.common.config import CONFIG_FILENAME, load_yaml
from distill.common.errors import DistillError
from distill.common.records import read_jsonl

TRACES = "traces.jsonl"
KEPT = "kept.jsonl"
REJECTED = "rejected.jsonl"
SUMMARY = "summary.json"
REPORT = "report.json"
CARD = "README.md"

# Repo names on the Hub: letters, digits, '-', '_', '.', not starting or ending with '-' or '.', at most 96.
_NAME = r"[A-Za-z0-9_](?:[A-Za-z0-9_.-]{0,94}[A-Za-z0-9_])?"
_REPO_ID = re.compile(rf"(?:{_NAME}/)?{_NAME}")

COLUMNS = {
    "id": "stable id of the prompt (shared by its samples)",
    "sample": "index of this sample among those drawn for the prompt",
    "problem": "the problem text",
    "answer": "gold answer ('' when unknown)",
    "domain": 'task domain, e.g. "math"',
    "level": "difficulty level (0 when unknown)",
    "messages": "chat turns ready for SFT: the prompt, then the assistant turn "
    "(reasoning inside `<think>…</think>` when the server returned it separately)",
    "completion": "the teacher's raw answer text",
    "reasoning": "reasoning the server returned separately ('' when none)",
    "finish_reason": '"stop" when the teacher ended on its own, "length" when it hit max_tokens',
    "prompt_tokens": "tokens in the prompt",
    "completion_tokens": "tokens the teacher generated",
    "teacher": "name of the served teacher model",
    "sampling": "temperature, top_p, max_tokens and the per-request seed (null when none was sent)",
    "correct": "whether the final answer matched the gold answer",
    "verify_reason": "the verifier's verdict in a word or two",
    "extracted": "the final answer the verifier read from the completion",
    "reject_reason": "why the row was rejected",
}


# --------------------------------------------------------------------------------------------------
# What a folder holds


@dataclass
class _Layout:
    stage: str  # "generate" | "filter"
    data: list[tuple[str, str]]  # (dataset config name, file name), the "default" config first
    record: str  # summary.json | report.json


def _layout(folder: Path) -> _Layout:
    """Which stage wrote `folder`, told by its data files; a DistillError when it holds none."""
    if not folder.exists():
        raise DistillError(f"{folder} does not exist; pass the output folder of `distill generate` or `distill filter`")
    if not folder.is_dir():
        raise DistillError(f"{folder} is not a folder; pass the folder that holds it ({folder.parent})")
    if (folder / KEPT).is_file():
        data = [("default", KEPT)] + ([("rejected", REJECTED)] if (folder / REJECTED).is_file() else [])
        return _Layout("filter", data, REPORT)
    if (folder / TRACES).is_file():
        return _Layout("generate", [("default", TRACES)], SUMMARY)
    raise DistillError(
        f"{folder} holds no {TRACES} (written by `distill generate`) or {KEPT} (written by `distill filter`): "
        "nothing to push"
    )


def files_to_upload(folder: Path) -> list[Path]:
    """The files of `folder` that belong on the Hub: data, its summary/report and the config, nothing else.

    Chosen by name, not by exclusion, so logs, failures.jsonl, *.tmp and lock files can never slip in.
    """
    folder = Path(folder)
    layout = _layout(folder)
    names = [name for _, name in layout.data] + [layout.record, CONFIG_FILENAME]
    return [folder / name for name in names if (folder / name).is_file()]


def read_json_object(path: Path) -> dict:
    """A JSON file's object ({} when the file is missing or holds no object); bad JSON is an error naming it."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DistillError(f"{path}: not valid JSON ({e.msg})") from None
    return data if isinstance(data, dict) else {}


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILENAME
    return load_yaml(path) if path.is_file() else {}


# --------------------------------------------------------------------------------------------------
# Numbers from the rows


def _int(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _level(row: dict) -> int:
    lvl = row.get("level", 0)
    return lvl if isinstance(lvl, int) and not isinstance(lvl, bool) else 0


@dataclass
class _Stats:
    """Counts over the rows of one data file, gathered in one pass (files can be large)."""

    rows: int = 0
    completion_tokens: int = 0
    max_sample: int = 0
    ids: set = field(default_factory=set)
    finish_reasons: Counter = field(default_factory=Counter)
    teachers: set = field(default_factory=set)
    sampling: dict = field(default_factory=dict)  # key -> set of values seen
    keys: dict = field(default_factory=dict)  # column names in first-seen order
    reject_reasons: Counter = field(default_factory=Counter)
    levels: Counter = field(default_factory=Counter)
    system_prompt: str = ""

    @property
    def prompts(self) -> int:
        return len(self.ids)

    @property
    def truncated(self) -> int:
        return self.finish_reasons.get("length", 0)

    def add(self, row: dict) -> None:
        self.rows += 1
        self.completion_tokens += _int(row.get("completion_tokens"))
        self.max_sample = max(self.max_sample, _int(row.get("sample")))
        self.ids.add(str(row.get("id")))
        self.finish_reasons[str(row.get("finish_reason") or "(none)")] += 1
        if row.get("teacher"):
            self.teachers.add(str(row["teacher"]))
        if isinstance(row.get("sampling"), dict):
            for k, v in row["sampling"].items():
                if isinstance(v, (str, int, float)):
                    self.sampling.setdefault(k, set()).add(v)
        self.keys.update(dict.fromkeys(row))
        if "reject_reason" in row:
            self.reject_reasons[str(row["reject_reason"] or "unknown")] += 1
        self.levels[_level(row)] += 1
        msgs = row.get("messages")
        if not self.system_prompt and isinstance(msgs, list) and msgs and isinstance(msgs[0], dict):
            if msgs[0].get("role") == "system":
                self.system_prompt = str(msgs[0].get("content") or "")

    def merge(self, other: _Stats) -> _Stats:
        out = _Stats(
            rows=self.rows + other.rows,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            max_sample=max(self.max_sample, other.max_sample),
            ids=self.ids | other.ids,
            finish_reasons=self.finish_reasons + other.finish_reasons,
            teachers=self.teachers | other.teachers,
            sampling={
                k: self.sampling.get(k, set()) | other.sampling.get(k, set()) for k in {*self.sampling, *other.sampling}
            },
            keys={**self.keys, **other.keys},
            reject_reasons=self.reject_reasons + other.reject_reasons,
            levels=self.levels + other.levels,
            system_prompt=self.system_prompt or other.system_prompt,
        )
        return out


def _scan(path: Path) -> _Stats:
    stats = _Stats()
    for row in read_jsonl(path):
        stats.add(row)
    return stats


def _distinct(values: set | list) -> str:
    """One value as itself, several as a sorted list (a folder appended to with other settings)."""
    seen = sorted({str(v) for v in values if v is not None and v != ""})
    if not seen:
        return ""
    return seen[0] if len(seen) == 1 else "mixed: " + ", ".join(seen)


def _upstream_config(filter_cfg: dict, report: dict, total: _Stats) -> tuple[dict, str]:
    """The generate config of the traces a filter folder was made from, when it is still on disk and its
    sampling settings match the rows (so the card never describes a different run)."""
    src = report.get("input") or filter_cfg.get("input")
    if not src:
        return {}, ""
    src = Path(src)
    path = (src if src.is_dir() else src.parent) / CONFIG_FILENAME
    try:
        cfg = load_yaml(path) if path.is_file() else {}
    except DistillError:
        return {}, ""
    if cfg.get("stage") != "generate":
        return {}, ""
    for key in ("temperature", "top_p", "max_tokens"):
        if key in cfg and any(v != cfg[key] for v in total.sampling.get(key, ())):
            return {}, ""
    return cfg, str(path)


def portable_path(path: str) -> str:
    """A path for the card: relative ones as given, absolute ones shortened to runs/<folder>[/<file>] so
    the card shows no local directory names."""
    p = Path(path)
    if not p.is_absolute():
        return path
    return f"runs/{p.parent.name}/{p.name}" if p.suffix else f"runs/{p.name}"


# --------------------------------------------------------------------------------------------------
# Markdown helpers


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _fence(text: str, lang: str = "") -> str:
    """A code block whose fence is longer than any backtick run inside `text`."""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{lang}\n{text}\n{fence}"


def _pct(num: int, den: int) -> str:
    return f"{num / den:.1%}" if den else "n/a"


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M" if n < 10_000_000 else "n>10M"


def _flags(cfg: dict, keys: list[str]) -> list[str]:
    """`--key value` pairs for the config keys present, spelled as `distill` spells its flags."""
    out: list[str] = []
    for key in keys:
        if key not in cfg or cfg[key] is None:
            continue
        value = cfg[key]
        flag = "--" + key.replace("_", "-")
        if isinstance(value, list):
            out += [flag, *(str(v) for v in value)] if value else []
        elif isinstance(value, bool):
            out += [flag, "true" if value else "false"]
        else:
            out += [flag, str(value)]
    return out


def _command(parts: list[str]) -> str:
    """A shell command, one flag per line when it is long."""
    words = [p if p.startswith("$") else shlex.quote(p) for p in parts]
    head, rest = words[:2], words[2:]
    lines, current = [" ".join(head)], []
    for w in rest:
        if w.startswith("--") and current:
            lines.append(" ".join(current))
            current = []
        current.append(w)
    if current:
        lines.append(" ".join(current))
    return " \\\n    ".join(lines) if len(" ".join(words)) > 100 else " ".join(words)


def _generate_command(cfg: dict) -> str:
    parts = ["distill", "generate", "--output", portable_path(str(cfg.get("output") or "runs/gen"))]
    comment = ""
    if cfg.get("server_url"):
        parts += ["--server-url", "$SERVER_URL"] + _flags(cfg, ["served_model_name"])
        comment = "# SERVER_URL: an OpenAI-compatible endpoint (…/v1) serving the same teacher\n"
    else:
        parts += _flags(cfg, ["teacher"])
    dataset = str(cfg.get("dataset") or "")
    if dataset and Path(dataset).is_absolute():
        parts += ["--dataset", Path(dataset).name]
    else:
        parts += _flags(cfg, ["dataset"])
    parts += _flags(cfg, ["split"])
    if dataset == "builtin":
        parts += _flags(cfg, ["num_prompts", "levels", "seed"])
    else:
        parts += _flags(cfg, ["problem_column", "answer_column"])
        parts += _flags(cfg, ["id_column"]) if cfg.get("id_column") else []
        parts += _flags(cfg, ["num_prompts", "seed"])
    parts += _flags(cfg, ["num_samples", "temperature", "top_p", "max_tokens", "prompt_template"])
    parts += _flags(cfg, ["system_prompt"]) if cfg.get("system_prompt") else []
    parts += _flags(cfg, ["per_request_seed"]) if cfg.get("per_request_seed") else []
    serve = cfg.get("serve")
    if not cfg.get("server_url") and isinstance(serve, dict) and serve.get("max_model_len"):
        parts += ["--set", f"serve.max_model_len={serve['max_model_len']}"]
    return comment + _command(parts)


def _filter_command(cfg: dict, src: str) -> str:
    src = portable_path(src or "runs/gen")
    parts = ["distill", "filter", src, "--output", portable_path(str(cfg.get("output") or "runs/filtered"))]
    return _command(parts + _flags(cfg, ["timeout"]))


# --------------------------------------------------------------------------------------------------
# The card


def dataset_card(folder: Path, repo_id: str | None = None, license: str = "other") -> str:
    """A README.md dataset card for a generate or filter folder: front matter that `load_dataset` reads,
    then how the data was made and what it holds, from the folder's config/summary/report and its rows.

    `repo_id` fills in the loading snippet (a placeholder without it); `license` goes into the front matter.
    """
    folder = Path(folder)
    layout = _layout(folder)
    cfg = _read_config(folder)
    record = read_json_object(folder / layout.record)
    stats = {name: _scan(folder / name) for _, name in layout.data}
    total = _Stats()
    for s in stats.values():
        total = total.merge(s)
    if not total.rows:
        names = " and ".join(stats)
        raise DistillError(f"{folder}: {names} hold no rows; nothing to push")
    default_file = layout.data[0][1]
    repo = repo_id or "<owner>/<name>"
    is_filter = layout.stage == "filter"

    gen_cfg, gen_cfg_path = cfg, ""
    if is_filter:
        gen_cfg, gen_cfg_path = _upstream_config(cfg, record, total)
    elif cfg.get("stage") not in (None, "generate"):
        gen_cfg = {}

    teacher = _distinct(total.teachers) or str(gen_cfg.get("served_model_name") or gen_cfg.get("teacher") or "unknown")
    n_samples = str(gen_cfg.get("num_samples") or total.max_sample + 1)

    def setting(key: str) -> str:
        return _distinct(total.sampling.get(key, set())) or str(gen_cfg.get(key, "not recorded"))

    # ---- front matter
    front: dict[str, Any] = {
        "pretty_name": f"Reasoning traces from {teacher}" + (" (verified)" if is_filter else ""),
        "license": license,
        "task_categories": ["text-generation"],
        "tags": ["distill", "reasoning", "synthetic"],
        "size_categories": [_size_category(stats[default_file].rows)],
        "configs": [
            {"config_name": name, "data_files": [{"split": "train", "path": file}]} for name, file in layout.data
        ],
    }
    out = ["---", yaml.safe_dump(front, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]

    # ---- what it is
    out.append(f"# {front['pretty_name']}\n")
    if is_filter:
        out.append(
            f"Reasoning traces sampled from the teacher model `{teacher}` and then checked by `distill filter`: "
            "the `default` config holds the samples whose final answer matched the gold answer (math-verify, "
            "with a time bound per sample); the `rejected` config holds the rest, each with the reason."
        )
    else:
        out.append(
            f"Reasoning traces sampled from the teacher model `{teacher}` by `distill generate`, "
            f"{n_samples} sample(s) per prompt. Every sample is kept as the teacher wrote it: nothing here "
            "has been checked for correctness yet (`distill filter` does that)."
        )
    out.append(
        "\nThe `messages` column is in chat format, ready for supervised fine-tuning "
        f"(`distill train --data {default_file}`). Made with distill {__version__}.\n"
    )

    # ---- loading
    out.append("## Loading\n")
    snippet = ["from datasets import load_dataset", "", f'ds = load_dataset("{repo}", split="train")']
    if len(layout.data) > 1:
        snippet.append(f'rejected = load_dataset("{repo}", "rejected", split="train")')
    out.append(_fence("\n".join(snippet), "python") + "\n")
    out.append(
        markdown_table(
            ["file", "config", "rows"], [[f"`{file}`", f"`{name}`", stats[file].rows] for name, file in layout.data]
        )
    )
    extra = [n for n in (layout.record, CONFIG_FILENAME) if (folder / n).is_file()]
    if extra:
        out.append("\nAlso here: " + ", ".join(f"`{n}`" for n in extra) + " (the run's own record and settings).")
    out.append("\nColumns:\n")
    out += [f"- `{k}`: {COLUMNS[k]}" if k in COLUMNS else f"- `{k}`" for k in total.keys]
    out.append("")

    # ---- how it was made
    out.append("## How it was made\n")
    if is_filter:
        where = portable_path(str(Path(gen_cfg_path).parent)) + "/" + CONFIG_FILENAME
        note = f" (settings read from `{where}`)" if gen_cfg_path else ""
        out.append(f"- Stages: `distill generate`{note}, then `distill filter`")
    else:
        out.append("- Stage: `distill generate`")
    served = ""
    if gen_cfg.get("teacher") and not gen_cfg.get("server_url") and str(gen_cfg["teacher"]) != teacher:
        served = f" (served by vLLM from `{gen_cfg['teacher']}`)"
    out.append(f"- Teacher: `{teacher}`{served}")
    out.append(f"- Prompts: {_source(gen_cfg)}")
    if is_filter:
        out.append(f"- Decontamination: {_decontamination(record)}")
    out.append("")
    out.append(
        markdown_table(
            ["temperature", "top_p", "max_tokens", "samples per prompt"],
            [[setting("temperature"), setting("top_p"), setting("max_tokens"), n_samples]],
        )
    )
    out.append("")
    if gen_cfg.get("prompt_template"):
        out.append("Prompt template (`{problem}` is replaced by the problem):\n")
        out.append(_fence(str(gen_cfg["prompt_template"]), "text") + "\n")
    else:
        out.append("Prompt template: not recorded; the prompts are in the `messages` column.\n")
    system = gen_cfg.get("system_prompt") if gen_cfg else total.system_prompt
    if system:
        out.append("System prompt:\n")
        out.append(_fence(str(system), "text") + "\n")

    # ---- numbers
    out.append("## Statistics\n")
    cols = [f"`{f}`" for f in stats]
    table = [
        ["rows", *(s.rows for s in stats.values())],
        ["distinct prompts", *(s.prompts for s in stats.values())],
        ["completion tokens", *(s.completion_tokens for s in stats.values())],
        ["mean completion tokens", *(f"{s.completion_tokens / max(s.rows, 1):.0f}" for s in stats.values())],
        ["truncated (finish_reason `length`)", *(s.truncated for s in stats.values())],
    ]
    out.append(markdown_table(["", *cols], table))
    out.append("\nFinish reasons:\n")
    reasons = [r for r, _ in total.finish_reasons.most_common()]
    out.append(
        markdown_table(
            ["finish_reason", *cols], [[f"`{r}`", *(s.finish_reasons[r] for s in stats.values())] for r in reasons]
        )
    )
    out.append("")
    failed = 0 if is_filter else _int(record.get("failed"))
    if failed:
        out.append(f"{failed} request(s) failed during generation and are not in the data.\n")

    if is_filter:
        kept, n = stats[KEPT], total.rows
        out.append("## Verification\n")
        out.append(f"- Kept: {kept.rows} of {n} samples ({_pct(kept.rows, n)})")
        out.append(f"- Prompts with at least one kept sample: {kept.prompts} of {total.prompts}")
        if cfg.get("timeout") is not None:
            out.append(f"- Time bound per sample: {cfg['timeout']} s")
        out.append("")
        rejected = total.rows - kept.rows
        if rejected:
            out.append("Reject reasons:\n")
            why = total.reject_reasons.most_common()
            out.append(
                markdown_table(
                    ["reason", "samples", "share of rejected"], [[f"`{k}`", v, _pct(v, rejected)] for k, v in why]
                )
            )
            out.append("")
        out.append("Pass rate by level:\n")
        levels = sorted(total.levels)
        out.append(
            markdown_table(
                ["level", "kept", "total", "pass rate"],
                [
                    [lvl, kept.levels[lvl], total.levels[lvl], _pct(kept.levels[lvl], total.levels[lvl])]
                    for lvl in levels
                ],
            )
        )
        out.append("")

    # ---- reproducing
    out.append("## Reproducing\n")
    cmds = []
    if gen_cfg:
        cmds.append(_generate_command(gen_cfg))
    if is_filter and cfg:
        if not gen_cfg:
            cmds.append("# the traces came from a `distill generate` run whose settings are not recorded here")
        cmds.append(_filter_command(cfg, str(record.get("input") or cfg.get("input") or "")))
    if cmds:
        out.append("With distill installed:\n")
        out.append(_fence("\n".join(cmds), "bash") + "\n")
        if gen_cfg and not gen_cfg.get("per_request_seed"):
            out.append("Sampling was not seeded per request, so a rerun draws new samples with the same settings.\n")
    else:
        out.append(f"Not derivable: the folder had no `{CONFIG_FILENAME}`.\n")

    out.append("## License\n")
    out.append(
        f"`{license}`. The completions were written by `{teacher}`; its license and terms of use, and those of "
        "the prompt source, apply to this data.\n"
    )
    return "\n".join(out)


def _decontamination(report: dict) -> str:
    """What `distill filter` checked the prompts against, from its report.json."""
    decon = (report.get("stages") or {}).get("decontamination")
    if not decon:
        return "off (no benchmark was checked)"
    checked = ", ".join(f"{name} ({count:,} problems)" for name, count in (decon.get("benchmarks") or {}).items())
    text = f"checked against {checked or 'nothing'}, {decon.get('rejected', 0)} rows rejected as contaminated"
    skipped = decon.get("skipped") or {}
    if skipped:
        text += f"; NOT checked against {', '.join(skipped)} (left out with --decontam-skip)"
    return text


def _source(cfg: dict) -> str:
    """Where the prompts came from, in words."""
    dataset = str(cfg.get("dataset") or "")
    if not dataset:
        return "not recorded"
    split = cfg.get("split", "train")
    count = f"{cfg['num_prompts']} prompts" if cfg.get("num_prompts") else "all prompts"
    if dataset == "builtin":
        levels = ", ".join(map(str, cfg.get("levels") or [])) or "all"
        return (
            f"{count} from distill's built-in generated math word problems, each with an exact integer answer "
            f"(split `{split}`, levels {levels}, seed {cfg.get('seed', 0)})"
        )
    path = Path(dataset)
    if path.suffix in (".jsonl", ".json", ".parquet") or path.is_absolute():
        return f"{count} of the local file `{path.name if path.is_absolute() else dataset}` (not included here)"
    return f"{count} of [`{dataset}`](https://huggingface.co/datasets/{dataset}) (split `{split}`)"


# --------------------------------------------------------------------------------------------------
# Staging and pushing


def check_repo_id(repo_id: str) -> None:
    """A DistillError unless `repo_id` is "owner/name" or "name" as the Hub accepts them."""
    hint = "expected 'owner/name' or 'name', e.g. 'alice/math-traces'"
    if not isinstance(repo_id, str) or not repo_id.strip():
        raise DistillError(f"repo id is empty: {hint}")
    m = re.match(r"https?://[^/]+/(?:datasets/)?(.+?)/?$", repo_id)
    if m:
        raise DistillError(f"repo id {repo_id!r} is a URL: pass just the id, e.g. {m.group(1)!r}")
    if repo_id.startswith("datasets/"):
        raise DistillError(f"repo id {repo_id!r}: leave out 'datasets/' (it is always a dataset repo)")
    if (
        not _REPO_ID.fullmatch(repo_id)
        or "--" in repo_id
        or ".." in repo_id
        or repo_id.endswith(".git")
        or len(repo_id.split("/")[-1]) > 96
    ):
        raise DistillError(
            f"repo id {repo_id!r} is not valid: {hint}; names use letters, digits, '-', '_' and '.', "
            "may not start or end with '-' or '.', nor contain '--' or '..'"
        )


def stage(folder: str | Path, dest: str | Path, repo_id: str | None = None, license: str = "other") -> list[str]:
    """Lay out exactly what will be uploaded in `dest`: the card and links (or copies) of files_to_upload.

    Returns the staged file names, sorted. `folder` is only read.
    """
    folder, dest = Path(folder), Path(dest)
    files = files_to_upload(folder)
    card = dataset_card(folder, repo_id=repo_id, license=license)  # before any write: errors leave dest alone
    dest.mkdir(parents=True, exist_ok=True)
    for src in files:
        target = dest / src.name
        if target.exists():
            target.unlink()
        try:
            os.link(src, target)
        except OSError:  # another filesystem, or links not allowed
            shutil.copy2(src, target)
    (dest / CARD).write_text(card, encoding="utf-8")
    return sorted([CARD, *(f.name for f in files)])


def upload(
    repo_id: str,
    repo_type: str,
    files: list[Path],
    card: Callable[[str], str],
    message: str,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
) -> str:
    """The one place distill writes to the Hub: create (or reuse) the repo, then one commit of `files` (by
    their names) and the card `card(full repo id)` as README.md. Returns the repo URL (the branch's URL when
    `revision` names one). `endpoint` overrides the Hub address (HF_ENDPOINT otherwise). Every Hub or network
    failure is a one-line DistillError naming the repo and what failed."""
    check_repo_id(repo_id)
    api = HfApi(endpoint=endpoint, token=token)
    action = f"creating the {repo_type} repo"
    try:
        url = api.create_repo(repo_id, repo_type=repo_type, private=private, exist_ok=True)
        full_id = getattr(url, "repo_id", None) or repo_id  # "name" alone: the Hub puts it under the token's user
        if revision:
            action = f"creating branch {revision!r}"
            api.create_branch(full_id, branch=revision, repo_type=repo_type, exist_ok=True)
        names = [CARD, *(f.name for f in files)]
        size = sum(f.stat().st_size for f in files)
        action = f"uploading {len(names)} files ({size / 2**30:.2f} GiB): {', '.join(names)}"
        operations = [CommitOperationAdd(path_in_repo=f.name, path_or_fileobj=str(f)) for f in files]
        operations.append(CommitOperationAdd(path_in_repo=CARD, path_or_fileobj=card(full_id).encode("utf-8")))
        api.create_commit(
            repo_id=full_id,
            repo_type=repo_type,
            operations=operations,
            revision=revision,
            commit_message=message,
            commit_description=f"Uploaded by distill {__version__}: {', '.join(names)}",
        )
    except (TypeError, AttributeError, NameError):
        raise  # a bug here, not a Hub problem: keep the traceback
    except DistillError:
        raise
    except Exception as e:
        raise hub_error(e, repo_id, repo_type, action, api.endpoint, token) from e
    base = str(url).rstrip("/")
    return f"{base}/tree/{revision}" if revision else base


def push_dataset(
    folder: str | Path,
    repo_id: str,
    private: bool = False,
    token: str | None = None,
    revision: str | None = None,
    endpoint: str | None = None,
    license: str = "other",
) -> str:
    """Upload a generate or filter output folder as a Hub dataset: files_to_upload and the dataset card."""
    folder = Path(folder)
    layout = _layout(folder)
    files = files_to_upload(folder)
    dataset_card(folder, repo_id=repo_id, license=license)  # a folder the card cannot describe fails before the Hub
    rows = sum(_count_lines(folder / name) for _, name in layout.data)
    return upload(
        repo_id,
        "dataset",
        files,
        card=lambda full_id: dataset_card(folder, repo_id=full_id, license=license),
        message=f"distill push: {layout.stage} output, {rows} rows",
        private=private,
        token=token,
        revision=revision,
        endpoint=endpoint,
    )


def _count_lines(path: Path) -> int:
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _one_line(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def hub_error(
    e: Exception, repo_id: str, repo_type: str, action: str, endpoint: str, token: str | None
) -> DistillError:
    """Turn a huggingface_hub / HTTP-client exception into one line: which repo, what failed, what to do."""
    name = type(e).__name__
    detail = _one_line(str(e)) or name
    status = getattr(getattr(e, "response", None), "status_code", None)
    login = "run `hf auth login` (older huggingface_hub: `huggingface-cli login`) or set HF_TOKEN"
    owner = repo_id.split("/")[0] if "/" in repo_id else "your user"
    if isinstance(e, getattr(hf_errors, "OfflineModeIsEnabled", ())):
        why = "HF_HUB_OFFLINE is set; unset it to push"
    elif isinstance(e, getattr(hf_errors, "LocalTokenNotFoundError", ())):
        why = f"no Hugging Face token found; {login}"
    elif status == 401:
        if token is None and not _have_token():
            why = f"not logged in (HTTP 401); {login}"
        else:
            why = f"the Hub did not accept the token (HTTP 401); {login} with a token that has write access"
    elif status == 403:
        why = (
            f"the token may not write to {owner} (HTTP 403); use a write token with access to it, or your own namespace"
        )
    elif status == 404:
        why = f"not found (HTTP 404): check that the owner {owner!r} exists and the token can see it"
    elif status == 429:
        why = "rate limited by the Hub (HTTP 429); wait a while and push again"
    elif isinstance(status, int) and status >= 500:
        why = f"the Hub answered with a server error (HTTP {status}); try again later"
    elif status:
        why = f"HTTP {status}: {detail}"
    elif isinstance(e, getattr(hf_errors, "HFValidationError", ())):
        why = detail
    elif _is_network_error(e):
        why = f"cannot reach {endpoint} ({name}: {detail}); check the network connection and proxy settings, or HF_ENDPOINT"
    else:
        why = f"{name}: {detail}"
    return DistillError(f"push to {repo_type} repo {repo_id} failed while {action}: {why}")


def _have_token() -> bool:
    try:
        return get_token() is not None
    except Exception:  # an unreadable token file counts as none
        return False


def _is_network_error(e: Exception) -> bool:
    """Connection refused, DNS, timeouts, proxies, from the standard library or whichever HTTP client
    huggingface_hub uses (requests, httpx or httpx2 depending on its version); not e.g. a PermissionError."""
    if isinstance(e, (ConnectionError, TimeoutError, socket.gaierror)):
        return True
    words = ("Connect", "Timeout", "Network", "Proxy", "Transport")
    return any(w in cls.__name__ for cls in type(e).__mro__ for w in words)
