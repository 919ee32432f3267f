"""Tests for distill.verification.quality: format, length, repetition and language checks
(tests/curation/test_selection.py: the choice among verified samples)."""

from __future__ import annotations

import pytest

from distill.common.errors import DistillError
from distill.verification.quality import (
    DEFAULT_MAX_REPETITION,
    assistant_text,
    check_format,
    dominant_script,
    language_problem,
    repetition_score,
    script_shares,
)

PROBLEM = "Find all real numbers $x$ such that $x^2 - 5x + 6 = 0$ and $x > 2$. What is the sum of such $x$?"

REASONING = """Okay, so I need to solve the quadratic equation x^2 - 5x + 6 = 0 and then keep only the roots larger than 2.
First, let me try to factor it. I am looking for two numbers whose product is 6 and whose sum is -5.
The pairs that multiply to 6 are (1, 6), (2, 3), (-1, -6) and (-2, -3).
Among these, -2 and -3 add up to -5, so the polynomial factors as (x - 2)(x - 3).
Setting each factor to zero gives x = 2 or x = 3.
Let me double-check by expanding: (x - 2)(x - 3) = x^2 - 3x - 2x + 6 = x^2 - 5x + 6. That matches.
I could also use the quadratic formula as a sanity check: the discriminant is 25 - 24 = 1.
So x = (5 ± 1) / 2, which is 3 or 2, the same two roots as before.
Now the condition says x > 2, a strict inequality.
The root x = 2 is not strictly greater than 2, so it has to be excluded.
The root x = 3 satisfies 3 > 2, so it stays.
Wait, the question asks for the sum of all such x, not just the value itself.
Since only one root survives, the sum is simply 3.
Hmm, let me make sure I did not misread the inequality as x >= 2; it really is strict.
If it had been x >= 2 the answer would have been 2 + 3 = 5, which is a common trap.
Also, by Vieta's formulas the sum of both roots is 5 and the product is 6, consistent with 2 and 3.
Therefore the set of valid solutions is {3} and the requested sum equals 3.
I am confident in this result."""

ANSWER = """The equation factors as $(x-2)(x-3)=0$, so $x=2$ or $x=3$. Only $x=3$ satisfies $x>2$.

The sum of all such $x$ is $\\boxed{3}$."""


def r1(reasoning: str = REASONING, answer: str = ANSWER) -> str:
    return f"<think>\n{reasoning}\n</think>\n\n{answer}"


def row(content: str | None = None, problem: str = PROBLEM, **extra) -> dict:
    content = r1() if content is None else content
    base = {
        "id": "p1",
        "sample": 0,
        "problem": problem,
        "answer": "3",
        "messages": [{"role": "user", "content": problem}, {"role": "assistant", "content": content}],
        "completion": content,
        "reasoning": "",
        "finish_reason": "stop",
        "completion_tokens": 400,
    }
    return {**base, **extra}


# --------------------------------------------------------------------------------------------------
# Format


def test_well_formed_r1_row_passes_every_check():
    assert check_format(row(), require_think=True, min_tokens=10, max_tokens=1000) == ""


def test_plain_answer_without_think_passes_unless_think_is_required():
    plain = row("We compute 2 + 2 = 4, so the answer is $\\boxed{4}$.", problem="What is two plus two?")
    assert check_format(plain) == ""
    assert check_format(plain, require_think=True) == "format: missing_think"


def test_the_assistant_message_is_checked_not_the_separated_completion():
    # the server separated the reasoning: completion holds only the answer, the message the whole turn
    r = row(r1(), completion=ANSWER, reasoning=REASONING)
    assert assistant_text(r) == r1()
    assert check_format(r, require_think=True) == ""
    no_messages = {**r, "messages": []}
    assert assistant_text(no_messages) == ANSWER
    assert check_format(no_messages, require_think=True) == "format: missing_think"


@pytest.mark.parametrize(
    "content, reason",
    [
        ("<think>\nLet me think about x^2 - 5x + 6 and its roots, which are", "format: unclosed_think"),
        (r1() + "\n<think>more thoughts</think>\nAgain $\\boxed{3}$.", "format: several_think_blocks"),
        ("<think>a</think><think>b</think> $\\boxed{3}$", "format: several_think_blocks"),
        (REASONING + "\n</think>\n\n" + ANSWER, "format: unopened_think"),
        ("</think> The answer <think> is 3", "format: misordered_think"),
        ("Sure! " + r1(), "format: text_before_think"),
        (r1(answer=""), "format: empty_answer"),
        (r1(answer="  \n\n "), "format: empty_answer"),
        ("", "format: empty_answer"),
    ],
)
def test_malformed_think_structure_is_rejected(content, reason):
    assert check_format(row(content)) == reason


def test_empty_think_block_only_matters_when_think_is_required():
    r = row(r1(reasoning="  "))
    assert check_format(r) == ""
    assert check_format(r, require_think=True) == "format: empty_think"


def test_truncated_rows_are_rejected_before_anything_else():
    cut = "<think>\nLet me think about x^2 - 5x + 6 and its roots, which are"
    assert check_format(row(cut, finish_reason="length")) == "truncated"
    assert check_format(row(finish_reason="length")) == "truncated"
    assert check_format(row(truncated=True)) == "truncated"


def test_length_bounds_are_inclusive_and_zero_disables_them():
    r = row(completion_tokens=400)
    assert check_format(r, min_tokens=400, max_tokens=400) == ""
    assert check_format(r, min_tokens=401) == "length: too_short"
    assert check_format(r, max_tokens=399) == "length: too_long"
    assert check_format(r, min_tokens=0, max_tokens=0) == ""
    assert check_format(row(completion_tokens=None), min_tokens=10) == ""  # unknown count: not judged


def test_bad_check_options_are_errors_naming_the_option():
    with pytest.raises(DistillError, match="--min-tokens"):
        check_format(row(), min_tokens=500, max_tokens=100)
    with pytest.raises(DistillError, match="--max-repetition"):
        check_format(row(), max_repetition=1.5)
    with pytest.raises(DistillError, match="--max-foreign-share"):
        check_format(row(), max_foreign_share=float("nan"))


# --------------------------------------------------------------------------------------------------
# Repetition

LOOP_SENTENCE = "Wait, let me recompute the discriminant of the quadratic to be sure it is positive.\n"
CYCLE = (
    "So the roots are x = 2 and x = 3.\n"
    "But wait, maybe I should check whether x = 2 satisfies the strict inequality.\n"
    "Since 2 > 2 is false, let me go back and look at the roots again.\n"
)


def test_genuine_reasoning_scores_low_and_loops_score_high():
    genuine = repetition_score(r1())
    sentence_loop = repetition_score(r1(reasoning=REASONING + "\n" + LOOP_SENTENCE * 50))
    cycle_loop = repetition_score(r1(reasoning=REASONING + "\n" + CYCLE * 15))
    assert genuine < 0.1
    assert sentence_loop > 0.9
    assert cycle_loop > 0.7
    assert genuine < DEFAULT_MAX_REPETITION < cycle_loop < sentence_loop


def test_looping_rows_are_rejected_and_genuine_ones_kept():
    assert check_format(row()) == ""
    assert check_format(row(r1(reasoning=LOOP_SENTENCE * 50))) == "repetition: looping"
    assert check_format(row(r1(reasoning=REASONING + "\n" + CYCLE * 15))) == "repetition: looping"
    # the threshold is a parameter: 1 disables the check
    assert check_format(row(r1(reasoning=LOOP_SENTENCE * 50)), max_repetition=1.0) == ""


def test_repetition_looks_for_the_worst_stretch_not_the_average():
    # a loop in the middle of a long varied text still shows up
    varied = "\n".join(f"Step {i}: multiply {i} by {i + 7} to get {i * (i + 7)}, then add {i * 3}." for i in range(120))
    assert repetition_score(varied) < 0.3
    assert repetition_score(varied + "\n" + LOOP_SENTENCE * 40 + varied[::-1]) > 0.8


def test_a_whole_paragraph_repeated_is_caught_by_the_long_window():
    # a period of ~400 tokens is longer than the short window, which alone sees nothing
    looped = r1(reasoning="\n".join([REASONING] * 4))
    assert repetition_score(looped, windows=(256,)) < 0.1
    assert repetition_score(looped) > 0.7
    assert check_format(row(looped)) == "repetition: looping"


def test_templated_but_varied_case_checks_are_not_a_loop():
    cases = "\n".join(f"For n = {n}: n^2 + 1 = {n * n + 1}, which is not divisible by 3." for n in range(1, 60))
    assert repetition_score(cases) < DEFAULT_MAX_REPETITION


def test_repetition_of_short_or_empty_text_is_zero():
    assert repetition_score("") == 0.0
    assert repetition_score("The answer is 3.") == 0.0


def test_chinese_loops_are_seen_per_character():
    loop = "我们再检查一下判别式是否为正数。" * 40
    assert repetition_score(loop) > 0.9


# --------------------------------------------------------------------------------------------------
# Scripts and language

CHINESE_PROBLEM = "已知方程 $x^2 - 5x + 6 = 0$，求所有满足 $x > 2$ 的实数解之和。"
CHINESE_REASONING = """首先，我们把方程 $x^2 - 5x + 6 = 0$ 因式分解。
需要找到两个数，它们的乘积是 6，和是 -5，这两个数是 -2 和 -3。
所以方程可以写成 $(x-2)(x-3)=0$，解得 $x=2$ 或 $x=3$。
题目要求 $x > 2$，这是严格不等式，所以 $x=2$ 不满足条件。
只剩下 $x=3$，根据 Vieta 定理两根之和为 5，这也验证了因式分解是正确的。
因此满足条件的解之和为 3。"""
CHINESE_ANSWER = "方程的解为 $x=2$ 和 $x=3$，其中只有 $x=3$ 满足 $x>2$，所以答案是 $\\boxed{3}$。"


def test_script_shares_of_plain_texts():
    assert dominant_script("The quick brown fox jumps over the lazy dog")[0] == "Latin"
    script, share = dominant_script(CHINESE_REASONING)
    assert script == "Han" and share > 0.9  # "Vieta" and the variables in $...$ barely count
    assert dominant_script("Решим квадратное уравнение разложением на множители")[0] == "Cyrillic"
    assert dominant_script("समीकरण को गुणनखंड करके हल करें")[0] == "Devanagari"
    assert dominant_script("نحل المعادلة التربيعية بالتحليل")[0] == "Arabic"
    assert dominant_script("방정식을 인수분해하여 풉니다")[0] == "Hangul"
    assert dominant_script("Λύνουμε την εξίσωση παραγοντοποιώντας")[0] == "Greek"
    assert dominant_script("$x^2 + 1 = 0$ 12345 ... !!") == ("", 0.0)
    shares = script_shares("Hello world, 你好世界")
    assert set(shares) == {"Latin", "Han"} and sum(shares.values()) == pytest.approx(1.0)


def test_latex_math_and_greek_symbols_are_not_greek():
    latex = (
        "We have $\\alpha + \\beta = \\frac{\\pi}{2}$ and $$\\sqrt{\\gamma^2 + \\delta^2} = \\lambda,$$ "
        "so by \\[ \\sin\\theta = \\frac{\\sqrt{3}}{2} \\] the angle θ equals π/3, and Δx = 2 with "
        "\\(\\omega = 2\\pi f\\). Hence the answer is \\boxed{\\frac{\\pi}{3}}, since αβ is small."
    )
    shares = script_shares(latex)
    assert set(shares) == {"Latin"}
    english_row = row(r1(answer=latex), problem="Find the angle theta in radians.")
    assert check_format(english_row) == ""


def test_code_blocks_are_ignored():
    code = "```python\n# 计算判别式 and print: привет мир\nprint('判别式', b*b - 4*a*c)\n```\n"
    text = "Let me check the roots with a short program.\n" + code + "It prints 1, so both roots are real."
    assert set(script_shares(text)) == {"Latin"}
    inline = 'Use `printf("结果")` to show it; the result is positive.'
    assert set(script_shares(inline)) == {"Latin"}
    assert check_format(row(r1(reasoning=REASONING + "\n" + code))) == ""


def test_english_prompt_with_answer_switching_to_chinese_midway_is_mixed():
    half = len(REASONING.splitlines()) // 2
    switched = "\n".join(REASONING.splitlines()[:half]) + "\n" + CHINESE_REASONING
    assert check_format(row(r1(reasoning=switched))) == "language: mixed"
    # the checker can be turned off
    assert check_format(row(r1(reasoning=switched)), check_language=False) == ""


def test_a_few_chinese_words_in_long_english_reasoning_pass_but_a_chinese_answer_does_not():
    sprinkled = REASONING.replace("That matches.", "That matches (正确).")
    assert check_format(row(r1(reasoning=sprinkled))) == ""
    assert check_format(row(r1(answer=CHINESE_ANSWER))) == "language: mismatch"


def test_english_prompt_answered_wholly_in_chinese_is_a_mismatch():
    assert check_format(row(r1(reasoning=CHINESE_REASONING, answer=CHINESE_ANSWER))) == "language: mismatch"


def test_chinese_prompt_answered_in_chinese_passes():
    r = row(r1(reasoning=CHINESE_REASONING, answer=CHINESE_ANSWER), problem=CHINESE_PROBLEM)
    assert check_format(r, require_think=True) == ""
    # ... and one answered in English is not
    assert check_format(row(r1(), problem=CHINESE_PROBLEM)) == "language: mismatch"


def test_japanese_mixes_kanji_and_kana_without_being_mixed():
    problem = "方程式 $x^2 - 5x + 6 = 0$ を満たす $x > 2$ の実数解の和を求めなさい。"
    reasoning = (
        "まず、この方程式を因数分解します。積が 6 で和が -5 になる二つの数は -2 と -3 です。\n"
        "ここでチェックしてみると、ゼロになるので、このアプローチでいいですね。"  # katakana, absent from the prompt
    )
    answer = "したがって、条件を満たす解は $x=3$ だけなので、答えは $\\boxed{3}$ です。"
    assert check_format(row(r1(reasoning=reasoning, answer=answer), problem=problem)) == ""


def test_prompt_without_words_takes_the_traces_own_script():
    pure_math = "$x^2 - 5x + 6 = 0,\\ x > 2,\\ \\sum x = ?$"
    assert check_format(row(r1(), problem=pure_math)) == ""
    assert check_format(row(r1(answer=CHINESE_ANSWER), problem=pure_math)) == "language: mismatch"


def test_mixed_share_threshold_is_a_parameter():
    half = len(REASONING.splitlines()) // 2
    switched = "\n".join(REASONING.splitlines()[:half]) + "\n" + CHINESE_REASONING
    assert check_format(row(r1(reasoning=switched)), max_foreign_share=0.9) == ""


def _sliding_distinct_reference(grams, w):
    """The plain sliding-window count (the implementation before the vectorised one), as a reference."""
    counts = {}
    for g in grams[:w]:
        counts[g] = counts.get(g, 0) + 1
    distinct = fewest = len(counts)
    for i in range(w, len(grams)):
        new, old = grams[i], grams[i - w]
        if new == old:
            continue
        c = counts.get(new, 0)
        counts[new] = c + 1
        distinct += c == 0
        c = counts[old] - 1
        if c:
            counts[old] = c
        else:
            del counts[old]
            distinct -= 1
        fewest = min(fewest, distinct)
    return 1.0 - fewest / w


def test_the_vectorised_repetition_window_equals_the_plain_sliding_count():
    import random

    from distill.verification import quality as q

    rng = random.Random(0)
    for _ in range(2000):
        n, k = rng.randint(2, 300), rng.randint(1, 30)
        grams = [rng.randint(0, k) for _ in range(n)]
        w = rng.randint(1, n)
        assert q._most_repeated_share(grams, w) == pytest.approx(_sliding_distinct_reference(grams, w), abs=1e-12)


def test_ascii_texts_have_no_language_problem_and_non_ascii_ones_are_still_checked():
    assert language_problem("What is 2 + 2? Answer with words.", "Two plus two is four.", "four") == ""
    assert (
        language_problem("What is 2 + 2? Answer with words.", "二加二等于四，答案是四。我们再检查一遍。", "四")
        == "mismatch"
    )
