"""Check a model's Python solution against a problem's test cases, running it in `distill.verification.sandbox`.

The solution is the LAST fenced code block in the final part of the completion (after the last
``</think>``): the last block tagged ``python`` (or ``py``, ``python3``, ``py3``), or, when no block is
tagged so, the last untagged block; blocks tagged with another language (``text``, ``bash``...) are
never taken. A ``<think>`` that is never closed means a truncated trace: no code is taken from it.

Two test formats, as a dict, a list or a JSON string of either (an APPS row's ``input_output`` field
works as is):

* stdin/stdout (APPS, LiveCodeBench "stdin"): ``{"inputs": [...], "outputs": [...]}`` or
  ``[{"input": ..., "output": ...}, ...]``; an input or output given as a list of lines is joined with
  newlines. Each case runs the program in its own sandbox with the input on stdin. Outputs match when
  they are equal after trailing whitespace is removed from every line and trailing empty lines are
  dropped, or else when their whitespace-separated tokens match one by one, where tokens that are
  numbers and not both integers may differ by 1e-6 (absolute, or relative to the expected value).
  A program must also exit with status 0.
* function calls (APPS call-based, LeetCode-style LiveCodeBench): ``{"fn_name": "f", "inputs":
  [[args...], ...], "outputs": [result, ...]}`` (``func_name`` is accepted too), or ``"cases"``:
  a list of ``{"input", "output"}``. An input given as a string is LiveCodeBench's format, one JSON
  value per line per argument; its output is then JSON as well. The function is a method of a
  top-level class ``Solution`` (a fresh instance per case) if there is one with that method, else a
  top-level function. All cases of a sample run in ONE sandbox process: a harness executes the
  solution once (after LiveCodeBench-style imports: ``from typing import *``, collections, heapq,
  bisect, itertools, functools, math, ...) and calls the function for each case in turn. Only the
  inputs go into the sandbox; the harness prints each returned value as JSON and the comparison is
  done here, so a solution cannot report success for itself. Returned values match when equal with
  lists and tuples alike, floats (and int/float pairs) within 1e-6, bools only equal to bools;
  APPS-style expected outputs wrapped in a one-element list also match the bare value.

Limits (keyword arguments of `verify_code`, passed on to `run_sandboxed`): ``wall_seconds`` and
``cpu_seconds`` hold for every case; ``total_seconds`` (default 60) bounds a whole sample. In the
stdin/stdout format every case is its own process, so both per-case limits are enforced by the
kernel and the parent. In the function-call format the per-case limits are interval timers inside
the harness process (SIGALRM/SIGPROF, raised as an exception the solution's ``except Exception``
does not catch), and the process as a whole gets (cases + 1) times the per-case limits, capped by
``total_seconds``: a case stuck in one long C-level call (a huge ``pow``, a catastrophic regex) or
code that tampers with the timers is only stopped by that process-wide bound.

Reasons: "correct"; "truncated" (finish_reason "length" or an unclosed ``<think>``); "no_code";
"bad_tests" (malformed or empty tests); "wrong_answer: case K/N", "runtime_error: case K/N",
"timeout: case K/N", "memory: case K/N" (the first failing case, 1-based; the run stops there);
"timeout: total" (total_seconds ran out); "runtime_error: no function F"; "error: sandbox: ..." (the
sandbox itself failed). `verify_code` is thread-safe: run samples in parallel from a thread pool.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from distill.verification.answers import Verdict, final_part
from distill.verification.sandbox import run_sandboxed

LANGUAGE_TAGS = {"python": {"python", "py", "python3", "py3"}}
TOLERANCE = 1e-6
DEFAULT_TOTAL_SECONDS = 60.0
_SANDBOX_LIMITS = {
    "cpu_seconds",
    "wall_seconds",
    "memory_mb",
    "max_processes",
    "max_file_mb",
    "max_open_files",
    "python",
    "max_output_bytes",
    "isolation",
}
_DEFAULT_CPU, _DEFAULT_WALL, _DEFAULT_OUTPUT = 5.0, 10.0, 1_000_000


# --------------------------------------------------------------------------------------------------
# Code extraction

_OPEN_FENCE = re.compile(r"^([ \t]*)(`{3,}|~{3,})[ \t]*([^\s`]*)[^`]*$")


def extract_code(completion: str, language: str = "python") -> str | None:
    """The solution's code: the last fenced block tagged `language` in the final part (after the last
    </think>), else the last untagged block; None if there is none or the <think> is unclosed."""
    final = final_part(completion or "")
    if final is None:
        return None
    wanted = LANGUAGE_TAGS.get(language.lower(), {language.lower()})
    tagged: str | None = None
    untagged: str | None = None
    fence = ""
    indent = 0
    info = ""
    body: list[str] = []
    for line in final.split("\n"):
        if not fence:
            m = _OPEN_FENCE.match(line)
            if m:
                indent, fence, info, body = len(m.group(1)), m.group(2), m.group(3).lower(), []
            continue
        stripped = line.strip()
        if stripped and stripped[0] == fence[0] and set(stripped) == {fence[0]} and len(stripped) >= len(fence):
            code = "\n".join(body).strip("\n")
            if code.strip():
                if info in wanted:
                    tagged = code + "\n"
                elif not info:
                    untagged = code + "\n"
            fence = ""
            continue
        body.append(line[indent:] if not line[:indent].strip() else line.lstrip())
    return tagged if tagged is not None else untagged  # a block still open at the end is cut off: ignored


# --------------------------------------------------------------------------------------------------
# Tests


class _BadTests(ValueError):
    pass


@dataclass(frozen=True)
class _Suite:
    fn_name: str | None  # None: stdin/stdout cases
    inputs: list[Any]  # stdin texts, or argument lists
    outputs: list[Any]  # expected stdout texts, or expected values
    wrapped: list[bool]  # per case (function calls): APPS style, an expected [x] also matches x


def _text(value: Any, what: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(x, str) for x in value):
        return "\n".join(value) + "\n"
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    raise _BadTests(f"{what} is neither a string nor a list of lines")


def _json_lines(text: str) -> list[Any]:
    try:
        return [json.loads(line) for line in text.split("\n") if line.strip()]
    except ValueError as e:
        raise _BadTests(f"function-call input is not JSON lines: {e}") from None


def _parse_tests(tests: Any) -> _Suite:
    if isinstance(tests, (str, bytes)):
        try:
            tests = json.loads(tests)
        except ValueError as e:
            raise _BadTests(f"tests are not JSON: {e}") from None
    if isinstance(tests, dict) and "input_output" in tests:
        return _parse_tests(tests["input_output"])
    fn_name = None
    if isinstance(tests, dict):
        fn_name = tests.get("fn_name") or tests.get("func_name")
        if fn_name is not None and (not isinstance(fn_name, str) or not fn_name.isidentifier()):
            raise _BadTests("fn_name is not an identifier")
        cases = tests.get("cases", tests.get("tests"))
        if cases is not None:
            tests = cases
        else:
            inputs, outputs = tests.get("inputs"), tests.get("outputs")
            if not isinstance(inputs, list) or not isinstance(outputs, list) or len(inputs) != len(outputs):
                raise _BadTests("inputs and outputs must be lists of the same length")
            tests = [{"input": i, "output": o} for i, o in zip(inputs, outputs, strict=True)]
    if not isinstance(tests, list) or not tests:
        raise _BadTests("no test cases")
    if not all(isinstance(c, dict) and "input" in c and "output" in c for c in tests):
        raise _BadTests("every case needs an input and an output")
    if fn_name is None and any(c.get("testtype") == "functional" for c in tests):
        raise _BadTests("function-call cases without fn_name")
    if fn_name is None:
        return _Suite(
            None,
            [_text(c["input"], "an input") for c in tests],
            [_text(c["output"], "an output") for c in tests],
            [False] * len(tests),
        )
    inputs, outputs, wrapped = [], [], []
    for c in tests:
        raw_in, raw_out = c["input"], c["output"]
        if isinstance(raw_in, str):  # LiveCodeBench: one JSON value per line per argument, output JSON
            inputs.append(_json_lines(raw_in))
            if isinstance(raw_out, str):
                try:
                    raw_out = json.loads(raw_out)
                except ValueError:
                    raise _BadTests("function-call output is not JSON") from None
            wrapped.append(False)
        else:
            inputs.append(raw_in if isinstance(raw_in, list) else [raw_in])
            wrapped.append(True)
        outputs.append(raw_out)
    return _Suite(fn_name, inputs, outputs, wrapped)


# --------------------------------------------------------------------------------------------------
# Comparison

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d+")


def _close(expected: float, actual: float) -> bool:
    return abs(expected - actual) <= TOLERANCE * max(1.0, abs(expected))


def _lines(text: str) -> list[str]:
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def _token_match(expected: str, actual: str) -> bool:
    if expected == actual:
        return True
    if not (_NUMBER.fullmatch(expected) and _NUMBER.fullmatch(actual)):
        return False
    if _INTEGER.fullmatch(expected) and _INTEGER.fullmatch(actual):
        return expected.lstrip("+") == actual.lstrip("+") or int(expected) == int(actual)
    try:
        return _close(float(expected), float(actual))
    except (OverflowError, ValueError):
        return False


def outputs_match(expected: str, actual: str) -> bool:
    """Whether a program's stdout matches the expected output (see the module docstring)."""
    exp, act = _lines(expected), _lines(actual)
    if exp == act:
        return True
    exp_tokens, act_tokens = " ".join(exp).split(), " ".join(act).split()
    return len(exp_tokens) == len(act_tokens) and all(map(_token_match, exp_tokens, act_tokens))


def values_match(expected: Any, actual: Any) -> bool:
    """Whether a returned value matches the expected one (see the module docstring)."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, (int, float)) and isinstance(actual, (int, float)):
        if isinstance(expected, int) and isinstance(actual, int):
            return expected == actual
        try:
            return _close(float(expected), float(actual))
        except OverflowError:
            return False
    if isinstance(expected, (list, tuple)) and isinstance(actual, (list, tuple)):
        return len(expected) == len(actual) and all(map(values_match, expected, actual))
    if isinstance(expected, dict) and isinstance(actual, dict):
        return expected.keys() == actual.keys() and all(values_match(v, actual[k]) for k, v in expected.items())
    return expected == actual


# --------------------------------------------------------------------------------------------------
# Running

# Imports a LeetCode-style solution may use without importing them (LiveCodeBench prepends the same);
# `from builtins import *` last, so that math's pow() does not replace the built-in one.
_PRELUDE = """\
from typing import *
from collections import *
from heapq import *
from bisect import *
from itertools import *
from functools import *
from math import *
from builtins import *
import math, heapq, bisect, itertools, functools, collections, string, re, sys, copy, random, operator
"""

# Runs inside the sandbox: reads {"nonce", "source", "prelude", "fn_name", "inputs", "wall", "cpu"}
# from stdin, prints one JSON record per case (prefixed with the nonce; the solution's own prints go
# to /dev/null) and stops at the first case that raises or runs out of time.
_CALL_HARNESS = r"""
import json, os, signal, sys

if hasattr(sys, "set_int_max_str_digits"):
    sys.set_int_max_str_digits(0)


class _OutOfTime(BaseException):
    pass


def _expire(signum, frame):
    raise _OutOfTime("cpu" if signum == signal.SIGPROF else "wall")


def _plain(value, depth=0):
    if depth > 200:
        raise ValueError("nested too deeply")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(x, depth + 1) for x in value]
    if isinstance(value, (set, frozenset)):
        items = [_plain(x, depth + 1) for x in value]
        try:
            return sorted(items)
        except TypeError:
            return items
    if isinstance(value, dict):
        return {k if isinstance(k, str) else str(k): _plain(v, depth + 1) for k, v in value.items()}
    return {"__unrepresentable__": type(value).__name__}


def _main():
    payload = json.loads(sys.stdin.read())
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    sys.stdout = open(os.devnull, "w")

    def emit(**record):
        out.write(payload["nonce"] + json.dumps(record) + "\n")
        out.flush()

    def arm():
        signal.setitimer(signal.ITIMER_REAL, payload["wall"])
        signal.setitimer(signal.ITIMER_PROF, payload["cpu"])

    def disarm():
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.setitimer(signal.ITIMER_PROF, 0)

    signal.signal(signal.SIGALRM, _expire)
    signal.signal(signal.SIGPROF, _expire)
    namespace = {"__name__": "solution", "__builtins__": __builtins__}
    name = payload["fn_name"]

    def run(i, action):
        try:
            arm()
            try:
                return True, action()
            finally:
                disarm()
        except _OutOfTime:
            emit(i=i, status="timeout")
        except MemoryError:
            emit(i=i, status="memory")
        except BaseException as e:
            emit(i=i, status="error", detail=(type(e).__name__ + ": " + str(e))[:300])
        return False, None

    def load():
        exec(compile(payload["prelude"], "<prelude>", "exec"), namespace)
        exec(compile(payload["source"], "solution.py", "exec"), namespace)

    if not run(0, load)[0]:
        return

    def function():
        cls = namespace.get("Solution")
        if isinstance(cls, type) and hasattr(cls, name):
            return getattr(cls(), name)
        fn = namespace.get(name)
        return fn if callable(fn) else None

    for i, args in enumerate(payload["inputs"]):
        ok, fn = run(i, function)
        if not ok:
            return
        if fn is None:
            emit(i=i, status="missing")
            return
        ok, value = run(i, lambda: fn(*args))
        if not ok:
            return
        try:
            emit(i=i, status="ok", value=_plain(value))
        except (ValueError, TypeError, RecursionError) as e:
            emit(i=i, status="error", detail="result cannot be compared: " + str(e)[:200])
            return


try:
    _main()
except _OutOfTime:
    sys.exit(3)
"""


def _case(reason: str, index: int, total: int) -> str:
    return f"{reason}: case {index + 1}/{total}"


def _sandbox_failure(stderr: str) -> str:
    last = stderr.strip().splitlines()[-1] if stderr.strip() else "unknown"
    return f"error: sandbox: {last.removeprefix('[sandbox] ')[:150]}"


def _run_stdio(code: str, suite: _Suite, limits: dict[str, Any], deadline: float) -> str:
    total = len(suite.inputs)
    wall = float(limits.pop("wall_seconds", _DEFAULT_WALL))
    cpu = float(limits.pop("cpu_seconds", _DEFAULT_CPU))
    cap = int(limits.pop("max_output_bytes", _DEFAULT_OUTPUT))
    for i, (stdin, expected) in enumerate(zip(suite.inputs, suite.outputs, strict=True)):
        remaining = deadline - time.monotonic()
        if remaining <= 0.05:
            return "timeout: total"
        r = run_sandboxed(
            code,
            stdin,
            wall_seconds=min(wall, remaining),
            cpu_seconds=min(cpu, max(1.0, remaining)),
            max_output_bytes=max(cap, 2 * len(expected.encode("utf-8")) + 4096),
            **limits,
        )
        if r.status == "ok":
            if not outputs_match(expected, r.stdout):
                return _case("wrong_answer", i, total)
        elif r.status == "sandbox_error":
            return _sandbox_failure(r.stderr)
        elif r.status == "output_limit":
            return _case("wrong_answer", i, total)
        elif r.status in ("timeout", "memory"):
            return _case(r.status, i, total)
        else:
            return _case("runtime_error", i, total)
    return "correct"


def _run_calls(code: str, suite: _Suite, limits: dict[str, Any], deadline: float) -> str:
    total = len(suite.inputs)
    wall = float(limits.pop("wall_seconds", _DEFAULT_WALL))
    cpu = float(limits.pop("cpu_seconds", _DEFAULT_CPU))
    cap = int(limits.pop("max_output_bytes", _DEFAULT_OUTPUT))
    remaining = deadline - time.monotonic()
    nonce = "@@" + secrets.token_hex(8) + "@@"
    payload = {
        "nonce": nonce,
        "source": code,
        "prelude": _PRELUDE,
        "fn_name": suite.fn_name,
        "inputs": suite.inputs,
        "wall": wall,
        "cpu": cpu,
    }
    try:
        stdin = json.dumps(payload)
        expected_size = len(json.dumps(suite.outputs))
    except (TypeError, ValueError):
        return "bad_tests"
    r = run_sandboxed(
        _CALL_HARNESS,
        stdin,
        wall_seconds=max(0.1, min(wall * (total + 1), remaining)),
        cpu_seconds=max(1.0, min(cpu * (total + 1), remaining)),
        max_output_bytes=max(cap, 2 * expected_size + 256 * (total + 1)),
        **limits,
    )
    records: dict[int, dict[str, Any]] = {}
    for line in r.stdout.splitlines():
        if line.startswith(nonce):
            try:
                record = json.loads(line[len(nonce) :])
                records.setdefault(int(record["i"]), record)
            except (ValueError, KeyError, TypeError):
                continue
    for i in range(total):
        record = records.get(i)
        if record is None:  # the process ended (or was killed) during this case
            if r.status == "sandbox_error":
                return _sandbox_failure(r.stderr)
            if r.status == "timeout":
                return "timeout: total" if r.seconds >= remaining - 0.05 else _case("timeout", i, total)
            if r.status == "memory":
                return _case("memory", i, total)
            if r.status == "output_limit":
                return _case("wrong_answer", i, total)
            return _case("runtime_error", i, total)
        status = record.get("status")
        if status == "ok":
            expected = suite.outputs[i]
            actual = record.get("value")
            match = values_match(expected, actual) or (
                suite.wrapped[i]
                and isinstance(expected, list)
                and len(expected) == 1
                and values_match(expected[0], actual)
            )
            if not match:
                return _case("wrong_answer", i, total)
        elif status == "missing":
            return f"runtime_error: no function {suite.fn_name}"
        elif status in ("timeout", "memory"):
            return _case(status, i, total)
        else:
            return _case("runtime_error", i, total)
    return "correct"


def verify_code(
    completion: str,
    tests: dict | list | str,
    finish_reason: str | None = None,
    *,
    total_seconds: float = DEFAULT_TOTAL_SECONDS,
    **limits: Any,
) -> Verdict:
    """Verify one sample: extract its code, run it on the tests in the sandbox, compare (see the
    module docstring). `limits` are `run_sandboxed` keyword arguments, per case."""
    unknown = set(limits) - _SANDBOX_LIMITS
    if unknown:
        raise TypeError(f"verify_code() got unexpected keyword arguments: {', '.join(sorted(unknown))}")
    if not total_seconds > 0:
        raise ValueError(f"total_seconds must be > 0, got {total_seconds}")
    t0 = time.monotonic()
    code = ""

    def verdict(reason: str) -> Verdict:
        return Verdict(reason == "correct", reason, code, time.monotonic() - t0)

    if finish_reason == "length" or final_part(completion or "") is None:
        return verdict("truncated")
    code = extract_code(completion) or ""
    if not code:
        return verdict("no_code")
    try:
        suite = _parse_tests(tests)
    except _BadTests:
        return verdict("bad_tests")
    deadline = t0 + total_seconds
    run = _run_stdio if suite.fn_name is None else _run_calls
    return verdict(run(code, suite, dict(limits), deadline))
