"""Check a teacher's final answer against the gold answer with math-verify.

`verify_math` checks one sample in the current process. `verify_many` checks many in a small pool of
worker processes and bounds every sample by wall-clock time: math-verify/sympy can spin for minutes
(or eat memory) on answers like ``\\boxed{9^{9^{9^{9}}}}``, and a signal-based timeout cannot stop a
long C-level bignum operation, so the parent kills the worker (SIGKILL) and starts a fresh one.

The answer is read from the final part of the trace (after the last ``</think>``; the whole text when
there is none) exactly as math-verify reads a model's output: ``math_verify.parse`` with its LaTeX and
plain-expression extraction, so several ``\\boxed{}`` joined by "and" or commas are one answer (a set:
``\\boxed{(2,2)}`` and ``\\boxed{(6,2)}`` for the gold ``(2,2),(6,2)``; bare boxes in one run of text are
one set even when the words between them say otherwise, as in math-verify), a box in a later paragraph or
``$...$`` wins over earlier ones, and an answer written without a box (``$$f(y) = y$$``, "the answer is 14") is still found. With
``require_boxed`` an answer must stand in a box: `distill filter` sets it by default (R1-style traces
box their answer, and a student trained on unboxed answers stops boxing; a last number that happens to
match is no proof of a correct trace), `distill eval` does not (benchmarks are scored as math-verify
and lighteval score them, so published numbers compare). The gold is parsed first and is always the
first argument of ``math_verify.verify``, which is asymmetric (a gold ``1 < x < 2`` accepts ``(1, 2)``,
a gold ``(1, 2)`` does not accept ``1 < x < 2``).

Reasons a sample is not correct: "truncated" (finish_reason "length", or a ``<think>`` never closed),
"no_answer" (math-verify finds no answer in the final part, or no box there under require_boxed),
"unparsable_gold", "unparsable_answer",
"wrong_answer", "timeout" (only from `verify_many`), "error: <Type>: <message>" ("error: worker
died" when a worker process dies mid-sample, e.g. an OOM kill).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
import resource
import signal
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from multiprocessing.connection import wait
from typing import Any

# Workers are started with "forkserver": the server process is started once per program (like
# "spawn", from a clean single-threaded interpreter, so it is safe in programs that run threads or
# asyncio) and preloads math_verify/sympy, so each worker, and each replacement after a timeout, is a
# cheap fork with everything imported. Measured (2 CPUs): first verify_many ~0.45 s (server start and
# preload), later pools ready in ~0.06 s; with "spawn" every pool (and replacement) needs ~0.8 s.
# "fork" would be as cheap but can deadlock a child of a multi-threaded parent (asyncio, tokenizers).
START_METHOD = "forkserver"
# How long a new worker may take to import math_verify and report ready (a loaded machine starting
# dozens of workers at once can be slow); past this, verify_many raises instead of waiting forever.
STARTUP_TIMEOUT = 120.0
TEST_HOOKS_ENV = "DISTILL_VERIFY_TEST_HOOKS"
_TEST_CRASH_GOLD = "__distill_test_crash__"  # with DISTILL_VERIFY_TEST_HOOKS=1: the worker exits mid-item


@dataclass(frozen=True)
class Verdict:
    correct: bool
    reason: str  # "correct", or why not (see the module docstring)
    extracted: str  # the answer: the box's content for one box, else the text math-verify extracted; "" if none
    seconds: float  # time spent verifying this sample


# --------------------------------------------------------------------------------------------------
# Answer extraction


def final_part(completion: str) -> str | None:
    """Text after the last </think>; the whole text when there is no <think> at all; None when a <think>
    is opened but never closed (a truncated trace)."""
    close = completion.rfind("</think>")
    rest = completion if close < 0 else completion[close + len("</think>") :]
    return None if "<think>" in rest else rest  # never closed, or opened again after the last close


# Tokens that matter for brace matching; plain text between them is skipped by the regex engine.
# A backslash escapes the next character (\{ \} \\ are not grouping braces).
_BOX_TOKENS = re.compile(r"\\(?:boxed|fbox)\s*\{|\\.|[{}]", re.DOTALL)


def boxed_spans(text: str) -> list[tuple[int, int]]:
    """(start, end) of the content of every closed \\boxed{...} (or \\fbox{...}) in text, in order of
    their opening, nested braces matched. Escaped braces (\\{, \\}) do not count; an unclosed box is
    skipped. One linear pass."""
    stack: list[int] = []  # for each open brace: start of the box content, or -1 for a plain brace
    found = []
    for m in _BOX_TOKENS.finditer(text):
        tok = m.group()
        if tok == "{":
            stack.append(-1)
        elif tok == "}":
            if stack and (start := stack.pop()) >= 0:
                found.append((start, m.start()))
        elif tok[-1] == "{" and len(tok) > 2:  # \boxed{ or \fbox{ (not the escaped brace \{)
            stack.append(m.end())
    return sorted(found)


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in text (the one opened last); None if none."""
    spans = boxed_spans(text)
    return text[spans[-1][0] : spans[-1][1]] if spans else None


# --------------------------------------------------------------------------------------------------
# Small normalisations for cases math-verify 0.9 gets wrong (each is covered by a test)

# "1\,000" (LaTeX thin space as thousands separator): math-verify reads 1*0, and "1\,234" as 235.
_THOUSANDS_SPACE = re.compile(r"(?<=\d)(?:\\,|\\ |~|\\thinspace\s*)(?=\d{3}(?!\d))")
# "\text{18 dollars}": math-verify keeps a symbol "18dollars"; "18\text{ dollars}" it reads as 18.
# Only plain unit words: "\text{5 or more}" / "\text{3 and 4}" stay as they are.
_TEXT_NUMBER_UNIT = re.compile(
    r"\\(?:text|textrm|mbox|mathrm)\{\s*(-?\d[\d,]*(?:\.\d+)?)\s+(?![^}]*\b(?:and|or)\b)([A-Za-z][A-Za-z .\-/]*)\}"
)
# "3." (a sentence's full stop inside the box): math-verify cannot parse it.
_TRAILING_PERIOD = re.compile(r"(?<![.\\])\.\s*$")


def _normalize(s: str) -> str:
    s = _THOUSANDS_SPACE.sub("", s.strip())
    s = _TEXT_NUMBER_UNIT.sub(r"\1\\text{ \2}", s)
    return _TRAILING_PERIOD.sub("", s).strip()


def _normalize_boxes(text: str) -> str:
    """The text with every box's content normalised (see _normalize), the rest as it is."""
    out, last = [], 0
    for start, end in boxed_spans(text):
        if start < last:  # a box inside a box: normalised with its outer box
            continue
        out += [text[last:start], _normalize(text[start:end])]
        last = end
    out.append(text[last:])
    return _THOUSANDS_SPACE.sub("", "".join(out))


# --------------------------------------------------------------------------------------------------
# One sample, in this process


class _DropTimeoutDisabled(logging.Filter):
    """math-verify warns once per process that its timeout is off; ours is the process kill."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Timeout is disabled")


@lru_cache(maxsize=1)
def _mv() -> tuple[Any, list[Any]]:
    """Import math_verify once; returns (module, extraction config)."""
    import math_verify  # heavy (sympy, antlr: ~1 s): imported in the verification workers, not by every command

    for name in ("math_verify.parser", "math_verify.grader"):
        logging.getLogger(name).addFilter(_DropTimeoutDisabled())
    # math-verify's own default extraction (LaTeX, then plain expressions), for gold and answer alike.
    return math_verify, [math_verify.LatexExtractionConfig(), math_verify.ExprExtractionConfig()]


def _parse(text: str) -> list[Any]:
    mv, config = _mv()
    # parsing_timeout=None: math-verify's timeout is signal.alarm, which fails outside the main thread
    # and cannot interrupt C-level work; the hard bound is verify_many's process kill.
    return mv.parse(text, extraction_config=config, parsing_timeout=None)


def _parse_boxed(content: str) -> list[Any]:
    return _parse("\\boxed{" + _normalize(content) + "}")


# A gold already written as LaTeX: a $...$, \\(...\\) or \\[...\\] pair, or a box.
_GOLD_DELIMITED = re.compile(r"(?<!\\)\$.*?(?<!\\)\$|\\\(.*?\\\)|\\\[.*?\\\]|\\(?:boxed|fbox)\s*\{", re.DOTALL)


@lru_cache(maxsize=4096)  # many samples share one gold
def _parse_gold(gold: str) -> tuple[Any, ...]:
    """A gold with LaTeX delimiters or a box is parsed as it is, as math-verify parses any text ("$9$";
    several boxes are one set; a solution's last box wins), box contents normalised; a bare answer
    ("\\frac{1}{2}", "(2,2),(6,2)", "72") is parsed as the content of a box."""
    if not gold.strip():
        return ()
    if _GOLD_DELIMITED.search(gold):
        parsed = _parse(_normalize_boxes(gold))
        if parsed or not boxed_spans(gold):
            return tuple(parsed)
        content = last_boxed(gold) or ""  # a box math-verify's pattern misses: read its content
        return tuple(_parse_boxed(content)) if content.strip() else ()
    return tuple(_parse_boxed(gold))


def verify_math(gold: str, completion: str, finish_reason: str | None = None, require_boxed: bool = False) -> Verdict:
    """Verify one sample in the current process (no timeout protection; used inside workers)."""
    t0 = time.perf_counter()
    extracted = ""

    def verdict(correct: bool, reason: str) -> Verdict:
        return Verdict(correct, reason, extracted, time.perf_counter() - t0)

    try:
        if finish_reason == "length":
            return verdict(False, "truncated")
        final = final_part(completion or "")
        if final is None:
            return verdict(False, "truncated")
        boxes = [final[a:b] for a, b in boxed_spans(final)]
        if require_boxed and not any(b.strip() for b in boxes):
            return verdict(False, "no_answer")
        answer_parsed = _parse(_normalize_boxes(final))
        if not answer_parsed:
            if boxes and any(b.strip() for b in boxes):  # a box math-verify cannot read
                extracted = boxes[-1]
                return verdict(False, "unparsable_answer")
            return verdict(False, "no_answer")
        # What the model wrote: the box's content when there is one box, else math-verify's extracted text.
        found = [b for b in boxes if b.strip()]
        extracted = (
            found[0] if len(found) == 1 else next((x for x in reversed(answer_parsed) if isinstance(x, str)), "")
        )
        gold_parsed = _parse_gold(gold if isinstance(gold, str) else str(gold))
        if not gold_parsed:
            return verdict(False, "unparsable_gold")
        mv, _ = _mv()
        if mv.verify(list(gold_parsed), answer_parsed, timeout_seconds=None):  # gold FIRST
            return verdict(True, "correct")
        # parse() falls back to the raw string when LaTeX parsing fails; such a string still counts
        # when it equals the gold's string (above), but a mismatch is a parse failure, not a wrong answer.
        if all(isinstance(x, str) for x in gold_parsed):
            return verdict(False, "unparsable_gold")
        if all(isinstance(x, str) for x in answer_parsed):
            return verdict(False, "unparsable_answer")
        return verdict(False, "wrong_answer")
    except Exception as e:  # noqa: BLE001 - any failure is a verdict, never a crash of the run
        return verdict(False, f"error: {type(e).__name__}: {str(e)[:100]}")


# --------------------------------------------------------------------------------------------------
# Multiple choice (GPQA-style): a letter, no math parsing needed

# "C", "(C)", "C.", "C) 42", "\text{(C)}", "\textbf{C}", "Option C": the letter must stand alone.
_CHOICE_WRAPPERS = re.compile(r"\\(?:text|textbf|mathrm|mathbf)\s*\{([^{}]*)\}")
_CHOICE = re.compile(r"^\s*(?:option|choice|answer)?\s*[:\s]*\(?([A-J])\)?(?:\s*$|[.):\s])", re.IGNORECASE)
_CHOICE_LINE = re.compile(r"(?:answer|ANSWER)\s*(?:is|:)\s*\(?\s*([A-J])\b\)?")


def choice_letter(text: str) -> str | None:
    """The option letter a short answer names ("C", "(C)", "\\textbf{(C)} 42", "Option C"), or None."""
    text = _CHOICE_WRAPPERS.sub(r"\1", text).replace("$", "").strip()
    m = _CHOICE.match(text)
    return m.group(1).upper() if m else None


def verify_choice(gold: str, completion: str, finish_reason: str | None = None) -> Verdict:
    """Multiple choice: the last \\boxed{} of the final part (else its last "answer is X" / "Answer: X")
    must name the gold letter. Cheap and bounded: no worker process needed."""
    t0 = time.perf_counter()
    if finish_reason == "length":
        return Verdict(False, "truncated", "", time.perf_counter() - t0)
    final = final_part(completion or "")
    if final is None:
        return Verdict(False, "truncated", "", time.perf_counter() - t0)
    want = choice_letter(str(gold))
    if want is None:
        return Verdict(False, "unparsable_gold", "", time.perf_counter() - t0)
    box = last_boxed(final)
    if box is not None:
        extracted = box
    else:
        lines = _CHOICE_LINE.findall(final)
        extracted = lines[-1] if lines else ""
    if not extracted.strip():
        return Verdict(False, "no_answer", "", time.perf_counter() - t0)
    got = choice_letter(extracted)
    if got is None:
        return Verdict(False, "unparsable_answer", extracted, time.perf_counter() - t0)
    return Verdict(got == want, "correct" if got == want else "wrong_answer", extracted, time.perf_counter() - t0)


# --------------------------------------------------------------------------------------------------
# Many samples, in worker processes with a hard per-sample bound


def _limit_cpu(seconds: float) -> None:
    """Let this process use at most `seconds` more CPU time, after which the kernel kills it (SIGXCPU).

    The parent's wall-clock kill normally comes first (CPU time never exceeds wall time here), so this
    only matters when the parent itself was killed (SIGKILL, OOM): then nobody kills a worker spinning
    in sympy, it would hold a CPU forever, and the forkserver with it (a worker keeps it alive)."""
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_CPU)
        soft = int(time.process_time() + seconds) + 1
        if hard != resource.RLIM_INFINITY:
            soft = min(soft, hard)
        resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))
    except (ImportError, ValueError, OSError):  # not on this platform: best effort
        pass


def _worker_main(conn: Any, test_hooks: bool, cpu_budget: float) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to the parent, which kills us
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1]))
    except (ImportError, ValueError, OSError):
        pass
    _mv()  # import math_verify/sympy once, before the first item's clock starts
    verify_math("1", "\\boxed{1}")  # warm up the LaTeX parser's lazily built tables (~0.1 s, once)
    conn.send(None)  # ready
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        idx, gold, completion, finish_reason, require_boxed = msg
        if test_hooks and gold == _TEST_CRASH_GOLD:
            os._exit(1)
        _limit_cpu(cpu_budget)
        v = verify_math(gold, completion, finish_reason, require_boxed)
        conn.send((idx, v.correct, v.reason, v.extracted, v.seconds))


# A worker holds at most this many items: the one it is verifying and the next, already in its pipe,
# so it never idles waiting for the parent's round trip. The next one's clock starts when the worker
# reports the previous result. Only small messages are queued behind a busy worker, so a send never
# blocks on a full socket buffer while that worker spins.
_DEPTH = 2
_QUEUE_MAX_CHARS = 4096


class _Worker:
    def __init__(self, ctx: Any, test_hooks: bool, cpu_budget: float) -> None:
        parent_conn, child_conn = ctx.Pipe(duplex=True)
        self.proc = ctx.Process(target=_worker_main, args=(child_conn, test_hooks, cpu_budget), daemon=True)
        self.proc.start()
        child_conn.close()  # so that the parent sees EOF when the worker dies
        self.conn = parent_conn
        self.ready = False
        self.inflight: deque[tuple[int, bool]] = deque()  # (index, small message); the head is running
        self.started = time.monotonic()  # when the head item (or the start-up) began

    def deadline(self, timeout: float) -> float:
        if not self.ready:
            return self.started + STARTUP_TIMEOUT
        return self.started + timeout if self.inflight else float("inf")

    def can_take(self, small: bool) -> bool:
        if not self.ready or len(self.inflight) >= _DEPTH:
            return False
        return not self.inflight or (small and all(s for _, s in self.inflight))

    def send(self, idx: int, msg: tuple[Any, ...], small: bool) -> None:
        self.conn.send(msg)
        if not self.inflight:
            self.started = time.monotonic()
        self.inflight.append((idx, small))

    def stop(self) -> None:
        try:
            self.conn.close()
        except OSError:
            pass
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(5)


def _unfinished(item: tuple[str, str, str | None], reason: str, seconds: float) -> Verdict:
    """Verdict for an item whose worker was killed or died: extracted is recomputed here (linear)."""
    try:
        final = final_part(item[1] or "")
        extracted = (last_boxed(final) if final is not None else None) or ""
    except Exception:  # noqa: BLE001
        extracted = ""
    return Verdict(False, reason, extracted, seconds)


def _context() -> Any:
    ctx = multiprocessing.get_context(START_METHOD)
    if START_METHOD == "forkserver":
        # Takes effect only if the forkserver is not running yet; otherwise workers import on start.
        ctx.set_forkserver_preload(["math_verify", "distill.verification.answers"])
    return ctx


def verify_many(
    items: Sequence[tuple[str, str, str | None]],
    timeout: float = 5.0,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    require_boxed: bool = False,
) -> list[Verdict]:
    """Verify (gold, completion, finish_reason) items in a pool of worker processes with a hard
    per-sample wall-clock bound; results in input order. `require_boxed`: see the module docstring."""
    items = list(items)
    n = len(items)
    if n == 0:
        return []
    if not timeout > 0:
        raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
    results: list[Verdict | None] = [None] * n
    finished = 0

    def finish(idx: int, v: Verdict) -> None:
        nonlocal finished
        if results[idx] is None:
            results[idx] = v
            finished += 1

    # Cheap checks here (two rfind calls), so truncated traces never travel and workers get only the
    # text after </think>, which verify_math treats exactly like the whole completion.
    messages: dict[int, tuple[tuple[Any, ...], bool]] = {}
    for idx, (gold, completion, finish_reason) in enumerate(items):
        final = final_part(completion) if isinstance(completion, str) else completion
        if finish_reason == "length" or (isinstance(completion, str) and final is None):
            finish(idx, Verdict(False, "truncated", "", 0.0))
            continue
        small = isinstance(gold, str) and isinstance(final, str) and len(gold) + len(final) <= _QUEUE_MAX_CHARS
        messages[idx] = ((idx, gold, final, finish_reason, require_boxed), small)
    if progress is not None and finished:
        progress(finished)
    if not messages:
        return results  # type: ignore[return-value]

    size = max(1, min(workers or os.cpu_count() or 1, len(messages)))
    ctx = _context()
    test_hooks = os.environ.get(TEST_HOOKS_ENV) == "1"
    cpu_budget = timeout + 10.0  # see _limit_cpu
    pending = deque(messages)
    pool: list[_Worker] = []

    def drain(w: _Worker) -> bool:
        """Read every message waiting from w; False if its pipe is broken (the worker died)."""
        try:
            while w.conn.poll():
                msg = w.conn.recv()
                w.started = time.monotonic()  # start-up done, or the next queued item begins
                if msg is None:
                    w.ready = True
                    continue
                idx, correct, reason, extracted, seconds = msg
                if w.inflight and w.inflight[0][0] == idx:
                    w.inflight.popleft()
                finish(idx, Verdict(correct, reason, extracted, seconds))
        except (EOFError, OSError):
            return False
        return True

    def replace(w: _Worker, reason: str) -> None:
        """Stop w; its running item gets the verdict `reason`, the queued one goes back to pending;
        start a fresh worker in its place."""
        if not w.ready:
            w.proc.join(0.5)
            code = w.proc.exitcode
            w.stop()
            pool.remove(w)
            raise RuntimeError(
                "a verify worker did not start ("
                + (f"exit code {code}" if code is not None else f"no answer in {STARTUP_TIMEOUT:.0f}s")
                + "); see its error output above"
            )
        if w.inflight:
            idx, _ = w.inflight.popleft()
            finish(idx, _unfinished(items[idx], reason, time.monotonic() - w.started))
            pending.extendleft(i for i, _ in reversed(w.inflight))
        w.stop()
        pool[pool.index(w)] = _Worker(ctx, test_hooks, cpu_budget)

    try:
        pool.extend(_Worker(ctx, test_hooks, cpu_budget) for _ in range(size))
        while finished < n:
            before = finished
            # First one item to each idle worker; then a second (queued) one only while there is
            # enough work left for the workers still starting up.
            for depth in range(1, _DEPTH + 1):
                if depth > 1 and len(pending) <= sum(not w.ready for w in pool):
                    break
                for w in list(pool):
                    if pending and len(w.inflight) < depth and w.can_take(messages[pending[0]][1]):
                        idx = pending.popleft()
                        try:
                            w.send(idx, *messages[idx])
                        except OSError:  # the worker is gone: not this item's fault, send it again
                            pending.appendleft(idx)
                            replace(w, "error: worker died")
            by_obj: dict[Any, _Worker] = {}
            for w in pool:
                by_obj[w.conn] = w
                by_obj[w.proc.sentinel] = w
            wait_s = min(w.deadline(timeout) for w in pool) - time.monotonic()
            dead: list[_Worker] = []
            for obj in wait(list(by_obj), timeout=min(max(wait_s, 0.0), 60.0)):
                w = by_obj[obj]
                # A process that exited may still have sent results before it died: keep them.
                if (not drain(w) or obj is w.proc.sentinel) and w not in dead:
                    dead.append(w)
            for w in dead:
                replace(w, "error: worker died")
            now = time.monotonic()
            for w in list(pool):
                if now < w.deadline(timeout):
                    continue
                if w.conn.poll():  # answered just in time
                    if not drain(w):
                        replace(w, "error: worker died")
                        continue
                    if now < w.deadline(timeout):
                        continue
                replace(w, "timeout")
            if progress is not None and finished > before:
                progress(finished - before)
    finally:
        for w in pool:
            w.stop()
    assert all(v is not None for v in results)
    return results  # type: ignore[return-value]
