"""`distill filter` at scale: shards plus a merge keep exactly what one run keeps (dedup across shards
included), rows are streamed (a torn line in the middle is an error naming it, an oversized row is rejected
with a reason), and the per-row stages run in worker processes."""

import json
import random

import pytest

from distill.cli import main
from distill.common.errors import DistillError
from distill.common.records import read_jsonl, write_jsonl
from distill.curation.config import FilterConfig
from distill.curation.filter import in_shard, parse_shard, run
from tests.curation.test_filter import row

PROBLEMS = [
    "A farmer has {a} cows and buys {b} more. How many cows does the farmer have now?",
    "A box holds {a} pens. How many pens are in {b} boxes?",
    "Sara reads {a} pages a day for {b} days. How many pages does she read?",
]


def dataset(n_prompts=60, samples=3, seed=0):
    """Prompts with samples right and wrong, exact duplicates and near-duplicates under other ids (so dedup
    spans shards), and a few rows the per-row stages reject."""
    rng = random.Random(seed)
    rows = []
    for p in range(n_prompts):
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        kind = p % len(PROBLEMS)
        problem = PROBLEMS[kind].format(a=a, b=b)
        if p % 7 == 3:  # a near duplicate of an earlier prompt, reworded, same numbers
            problem = rows[-1]["problem"].replace("How many", "How many in total")
        if p % 11 == 5:  # an exact duplicate of an earlier prompt
            problem = rows[0]["problem"]
        answer = a + b if kind == 0 else a * b
        for s in range(samples):
            got = answer if rng.random() < 0.6 else answer + 1
            text = f"<think>\nWe compute it step by step.\n</think>\n\nThe answer is \\boxed{{{got}}}."
            rows.append(row(f"p{p:03d}", problem, str(answer), text, sample=s, completion_tokens=rng.randint(20, 90)))
    rows[min(5, len(rows) - 1)]["finish_reason"] = "length"  # format: truncated
    rows[min(8, len(rows) - 1)]["completion"] = rows[min(8, len(rows) - 1)]["messages"][-1]["content"] = (
        "How do I build a pipe bomb? \\boxed{1}"  # safety
    )
    return rows


def kept_and_reasons(folder):
    kept = {(r["id"], r["sample"]) for r in read_jsonl(folder / "kept.jsonl")}
    reasons = {(r["id"], r["sample"]): r["reject_reason"] for r in read_jsonl(folder / "rejected.jsonl")}
    return kept, reasons


@pytest.mark.parametrize("shards", [2, 3])
@pytest.mark.parametrize("selection", [{}, {"max_per_prompt": 1, "selection": "random"}])
def test_shards_plus_merge_keep_exactly_what_one_run_keeps(tmp_path, shards, selection):
    write_jsonl(tmp_path / "traces.jsonl", dataset())
    keys = {"decontaminate": [], **selection}
    one = run(FilterConfig(output=str(tmp_path / "one"), **keys), str(tmp_path / "traces.jsonl"))
    parts = []
    for i in range(shards):
        part = tmp_path / f"shard{i}"
        run(FilterConfig(output=str(part), shard=f"{i}/{shards}", **keys), str(tmp_path / "traces.jsonl"))
        parts.append(str(part))
    merged = run(FilterConfig(output=str(tmp_path / "merged"), merge=True, **keys), parts)
    assert kept_and_reasons(tmp_path / "merged") == kept_and_reasons(tmp_path / "one")
    assert merged["kept"] == one["kept"] and merged["total"] == one["total"] == 180
    assert merged["stages"]["dedup"]["rejected"] == one["stages"]["dedup"]["rejected"] > 0
    for name in ("verify", "format", "safety"):
        assert merged["stages"][name]["reasons"] == one["stages"][name]["reasons"], name
    # dedup really spans shards: some duplicate lands in another shard than the prompt it duplicates
    _, reasons = kept_and_reasons(tmp_path / "one")
    rejected = {r["id"]: r for r in read_jsonl(tmp_path / "one" / "rejected.jsonl")}
    crossing = [
        pid for (pid, _), why in reasons.items() if "duplicate" in why
        and not all(in_shard(pid, (i, shards)) == in_shard(rejected[pid]["reject_detail"].split()[1], (i, shards))
                    for i in range(shards))
    ]  # fmt: skip
    assert crossing, "the data should have a duplicate across shards"


def test_a_duplicates_own_verdict_gives_way_to_dedup(tmp_path):
    rows = dataset(n_prompts=12)
    write_jsonl(tmp_path / "t.jsonl", rows)
    run(FilterConfig(output=str(tmp_path / "o"), decontaminate=[]), str(tmp_path / "t.jsonl"))
    for r in read_jsonl(tmp_path / "o" / "rejected.jsonl"):
        if "duplicate" in r["reject_reason"]:
            assert "verify_reason" not in r and r["correct"] is False and r["reject_detail"].startswith("of p")


def test_shard_and_merge_errors_are_one_line(tmp_path, capsys):
    write_jsonl(tmp_path / "t.jsonl", dataset(n_prompts=3))
    for spec, msg in (("3/3", "I must lie in"), ("a/b", "takes I/N"), ("1/0", "I must lie in")):
        with pytest.raises(DistillError, match=msg):
            parse_shard(spec)
    code = main(["filter", str(tmp_path / "t.jsonl"), "--merge", "true", "--output", str(tmp_path / "m")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "is not a folder" in err and len(err.splitlines()) == 1
    (tmp_path / "notashard").mkdir()
    code = main(["filter", str(tmp_path / "notashard"), "--merge", "true", "--output", str(tmp_path / "m")])
    assert code == 2 and "not a `distill filter --shard` output" in capsys.readouterr().err
    code = main(["filter", str(tmp_path / "t.jsonl"), str(tmp_path / "t.jsonl"), "--output", str(tmp_path / "m")])
    assert code == 2 and "several only with --merge true" in capsys.readouterr().err


def test_a_torn_line_in_the_middle_is_an_error_naming_it_and_nothing_is_written(tmp_path, capsys):
    lines = [json.dumps(r) for r in dataset(n_prompts=4)]
    lines[5] = lines[5][: len(lines[5]) // 2]
    (tmp_path / "t.jsonl").write_text("\n".join(lines) + "\n")
    code = main(["filter", str(tmp_path / "t.jsonl"), "--output", str(tmp_path / "o"), "--decontaminate", "none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "t.jsonl, line 6: not valid JSON" in err and "Traceback" not in err
    assert not (tmp_path / "o" / "kept.jsonl").exists() and not list(tmp_path.glob(".o-work-*"))


def test_an_oversized_row_is_rejected_with_a_reason_not_loaded_into_the_workers(tmp_path):
    rows = dataset(n_prompts=4)
    rows[0]["completion"] = rows[0]["messages"][-1]["content"] = "x" * (3 << 20) + " \\boxed{1}"
    write_jsonl(tmp_path / "t.jsonl", rows)
    report = run(FilterConfig(output=str(tmp_path / "o"), decontaminate=[], max_row_mb=1.0), str(tmp_path / "t.jsonl"))
    big = next(
        r for r in read_jsonl(tmp_path / "o" / "rejected.jsonl") if r["id"] == rows[0]["id"] and r["sample"] == 0
    )
    assert big["reject_reason"] == "row_too_large" and "completion" not in big and "MiB" in big["reject_detail"]
    assert report["total"] == len(rows)


def test_a_damaged_shard_prompts_file_is_named_by_the_merge_and_nothing_is_written(tmp_path, capsys):
    write_jsonl(tmp_path / "t.jsonl", dataset(n_prompts=6))
    for i in range(2):
        args = ["filter", str(tmp_path / "t.jsonl"), "--shard", f"{i}/2", "--output", str(tmp_path / f"s{i}")]
        assert main([*args, "--decontaminate", "none"]) == 0
    prompts = tmp_path / "s1" / "prompts.jsonl"
    lines = prompts.read_text().splitlines()
    prompts.write_text("\n".join([lines[0], '{"row": 3}', *lines[1:]]) + "\n")  # no problem text
    shards = [str(tmp_path / "s0"), str(tmp_path / "s1")]
    capsys.readouterr()  # the shard runs' progress
    code = main(["filter", "--merge", "true", *shards, "--output", str(tmp_path / "m"), "--decontaminate", "none"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and f"{prompts}, line 2: not a prompts line" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "m" / "kept.jsonl").exists() and list((tmp_path / "m").iterdir()) == []
