"""SFT's training rows as memory-mapped Arrow: the kept rows checked per row, their token lengths, the length
policy, mixtures of several sources drawn with the seed (`sft_dataset`), all cached under --dataset-cache.

distill.training.sft builds its SFTTrainer on the result; the row checks, the length policy and its report are
distill.training.base's, shared with the other methods.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import numpy as np
from datasets import Dataset, Features, List, Value, concatenate_datasets
from datasets.exceptions import DatasetGenerationError
from trl.trainer.utils import global_then_local_main_first

from distill.common.errors import DistillError
from distill.common.models import distill_home
from distill.common.records import check_input_file, read_jsonl
from distill.training.base import (
    LengthReport,
    check_over_length,
    drop_system_turns,
    is_main,
    kept_file,
    sft_pair,
)
from distill.training.config import DataSource, TrainConfig, data_sources

#
# Each --data file becomes an Arrow copy of its prompt/completion pairs in the data cache (TrainConfig.
# dataset_cache), written by `datasets` from byte ranges of the file parsed in parallel and keyed by the file's
# path, size and modification time. Token lengths are a column added by a batched map, the length policy a
# filter on it, a mixture a seeded shuffle and select per source then one shuffle of their concatenation;
# TRL's SFTTrainer tokenizes the result with its own maps. Every step is a `datasets` transform with a
# deterministic fingerprint, so a second run on the same files and settings (a --resume, another --output)
# reads each step's result from the cache instead of computing it. Nothing holds the rows in Python.

MESSAGE = {"role": Value("string"), "content": Value("string")}
SFT_FEATURES = Features({"prompt": List(MESSAGE), "completion": List(MESSAGE)})
ARROW_FORMAT = 1  # part of the Arrow copy's cache key: change it when the rows or their checks change
SHARD_BYTES = 32 << 20  # a kept file is parsed by one process per this many bytes (up to the cores)
ROWS_PER_PROC = 4000  # a map over fewer rows than this per process runs in this process (starting one costs more)
QUIET_BYTES = 64 << 20  # smaller files are prepared in seconds, without `datasets`' progress bars


def cores() -> int:
    """CPU cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def data_procs(rows: int, limit: int) -> int | None:
    """Processes for a `datasets` map over `rows` rows: up to `limit`, None (this process) for small sets."""
    procs = min(limit, rows // ROWS_PER_PROC)
    return procs if procs > 1 else None


def data_cache(cfg: TrainConfig) -> Path:
    """Where the Arrow copies of --data and their transforms live (TrainConfig.dataset_cache)."""
    return Path(cfg.dataset_cache).expanduser() if cfg.dataset_cache else distill_home() / "datasets"


def line_shards(file: Path, n: int) -> list[tuple[str, int, int]]:
    """(file, start, end) byte ranges that split `file` into `n` parts at line starts."""
    size = file.stat().st_size
    cuts = [0]
    with open(file, "rb") as f:
        for k in range(1, n):
            f.seek(max(size * k // n - 1, cuts[-1]))
            f.readline()  # to the start of the next line
            cuts.append(min(f.tell(), size))
    cuts.append(size)
    return [(str(file), a, b) for a, b in zip(cuts, cuts[1:], strict=False) if b > a]


def kept_pairs(shards: list[tuple[str, int, int]], max_examples: int = 0) -> Iterator[dict]:
    """The prompt/completion pairs of byte ranges of kept files (Dataset.from_generator's generator; it runs
    in worker processes). A bad row raises; `load_kept` then names its file and row."""
    for name, start, end in shards:
        n = 0
        with open(name, "rb") as f:
            f.seek(start)
            pos = start
            while pos < end:
                raw = f.readline()
                if not raw:
                    break
                pos += len(raw)
                if not raw.strip():
                    continue
                row = json.loads(raw.decode("utf-8"))
                pair = sft_pair(row if isinstance(row, dict) else {}, f"{name}, a row")
                yield {k: [{"role": str(m["role"]), "content": m["content"]} for m in v] for k, v in pair.items()}
                n += 1
                if max_examples and n >= max_examples:
                    return


def first_bad_row(file: Path, max_examples: int = 0) -> None:
    """Read `file` as load_sft_rows does and raise its error for the first bad row (file, line or row named)."""
    for n, row in enumerate(read_jsonl(file), start=1):
        sft_pair(row, f"{file}, row {n}")
        if max_examples and n >= max_examples:
            return


def first_pair(path: str | Path) -> dict:
    """The first row of a kept file (or folder) as a checked prompt/completion pair, reading that row alone."""
    file = kept_file(path)
    with contextlib.closing(read_jsonl(file)) as rows:
        row = next(rows, None)
    if row is None:
        raise DistillError(f"{file}: no training rows (did `distill filter` keep any trace?)")
    return sft_pair(row, f"{file}, row 1")


@contextlib.contextmanager
def progress_bars(show: bool) -> Iterator[None]:
    """`datasets`' progress bars on (as they are) or off for the block."""
    hide = not show and not datasets.are_progress_bars_disabled()
    if hide:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hide:
            datasets.enable_progress_bars()


def load_kept(path: str, cache: Path, num_proc: int, max_examples: int = 0) -> Dataset:
    """A kept file (or a folder holding kept.jsonl) as a memory-mapped Arrow Dataset of prompt/completion
    pairs, every row checked as load_sft_rows checks it (same errors, naming file and row). The copy is made
    once per file version (path, size, modification time) and max_examples; later calls open it."""
    file = kept_file(path)
    check_input_file(file)
    stat = file.stat()
    key = f"{ARROW_FORMAT}|{file.resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{max_examples}"
    fingerprint = hashlib.sha256(key.encode()).hexdigest()[:16]
    parts = 1 if max_examples else max(1, min(num_proc, -(-stat.st_size // SHARD_BYTES)))
    shards = line_shards(file, parts)
    if not shards:
        raise DistillError(f"{file}: no training rows (did `distill filter` keep any trace?)")
    try:
        ds = Dataset.from_generator(
            kept_pairs,
            features=SFT_FEATURES,
            cache_dir=str(cache),
            gen_kwargs={"shards": shards, "max_examples": max_examples},
            num_proc=len(shards) if len(shards) > 1 else None,
            fingerprint=fingerprint,
        )
    except DatasetGenerationError as e:
        first_bad_row(file, max_examples)  # raises with the file and row; the worker's error lost them
        cause = e.__cause__ or e
        raise DistillError(f"{file}: cannot be read into Arrow ({type(cause).__name__}: {cause})") from None
    except OSError as e:
        raise DistillError(
            f"{file}: cannot be copied into the data cache {cache} ({e}); set --dataset-cache to a writable folder"
        ) from None
    if not len(ds):
        raise DistillError(f"{file}: no training rows (did `distill filter` keep any trace?)")
    return ds


def token_lengths(prompt: list, completion: list, tokenizer: Any) -> dict:
    """A batch's token lengths (prompt + completion with the chat template, as TRL tokenizes them; batched
    map function)."""
    convs = [p + c for p, c in zip(prompt, completion, strict=True)]
    ids = tokenizer.apply_chat_template(convs, tokenize=True, return_dict=True)["input_ids"]
    return {"length": [len(x) for x in ids]}


def within(length: list, limit: int) -> list[bool]:
    """Batched filter: the rows of at most `limit` tokens."""
    return (np.asarray(length) <= limit).tolist()


def column(ds: Dataset, name: str) -> np.ndarray:
    """One numeric column as a numpy array, read through Arrow (no Python object per row)."""
    return ds.select_columns([name]).with_format("arrow")[:][name].to_numpy()


def apportion(total: int, shares: list[float]) -> list[int]:
    """`total` rows split by `shares` in whole rows (largest remainders; ties to the earlier source)."""
    weights = np.asarray(shares, dtype=float) / sum(shares)
    exact = weights * total
    counts = np.floor(exact).astype(int)
    for i in sorted(range(len(shares)), key=lambda i: (-(exact[i] - counts[i]), i))[: total - int(counts.sum())]:
        counts[i] += 1
    return [int(c) for c in counts]


def mixture_counts(sources: list[DataSource], available: list[int], max_examples: int = 0) -> list[int]:
    """Rows to take from each source: its count, all its rows (a bare path), or by weight as many as the
    sources allow without repeating a row; then scaled down to max_examples (0: no cap)."""
    if sources[0].weight:
        weights = [s.weight / sum(x.weight for x in sources) for s in sources]
        total = min(int(a / w + 1e-9) for a, w in zip(available, weights, strict=True))
        counts = [min(a, c) for a, c in zip(available, apportion(total, weights), strict=True)]
    else:
        counts = [s.count or a for s, a in zip(sources, available, strict=True)]
    if max_examples and sum(counts) > max_examples:
        counts = apportion(max_examples, counts)
    return counts


def draw(sources: list[DataSource], parts: list[Dataset], counts: list[int], record: list[dict], seed: int) -> Dataset:
    """`counts[i]` rows of each source, drawn at random with `seed` (all of a source that gives all its rows),
    then shuffled together with `seed`; what was taken goes into `record`."""
    taken = []
    for src, ds, count, rec in zip(sources, parts, counts, record, strict=True):
        rec.update({"rows_available": len(ds), "rows_taken": count, "share": round(count / max(1, sum(counts)), 4)})
        rec.update({"weight": src.weight} if src.weight else {"count": src.count or "all"})
        whole = count == len(ds) and len(parts) > 1  # shuffled below with the others
        taken.append(ds if whole else ds.shuffle(seed=seed).select(range(count)))
    return concatenate_datasets(taken).shuffle(seed=seed) if len(taken) > 1 else taken[0]


@dataclass
class SFTData:
    """The SFT training set and what making it found."""

    dataset: Dataset  # prompt, completion, length (tokens): what SFTTrainer tokenizes
    lengths: LengthReport  # over every row read, all sources
    mixture: dict | None  # sources, weights or counts, rows taken, seed (None: one whole source)
    seconds: float


def sft_dataset(cfg: TrainConfig, tokenizer: Any, max_length: int | None, seed: int) -> SFTData:
    """--data as one shuffled, length-checked Arrow Dataset for SFTTrainer (the section's comment): each source
    read and checked, its token lengths computed, the length policy applied; a mixture then draws each source's
    rows with `seed`. The global main process goes first, so the others read what it cached."""
    start = time.monotonic()
    sources = data_sources(cfg.data)
    cache = data_cache(cfg)
    limit_procs = int(cfg.sft.get("dataset_num_proc") or cores())
    mixture = len(sources) > 1 or bool(sources[0].count or sources[0].weight)
    limit = int(max_length or 0)
    parts: list[Dataset] = []
    lengths: list[np.ndarray] = []
    record: list[dict] = []
    over_at: list[np.ndarray] = []  # indices of the rows over max_length, counted over all sources
    files: dict[Path, str] = {}
    with global_then_local_main_first():
        for src in sources:
            file = kept_file(src.path)
            if file.exists() and file.resolve() in files:
                raise DistillError(f"--data {src.spec}: {file} is already a source ({files[file.resolve()]})")
            files[file.resolve()] = src.spec
            head, sep, tail = src.spec.rpartition(":")
            if sep and src.path == src.spec and not file.exists() and Path(head).exists():
                raise DistillError(
                    f"--data {src.spec}: {tail!r} after ':' is neither a row count (an integer, e.g. {head}:600000) "
                    f"nor a weight (a number with a decimal point, e.g. {head}:0.7)"
                )
            with progress_bars(file.is_file() and file.stat().st_size >= QUIET_BYTES):
                ds = load_kept(src.path, cache, limit_procs, 0 if mixture else cfg.max_examples)
                if cfg.drop_system_prompt:
                    ds = ds.map(
                        drop_system_turns,
                        batched=True,
                        input_columns=["prompt"],
                        num_proc=data_procs(len(ds), limit_procs),
                        desc=f"System turns out of {file}",
                    )
                ds = ds.map(
                    token_lengths,
                    batched=True,
                    input_columns=["prompt", "completion"],
                    fn_kwargs={"tokenizer": tokenizer},
                    num_proc=data_procs(len(ds), limit_procs),
                    desc=f"Token lengths of {file}",
                )
            tokens = column(ds, "length")
            over_rows = np.flatnonzero(tokens > limit) if limit else np.zeros(0, dtype=np.int64)
            over = len(over_rows)
            what = f"rows of {file}" if mixture else "rows"
            check_over_length(over, len(ds), int(tokens.max()), limit, cfg.truncation, what)
            if over and cfg.truncation == "drop":
                ds = ds.filter(within, input_columns="length", batched=True, fn_kwargs={"limit": limit})
            parts.append(ds)
            over_at.append(over_rows + sum(len(t) for t in lengths))
            lengths.append(tokens)
            record.append({"data": src.spec, "file": str(file), "rows": len(tokens), "rows_over_max_length": over})
        available = [len(ds) for ds in parts]
        report = LengthReport(limit, cfg.truncation, np.concatenate(lengths), np.concatenate(over_at), sum(available))
        if not mixture:
            return SFTData(parts[0], report, None, time.monotonic() - start)
        for src, rec, n in zip(sources, record, available, strict=True):
            if src.count > n:
                dropped = f" after dropping {rec['rows_over_max_length']} longer than max_length {limit}"
                raise DistillError(
                    f"--data {src.spec}: asks for {src.count} rows and {rec['file']} has {n}"
                    f"{dropped if rec['rows_over_max_length'] and cfg.truncation == 'drop' else ''}"
                )
        mixed = draw(sources, parts, mixture_counts(sources, available, cfg.max_examples), record, seed)
    info = {"seed": seed, "rows": len(mixed), "sources": record}
    if is_main():
        shares = ", ".join(f"{r['rows_taken']} from {r['file']}" for r in record)
        print(f"[distill] data mixture (seed {seed}): {len(mixed)} rows: {shares}", flush=True)
    return SFTData(mixed, report, info, time.monotonic() - start)
