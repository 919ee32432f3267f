"""Selection among verified rows: `select_per_prompt` keeps at most k correct samples per prompt
(the shortest, or a seeded random draw); `pass_rate_filter` keeps prompts whose pass rate lies in a
range (for RL data: drop prompts that are always or never solved)."""

from __future__ import annotations

import hashlib
import math
from collections import defaultdict

from distill.common.errors import DistillError

SELECTION_STRATEGIES = ("shortest", "random")


def _tokens_or_inf(row: dict) -> float:
    tokens = row.get("completion_tokens")
    return tokens if isinstance(tokens, (int, float)) and not isinstance(tokens, bool) else math.inf


def _sample_index(row: dict) -> int:
    sample = row.get("sample")
    return sample if isinstance(sample, int) else 0


def _random_key(seed: int, row: dict) -> bytes:
    """A seeded pseudo-random key from the row's identity: stable across runs, processes and input order."""
    ident = f"{seed}\x00{row.get('id')}\x00{row.get('sample')}\x00{row.get('completion', '')}"
    return hashlib.blake2b(ident.encode("utf-8", "surrogatepass"), digest_size=16).digest()


def _rejected(row: dict, reason: str) -> dict:
    return {**row, "reject_reason": reason}


def select_per_prompt(
    rows: list[dict], k: int, strategy: str = "shortest", seed: int = 0
) -> tuple[list[dict], list[dict]]:
    """Keep at most k correct rows per prompt id; returns (kept, dropped), each in input order.

    "shortest" prefers fewer completion_tokens, then the lower sample index (short correct traces are
    cheaper to train on and ramble less); "random" draws with a key hashed from seed, id and sample, so
    the choice is reproducible and does not depend on the order of rows. Dropped rows are copies with
    reject_reason "selection: over_k"; rows that are not correct are dropped too, keeping their
    reject_reason (or getting "selection: not_correct")."""
    if not isinstance(k, int) or k < 1:
        raise DistillError(f"--max-per-prompt must be a whole number >= 1 (got {k!r})")
    if strategy not in SELECTION_STRATEGIES:
        raise DistillError(f"--selection must be one of {', '.join(SELECTION_STRATEGIES)} (got {strategy!r})")
    by_prompt: dict[str, list[int]] = defaultdict(list)
    for i, row in enumerate(rows):
        if row.get("correct") is True:
            by_prompt[str(row.get("id"))].append(i)
    chosen: set[int] = set()
    for indices in by_prompt.values():
        if strategy == "shortest":
            indices.sort(key=lambda i: (_tokens_or_inf(rows[i]), _sample_index(rows[i]), _random_key(seed, rows[i])))
        else:
            indices.sort(key=lambda i: _random_key(seed, rows[i]))
        chosen.update(indices[:k])
    kept, dropped = [], []
    for i, row in enumerate(rows):
        if i in chosen:
            kept.append(row)
        elif row.get("correct") is True:
            dropped.append(_rejected(row, "selection: over_k"))
        else:
            dropped.append(_rejected(row, row.get("reject_reason") or "selection: not_correct"))
    return kept, dropped


def pass_rates(rows: list[dict]) -> dict[str, float]:
    """Per prompt id: correct samples / all samples of that prompt."""
    tally: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        t = tally[str(row.get("id"))]
        t[0] += row.get("correct") is True
        t[1] += 1
    return {pid: ok / n for pid, (ok, n) in tally.items()}


def pass_rate_filter(
    rows: list[dict], min_rate: float = 0.0, max_rate: float = 1.0
) -> tuple[list[dict], list[dict], dict[str, float]]:
    """Keep every row (correct or not) of the prompts whose pass rate lies in [min_rate, max_rate], both
    ends included; returns (kept, dropped, rates by prompt id). Rates count all rows given, so pass the
    rows before dropping wrong answers. For RL (GRPO) data: 0 < rate < 1 keeps prompts that teach
    something. Dropped rows are copies with reject_reason "selection: pass_rate_out_of_range"."""
    for name, value in (("--min-pass-rate", min_rate), ("--max-pass-rate", max_rate)):
        if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):  # also rejects NaN
            raise DistillError(f"{name} must be between 0 and 1 (got {value!r})")
    if min_rate > max_rate:
        raise DistillError(f"--min-pass-rate ({min_rate}) is larger than --max-pass-rate ({max_rate})")
    rates = pass_rates(rows)
    kept, dropped = [], []
    for row in rows:
        if min_rate <= rates[str(row.get("id"))] <= max_rate:
            kept.append(row)
        else:
            dropped.append(_rejected(row, "selection: pass_rate_out_of_range"))
    return kept, dropped, rates
