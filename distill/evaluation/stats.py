"""`distill stats`: what the traces (or a student's answers) look like, in numbers and plots.

    distill stats runs/traces.jsonl --output runs/stats-traces          # a `distill generate` output
    distill stats runs/filtered --output runs/stats-filtered            # kept.jsonl + rejected.jsonl
    distill stats runs/eval-100 runs/eval-200 runs/eval-300 --steps 100 200 300 --output runs/stats-steps

Each input is a trace file, a folder holding traces.jsonl, a `distill filter` folder (kept.jsonl and/or
rejected.jsonl) or a `distill eval` folder (samples.jsonl, with results.json). For each input:

  lengths      thinking (inside <think>…</think>, or the separate `reasoning` field) and answer (the
               final part after </think>) in tokens: count, mean, median, p90, max; and the rows'
               completion_tokens when present
  reflection   how often the reflection words (data/reflection_words.txt, the DeepSeek-R1 paper's list)
               occur per 1k tokens: whole words, case-insensitive, over thinking and answer
  accuracy     share of verified rows (`correct`) overall, by difficulty level and by domain
  pass rates   per prompt (its samples grouped by id): pass@1 with its standard error, pass@k, prompts
               that are always or never solved
  truncation   share of rows that stopped at the token limit (finish_reason "length")
  results      eval folders: pass@1 and pass@1 by level from results.json

Tokens are whitespace-separated words by default (no model needed); with --tokenizer MODEL they are
real tokens: the row's completion_tokens (exact, from the server) is the total and the tokenizer only
measures the answer part, the rest being the thinking part.

With several inputs that carry a training step (--steps, a `step` key in results.json, or a
`checkpoint-N` folder name), line plots show accuracy by level, reflection-word frequency, lengths and
truncation over training steps, like figures 8 and 9 of the DeepSeek-R1 paper.

Writes OUT/stats.json, OUT/report.md (tables and the plots inline), the PNG plots and the config.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from distill.common import config as config_mod
from distill.common.errors import DistillError
from distill.common.models import resolve_model
from distill.common.records import read_jsonl, write_json
from distill.evaluation.config import StatsConfig
from distill.evaluation.metrics import mean_pass_at_k, pass_at_1_from_samples
from distill.verification.answers import final_part

EVAL_FILES = ("samples.jsonl", "results.json")
FILTER_FILES = ("kept.jsonl", "rejected.jsonl")
TRACE_FILES = ("traces.jsonl",)
_CHECKPOINT = re.compile(r"checkpoint-(\d+)")
_TOKENIZE_BATCH = 512


# --------------------------------------------------------------------------------------------------
# Finding and reading the inputs


@dataclass
class Source:
    """One input: what kind of output it is and which files hold its rows."""

    path: Path
    kind: str  # "traces", "filter" or "eval"
    files: list[Path]
    label: str = ""
    results: dict | None = None  # eval: results.json
    step: int | None = None
    rows: list[dict] = field(default_factory=list)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DistillError(f"{path}: not valid JSON ({e.msg})") from None
    if not isinstance(data, dict):
        raise DistillError(f"{path}: expected a JSON object at the top level")
    return data


def find_source(spec: str) -> Source:
    """Recognise an input path; a folder without any known file is an error that names it."""
    path = Path(spec).expanduser()
    if not path.exists():
        raise DistillError(f"stats input {spec} does not exist")
    if path.is_file():
        if path.name == "samples.jsonl":
            results = path.with_name("results.json")
            return Source(path, "eval", [path], results=_read_json(results) if results.is_file() else None)
        return Source(path, "traces", [path])
    if (path / "samples.jsonl").is_file():
        results = path / "results.json"
        return Source(
            path, "eval", [path / "samples.jsonl"], results=_read_json(results) if results.is_file() else None
        )
    found = [path / name for name in FILTER_FILES if (path / name).is_file()]
    if found:
        return Source(path, "filter", found)
    if (path / "traces.jsonl").is_file():
        return Source(path, "traces", [path / "traces.jsonl"])
    known = ", ".join((*TRACE_FILES, *FILTER_FILES, EVAL_FILES[0]))
    raise DistillError(
        f"stats input {spec} holds no recognised file: expected {known} (traces, a filter folder or an eval folder)"
    )


def _load_rows(src: Source) -> None:
    """Read every row of a source (a torn last line of a trace file still being written is skipped)."""
    rows: list[dict] = []
    for f in src.files:
        for row in read_jsonl(f, allow_torn_tail=True):
            row["_file"] = f.name
            rows.append(row)
    if not rows:
        raise DistillError(f"stats input {src.path} has no rows ({', '.join(f.name for f in src.files)} empty)")
    if not any(isinstance(r.get("completion"), str) or r.get("reasoning") for r in rows):
        raise DistillError(f"stats input {src.path}: its rows have no 'completion' text; is it a trace file?")
    src.rows = rows


def _detect_step(src: Source) -> int | None:
    """A training step from results.json's `step`, a checkpoint-N name of the input's folder or of its
    parent (runs/student/checkpoint-200/eval), or a checkpoint-N in results.json's model path."""
    if src.results is not None and isinstance(src.results.get("step"), int):
        return src.results["step"]
    folder = (src.path if src.path.is_dir() else src.path.parent).resolve()
    for part in (folder.name, folder.parent.name):
        m = _CHECKPOINT.fullmatch(part)
        if m:
            return int(m.group(1))
    if src.results is not None and isinstance(src.results.get("model"), str):
        found = _CHECKPOINT.findall(src.results["model"])
        if found:
            return int(found[-1])
    return None


def _labels(sources: list[Source]) -> None:
    """A short unique file-name-safe label per input (its folder name, or a file's stem)."""
    seen: Counter[str] = Counter()
    for src in sources:
        if src.path.is_dir():
            base = src.path.name
        elif src.path.name == "samples.jsonl":  # an eval folder given by its file
            base = src.path.parent.name
        else:
            base = src.path.stem
        base = re.sub(r"[^\w.-]+", "_", base).strip("._") or "input"
        seen[base] += 1
        src.label = base if seen[base] == 1 else f"{base}-{seen[base]}"


# --------------------------------------------------------------------------------------------------
# Splitting a trace into thinking and answer, and counting tokens


def trace_parts(row: dict) -> tuple[str | None, str | None]:
    """(thinking, answer) text of a row; None where the part is absent.

    The thinking is the separate `reasoning` field, else the text inside <think>…</think> (from the start
    of the completion when the chat template opened <think> in the prompt). The answer is the completion,
    or its final part after the last </think>; None when a <think> was never closed (a truncated trace),
    or when the completion is empty because generation stopped at the token limit."""
    completion = row.get("completion") or ""
    if not isinstance(completion, str):
        completion = str(completion)
    reasoning = row.get("reasoning") or ""
    if reasoning:
        if not completion and row.get("finish_reason") == "length":
            return reasoning, None
        return reasoning, completion
    close = completion.rfind("</think>")
    opened = completion.find("<think>")
    if opened < 0 and close < 0:
        return None, completion
    start = opened + len("<think>") if 0 <= opened < (close if close >= 0 else len(completion)) else 0
    if close < 0:
        return completion[start:], None
    return completion[start:close], final_part(completion)


class TokenCounter:
    """Counts tokens: whitespace-separated words, or the tokens of a Hugging Face tokenizer."""

    def __init__(self, spec: str = "") -> None:
        self.spec = spec
        self.tokenizer: Any = None
        if spec:
            self.tokenizer = _load_tokenizer(spec)

    @property
    def unit(self) -> str:
        return f"tokens ({self.spec})" if self.spec else "whitespace-separated words"

    def count(self, texts: Sequence[str]) -> list[int]:
        if self.tokenizer is None:
            return [len(t.split()) for t in texts]
        out: list[int] = []
        for i in range(0, len(texts), _TOKENIZE_BATCH):
            ids = self.tokenizer(list(texts[i : i + _TOKENIZE_BATCH]), add_special_tokens=False)["input_ids"]
            out.extend(len(x) for x in ids)
        return out

    def split(
        self, rows: Sequence[dict], parts: Sequence[tuple[str | None, str | None]]
    ) -> list[tuple[int | None, int | None]]:
        """(thinking, answer) token counts per row, None for an absent part.

        With a tokenizer and a row's completion_tokens (the exact generated count), that count is the
        total: a lone part gets all of it, and otherwise only the (short) answer is tokenized and the
        thinking gets the rest, <think> tags included. Whitespace counting ignores completion_tokens
        (a different unit)."""
        out: list[list[int | None]] = []
        todo: list[str] = []
        where: list[tuple[int, int]] = []  # (row index, 0 thinking | 1 answer) of each text in todo
        rest: dict[int, int] = {}  # row index -> exact total, for rows whose thinking is total - answer
        for i, (row, (thinking, answer)) in enumerate(zip(rows, parts, strict=True)):
            total = _exact_total(row) if self.tokenizer is not None else None
            counts: list[int | None] = [None, None]
            if total is not None and (thinking is None or answer is None):
                counts = [None if thinking is None else total, None if answer is None else total]
            else:
                if total is not None:
                    rest[i] = total
                for j, text in enumerate((thinking, answer)):
                    if text is not None and not (j == 0 and i in rest):
                        todo.append(text)
                        where.append((i, j))
            out.append(counts)
        for (i, j), n in zip(where, self.count(todo), strict=True):
            out[i][j] = n
        for i, total in rest.items():
            out[i][0] = max(total - (out[i][1] or 0), 0)
        return [(t, a) for t, a in out]


def _exact_total(row: dict) -> int | None:
    """The row's completion_tokens when it is a usable count."""
    total = row.get("completion_tokens")
    if isinstance(total, int) and not isinstance(total, bool) and total >= 0:
        return total
    return None


def _load_tokenizer(spec: str) -> Any:
    """AutoTokenizer for a folder (a tokenizer alone is enough) or any model spec distill understands."""

    path = Path(spec).expanduser()
    target = str(path) if path.is_dir() else resolve_model(spec)
    try:
        from transformers import AutoTokenizer  # heavy (~3 s): only with --tokenizer

        return AutoTokenizer.from_pretrained(target)
    except Exception as e:  # any loading failure comes from the user's spec: report it in one line
        raise DistillError(
            f"cannot load a tokenizer from {spec}: {type(e).__name__}: {(str(e).splitlines() or [''])[0]}"
        ) from None


# --------------------------------------------------------------------------------------------------
# Statistics of one input


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), q in [0, 1]."""
    pos = (len(sorted_values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def distribution(values: Sequence[float]) -> dict:
    """count, mean, median, p90 and max of a list of lengths (None for all but count when empty)."""
    if not values:
        return {"count": 0, "mean": None, "median": None, "p90": None, "max": None}
    s = sorted(values)
    return {
        "count": len(s),
        "mean": math.fsum(s) / len(s),
        "median": _percentile(s, 0.5),
        "p90": _percentile(s, 0.9),
        "max": s[-1],
    }


def _word_pattern(word: str) -> re.Pattern[str]:
    """Whole-word, case-insensitive pattern; a space in a phrase matches any run of whitespace."""
    body = r"\s+".join(re.escape(w) for w in word.split())
    return re.compile(rf"(?<!\w){body}(?!\w)", re.IGNORECASE)


def _per_1k(count: int, tokens: int) -> float | None:
    return 1000.0 * count / tokens if tokens else None


def _verified(row: dict) -> bool:
    """A row with a verdict: `correct` is set and was not just defaulted for a row rejected before
    verification (a filter folder's rejected rows carry verify_reason only when they were verified)."""
    if not isinstance(row.get("correct"), bool):
        return False
    return "reject_reason" not in row or "verify_reason" in row


def _level_key(value: Any) -> str:
    return str(value if value not in (None, "") else 0)


def _sort_keys(keys: Any) -> list[str]:
    """Numeric keys in numeric order, then the others alphabetically."""
    return sorted(keys, key=lambda k: (0, float(k), "") if _is_number(k) else (1, 0.0, k))


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _rate_table(rows: Sequence[dict], key: Callable[[dict], str]) -> dict[str, dict]:
    groups: dict[str, list[bool]] = defaultdict(list)
    for r in rows:
        groups[key(r)].append(r["correct"])
    return {
        k: {"n": len(groups[k]), "correct": sum(groups[k]), "accuracy": sum(groups[k]) / len(groups[k])}
        for k in _sort_keys(groups)
    }


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def summarize(rows: Sequence[dict], words: Sequence[str], counter: TokenCounter, pass_k: Sequence[int]) -> dict:
    """Every statistic of one set of rows (see the module docstring)."""
    parts = [trace_parts(r) for r in rows]
    counts = counter.split(rows, parts)
    thinking = [t for t, _ in counts if t is not None]
    answer = [a for _, a in counts if a is not None]
    exact = [t for t in map(_exact_total, rows) if t is not None]
    tokens = sum(thinking) + sum(answer)

    patterns = {w.lower(): _word_pattern(w) for w in words}
    word_counts = dict.fromkeys(patterns, 0)
    for t, a in parts:
        text = "\n".join(p for p in (t, a) if p)
        for w, pat in patterns.items():
            word_counts[w] += len(pat.findall(text))
    total_words = sum(word_counts.values())

    verified = [r for r in rows if _verified(r)]
    accuracy = None
    pass_rates = None
    if verified:
        correct = sum(r["correct"] for r in verified)
        accuracy = {
            "verified": len(verified),
            "correct": correct,
            "overall": correct / len(verified),
            "by_level": _rate_table(verified, lambda r: _level_key(r.get("level"))),
            "by_domain": _rate_table(verified, lambda r: str(r.get("domain") or "unknown")),
        }
        by_prompt: dict[str, list[bool]] = defaultdict(list)
        for i, r in enumerate(verified):
            by_prompt[str(r.get("id", f"row-{i}"))].append(r["correct"])
        sizes = [len(v) for v in by_prompt.values()]
        p1, p1_se = pass_at_1_from_samples(by_prompt.values())
        pass_at = {}
        for k in sorted(set(pass_k)):
            if k <= min(sizes):
                mean, se = mean_pass_at_k([(len(v), sum(v)) for v in by_prompt.values()], k)
                pass_at[str(k)] = {"mean": mean, "stderr": _finite(se)}
        pass_rates = {
            "prompts": len(by_prompt),
            "samples_per_prompt": {"min": min(sizes), "max": max(sizes), "mean": sum(sizes) / len(sizes)},
            "pass@1": p1,
            "pass@1_stderr": _finite(p1_se),
            "pass@k": pass_at,
            "all_correct": sum(all(v) for v in by_prompt.values()),
            "none_correct": sum(not any(v) for v in by_prompt.values()),
        }

    truncated = sum(r.get("finish_reason") == "length" for r in rows)
    return {
        "rows": len(rows),
        "lengths": {
            "thinking": distribution(thinking),
            "answer": distribution(answer),
            "completion_tokens": distribution(exact),
        },
        "reflection": {
            "tokens": tokens,
            "total": total_words,
            "per_1k": _per_1k(total_words, tokens),
            "words": {w: {"count": c, "per_1k": _per_1k(c, tokens)} for w, c in word_counts.items()},
        },
        "accuracy": accuracy,
        "pass_rates": pass_rates,
        "truncation": {"rows": len(rows), "truncated": truncated, "rate": truncated / len(rows)},
        "_values": {"thinking": thinking, "answer": answer},
    }


def _results_summary(results: dict) -> dict:
    keep = (
        "model",
        "tasks",
        "n",
        "correct",
        "pass@1",
        "pass@1_by_level",
        "mean_completion_tokens",
        "truncated",
        "step",
    )
    return {k: results[k] for k in keep if k in results}


# --------------------------------------------------------------------------------------------------
# Plots (matplotlib, Agg canvas: no display and no global pyplot state)


def _figure(width: float = 6.4, height: float = 4.0) -> Any:
    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> str:
    """Write a PNG atomically (a temp file, then rename); returns its file name."""
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png")
    tmp.replace(path)
    return path.name


def _plot_hist(path: Path, values: Sequence[int], title: str, unit: str) -> str:
    fig = _figure()
    ax = fig.add_subplot()
    ax.hist(values, bins=max(1, min(30, len(set(values)))), color="#4c72b0", edgecolor="white")
    mean, median = math.fsum(values) / len(values), _percentile(sorted(values), 0.5)
    ax.axvline(mean, color="#c44e52", linestyle="--", label=f"mean {mean:.1f}")
    ax.axvline(median, color="#55a868", linestyle=":", label=f"median {median:.1f}")
    ax.set_title(f"{title} (n={len(values)})")
    ax.set_xlabel(f"length, {unit}")
    ax.set_ylabel("rows")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    return _save(fig, path)


def _plot_reflection(path: Path, reflection: dict, label: str, unit: str) -> str:
    words = list(reflection["words"])
    fig = _figure(max(6.4, 0.7 * len(words) + 2), 4.0)
    ax = fig.add_subplot()
    heights = [reflection["words"][w]["per_1k"] or 0.0 for w in words]
    bars = ax.bar(words, heights, color="#8172b2")
    for bar, w in zip(bars, words, strict=True):
        ax.annotate(
            str(reflection["words"][w]["count"]),
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    total = reflection["per_1k"]
    ax.set_title(f"{label}: reflection words per 1k {unit} (all: {total or 0:.2f})")
    ax.set_ylabel(f"per 1k {unit} (labels: counts)")
    ax.tick_params(axis="x", rotation=45)
    return _save(fig, path)


def _plot_accuracy(path: Path, by_level: dict, label: str) -> str:
    levels = list(by_level)
    fig = _figure()
    ax = fig.add_subplot()
    bars = ax.bar([f"L{k}" for k in levels], [by_level[k]["accuracy"] for k in levels], color="#55a868")
    for bar, k in zip(bars, levels, strict=True):
        ax.annotate(
            f"{by_level[k]['correct']}/{by_level[k]['n']}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, 1.08)
    ax.set_title(f"{label}: accuracy by difficulty level")
    ax.set_xlabel("level")
    ax.set_ylabel("accuracy")
    return _save(fig, path)


def _plot_lines(
    path: Path,
    steps: list[int],
    series: dict[str, list[float | None]],
    title: str,
    ylabel: str,
    ylim: tuple[float, float] | None = None,
) -> str:
    """One line per series over the steps (None values are gaps); the aggregate ("all", "overall") in bold
    black, the others in distinct colours (tab20 beyond 10 series) with the legend outside the axes."""
    several = len(series) > 1
    fig = _figure(8.0 if several else 6.4, 4.0)
    ax = fig.add_subplot()
    others = [name for name in series if name not in ("all", "overall")]
    cmap = colormaps["tab10" if len(others) <= 10 else "tab20"]
    colours = {name: cmap(i % cmap.N) for i, name in enumerate(others)}
    for name, ys in series.items():
        pts = [(s, y) for s, y in zip(steps, ys, strict=True) if y is not None]
        if pts:
            aggregate = name not in colours
            ax.plot(
                [p[0] for p in pts],
                [p[1] for p in pts],
                marker="o",
                label=name,
                color="black" if aggregate else colours[name],
                linewidth=2.5 if aggregate else 1.5,
                zorder=3 if aggregate else 2,
            )
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    if several:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path)


def _input_plots(out: Path, label: str, s: dict, unit: str) -> list[str]:
    plots = []
    for part in ("thinking", "answer"):
        values = s["_values"][part]
        if values:
            plots.append(_plot_hist(out / f"{label}-{part}_length.png", values, f"{label}: {part} length", unit))
    if s["reflection"]["words"] and s["reflection"]["tokens"]:
        plots.append(_plot_reflection(out / f"{label}-reflection_words.png", s["reflection"], label, unit))
    if s["accuracy"]:
        plots.append(_plot_accuracy(out / f"{label}-accuracy_by_level.png", s["accuracy"]["by_level"], label))
    return plots


# --------------------------------------------------------------------------------------------------
# Over training steps


def _steps(cfg: StatsConfig, sources: list[Source]) -> None:
    if cfg.steps:
        if len(cfg.steps) != len(sources):
            raise DistillError(
                f"stats: --steps has {len(cfg.steps)} values for {len(sources)} inputs; "
                "give one step per input, in order"
            )
        for src, step in zip(sources, cfg.steps, strict=True):
            src.step = step
    else:
        for src in sources:
            src.step = _detect_step(src)
    seen: dict[int, Source] = {}
    for src in sources:
        if src.step is None:
            continue
        if src.step in seen:
            raise DistillError(
                f"stats: inputs {seen[src.step].path} and {src.path} both have step {src.step}; "
                "give each input its own step with --steps"
            )
        seen[src.step] = src


def over_steps(entries: list[dict], out: Path, unit: str = "tokens") -> dict | None:
    """Metrics per training step, and their line plots, from the inputs that have a step (at least 2)."""
    points = sorted((e for e in entries if e["step"] is not None), key=lambda e: e["step"])
    if len(points) < 2:
        return None
    steps = [e["step"] for e in points]

    def acc(e: dict) -> float | None:
        return e["accuracy"]["overall"] if e["accuracy"] else None

    levels = _sort_keys({k for e in points if e["accuracy"] for k in e["accuracy"]["by_level"]})
    by_level = {
        k: [e["accuracy"]["by_level"].get(k, {}).get("accuracy") if e["accuracy"] else None for e in points]
        for k in levels
    }
    words = list(dict.fromkeys(w for e in points for w in e["reflection"]["words"]))
    result = {
        "steps": steps,
        "labels": [e["label"] for e in points],
        "accuracy": [acc(e) for e in points],
        "accuracy_by_level": by_level,
        "pass@1": [(e.get("results") or {}).get("pass@1", acc(e)) for e in points],
        "reflection_per_1k": [e["reflection"]["per_1k"] for e in points],
        "reflection_words_per_1k": {
            w: [e["reflection"]["words"].get(w, {}).get("per_1k") for e in points] for w in words
        },
        "thinking_mean": [e["lengths"]["thinking"]["mean"] for e in points],
        "answer_mean": [e["lengths"]["answer"]["mean"] for e in points],
        "truncation_rate": [e["truncation"]["rate"] for e in points],
        "without_step": [e["label"] for e in entries if e["step"] is None],
    }
    plots = []
    if any(a is not None for a in result["accuracy"]):
        series = {"overall": result["accuracy"], **{f"L{k}": v for k, v in by_level.items()}}
        plots.append(
            _plot_lines(
                out / "accuracy_over_steps.png",
                steps,
                series,
                "Accuracy by level over training",
                "accuracy",
                (0.0, 1.02),
            )
        )
    if words:
        series = {"all": result["reflection_per_1k"], **result["reflection_words_per_1k"]}
        plots.append(
            _plot_lines(
                out / "reflection_over_steps.png",
                steps,
                series,
                f"Reflection words per 1k {unit} over training",
                f"per 1k {unit}",
            )
        )
    plots.append(
        _plot_lines(
            out / "length_over_steps.png",
            steps,
            {"thinking": result["thinking_mean"], "answer": result["answer_mean"]},
            "Mean length over training",
            f"mean length, {unit}",
        )
    )
    plots.append(
        _plot_lines(
            out / "truncation_over_steps.png",
            steps,
            {"truncated": result["truncation_rate"]},
            "Truncation rate over training",
            "share of rows",
            (0.0, 1.02),
        )
    )
    result["plots"] = plots
    return result


# --------------------------------------------------------------------------------------------------
# Report


def _fmt(x: Any) -> str:
    """A table cell: floats to 3 decimals (1 from 100 up), None as a dash, pipes escaped."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.1f}" if abs(x) >= 100 else f"{x:.3f}"
    return str(x).replace("|", "\\|")


def _span(lo: int, hi: int) -> str:
    return str(lo) if lo == hi else f"{lo}–{hi}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in rows]
    return lines + [""]


def report_markdown(stats: dict) -> str:
    """The human-readable report: one section per input, then the over-training section."""
    md = [
        "# distill stats",
        "",
        f"Lengths are in {stats['token_unit']}; completion_tokens is the rows' own count of generated "
        "tokens, from the server.",
        "",
    ]
    for e in stats["inputs"]:
        step = f", step {e['step']}" if e["step"] is not None else ""
        md += [f"## {e['label']}", "", f"`{e['path']}`: {e['kind']}{step}, {e['rows']} rows.", ""]
        md += ["### Lengths", ""]
        md += _table(
            ["part", "count", "mean", "median", "p90", "max"],
            [[name, d["count"], d["mean"], d["median"], d["p90"], d["max"]] for name, d in e["lengths"].items()],
        )
        r = e["reflection"]
        md += ["### Reflection words", "", f"{r['total']} in {r['tokens']} tokens: {_fmt(r['per_1k'])} per 1k.", ""]
        md += _table(["word", "count", "per 1k"], [[w, v["count"], v["per_1k"]] for w, v in r["words"].items()])
        if e["accuracy"]:
            a = e["accuracy"]
            md += [
                "### Accuracy",
                "",
                f"{a['correct']}/{a['verified']} verified rows correct: {_fmt(a['overall'])}.",
                "",
            ]
            md += _table(
                ["level", "n", "correct", "accuracy"],
                [[k, v["n"], v["correct"], v["accuracy"]] for k, v in a["by_level"].items()],
            )
            md += _table(
                ["domain", "n", "correct", "accuracy"],
                [[k, v["n"], v["correct"], v["accuracy"]] for k, v in a["by_domain"].items()],
            )
        if e["pass_rates"]:
            p = e["pass_rates"]
            spp = p["samples_per_prompt"]
            md += [
                "### Pass rates",
                "",
                f"{p['prompts']} prompts, {_span(spp['min'], spp['max'])} samples each; "
                f"{p['all_correct']} always solved, {p['none_correct']} never.",
                "",
            ]
            md += _table(
                ["metric", "mean", "std. error"],
                [["pass@1", p["pass@1"], p["pass@1_stderr"]]]
                + [[f"pass@{k}", v["mean"], v["stderr"]] for k, v in p["pass@k"].items() if k != "1"],
            )
        t = e["truncation"]
        md += [
            "### Truncation",
            "",
            f"{t['truncated']}/{t['rows']} rows stopped at the token limit: {_fmt(t['rate'])}.",
            "",
        ]
        if e.get("results"):
            res = e["results"]
            md += ["### results.json", ""]
            md += _table(["key", "value"], [[k, json.dumps(v) if isinstance(v, dict) else v] for k, v in res.items()])
        if e.get("filter"):
            f = e["filter"]
            md += ["### Filter", "", f"{f['kept']} kept, {f['rejected']} rejected.", ""]
            md += _table(["reject reason", "rows"], list(f["reject_reasons"].items()))
        md += [f"![{name}]({name})" for name in e["plots"]] + [""]
    o = stats.get("over_steps")
    if o:
        md += ["## Over training steps", ""]
        levels = list(o["accuracy_by_level"])
        header = [
            "step",
            "input",
            "accuracy",
            "pass@1",
            *[f"L{k}" for k in levels],
            "reflection /1k",
            "mean thinking",
            "truncation",
        ]
        rows = [
            [
                s,
                o["labels"][i],
                o["accuracy"][i],
                o["pass@1"][i],
                *[o["accuracy_by_level"][k][i] for k in levels],
                o["reflection_per_1k"][i],
                o["thinking_mean"][i],
                o["truncation_rate"][i],
            ]
            for i, s in enumerate(o["steps"])
        ]
        md += _table(header, rows)
        if o["without_step"]:
            md += [f"Inputs without a step (not plotted): {', '.join(o['without_step'])}.", ""]
        md += [f"![{name}]({name})" for name in o["plots"]] + [""]
    return "\n".join(md)


# --------------------------------------------------------------------------------------------------
# Entry point


def run(cfg: StatsConfig, inputs: list[str]) -> dict:
    """Statistics of every input; writes OUT/stats.json, OUT/report.md, the plots and the config.

    Returns the stats.json content."""
    if not inputs:
        raise DistillError("stats: give at least one input (a trace file, a filter folder or an eval folder)")
    sources = [find_source(spec) for spec in inputs]
    for src in sources:
        _load_rows(src)
    _labels(sources)
    _steps(cfg, sources)
    counter = TokenCounter(cfg.tokenizer)
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)

    unit = "tokens" if cfg.tokenizer else "words"
    entries = []
    for src in sources:
        s = summarize(src.rows, cfg.reflection_words, counter, cfg.pass_k)
        entry: dict[str, Any] = {
            "label": src.label,
            "path": str(src.path),
            "kind": src.kind,
            "step": src.step,
            "files": [f.name for f in src.files],
            **s,
        }
        if src.kind == "eval":
            entry["results"] = _results_summary(src.results) if src.results is not None else None
        if src.kind == "filter":
            kept = [r for r in src.rows if r["_file"] == "kept.jsonl"]
            rejected = [r for r in src.rows if r["_file"] == "rejected.jsonl"]
            reasons = Counter(str(r.get("reject_reason") or "unknown") for r in rejected)
            entry["filter"] = {
                "kept": len(kept),
                "rejected": len(rejected),
                "reject_reasons": dict(reasons.most_common()),
            }
        entry["plots"] = _input_plots(out, src.label, s, unit)
        del entry["_values"]
        entries.append(entry)

    stats: dict[str, Any] = {
        "token_unit": counter.unit,
        "reflection_words": [w.lower() for w in cfg.reflection_words],
        "inputs": entries,
        "over_steps": over_steps(entries, out, unit),
    }
    stats["plots"] = [p for e in entries for p in e["plots"]] + (stats["over_steps"] or {}).get("plots", [])
    write_json(out / "stats.json", stats)
    (out / "report.md").write_text(report_markdown(stats), encoding="utf-8")
    config_mod.save(cfg, out, extra={"input": list(inputs)})
    print(
        f"[distill] stats of {len(entries)} input(s): {out / 'stats.json'}, {out / 'report.md'}, "
        f"{len(stats['plots'])} plots",
        flush=True,
    )
    return stats
