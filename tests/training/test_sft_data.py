"""SFT's data as memory-mapped Arrow (distill.training.sft_data.sft_dataset): the rows and their checks, token
lengths and the length policy, --data mixtures (syntax, counts, proportions, the seed), the cache a second
run reads, and a tiny `distill train` on a mixture (model tier)."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import yaml

from distill.cli import build_parser, main
from distill.common import config as C
from distill.common.errors import DistillError
from distill.common.records import write_jsonl
from distill.common.resources import recipe_for
from distill.training import base, modelcard, onpolicy, sft_data, train
from distill.training.config import TrainConfig, data_sources

ROOT = Path(__file__).resolve().parents[2]


def row(tag: str, words: int = 3, system: bool = False) -> dict:
    msgs = [{"role": "system", "content": "Think first."}] if system else []
    msgs += [
        {"role": "user", "content": f"Question {tag}?"},
        {"role": "assistant", "content": f"<think>\n{' '.join(['so'] * words)}\n</think>\nAnswer {tag}."},
    ]
    return {"id": tag, "sample": 0, "messages": msgs, "answer": 1 if tag.endswith("1") else "x"}  # mixed types


def source(folder: Path, tag: str, n: int, **kw) -> Path:
    write_jsonl(folder / "kept.jsonl", [row(f"{tag}{i}", **kw) for i in range(n)])
    return folder


def tags(ds) -> list[str]:
    """Each row's tag ('A12'), read back from its question."""
    return [p[0 if p[0]["role"] == "user" else 1]["content"].split()[1].rstrip("?") for p in ds["prompt"]]


def arrow_files(cache: Path) -> set[Path]:
    return set(cache.rglob("*.arrow"))


@pytest.fixture
def tokenizer(student_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(student_path)


def prepare(tokenizer, tmp_path, data, max_length=1024, seed=0, **kw):
    cfg = TrainConfig(data=data, dataset_cache=str(tmp_path / "cache"), **kw)
    return sft_data.sft_dataset(cfg, tokenizer, max_length, seed)


def run_cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out.strip(), out.err.strip()


def cfg_and_args(argv):
    args = build_parser().parse_args(["train", *argv])
    return C.from_args(TrainConfig, args, base=C.load_yaml(recipe_for("tiny")), extra=train.sft_fields()), args


# --------------------------------------------------------------------------------------------------
# --data: the syntax, one path, saved configs


def test_data_entries_parse_as_paths_counts_and_weights():
    a, b = data_sources(["runs/math:0.7", "runs/general:.3"])
    assert (a.path, a.weight, a.count, b.path, b.weight) == ("runs/math", 0.7, 0, "runs/general", 0.3)
    a, b, c = data_sources(["runs/math:600000", "runs/general:200000", "runs/x:y/kept.jsonl"])
    assert (a.count, b.count, c.path, c.count) == (600000, 200000, "runs/x:y/kept.jsonl", 0)  # ':' in a path
    assert [s.count for s in data_sources(["runs/a", "runs/b:10"])] == [0, 10]  # a bare path: all its rows
    assert data_sources(["a:1e3", "b:2.5"])[0].weight == 1000.0  # an exponent makes a weight, as a dot does


@pytest.mark.parametrize(
    ("data", "needles"),
    [
        (["runs/a:0"], ["--data runs/a:0:", "a count of 0 rows"]),
        (["runs/a:-3"], ["--data runs/a:-3:", "a weight must be a number above 0"]),
        (["runs/a:nan", "runs/b:0.5"], ["--data runs/a:nan:", "above 0"]),
        (["runs/a:"], ["--data runs/a:", "nothing after ':'"]),
        ([":5"], ["--data ':5'", "no path"]),
        (["runs/a:0.7"], ["--data runs/a:0.7:", "a weight shares rows among several sources"]),
        (["runs/a:0.7", "runs/b:100"], ["--data runs/b:100:", "a count among weighted sources"]),
        (["runs/a:0.7", "runs/b"], ["--data runs/b:", "no weight among weighted sources"]),
        (["runs/a:10", "runs/a/:20"], ["--data runs/a/:20:", "already a source (runs/a:10)"]),
        (["builtin", "runs/a"], ["--data builtin", "do not mix"]),
        (["runs/a:10", "runs/b:5", "--method", "logit-kd"], ["a mixture trains with --method sft", "logit-kd"]),
        (["runs/a:10", "--rehearse", "true"], ["--rehearse takes one source"]),
        (["runs/a:10", "runs/b", "--launcher", "ddp"], ["--launcher", "--print-launch true"]),
    ],
)
def test_bad_mixture_specs_are_one_line_errors(data, needles, capsys):
    code, _, err = run_cli(["train", "--data", *data], capsys)
    assert code == 2 and len(err.splitlines()) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_one_path_stays_a_string_and_a_mixture_a_list_on_the_command_line_and_in_saved_configs(tmp_path):
    cfg, _ = cfg_and_args(["--data", "runs/filtered"])
    assert cfg.data == "runs/filtered"  # what logit-kd, onpolicy, --rehearse and the launcher read
    assert C.build(TrainConfig, {"data": ["runs/x"]}).data == "runs/x" and TrainConfig().data.endswith("kept.jsonl")
    C.save(cfg, tmp_path / "one")
    assert yaml.safe_load((tmp_path / "one" / C.CONFIG_FILENAME).read_text())["data"] == "runs/filtered"
    again, _ = cfg_and_args(["--config", str(tmp_path / "one" / C.CONFIG_FILENAME)])
    assert again.data == "runs/filtered"

    mix, _ = cfg_and_args(["--data", "runs/math:0.7", "runs/general:0.3"])
    assert mix.data == ["runs/math:0.7", "runs/general:0.3"]
    C.save(mix, tmp_path / "mix")
    assert yaml.safe_load((tmp_path / "mix" / C.CONFIG_FILENAME).read_text())["data"] == mix.data
    again, _ = cfg_and_args(["--config", str(tmp_path / "mix" / C.CONFIG_FILENAME)])
    assert again.data == mix.data
    assert cfg_and_args(["--set", "data=[runs/a:10, runs/b:5]"])[0].data == ["runs/a:10", "runs/b:5"]
    recipe = tmp_path / "r.yaml"
    recipe.write_text("data: runs/one\n")
    assert cfg_and_args(["--config", str(recipe)])[0].data == "runs/one"


def test_print_launch_carries_a_mixture(capsys, tmp_path):
    argv = ["train", "--launcher", "ddp", "--num-gpus", "2", "--print-launch", "true", "--output", str(tmp_path / "s")]
    code, out, err = run_cli([*argv, "--data", "runs/a:0.7", "runs/b:0.3"], capsys)
    assert code == 0, err
    launched = out.split("--config ", 1)[1].strip()
    assert yaml.safe_load(Path(launched).read_text())["data"] == ["runs/a:0.7", "runs/b:0.3"]


# --------------------------------------------------------------------------------------------------
# The Arrow rows: checked like load_sft_rows, in file order


@pytest.mark.parametrize("shard_bytes", [32 << 20, 700])  # one process; several processes on byte ranges
def test_arrow_rows_are_the_checked_pairs_in_file_order(tmp_path, monkeypatch, shard_bytes):
    monkeypatch.setattr(sft_data, "SHARD_BYTES", shard_bytes)
    src = source(tmp_path / "a", "A", 40, system=True)
    ds = sft_data.load_kept(str(src), tmp_path / "cache", num_proc=3)
    want = base.load_sft_rows(src)
    assert len(ds) == 40 and ds.column_names == ["prompt", "completion"]
    assert [ds[i] for i in range(len(ds))] == want
    assert len(sft_data.load_kept(str(src), tmp_path / "cache", num_proc=3, max_examples=5)) == 5


@pytest.mark.parametrize("shard_bytes", [32 << 20, 300])
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"messages": [{"role": "user", "content": "q"}]}, "row 7: 'messages' must be a list of at least"),
        ({"messages": [{"role": "user", "content": "q"}, {"role": "user", "content": "a"}]}, "row 7: the last message"),
        ({"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "a"}]}, "row 7: each message"),
        ("{not json", "line 7: not valid JSON"),
    ],
)
def test_bad_rows_are_errors_naming_file_and_row(tmp_path, monkeypatch, shard_bytes, bad, message):
    monkeypatch.setattr(sft_data, "SHARD_BYTES", shard_bytes)
    lines = [json.dumps(row(f"A{i}")) for i in range(12)]
    lines[6] = bad if isinstance(bad, str) else json.dumps(bad)
    file = tmp_path / "kept.jsonl"
    file.write_text("\n".join(lines) + "\n")
    with pytest.raises(DistillError, match="^" + str(file).replace(".", r"\.") + ", " + message):
        sft_data.load_kept(str(tmp_path), tmp_path / "cache", num_proc=2)
    with pytest.raises(DistillError, match=message):  # load_sft_rows (logit-kd, the rehearsal) says the same
        base.load_sft_rows(tmp_path)


def test_an_empty_or_missing_file_says_so(tmp_path):
    (tmp_path / "kept.jsonl").write_text("")
    with pytest.raises(DistillError, match="no training rows"):
        sft_data.load_kept(str(tmp_path), tmp_path / "cache", num_proc=1)
    with pytest.raises(DistillError, match="does not exist"):
        sft_data.load_kept(str(tmp_path / "none.jsonl"), tmp_path / "cache", num_proc=1)


# --------------------------------------------------------------------------------------------------
# Token lengths, the length policy, mixtures


def test_token_lengths_are_those_trl_trains_on(tokenizer, tmp_path):
    write_jsonl(tmp_path / "a" / "kept.jsonl", [row("A1", 5), row("A2", 50, system=True), row("A3", 500)])
    data = prepare(tokenizer, tmp_path, str(tmp_path / "a"))
    want = [len(base.supervised_example(tokenizer, r)[0]) for r in base.load_sft_rows(tmp_path / "a")]
    assert data.dataset["length"][:] == want and data.mixture is None
    assert data.lengths.summary()["tokens"]["max"] == max(want)


def test_drop_system_prompt_trains_without_the_system_turn_everywhere_rows_are_read(tokenizer, tmp_path):
    rows = [row("A1", 5, system=True), row("A2", 5), row("A3", 50, system=True)]
    write_jsonl(tmp_path / "a" / "kept.jsonl", rows)
    kept = prepare(tokenizer, tmp_path, str(tmp_path / "a"))
    assert [p[0]["role"] for p in kept.dataset["prompt"]] == ["system", "user", "system"]
    assert base.system_prompt_of(kept.dataset) == "Think first."  # what eval would ask the student with

    dropped = prepare(tokenizer, tmp_path, str(tmp_path / "a"), drop_system_prompt=True)
    assert [[m["role"] for m in p] for p in dropped.dataset["prompt"]] == [["user"]] * 3
    assert base.system_prompt_of(dropped.dataset) == ""  # eval asks the trained student without one
    plain = [{**r, "messages": [m for m in r["messages"] if m["role"] != "system"]} for r in rows]
    want = [len(base.supervised_example(tokenizer, r)[0]) for r in base.load_sft_rows(tmp_path / "a", drop_system=True)]
    write_jsonl(tmp_path / "b" / "kept.jsonl", plain)
    assert (
        dropped.dataset["length"][:] == want == prepare(tokenizer, tmp_path, str(tmp_path / "b")).dataset["length"][:]
    )
    assert dropped.dataset["length"][0] != kept.dataset["length"][0]  # (SmolLM2's template adds its own default)
    mixed = prepare(tokenizer, tmp_path, [f"{tmp_path / 'a'}:3", f"{tmp_path / 'b'}:3"], drop_system_prompt=True)
    assert all(m["role"] != "system" for p in mixed.dataset["prompt"] for m in p)

    assert [m["role"] for m in base.load_sft_rows(tmp_path / "a")[0]["prompt"]] == ["system", "user"]
    cfg = TrainConfig(data=str(tmp_path / "a"), drop_system_prompt=True)
    assert all(len(r["prompt"]) == 1 for r in onpolicy.load_prompt_rows(cfg))
    assert [len(r["prompt"]) for r in onpolicy.load_prompt_rows(TrainConfig(data=str(tmp_path / "a")))] == [2, 1, 2]


def test_the_length_policy_is_a_filter_and_applies_before_the_mixture(tokenizer, tmp_path, capsys):
    write_jsonl(tmp_path / "a" / "kept.jsonl", [row(f"A{i}", 400 if i % 4 == 0 else 3) for i in range(20)])
    source(tmp_path / "b", "B", 10)
    data = prepare(tokenizer, tmp_path, str(tmp_path / "a"), max_length=200)
    summary = data.lengths.summary()
    assert len(data.dataset) == 15 and summary["rows"] == 20 and summary["rows_over_max_length"] == 5
    assert (
        summary["rows_kept"] == 15 and "5 of 20 rows (25.0%) are longer than max_length 200" in capsys.readouterr().out
    )
    kept = prepare(tokenizer, tmp_path, str(tmp_path / "a"), max_length=200, truncation="keep")
    assert len(kept.dataset) == 20
    with pytest.raises(DistillError, match="5 of 20 rows are longer than max_length 200"):
        prepare(tokenizer, tmp_path, str(tmp_path / "a"), max_length=200, truncation="error")

    mixed = prepare(tokenizer, tmp_path, [f"{tmp_path / 'a'}:15", f"{tmp_path / 'b'}:10"], max_length=200)
    assert Counter(t[0] for t in tags(mixed.dataset)) == {"A": 15, "B": 10}  # counted after dropping
    assert mixed.mixture["sources"][0]["rows_over_max_length"] == 5
    with pytest.raises(DistillError, match=r"a:16: asks for 16 rows and .* has 15 after dropping 5 longer"):
        prepare(tokenizer, tmp_path, [f"{tmp_path / 'a'}:16", f"{tmp_path / 'b'}:10"], max_length=200)


def test_a_mixture_takes_its_counts_and_proportions_reproducibly(tokenizer, tmp_path):
    a, b = source(tmp_path / "a", "A", 100), source(tmp_path / "b", "B", 40)

    counts = prepare(tokenizer, tmp_path, [f"{a}:30", f"{b}:10"])
    got = tags(counts.dataset)
    assert Counter(t[0] for t in got) == {"A": 30, "B": 10} and len(set(got)) == 40
    record = counts.mixture
    assert record["seed"] == 0 and record["rows"] == 40
    assert [(s["data"], s["count"], s["rows_available"], s["rows_taken"], s["share"]) for s in record["sources"]] == [
        (f"{a}:30", 30, 100, 30, 0.75),
        (f"{b}:10", 10, 40, 10, 0.25),
    ]
    assert got != sorted(got, key=lambda t: (t[0], int(t[1:])))  # the sources are shuffled together

    assert tags(prepare(tokenizer, tmp_path, [f"{a}:30", f"{b}:10"]).dataset) == got  # same seed, same rows
    other = tags(prepare(tokenizer, tmp_path, [f"{a}:30", f"{b}:10"], seed=1).dataset)
    assert other != got and Counter(t[0] for t in other) == {"A": 30, "B": 10}

    # weights: as many rows as the sources give without repeating one (A binds: 100 / 0.75 = 133 rows)
    weights = prepare(tokenizer, tmp_path, [f"{a}:0.75", f"{b}:0.25"])
    assert Counter(t[0] for t in tags(weights.dataset)) == {"A": 100, "B": 33}
    assert [s["weight"] for s in weights.mixture["sources"]] == [0.75, 0.25]
    capped = prepare(tokenizer, tmp_path, [f"{a}:0.75", f"{b}:0.25"], max_examples=20)
    assert Counter(t[0] for t in tags(capped.dataset)) == {"A": 15, "B": 5}

    whole = prepare(tokenizer, tmp_path, [str(a), f"{b}:10"])  # a bare path: all its rows
    assert Counter(t[0] for t in tags(whole.dataset)) == {"A": 100, "B": 10}
    assert whole.mixture["sources"][0]["count"] == "all"
    sample = prepare(tokenizer, tmp_path, f"{a}:7")  # one source with a count: a seeded sample of it
    assert len(sample.dataset) == 7 and sample.mixture["sources"][0]["rows_taken"] == 7


def test_a_word_after_the_colon_is_named_when_the_path_before_it_exists(tokenizer, tmp_path):
    a = source(tmp_path / "a", "A", 3)
    with pytest.raises(DistillError, match=r"a:lots: 'lots' after ':' is neither a row count .* nor a weight"):
        prepare(tokenizer, tmp_path, [f"{a}:lots", str(a) + "/kept.jsonl:2"])
    with pytest.raises(DistillError, match=r"kept\.jsonl:2: .* is already a source \(.*a:1\)"):
        prepare(tokenizer, tmp_path, [f"{a}:1", str(a) + "/kept.jsonl:2"])  # one file, spelled two ways


def test_a_second_preparation_reads_every_step_from_the_cache(tokenizer, tmp_path):
    a, b = tmp_path / "a", source(tmp_path / "b", "B", 30)
    write_jsonl(a / "kept.jsonl", [row(f"A{i}", 300 if i % 5 == 0 else 3) for i in range(60)])
    spec = [f"{a}:0.5", f"{b}:0.5"]
    first = prepare(tokenizer, tmp_path, spec, max_length=200)  # load, lengths, filter, shuffles: all cached
    assert first.mixture["sources"][0]["rows_over_max_length"] == 12
    files = arrow_files(tmp_path / "cache")
    second = prepare(tokenizer, tmp_path, spec, max_length=200)
    assert arrow_files(tmp_path / "cache") == files  # nothing computed again
    assert second.dataset._fingerprint == first.dataset._fingerprint and tags(second.dataset) == tags(first.dataset)
    write_jsonl(a / "kept.jsonl", [row(f"A{i}") for i in range(61)])  # a new version of a file is read again
    os.utime(a / "kept.jsonl", ns=(1, 1))
    assert len(prepare(tokenizer, tmp_path, [str(a)]).dataset) == 61


# --------------------------------------------------------------------------------------------------
# `distill train` on Arrow data (model tier)


@pytest.mark.model
def test_distill_train_on_a_mixture_records_it_and_a_second_run_reads_the_cache(tmp_path, student_path, capsys):
    a, b = source(tmp_path / "a", "A", 12), source(tmp_path / "b", "B", 6)
    cache = tmp_path / "cache"
    argv = ["train", "--size", "tiny", "--model", student_path, "--data", f"{a}:6", f"{b}:2"]
    argv += ["--dataset-cache", str(cache), "--set", "max_steps=1", "--set", "per_device_train_batch_size=4"]
    argv += ["--set", "bf16=false"]
    code, out, err = run_cli([*argv, "--output", str(tmp_path / "s1")], capsys)
    assert code == 0, err[-3000:]
    metrics = json.loads((tmp_path / "s1" / "train_metrics.json").read_text())
    assert metrics["train_rows"] == 8 and metrics["steps"] == 1 and metrics["lengths"]["rows"] == 18
    assert [(s["rows_taken"], s["count"]) for s in metrics["mixture"]["sources"]] == [(6, 6), (2, 2)]
    saved = yaml.safe_load((tmp_path / "s1" / C.CONFIG_FILENAME).read_text())
    assert saved["data"] == [f"{a}:6", f"{b}:2"]
    card = modelcard.model_card(tmp_path / "s1", "alice/mix")
    assert "A mixture of 2 sources (8 rows, drawn and shuffled with seed 0)" in card
    assert "| 6 rows | 6 | 75.0% |" in card and "| 2 rows | 2 | 25.0% |" in card

    # The same data in a new process (as a --resume or another --output is): every step read from the cache,
    # TRL's tokenization included; nothing new is written there.
    files = arrow_files(cache)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "distill.cli", *argv, "--output", str(tmp_path / "s2"), "--set", "max_steps=1"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    assert arrow_files(cache) == files
    again = json.loads((tmp_path / "s2" / "train_metrics.json").read_text())
    assert again["mixture"] == metrics["mixture"] and again["data_prep_seconds"] <= metrics["data_prep_seconds"] + 1
