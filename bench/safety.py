"""Safety keyword screen throughput: the regex screen it replaced against distill.curation.safety.screen
(Aho-Corasick, then the boundary rule at each candidate), same rows, same run, one process.

    .venv/bin/python bench/safety.py               # 500 synthetic R1-length rows (~20 KB of reasoning each)
    .venv/bin/python bench/safety.py --rows 2000 --seed 1

Each row is what the filter screens: the problem and the completion, joined by a newline. Most rows are
clean reasoning full of near misses (itself, make sure, trace, execute, skill); one in 25 holds a keyword
in some spelling, and one in 4 has non-ASCII text (math symbols, accents, CJK). The regex screen is the
reference kept in tests/curation/test_safety_scale.py. Both screens must give the same hits on every row;
the script prints rows/s of each and the ratio, and the time the new screen takes to build its automaton
(once per process).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from distill.curation.safety import load_keywords, screen  # noqa: E402
from tests.curation.test_safety_scale import old_screen  # noqa: E402

SENTENCES = [
    "Okay, so I need to figure out how many ways there are to arrange the letters.",
    "Let me think about this step by step, and make sure I don't miss any case.",
    "Wait, that doesn't seem right. Let me re-check the computation of the discriminant itself.",
    "The trace of the matrix is the sum of its eigenvalues, so tr(A) = 3 + 5 = 8.",
    "Hmm, maybe I should execute the loop by hand: i = 0, total = 1; i = 1, total = 3.",
    "So the function f(x) = x^2 - 4x + 3 factors as (x - 1)(x - 3), with roots 1 and 3.",
    "Alternatively, I can use the pipeline of substitutions from before: let u = x + 1.",
    "That requires some skill with modular arithmetic: 7^4 = 2401, and 2401 mod 5 = 1.",
    "But wait, the problem says the card is drawn without replacement, so the probability changes.",
    "To make the argument rigorous, suppose for contradiction that sqrt(2) = p/q in lowest terms.",
    "Then p^2 = 2q^2, so p is even; write p = 2k, which gives q^2 = 2k^2, so q is even too.",
    "I think I made a mistake earlier: the cut through the cube is a hexagon, not a square.",
    "Let me verify with a small case, n = 3: the formula gives 3 * 4 / 2 = 6, which matches.",
    "The reverse of the string 'abc' is 'cba', and the shell sort uses gaps 4, 2, 1 here.",
    "Therefore, the final answer is \\boxed{42}.",
]
UNICODE = [
    "\u2211_{k=1}^{n} k = n(n+1)/2",
    "x \u2264 y \u2192 f(x)",
    "caf\u00e9 na\u00efve",
    "\u4e2d\u6587\u89e3\u91ca",
]
KEYWORD_SPELLINGS = ["a pipe bomb", "Sarin", "nerve  agents", "self harm", "a KEYLOGGER", "master race"]


def make_rows(n: int, seed: int, size: int = 20_000) -> list[str]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        parts = ["Problem: how many positive integers n < 1000 satisfy the condition?\n<think>"]
        length = 0
        while length < size:
            s = rng.choice(SENTENCES)
            if i % 4 == 1 and rng.random() < 0.05:
                s += " " + rng.choice(UNICODE)
            parts.append(s)
            length += len(s) + 1
        if i % 25 == 7:
            parts.insert(rng.randrange(1, len(parts)), rng.choice(KEYWORD_SPELLINGS))
        rows.append(" ".join(parts) + "\n</think>\nThe answer is \\boxed{42}.")
    return rows


def rate(fn, rows: list[str]) -> tuple[float, list]:
    t = time.perf_counter()
    out = [fn(r) for r in rows]
    return len(rows) / (time.perf_counter() - t), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    keywords = load_keywords()
    rows = make_rows(args.rows, args.seed)
    mb = sum(len(r) for r in rows) / 1e6
    print(f"{len(rows)} rows, {mb:.1f} M characters, {sum(len(r) for r in rows) / len(rows) / 1e3:.1f} K per row")
    t = time.perf_counter()
    screen("warm-up", keywords)  # builds the automaton: once per process (and per worker process)
    print(f"new screen: built in {(time.perf_counter() - t) * 1e3:.0f} ms")
    old_screen("warm-up", keywords)
    old_rate, old_hits = rate(lambda r: old_screen(r, keywords), rows)
    new_rate, new_hits = rate(lambda r: screen(r, keywords), rows)
    if new_hits != old_hits:
        bad = next(i for i, (a, b) in enumerate(zip(old_hits, new_hits, strict=True)) if a != b)
        sys.exit(f"the screens disagree on row {bad}: regex {old_hits[bad]}, new {new_hits[bad]}")
    print(f"flagged rows: {sum(map(bool, new_hits))} (the same in both)")
    print(f"regex screen: {old_rate:8.1f} rows/s ({1e3 / old_rate:.2f} ms/row)")
    print(f"new screen:   {new_rate:8.1f} rows/s ({1e3 / new_rate:.3f} ms/row)")
    print(f"ratio: {new_rate / old_rate:.0f}x")


if __name__ == "__main__":
    main()
