"""Quality checks and sample selection for trace rows, used by `distill filter`.

All functions are pure: they read trace rows (see `distill.common.records`) and never modify them.

`check_format(row)` returns '' for a usable row, else one short reason with a stable prefix (so that
report counts group well):

  "truncated"                     finish_reason "length" (or the row says truncated): the text was cut
  "format: several_think_blocks"  more than one <think> or </think>
  "format: unclosed_think"        a <think> that is never closed
  "format: unopened_think"        a </think> without a <think> (a server that put <think> in the prompt)
  "format: misordered_think"      </think> before <think>
  "format: text_before_think"     text before the <think> block (R1 style starts with it)
  "format: missing_think"         no think block, with require_think
  "format: empty_think"           an empty think block, with require_think
  "format: empty_answer"          nothing after </think> (or an empty text)
  "length: too_short" / "length: too_long"   completion_tokens outside [min_tokens, max_tokens]
  "repetition: looping"           repetition_score() above max_repetition
  "language: mismatch"            the trace, or its final answer, is mainly in another script than the prompt
  "language: mixed"               more than max_foreign_share of the trace or answer is in another script

Checks run in that order and the first failure is reported. There is no "text after the answer"
check: text after the boxed answer (a short summary, units) is normal and harmless for SFT.

Language is judged by Unicode script, not by a language model: it catches R1's language mixing
(English reasoning that drifts into Chinese) without dependencies, but cannot tell apart languages
that share a script (English and French, Chinese and Japanese kanji-only text).

Selection among verified rows (per prompt, by pass rate) is curation's: distill.curation.selection.
"""

from __future__ import annotations

import re
import unicodedata
from collections import defaultdict
from functools import lru_cache

import numpy as np

from distill.common.errors import DistillError
from distill.verification.answers import final_part

# --------------------------------------------------------------------------------------------------
# The texts of a row


def assistant_text(row: dict) -> str:
    """The whole assistant turn: the last message when it is the assistant's (it holds
    `<think>…</think>answer` when the server separated reasoning), else the raw completion."""
    messages = row.get("messages")
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict) and last.get("role", "assistant") == "assistant":
            content = last.get("content")
            if isinstance(content, str):
                return content
    completion = row.get("completion")
    return completion if isinstance(completion, str) else ""


def prompt_text(row: dict) -> str:
    """The problem as the user wrote it: `problem`, else the user turns. The prompt template (English
    instructions around the problem) is left out so that it does not decide the prompt's language."""
    problem = row.get("problem")
    if isinstance(problem, str) and problem.strip():
        return problem
    messages = row.get("messages")
    if not isinstance(messages, list):
        return ""
    return "\n".join(
        m["content"]
        for m in messages[:-1]
        if isinstance(m, dict) and m.get("role") == "user" and isinstance(m.get("content"), str)
    )


# --------------------------------------------------------------------------------------------------
# Scripts

# Text that says nothing about the language: code, LaTeX math, LaTeX command names, think tags.
_IGNORED = re.compile(
    r"```.*?(?:```|\Z)"  # fenced code (an unterminated fence runs to the end)
    r"|~~~.*?(?:~~~|\Z)"
    r"|`[^`\n]*`"  # inline code
    r"|\$\$.*?\$\$"  # display math
    r"|\\\[.*?\\\]"
    r"|\\\(.*?\\\)"
    r"|\\begin\{(\w+\*?)\}.*?\\end\{\1\}"  # equation, align, ... environments
    r"|(?<!\\)\$[^$\n]*?(?<!\\)\$"  # inline math
    r"|\\[A-Za-z]+"  # a LaTeX command outside math: \frac, \sqrt, \alpha
    r"|</?think>",
    re.DOTALL,
)
# Runs that can hold letters: anything but whitespace, ASCII punctuation and digits.
_CHUNK = re.compile(r"[^\s!-/:-@\[-`{-~0-9]+")

# Scripts written without word boundaries, counted per character, weighted by roughly how many
# Latin letters one character stands for (so that shares compare amounts of text, not characters).
DENSE_WEIGHTS = {"Han": 3.0, "Hiragana": 2.0, "Katakana": 2.0, "Hangul": 2.0}
# In alphabetic scripts a run of letters counts only when it is a real word: at least this long (single
# letters and pairs are variables, points or Greek symbols in math), not all capitals (ABC, AM-GM), and not
# a function name.
MIN_WORD = 3
MATH_WORDS = frozenset(
    "sin cos tan cot sec csc arcsin arccos arctan sinh cosh tanh log lg ln exp lim max min sup inf "
    "gcd lcm mod det dim ker deg sgn arg".split()
)
_SCRIPTS = {
    "LATIN": "Latin",
    "GREEK": "Greek",
    "COPTIC": "Greek",
    "CYRILLIC": "Cyrillic",
    "ARMENIAN": "Armenian",
    "GEORGIAN": "Georgian",
    "HEBREW": "Hebrew",
    "ARABIC": "Arabic",
    "SYRIAC": "Syriac",
    "THAANA": "Thaana",
    "DEVANAGARI": "Devanagari",
    "BENGALI": "Bengali",
    "GURMUKHI": "Gurmukhi",
    "GUJARATI": "Gujarati",
    "ORIYA": "Oriya",
    "TAMIL": "Tamil",
    "TELUGU": "Telugu",
    "KANNADA": "Kannada",
    "MALAYALAM": "Malayalam",
    "SINHALA": "Sinhala",
    "THAI": "Thai",
    "LAO": "Lao",
    "TIBETAN": "Tibetan",
    "MYANMAR": "Myanmar",
    "KHMER": "Khmer",
    "MONGOLIAN": "Mongolian",
    "ETHIOPIC": "Ethiopic",
    "CHEROKEE": "Cherokee",
    "CJK": "Han",
    "BOPOMOFO": "Han",
    "HIRAGANA": "Hiragana",
    "KATAKANA": "Katakana",
    "HANGUL": "Hangul",
}
_MARK = "+"  # a combining mark: part of the current word (Indic vowel signs, accents)
# Letterlike symbols (ℝ, ℓ, ℵ) and mathematical alphanumerics (𝑥, 𝔸) are math, not language.
_MATH_LETTER_RANGES = ((0x2100, 0x214F), (0x1D400, 0x1D7FF), (0x1EE00, 0x1EEFF))


@lru_cache(maxsize=65536)
def _script_of(ch: str) -> str:
    """Script of one non-ASCII character; _MARK for a combining mark; '' for anything else."""
    cat = unicodedata.category(ch)
    if cat[0] == "M":
        return _MARK
    if cat not in ("Lu", "Ll", "Lt", "Lo"):
        return ""  # Lm (modifier letters, ー, 々) and non-letters
    cp = ord(ch)
    if any(lo <= cp <= hi for lo, hi in _MATH_LETTER_RANGES):
        return ""
    name = unicodedata.name(ch, "")
    if name.startswith(("FULLWIDTH ", "HALFWIDTH ")):
        name = name.split(" ", 1)[1]
    return _SCRIPTS.get(name.split(" ", 1)[0], "")


def _add_word(counts: dict[str, float], script: str, word: str) -> None:
    if len(word) >= MIN_WORD and not word.isupper() and word.lower() not in MATH_WORDS:
        counts[script] += len(word)


def script_counts(text: str) -> dict[str, float]:
    """Weighted letter counts per script, after dropping code, LaTeX math and commands, numbers,
    single letters and capitals-only words (see MIN_WORD, DENSE_WEIGHTS)."""
    counts: dict[str, float] = defaultdict(float)
    for chunk in _CHUNK.findall(_IGNORED.sub(" ", text)):
        if chunk.isascii():  # the common case: one ASCII word
            if chunk.isalpha():
                _add_word(counts, "Latin", chunk)
            continue
        word, word_script = [], ""
        for ch in chunk:
            script = "Latin" if ch.isascii() and ch.isalpha() else _script_of(ch)
            if script == _MARK:
                continue  # a combining mark (Indic vowel sign, accent) neither starts nor ends a word
            if script in DENSE_WEIGHTS:
                counts[script] += DENSE_WEIGHTS[script]
                script = ""
            if script != word_script:
                if word:
                    _add_word(counts, word_script, "".join(word))
                    word = []
                word_script = script
            if script:
                word.append(ch)
        if word:
            _add_word(counts, word_script, "".join(word))
    return dict(counts)


def script_shares(text: str) -> dict[str, float]:
    """Share of each script among the (weighted) letters of text, largest first; {} when it has none."""
    counts = script_counts(text)
    total = sum(counts.values())
    if total <= 0:
        return {}
    return {k: v / total for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))}


def dominant_script(text: str) -> tuple[str, float]:
    """The script with the largest share of text's letters and that share; ("", 0.0) when none."""
    shares = script_shares(text)
    return next(iter(shares.items())) if shares else ("", 0.0)


# Scripts that one language writes together: Japanese mixes kanji and kana, Korean may use hanja.
_KANA = ("Hiragana", "Katakana")
MIN_LETTERS = 12.0  # weighted letters a text needs before its language is judged
SECOND_SCRIPT_SHARE = 0.25  # a script this common in the prompt is allowed in the answer too (bilingual prompts)
JAPANESE_KANA_SHARE = 0.05  # kana this common means Japanese: kanji and kana are one language


def allowed_scripts(shares: dict[str, float]) -> set[str]:
    """Scripts a reply may use, given the shares of a reference text (the prompt): its dominant
    script, any other script with a large share, and their companions (kanji+kana, hangul+hanja)."""
    if not shares:
        return set()
    dominant = next(iter(shares))
    allowed = {dominant} | {s for s, share in shares.items() if share >= SECOND_SCRIPT_SHARE}
    if allowed & set(_KANA) or sum(shares.get(k, 0.0) for k in _KANA) >= JAPANESE_KANA_SHARE:
        allowed |= {"Han", *_KANA}
    if "Hangul" in allowed:
        allowed.add("Han")
    return allowed


def language_problem(prompt: str, text: str, answer: str, max_foreign_share: float = 0.1) -> str:
    """'' when text (reasoning and answer) and answer are in the prompt's script(s); else "mismatch"
    (the main script is another one) or "mixed" (more than max_foreign_share of the letters are in
    other scripts). A prompt with too few letters (pure math) takes the text's own dominant script."""
    if prompt.isascii() and text.isascii() and answer.isascii():
        return ""  # ASCII letters are all Latin: one script, nothing to mismatch or mix (the common case, fast)
    if sum(script_counts(prompt).values()) >= MIN_LETTERS:
        reference = script_shares(prompt)
    else:
        script, _ = dominant_script(text)
        reference = {script: 1.0} if script else {}
    allowed = allowed_scripts(reference)
    if not allowed:
        return ""
    parts = []
    for part in (text, answer):
        counts = script_counts(part)
        total = sum(counts.values())
        if total >= MIN_LETTERS:
            parts.append((counts, total))
    for counts, _ in parts:
        if max(counts, key=lambda s: counts[s]) not in allowed:
            return "mismatch"
    for counts, total in parts:
        if sum(v for s, v in counts.items() if s not in allowed) / total > max_foreign_share:
            return "mixed"
    return ""


# --------------------------------------------------------------------------------------------------
# Repetition

# Tokens: a CJK character, a word (letters/digits), or one punctuation character; lower-cased.
_TOKEN = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[^\W_]+|[^\w\s]")
REPETITION_NGRAM = 8
REPETITION_WINDOWS = (256, 2048)
DEFAULT_MAX_REPETITION = 0.5


def repetition_score(text: str, n: int = REPETITION_NGRAM, windows: tuple[int, ...] = REPETITION_WINDOWS) -> float:
    """How much of the most repetitive stretch of text is repeated, in [0, 1).

    The text is cut into tokens (words, single punctuation, single CJK characters). Over every run of
    `window` consecutive token n-grams the share of repeated n-grams is 1 - distinct/total; the score is
    the largest share over all runs and both window sizes (a text shorter than a window is one run).
    A loop with a period of p tokens scores about 1 - p/window: a sentence said over and over scores
    above 0.9, a cycle of three lines about 0.8, and the long window catches whole paragraphs repeated
    (periods up to ~1000 tokens). Varied reasoning, even with its recurring phrases ("let me check"),
    stays near 0. Long n-grams (8) keep templated but genuine text (case checks "n = 1: ..., n = 2:
    ...") low, since neighbouring lines differ in their numbers."""
    tokens = _TOKEN.findall(text.lower())
    grams = [hash(g) for g in zip(*(tokens[i:] for i in range(n)), strict=False)]  # n-grams
    if len(grams) < 2:
        return 0.0
    return max(_most_repeated_share(grams, min(window, len(grams))) for window in windows)


def _most_repeated_share(grams: list[int], w: int) -> float:
    """Largest share of repeated items in any w consecutive items of grams (a sliding distinct count).

    Vectorised: an item at j is the first of its value in the window starting at s exactly when its previous
    occurrence lies before s, so it counts towards the windows s in (prev[j], j] within [j - w + 1, j];
    those ranges are added up with one cumulative sum."""
    g = np.asarray(grams, dtype=np.int64)
    n = len(g)
    order = np.argsort(g, kind="stable")
    same = g[order][1:] == g[order][:-1]
    prev = np.full(n, -1, dtype=np.int64)
    prev[order[1:][same]] = order[:-1][same]
    j = np.arange(n)
    starts = n - w + 1  # windows s = 0 .. n - w
    lo = np.maximum(prev + 1, j - w + 1)
    hi = np.minimum(j, starts - 1)
    ok = lo <= hi
    diff = np.bincount(lo[ok], minlength=starts + 1) - np.bincount(hi[ok] + 1, minlength=starts + 1)
    fewest = int(np.cumsum(diff)[:starts].min())
    return 1.0 - fewest / w


# --------------------------------------------------------------------------------------------------
# The per-row check


def _check_share(name: str, value: float) -> None:
    if not (isinstance(value, (int, float)) and 0.0 <= value <= 1.0):  # also rejects NaN
        raise DistillError(f"{name} must be between 0 and 1 (got {value!r})")


def check_format(
    row: dict,
    *,
    min_tokens: int = 0,
    max_tokens: int = 0,
    require_think: bool = False,
    check_language: bool = True,
    max_repetition: float = DEFAULT_MAX_REPETITION,
    max_foreign_share: float = 0.1,
) -> str:
    """'' when the row is a usable trace, else the first reason it is not (see the module docstring).

    min_tokens/max_tokens bound completion_tokens (0 disables a bound; a row without a token count is
    not length-checked); require_think rejects a reply without a think block (R1-style teachers);
    max_repetition bounds repetition_score (1 disables); max_foreign_share is the share of letters in
    scripts other than the prompt's that makes a trace "mixed"."""
    if min_tokens < 0 or max_tokens < 0:
        raise DistillError(f"--min-tokens/--max-tokens must be >= 0 (got {min_tokens}, {max_tokens})")
    if max_tokens and min_tokens > max_tokens:
        raise DistillError(f"--min-tokens ({min_tokens}) is larger than --max-tokens ({max_tokens})")
    _check_share("--max-repetition", max_repetition)
    _check_share("--max-foreign-share", max_foreign_share)

    if row.get("finish_reason") == "length" or row.get("truncated") is True:
        return "truncated"

    text = assistant_text(row)
    opens, closes = text.count("<think>"), text.count("</think>")
    if opens > 1 or closes > 1:
        return "format: several_think_blocks"
    if opens and not closes:
        return "format: unclosed_think"
    if closes and not opens:
        return "format: unopened_think"
    reasoning = ""
    if opens:
        start, end = text.index("<think>"), text.index("</think>")
        if end < start:
            return "format: misordered_think"
        if text[:start].strip():
            return "format: text_before_think"
        reasoning = text[start + len("<think>") : end]
    if require_think and not opens:
        return "format: missing_think"
    if require_think and not reasoning.strip():
        return "format: empty_think"
    answer = final_part(text) or ""
    if not answer.strip():
        return "format: empty_answer"

    tokens = row.get("completion_tokens")
    if isinstance(tokens, int) and not isinstance(tokens, bool):
        if min_tokens and tokens < min_tokens:
            return "length: too_short"
        if max_tokens and tokens > max_tokens:
            return "length: too_long"

    if max_repetition < 1.0 and repetition_score(text) > max_repetition:
        return "repetition: looping"

    if check_language:
        problem = language_problem(prompt_text(row), text, answer, max_foreign_share)
        if problem:
            return f"language: {problem}"
    return ""
