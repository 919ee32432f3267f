"""bench/_stages.py: the stage runner of the resumable benches (quality, methods)."""

import json

import pytest

from bench._stages import Stages


def test_a_stage_runs_once_and_records_its_time(tmp_path):
    stages = Stages(tmp_path, "t")
    out = tmp_path / "filtered"
    traces = tmp_path / "traces.jsonl"
    traces.write_text(json.dumps({"id": "a", "sample": 0, "messages": [], "completion": "x"}) + "\n")
    # a real, cheap distill command: filter one row (it is rejected; the report is written all the same)
    stages("filter", out / "report.json", "filter", str(traces), "--output", str(out), "--decontaminate", "none")
    assert (out / "report.json").is_file()
    times = json.loads((tmp_path / "times.json").read_text())
    assert set(times) == {"filter"} and times["filter"] > 0

    # done: skipped, the recorded time kept (a second run would otherwise overwrite it)
    (out / "report.json").write_text("{}")
    Stages(tmp_path, "t")("filter", out / "report.json", "filter", "no-such-file.jsonl", "--output", str(out))
    assert json.loads((tmp_path / "times.json").read_text()) == times


def test_a_failing_stage_names_the_command_and_records_nothing(tmp_path, capsys):
    stages = Stages(tmp_path, "t")
    with pytest.raises(SystemExit, match=r"failed \(exit 2\): distill filter .*missing\.jsonl"):
        stages("filter", tmp_path / "out/report.json", "filter", str(tmp_path / "missing.jsonl"))
    assert not (tmp_path / "times.json").exists()
