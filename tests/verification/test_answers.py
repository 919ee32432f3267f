"""Tests for distill.verification.answers: answer extraction, math-verify on real LaTeX, and the worker pool."""

from __future__ import annotations

import multiprocessing
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import distill.verification.answers as verify_mod
from distill.verification.answers import Verdict, final_part, last_boxed, verify_many, verify_math

# math-verify / sympy spin on this (measured: > 20 s), so only the process kill can stop it.
ADVERSARIAL = r"\boxed{9^{9^{9^{9}}}}"


def answer(box: str, think: str = "Let me think step by step.") -> str:
    return f"<think>\n{think}\n</think>\nSo the final answer is $\\boxed{{{box}}}$."


# --------------------------------------------------------------------------------------------------
# final_part / last_boxed


def test_final_part_after_last_think_close():
    assert final_part("<think>a</think>b</think>c") == "c"
    assert final_part("plain answer \\boxed{1}") == "plain answer \\boxed{1}"
    # chat templates that put <think> in the prompt: the completion only has the close tag
    assert final_part("reasoning...</think> done") == " done"


def test_final_part_unclosed_think_is_truncated():
    assert final_part("<think>still thinking \\boxed{3}") is None
    assert final_part("<think>a</think> b <think> again") is None


def test_last_boxed_nested_and_last():
    assert last_boxed(r"\boxed{1} then \boxed{\frac{\sqrt{3}}{2}}") == r"\frac{\sqrt{3}}{2}"
    assert last_boxed(r"x \fbox{7} y") == "7"
    assert last_boxed(r"\boxed {12}") == "12"
    assert last_boxed(r"\boxed{\left\{ 1, 2 \right\}}") == r"\left\{ 1, 2 \right\}"
    assert last_boxed("no box here, the answer is 42") is None
    # an unclosed (cut-off) box is skipped; the last complete one counts
    assert last_boxed(r"\boxed{5} and then \boxed{6") == "5"


# --------------------------------------------------------------------------------------------------
# verify_math on realistic answers


@pytest.mark.parametrize(
    ("gold", "box"),
    [
        ("42", "42"),
        ("-7", "-7"),
        (r"\frac{1}{2}", "0.5"),
        ("0.5", r"\frac{1}{2}"),
        (r"\frac{3}{4}", r"\dfrac{3}{4}"),
        (r"\dfrac{3}{4}", r"\frac34"),
        ("18", r"\text{18}"),
        (r"\text{(B)}", "B"),
        ("B", r"\textbf{(B)}"),
        ("1000", "1,000"),
        ("1,000", "1000"),
        ("1000", "1{,}000"),
        ("1000000", "1,000,000"),
        ("18", r"18 \text{ dollars}"),
        ("18", r"\$18.00"),
        ("25", r"25\text{ cm}^2"),
        ("90", r"90^\circ"),
        (r"\sqrt{18}", r"3\sqrt{2}"),
        (r"\frac{\pi}{2}", r"\pi/2"),
        ("x=5", "5"),
        ("5", "x = 5"),
        (r"\left( 3, \frac{\pi}{2} \right)", r"\left(3,\frac{\pi}{2}\right)"),
        ("$42$", "42"),
        (r"\boxed{42}", "42"),
    ],
)
def test_correct(gold, box):
    v = verify_math(gold, answer(box))
    assert v == Verdict(True, "correct", box, v.seconds), v
    assert v.seconds >= 0


@pytest.mark.parametrize(
    ("gold", "box"),
    [
        # normalisations added on top of math-verify 0.9 (each fails without them)
        ("1000", r"1\,000"),  # math-verify alone: 1*0
        ("1234", r"1\,234"),  # math-verify alone: 235
        ("1000000", r"1\,000\,000"),
        ("18", r"\text{18 dollars}"),  # math-verify alone: the symbol "18dollars"
        (r"\text{18 dollars}", "18"),
        ("3", "3."),  # math-verify alone: unparsable
    ],
)
def test_correct_after_normalisation(gold, box):
    assert verify_math(gold, answer(box)).reason == "correct"


def test_normalisation_keeps_and_or():
    assert verify_math("5", answer(r"\text{5 or more}")).reason == "wrong_answer"
    assert verify_math("3", answer(r"3 \text{ and } 4")).reason == "wrong_answer"


def test_gold_not_a_string():
    assert verify_math(42, answer("42")).correct  # type: ignore[arg-type]


def test_wrong_answer():
    v = verify_math("42", answer("41"))
    assert (v.correct, v.reason, v.extracted) == (False, "wrong_answer", "41")
    assert verify_math(r"\frac{1}{3}", answer("0.33")).reason == "wrong_answer"


def test_a_box_in_a_later_paragraph_wins():
    text = "</think> First I got \\boxed{41}.\n\nCorrecting the sign: \\boxed{42}."
    assert verify_math("42", text).correct
    text = "</think> First I got \\boxed{42}.\n\nCorrecting the sign: \\boxed{-42}."
    assert verify_math("42", text).reason == "wrong_answer"
    # in one run of text, bare boxes are one set answer, as math-verify reads them
    v = verify_math("42", r"</think> First I got \boxed{41}, but correcting the sign: \boxed{42}.")
    assert (v.correct, v.extracted) == (False, "41,42")


def test_boxed_in_think_is_ignored():
    v = verify_math("42", r"<think>maybe \boxed{42}</think> The answer is 42.", require_boxed=True)
    assert (v.correct, v.reason, v.extracted) == (False, "no_answer", "")
    v = verify_math("42", r"<think>maybe \boxed{42}</think> So \boxed{41}.")
    assert (v.reason, v.extracted) == ("wrong_answer", "41")


def test_unclosed_think_is_truncated():
    v = verify_math("42", r"<think>so far \boxed{42} but wait")
    assert (v.correct, v.reason) == (False, "truncated")


def test_finish_reason_length_is_truncated():
    v = verify_math("42", answer("42"), finish_reason="length")
    assert (v.correct, v.reason) == (False, "truncated")
    assert verify_math("42", answer("42"), finish_reason="stop").correct


def test_no_boxed_is_no_answer_when_a_box_is_required():
    for text in ["</think> The answer is 42.", "The answer is $42$.", r"</think> \boxed{ }"]:
        v = verify_math("42", text, require_boxed=True)
        assert (v.correct, v.reason) == (False, "no_answer"), text
    # without the requirement, math-verify's own extraction finds the unboxed ones
    assert verify_math("42", "</think> The answer is 42.").correct and verify_math("42", "The answer is $42$.").correct
    assert verify_math("42", r"</think> \boxed{ }").reason == "no_answer"


def test_nested_braces():
    v = verify_math(r"\frac{\sqrt{3}}{2}", answer(r"\dfrac{\sqrt{3}}{2}"))
    assert (v.reason, v.extracted) == ("correct", r"\dfrac{\sqrt{3}}{2}")
    assert verify_math(r"\frac{\sqrt{3}}{2}", answer(r"\frac{\sqrt{2}}{2}")).reason == "wrong_answer"


def test_gold_order_matters():
    # math-verify turns a gold relation into a set when the answer is a set, not the other way round.
    mv, config = verify_mod._mv()
    rel = mv.parse(r"\boxed{1 < x < 2}", extraction_config=config, parsing_timeout=None)
    interval = mv.parse(r"\boxed{(1, 2)}", extraction_config=config, parsing_timeout=None)
    assert mv.verify(rel, interval, timeout_seconds=None)
    assert not mv.verify(interval, rel, timeout_seconds=None)
    # verify_math passes the gold first
    assert verify_math("1 < x < 2", answer("(1, 2)")).reason == "correct"
    assert verify_math("(1, 2)", answer("1 < x < 2")).reason == "wrong_answer"


def test_unparsable_gold_and_answer():
    assert verify_math("", answer("42")).reason == "unparsable_gold"
    assert verify_math(r"\boxed{}", answer("42")).reason == "unparsable_gold"
    assert verify_math(r"\frac{", answer("42")).reason == "unparsable_gold"
    assert verify_math("42", answer(r"\sqrt")).reason == "unparsable_answer"


def test_exception_becomes_error_verdict(monkeypatch):
    def boom(content):
        raise ValueError("boom " + "x" * 200)

    monkeypatch.setattr(verify_mod, "_parse", boom)
    v = verify_math("42", answer("42"))
    assert v.correct is False
    assert v.reason.startswith("error: ValueError: boom ")
    assert len(v.reason) == len("error: ValueError: ") + 100


# --------------------------------------------------------------------------------------------------
# verify_many


def no_children() -> bool:
    return multiprocessing.active_children() == []


def test_verify_many_empty_starts_nothing(monkeypatch):
    def fail(*a, **k):
        raise AssertionError("no worker may start for empty input")

    monkeypatch.setattr(verify_mod, "_Worker", fail)
    assert verify_many([]) == []


def test_verify_many_order_and_progress():
    items = []
    for i in range(40):
        box = str(i) if i % 3 else str(i + 1)  # every third one wrong
        items.append((str(i), answer(box), "length" if i == 7 else "stop"))
    seen: list[int] = []
    out = verify_many(items, timeout=10, workers=3, progress=seen.append)
    assert len(out) == len(items)
    for i, v in enumerate(out):
        want = "truncated" if i == 7 else ("wrong_answer" if i % 3 == 0 else "correct")
        assert v.reason == want, (i, v)
        if i != 7:
            assert v.extracted == (str(i) if i % 3 else str(i + 1))
    assert sum(seen) == len(items) and all(k > 0 for k in seen)
    assert no_children()


def test_verify_many_timeout_does_not_block_the_rest():
    timeout = 1.5
    good = [(str(i), answer(str(i)), None) for i in range(12)]
    items = good[:3] + [("42", ADVERSARIAL, None)] + good[3:9] + [("7", ADVERSARIAL, None)] + good[9:]
    t0 = time.monotonic()
    out = verify_many(items, timeout=timeout, workers=2)
    elapsed = time.monotonic() - t0
    assert elapsed < timeout + 10, elapsed
    reasons = [v.reason for v in out]
    assert reasons[3] == reasons[10] == "timeout"
    assert out[3].extracted == "9^{9^{9^{9}}}"
    assert timeout <= out[3].seconds < timeout + 5
    assert [r for i, r in enumerate(reasons) if i not in (3, 10)] == ["correct"] * 12
    assert no_children()


def test_verify_many_worker_death(monkeypatch):
    monkeypatch.setenv(verify_mod.TEST_HOOKS_ENV, "1")
    items = [(str(i), answer(str(i)), None) for i in range(10)]
    items[4] = ("__distill_test_crash__", answer("4"), None)
    out = verify_many(items, timeout=10, workers=2)
    assert out[4].reason == "error: worker died" and not out[4].correct
    assert [v.reason for i, v in enumerate(out) if i != 4] == ["correct"] * 9
    assert no_children()


def test_crash_hook_needs_env(monkeypatch):
    monkeypatch.delenv(verify_mod.TEST_HOOKS_ENV, raising=False)
    out = verify_many([("__distill_test_crash__", answer("4"), None)], timeout=10, workers=1)
    assert out[0].reason != "error: worker died"


def test_verify_many_interrupt_stops_workers():
    items = [(str(i), answer(str(i)), None) for i in range(20)]

    def interrupt(k):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        verify_many(items, timeout=10, workers=2, progress=interrupt)
    assert no_children()


def test_verify_many_rejects_bad_timeout():
    with pytest.raises(ValueError):
        verify_many([("1", answer("1"), None)], timeout=0)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_CPU/SIGXCPU semantics")
def test_cpu_limit_kills_an_orphaned_spinner():
    # Workers cap their own CPU time per item (timeout + margin), so one left spinning after its
    # parent was SIGKILLed still ends. Here: a 1 s budget, then a busy loop.
    code = (
        "import resource; from distill.verification.answers import _limit_cpu; "
        "resource.setrlimit(resource.RLIMIT_CORE, (0, resource.getrlimit(resource.RLIMIT_CORE)[1])); "
        "_limit_cpu(1.0)\nwhile True: pass"
    )
    t0 = time.monotonic()
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, timeout=60)
    assert proc.returncode == -signal.SIGXCPU
    assert time.monotonic() - t0 < 30


@pytest.mark.parametrize(
    ("gold", "box", "ok"),
    [
        (r"\{1,2,3\}", r"\{3,2,1\}", True),  # sets: order does not matter
        (r"\{1,2,3\}", r"\{1,2\}", False),
        ("(1,2]", "(1,2]", True),  # intervals: the brackets matter
        ("(1,2]", "[1,2]", False),
        (r"[0,\infty)", r"[0, \infty)", True),
        (r"\frac{3}{4}", r"\tfrac34", True),
        (r"2\sqrt{3}", r"\sqrt{12}", True),  # radicals simplified
        (r"2\sqrt{3}", r"3\sqrt{2}", False),
        ("10", r"10\%", True),
        (r"x^2+2x+1", "(x+1)^2", True),  # expressions compared symbolically
    ],
)
def test_sets_intervals_radicals_expressions(gold, box, ok):
    assert verify_math(gold, answer(box)).correct is ok


@pytest.mark.parametrize(
    ("gold", "completion", "reason"),
    [
        ("C", r"so \boxed{C}", "correct"),
        ("C", r"\boxed{(C)}", "correct"),
        ("(C)", r"\boxed{\textbf{(C)} 42}", "correct"),
        ("C", r"\boxed{C. 42}", "correct"),
        ("C", r"\boxed{\text{Option C}}", "correct"),
        ("C", r"\boxed{B}", "wrong_answer"),
        ("C", "The answer is (C).", "correct"),
        ("C", "ANSWER: D", "wrong_answer"),
        ("C", r"<think>maybe \boxed{C}</think> the answer is \boxed{A}", "wrong_answer"),
        ("C", "<think>it is C", "truncated"),
        ("C", "I cannot decide.", "no_answer"),
        ("C", r"\boxed{Carbon}", "unparsable_answer"),  # a word that starts with the letter is no choice
        ("42", r"\boxed{C}", "unparsable_gold"),
    ],
)
def test_multiple_choice(gold, completion, reason):
    from distill.verification.answers import verify_choice

    assert verify_choice(gold, completion).reason == reason
