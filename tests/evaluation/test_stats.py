"""`distill stats` on a hand-written fixture whose counts were worked out by hand, on fake filter and eval
folders, over training steps, with a real (tiny) tokenizer, and its error cases.

Hand counts for tests/data/stats_fixture/traces.jsonl (whitespace words; 12 rows, ids p1..p6 with two
samples each; levels 1/2/3 for p1-p2/p3-p4/p5-p6; p1, p3, p5 math, the others science):

  row     thinking  answer  reflection words                 correct  finish
  p1 s0    9         4      wait, check                      yes      stop
  p1 s1    7         1      -                                yes      stop
  p2 s0   12         6      but, verify (reasoning field)    yes      stop
  p2 s1   11         1      however, wrong, wait             no       stop
  p3 s0   16         -      wait, retry (never closed)       no       length
  p3 s1   15         4      check                            yes      stop
  p4 s0   19         3      error, error                     no       stop
  p4 s1   15         -      but, evaluate (reasoning field)  no       length
  p5 s0   18         1      verify, mistake                  yes      stop
  p5 s1   10         -      wait, wait, wrong                no       length
  p6 s0    -        11      but, check (no think block)      no       stop
  p6 s1    7         1      verify (only </think>)           yes      stop

thinking: 11 rows, sum 139, sorted 7 7 9 10 11 12 15 15 16 18 19: median 12, p90 (rank 9.0) 18, max 19.
answer: 9 rows, sum 32, sorted 1 1 1 1 3 4 4 6 11: median 3, p90 (rank 7.2) 6 + 0.2 * 5 = 7, max 11.
completion_tokens: 30 20 40 35 64 45 50 64 48 64 25 22: sum 507, median (40 + 45) / 2, p90 64.
Reflection: 22 words in 139 + 32 = 171 words. Accuracy: L1 3/4, L2 1/4, L3 2/4; math 4/6, science 2/6.
Truncated: 3/12. Per prompt: p1 2/2, p4 0/2, the rest 1/2: pass@1 0.5, pass@2 5/6.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from distill.common.config import build
from distill.common.errors import DistillError
from distill.evaluation.config import StatsConfig, load_reflection_words
from distill.evaluation.stats import TokenCounter, distribution, find_source, run, trace_parts

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "stats_fixture"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
R1_WORDS = ["wait", "mistake", "however", "but", "retry", "error", "verify", "wrong", "evaluate", "check"]


def assert_png(path: Path) -> None:
    """The file exists, is a PNG by its signature, and matplotlib reads it back as a non-empty image."""
    import matplotlib.image

    assert path.is_file(), path
    data = path.read_bytes()
    assert len(data) > 1000 and data[:8] == PNG_SIGNATURE, path
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100


@pytest.fixture(scope="module")
def fixture_stats(tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("stats")
    return run(StatsConfig(output=str(out)), [str(FIXTURE)]), out


def test_default_reflection_words_are_the_r1_list() -> None:
    assert load_reflection_words() == R1_WORDS
    assert StatsConfig().reflection_words == R1_WORDS


def test_fixture_lengths(fixture_stats) -> None:
    stats, _ = fixture_stats
    (entry,) = stats["inputs"]
    assert entry["kind"] == "traces" and entry["rows"] == 12 and entry["label"] == "stats_fixture"
    lengths = entry["lengths"]
    assert lengths["thinking"] == {"count": 11, "mean": pytest.approx(139 / 11), "median": 12, "p90": 18, "max": 19}
    assert lengths["answer"] == {
        "count": 9,
        "mean": pytest.approx(32 / 9),
        "median": 3,
        "p90": pytest.approx(7),
        "max": 11,
    }
    assert lengths["completion_tokens"] == {
        "count": 12,
        "mean": pytest.approx(507 / 12),
        "median": 42.5,
        "p90": 64,
        "max": 64,
    }


def test_fixture_reflection_words(fixture_stats) -> None:
    stats, _ = fixture_stats
    reflection = stats["inputs"][0]["reflection"]
    expected = {
        "wait": 5,
        "mistake": 1,
        "however": 1,
        "but": 3,
        "retry": 1,
        "error": 2,
        "verify": 3,
        "wrong": 2,
        "evaluate": 1,
        "check": 3,
    }
    assert {w: v["count"] for w, v in reflection["words"].items()} == expected
    assert reflection["tokens"] == 171 and reflection["total"] == 22
    assert reflection["per_1k"] == pytest.approx(22_000 / 171)
    assert reflection["words"]["wait"]["per_1k"] == pytest.approx(5_000 / 171)


def test_fixture_accuracy_pass_rates_and_truncation(fixture_stats) -> None:
    stats, _ = fixture_stats
    entry = stats["inputs"][0]
    acc = entry["accuracy"]
    assert (acc["verified"], acc["correct"], acc["overall"]) == (12, 6, 0.5)
    assert {k: (v["correct"], v["n"]) for k, v in acc["by_level"].items()} == {"1": (3, 4), "2": (1, 4), "3": (2, 4)}
    assert acc["by_level"]["1"]["accuracy"] == 0.75
    assert {k: (v["correct"], v["n"]) for k, v in acc["by_domain"].items()} == {"math": (4, 6), "science": (2, 6)}
    assert entry["truncation"] == {"rows": 12, "truncated": 3, "rate": 0.25}
    rates = entry["pass_rates"]
    assert (rates["prompts"], rates["all_correct"], rates["none_correct"]) == (6, 1, 1)
    assert rates["pass@1"] == 0.5
    # per-prompt rates 1, .5, .5, 0, .5, .5: sample variance 0.5 / 5
    assert rates["pass@1_stderr"] == pytest.approx(math.sqrt(0.1) / math.sqrt(6))
    assert rates["pass@k"]["2"]["mean"] == pytest.approx(5 / 6)
    assert "4" not in rates["pass@k"]  # only 2 samples per prompt


def test_fixture_outputs_and_plots(fixture_stats) -> None:
    stats, out = fixture_stats
    names = {
        "stats_fixture-thinking_length.png",
        "stats_fixture-answer_length.png",
        "stats_fixture-reflection_words.png",
        "stats_fixture-accuracy_by_level.png",
    }
    assert set(stats["plots"]) == names
    assert stats["over_steps"] is None
    for name in names:
        assert_png(out / name)
    saved = json.loads((out / "stats.json").read_text())
    assert saved["inputs"][0]["reflection"]["total"] == 22
    report = (out / "report.md").read_text()
    for name in names:
        assert f"]({name})" in report
    assert "| wait | 5 |" in report and "| 2 | 4 | 1 | 0.250 |" in report
    assert "stage: stats" in (out / "distill_config.yaml").read_text()


def test_trace_parts() -> None:
    assert trace_parts({"completion": "<think>\nA\n</think>\n\nB"}) == ("\nA\n", "\n\nB")
    assert trace_parts({"completion": "A\n</think>B"}) == ("A\n", "B")  # <think> was in the prompt
    assert trace_parts({"completion": "<think>\nA never closed"}) == ("\nA never closed", None)
    assert trace_parts({"completion": "plain answer"}) == (None, "plain answer")
    assert trace_parts({"completion": "B", "reasoning": "A"}) == ("A", "B")
    assert trace_parts({"completion": "", "reasoning": "A", "finish_reason": "length"}) == ("A", None)
    assert trace_parts({"completion": "", "reasoning": "A", "finish_reason": "stop"}) == ("A", "")
    # reopened after the last close: a trace that started thinking again and was cut off
    assert trace_parts({"completion": "<think>A</think>B<think>C"})[1] is None


def test_reflection_words_are_whole_words_case_insensitive(tmp_path: Path) -> None:
    text = "Wait, WAIT wait. waiting awaits Butter but BUT checked check-in re-check\nlet me\n  check"
    (tmp_path / "traces.jsonl").write_text(json.dumps({"id": "a", "completion": text}) + "\n")
    cfg = StatsConfig(output=str(tmp_path / "out"), reflection_words=["wait", "but", "check", "let me check"])
    words = run(cfg, [str(tmp_path)])["inputs"][0]["reflection"]["words"]
    assert {w: v["count"] for w, v in words.items()} == {"wait": 3, "but": 2, "check": 3, "let me check": 1}


def test_distribution_empty_and_single() -> None:
    assert distribution([]) == {"count": 0, "mean": None, "median": None, "p90": None, "max": None}
    assert distribution([5]) == {"count": 1, "mean": 5, "median": 5, "p90": 5, "max": 5}
    assert distribution([1, 2, 3, 4])["median"] == 2.5


def test_filter_folder(tmp_path: Path) -> None:
    rows = [json.loads(line) for line in (FIXTURE / "traces.jsonl").read_text().splitlines()]
    kept = [r for r in rows if r["correct"]]
    rejected = [{**r, "reject_reason": r["verify_reason"]} for r in rows if not r["correct"]]
    # Rejected before verification: `distill filter` defaults correct to false, with no verify_reason.
    dup = {k: v for k, v in rows[0].items() if k not in ("correct", "verify_reason")}
    rejected.append({**dup, "sample": 2, "correct": False, "reject_reason": "duplicate"})
    folder = tmp_path / "filtered"
    folder.mkdir()
    (folder / "kept.jsonl").write_text("".join(json.dumps(r) + "\n" for r in kept))
    (folder / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rejected))
    (folder / "report.json").write_text("{}")
    entry = run(StatsConfig(output=str(tmp_path / "out")), [str(folder)])["inputs"][0]
    assert entry["kind"] == "filter" and entry["rows"] == 13
    assert entry["filter"] == {
        "kept": 6,
        "rejected": 7,
        "reject_reasons": {"wrong_answer": 3, "truncated": 3, "duplicate": 1},
    }
    assert (entry["accuracy"]["verified"], entry["accuracy"]["correct"]) == (12, 6)  # the duplicate is left out
    assert entry["truncation"]["truncated"] == 3


def test_single_trace_file_input(tmp_path: Path) -> None:
    path = tmp_path / "run1.jsonl"
    shutil.copy(FIXTURE / "traces.jsonl", path)
    with open(path, "a") as f:
        f.write('{"id": "torn", "completion": "half a li')  # a writer killed mid-line
    entry = run(StatsConfig(output=str(tmp_path / "out")), [str(path)])["inputs"][0]
    assert (entry["label"], entry["kind"], entry["rows"]) == ("run1", "traces", 12)


# --------------------------------------------------------------------------------------------------
# Eval folders over training steps


def make_eval_dir(folder: Path, correct: list[bool], waits: int, step: int | None = None, model: str = "m") -> Path:
    """A fake `distill eval` output: 4 problems (levels 1, 1, 2, 2); each thinking holds `waits` times 'wait'."""
    folder.mkdir(parents=True)
    rows = []
    for i, ok in enumerate(correct):
        thinking = " ".join(["wait"] * waits + ["so"] * (10 - waits))  # 10 words
        rows.append(
            {
                "id": f"q{i}",
                "problem": f"problem {i}",
                "answer": "1",
                "domain": "math",
                "level": 1 + i // 2,
                "completion": f"<think>\n{thinking}\n</think>\n\n\\boxed{{{1 if ok else 2}}}",
                "finish_reason": "stop" if i < 3 else "length",
                "completion_tokens": 30,
                "correct": ok,
                "verify_reason": "correct" if ok else "wrong_answer",
            }
        )
    (folder / "samples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {"model": model, "tasks": "builtin", "n": 4, "correct": sum(correct), "pass@1": sum(correct) / 4}
    if step is not None:
        results["step"] = step
    (folder / "results.json").write_text(json.dumps(results))
    return folder


STEP_PLOTS = {
    "accuracy_over_steps.png",
    "reflection_over_steps.png",
    "length_over_steps.png",
    "truncation_over_steps.png",
}


def test_eval_dirs_over_steps(tmp_path: Path) -> None:
    dirs = [
        make_eval_dir(tmp_path / "eval-a", [True, False, False, False], 1),
        make_eval_dir(tmp_path / "eval-b", [True, True, False, False], 2),
        make_eval_dir(tmp_path / "eval-c", [True, True, True, False], 3),
    ]
    out = tmp_path / "out"
    # inputs given out of step order: the plots sort by step
    stats = run(StatsConfig(output=str(out), steps=[300, 100, 200]), [str(dirs[2]), str(dirs[0]), str(dirs[1])])
    assert [e["kind"] for e in stats["inputs"]] == ["eval"] * 3
    assert stats["inputs"][0]["results"]["pass@1"] == 0.75
    o = stats["over_steps"]
    assert o["steps"] == [100, 200, 300] and o["labels"] == ["eval-a", "eval-b", "eval-c"]
    assert o["accuracy"] == [0.25, 0.5, 0.75]
    assert o["pass@1"] == [0.25, 0.5, 0.75]
    assert o["accuracy_by_level"] == {"1": [0.5, 1.0, 1.0], "2": [0.0, 0.0, 0.5]}
    # 4 rows of 10 thinking words + 1 answer word: 44 words; `waits` per row
    assert o["reflection_words_per_1k"]["wait"] == pytest.approx([4000 / 44, 8000 / 44, 12000 / 44])
    assert o["reflection_per_1k"] == pytest.approx([4000 / 44, 8000 / 44, 12000 / 44])
    assert o["thinking_mean"] == [10, 10, 10] and o["truncation_rate"] == [0.25, 0.25, 0.25]
    assert set(o["plots"]) == STEP_PLOTS
    for name in stats["plots"]:
        assert_png(out / name)
    assert len(stats["plots"]) == 3 * 4 + 4
    report = (out / "report.md").read_text()
    assert "## Over training steps" in report and "](accuracy_over_steps.png)" in report


def test_steps_found_in_folder_names_and_results(tmp_path: Path) -> None:
    a = make_eval_dir(tmp_path / "student" / "checkpoint-100" / "eval", [False] * 4, 0)
    b = make_eval_dir(tmp_path / "eval-b", [True] * 4, 1, step=250)
    c = make_eval_dir(tmp_path / "eval-c", [True] * 4, 1, model="runs/student/checkpoint-400")
    d = make_eval_dir(tmp_path / "eval-d", [True] * 4, 1)  # no step anywhere
    stats = run(StatsConfig(output=str(tmp_path / "out")), [str(a), str(b), str(c), str(d)])
    assert [e["step"] for e in stats["inputs"]] == [100, 250, 400, None]
    o = stats["over_steps"]
    assert o["steps"] == [100, 250, 400] and o["without_step"] == ["eval-d"]
    for name in o["plots"]:
        assert_png(tmp_path / "out" / name)


# --------------------------------------------------------------------------------------------------
# Real tokens


def make_tokenizer(folder: Path) -> Path:
    """A tiny word-level tokenizer: words and runs of punctuation are single tokens."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[UNK]": 0, "ab": 1, "cd": 2, "ef": 3, ",": 4, "x": 5, "y": 6}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]").save_pretrained(str(folder))
    return folder


def test_tokenizer_counts_use_completion_tokens_as_total(tmp_path: Path) -> None:
    counter = TokenCounter(str(make_tokenizer(tmp_path / "tok")))
    rows = [
        {"completion": "<think>\nab cd, ef\n</think>\n\nx y", "completion_tokens": 20},  # answer 2, thinking the rest
        {"completion": "<think>\nab cd, ef\n</think>\n\nx y"},  # no exact total: both tokenized
        {"completion": "<think>\nab cd", "completion_tokens": 9, "finish_reason": "length"},  # thinking only
        {"completion": "x y x", "completion_tokens": 3},  # answer only
        {"completion": "ab, cd", "completion_tokens": True},  # not a count: tokenized
    ]
    counts = counter.split(rows, [trace_parts(r) for r in rows])
    assert counts == [(18, 2), (4, 2), (9, None), (None, 3), (None, 3)]
    stats = run(
        StatsConfig(output=str(tmp_path / "out"), tokenizer=str(tmp_path / "tok")), [str(_write(tmp_path, rows))]
    )
    assert stats["token_unit"].startswith("tokens")
    assert stats["inputs"][0]["lengths"]["thinking"]["max"] == 18
    # whitespace words ignore completion_tokens (another unit)
    assert TokenCounter("").split(rows[:1], [trace_parts(rows[0])]) == [(3, 2)]


def _write(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "traces.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# --------------------------------------------------------------------------------------------------
# Errors and config


def test_folder_without_recognised_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hi")
    with pytest.raises(DistillError, match=rf"stats input {tmp_path} holds no recognised file: expected traces.jsonl"):
        run(StatsConfig(output=str(tmp_path / "out")), [str(tmp_path)])
    with pytest.raises(DistillError, match="holds no recognised file"):
        find_source(str(tmp_path))


def test_errors(tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    with pytest.raises(DistillError, match="does not exist"):
        run(StatsConfig(output=out), [str(tmp_path / "missing")])
    with pytest.raises(DistillError, match="at least one input"):
        run(StatsConfig(output=out), [])
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "traces.jsonl").write_text("")
    with pytest.raises(DistillError, match=f"stats input {empty} has no rows"):
        run(StatsConfig(output=out), [str(empty)])
    notrace = tmp_path / "notrace.jsonl"
    notrace.write_text('{"id": 1, "text": "x"}\n')
    with pytest.raises(DistillError, match="no 'completion' text"):
        run(StatsConfig(output=out), [str(notrace)])
    bad = make_eval_dir(tmp_path / "bad", [True] * 4, 1)
    (bad / "results.json").write_text("{not json")
    with pytest.raises(DistillError, match="results.json: not valid JSON"):
        run(StatsConfig(output=out), [str(bad)])
    a = make_eval_dir(tmp_path / "a", [True] * 4, 1)
    b = make_eval_dir(tmp_path / "b", [True] * 4, 1)
    with pytest.raises(DistillError, match="--steps has 3 values for 2 inputs"):
        run(StatsConfig(output=out, steps=[1, 2, 3]), [str(a), str(b)])
    with pytest.raises(DistillError, match="both have step 5"):
        run(StatsConfig(output=out, steps=[5, 5]), [str(a), str(b)])
    with pytest.raises(DistillError, match="reflection word '!!' has no letters"):
        StatsConfig(reflection_words=["wait", "!!"])
    with pytest.raises(DistillError, match="pass_k"):
        StatsConfig(pass_k=[0])
    with pytest.raises(DistillError, match="cannot load a tokenizer"):
        TokenCounter(str(empty))


def test_config_from_a_recipe_mapping() -> None:
    cfg = build(StatsConfig, {"steps": "", "reflection_words": ["Wait"], "output": "x"}, source="recipe")
    assert cfg.steps == [] and cfg.reflection_words == ["Wait"]
    cfg = build(StatsConfig, {"steps": "100,200"}, source="recipe")
    assert cfg.steps == [100, 200]
    with pytest.raises(DistillError, match="unknown key 'bins'"):
        build(StatsConfig, {"bins": 3}, source="recipe")


def test_reflection_word_file(tmp_path: Path) -> None:
    path = tmp_path / "words.txt"
    path.write_text("# comment\nwait\n\nlet me check  # trailing comment\n")
    assert load_reflection_words(path) == ["wait", "let me check"]
    with pytest.raises(DistillError, match="reflection word file .* does not exist"):
        load_reflection_words(tmp_path / "missing.txt")
