"""`distill generate`'s resume in bounded memory: the scan of what a traces file holds is the exact
(id, sample) set, a torn tail is cut by reading back from the end, bad lines are errors naming file and
line, and the scan's memory does not grow with the rows."""

import json
import tracemalloc

import pytest

from distill.common.errors import DistillError
from distill.common.records import truncate_torn_tail as cut_torn_tail
from distill.common.records import write_jsonl
from distill.generation.generate import first_row, run, scan_written
from tests.fakes import FakeOpenAI, read_rows
from tests.generation.test_generate import cfg, expected, pairs, prompts_file

IDS = ["p0", 'quote"d', "back\\slash", "πρόβλημα", "p4"]
POSITION = {pid: i for i, pid in enumerate(IDS)}


def trace(pid, sample, **extra):
    """A row as generate writes it: id and sample first, then the rest (json.dumps' default separators)."""
    return json.dumps({"id": pid, "sample": sample, "problem": "q", "messages": [], **extra}, ensure_ascii=False)


def done_set(written, k):
    return {(IDS[slot // k], slot % k) for slot, flag in enumerate(written.done) if flag}


def test_the_scan_is_the_exact_set_of_written_samples_even_with_a_torn_tail(tmp_path):
    path = tmp_path / "traces.jsonl"
    lines = [
        trace("p0", 0),
        trace('quote"d', 1),
        trace("back\\slash", 0),
        trace("πρόβλημα", 2),
        "",  # a blank line is skipped
        json.dumps({"sample": 1, "id": "p4", "problem": "keys in another order"}),  # parsed whole
        trace("p0", 0),  # a duplicate counts once
        trace("elsewhere", 0),  # a prompt outside this request
        trace("p4", 3),  # a sample beyond --num-samples
        "  " + trace("p4", 2),  # leading space: not generate's own line, parsed whole
        json.dumps({"id": 4, "sample": 0}),  # an id of another type matches no prompt
        json.dumps({"id": "p4", "sample": "0"}),  # nor does a sample of another type
    ]
    path.write_text("\n".join(lines) + "\n" + trace("p4", 0)[:25])  # the torn tail of a killed run
    k = 3
    want = {("p0", 0), ('quote"d', 1), ("back\\slash", 0), ("πρόβλημα", 2), ("p4", 1), ("p4", 2)}
    written = scan_written(path, POSITION, k)
    assert done_set(written, k) == want and written.written == len(want) and written.other == 4
    assert len(written.done) == len(IDS) * k  # one byte per requested sample: the whole state

    assert cut_torn_tail(path) == 25 and path.read_bytes().endswith(b"\n")
    again = scan_written(path, POSITION, k)
    assert done_set(again, k) == want and (again.written, again.other) == (written.written, written.other)
    assert first_row(path)["id"] == "p0"


def test_a_missing_file_holds_nothing(tmp_path):
    written = scan_written(tmp_path / "none.jsonl", POSITION, 2)
    assert not any(written.done) and (written.written, written.other) == (0, 0)


def test_a_torn_tail_is_cut_by_reading_back_from_the_end(tmp_path):
    path = tmp_path / "t.jsonl"
    body = trace("p0", 0) + "\n" + trace("p0", 1) + "\n"
    path.write_text(body + "x" * 100)  # a torn tail longer than several blocks
    assert cut_torn_tail(path, block=8) == 100 and path.read_text() == body
    assert cut_torn_tail(path, block=8) == 0 and path.read_text() == body  # a clean file stays as it is
    path.write_text("no newline at all")
    assert cut_torn_tail(path, block=4) == len("no newline at all") and path.read_bytes() == b""
    assert cut_torn_tail(path) == 0 and cut_torn_tail(tmp_path / "none.jsonl") == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"id": "p0", "sample": 0, "problem": "cut', r"t\.jsonl, line 2: not valid JSON"),
        ("[1, 2]", r"t\.jsonl, line 2: expected a JSON object, got list"),
        ('{"problem": "no id"}', r"t\.jsonl, line 2: a trace row needs an 'id' and a 'sample'"),
        ('{"id": "p0"}', r"line 2: a trace row needs an 'id' and a 'sample'"),
    ],
)
def test_a_bad_line_is_an_error_naming_file_and_line(tmp_path, line, message):
    path = tmp_path / "t.jsonl"
    path.write_text(trace("p0", 0) + "\n" + line + "\n" + trace("p0", 1) + "\n")
    with pytest.raises(DistillError, match=message):
        scan_written(path, POSITION, 2)


def test_text_that_is_not_utf8_is_an_error_naming_the_line(tmp_path):
    path = tmp_path / "t.jsonl"
    path.write_bytes(trace("p0", 0).encode() + b"\n" + b'{"id": "p\xff", "sample": 0, "x": 1}\n')
    with pytest.raises(DistillError, match=r"line 2: not UTF-8 text"):
        scan_written(path, POSITION, 2)


def test_the_scan_holds_no_rows(tmp_path):
    """Python allocations while scanning 100,000 rows of ~1 KB stay within the one byte per requested sample
    and the read buffer; the former set of (id, sample) tuples took ~170 bytes per row."""
    n, pad = 100_000, "x" * 900
    path = tmp_path / "traces.jsonl"
    with open(path, "w") as f:
        for i in range(n):
            f.write(trace(f"q{i:06d}", 0, completion=pad) + "\n")
    position = {f"q{i:06d}": i for i in range(n)}
    tracemalloc.start()
    try:
        written = scan_written(path, position, 1)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert written.written == n and all(written.done)
    assert peak < n + (3 << 20), peak  # 1 byte per sample + the 1 MiB read buffer + a line or two


def test_a_resume_for_fewer_prompts_counts_the_rest_and_requests_nothing(tmp_path, capsys):
    prompts_file(tmp_path, n=8)
    with FakeOpenAI(delay=0.0) as teacher:
        run(cfg(tmp_path, [teacher.url]))
        traces = tmp_path / "gen" / "traces.jsonl"
        assert pairs(traces) == expected(8, 2)
        calls = sum(teacher.calls.values())
        capsys.readouterr()
        summary = run(cfg(tmp_path, [teacher.url], num_prompts=3))
        assert sum(teacher.calls.values()) == calls  # nothing asked again
    assert summary["already_done"] == 16 and summary["written"] == 0
    assert (
        "16 samples already written (10 of prompts or samples beyond this request), 0 to go" in capsys.readouterr().out
    )


def test_a_torn_tail_is_requested_again_exactly_once(tmp_path):
    prompts_file(tmp_path, n=6)
    with FakeOpenAI(delay=0.0) as teacher:
        run(cfg(tmp_path, [teacher.url]))
        traces = tmp_path / "gen" / "traces.jsonl"
        rows = read_rows(traces)
        keep, lost = rows[:7], rows[7:]
        write_jsonl(traces, keep)
        with open(traces, "a") as f:  # the torn last line of a killed run: one of the lost samples
            f.write(json.dumps(lost[0])[:40])
        before = dict(teacher.calls)
        run(cfg(tmp_path, [teacher.url]))
    assert pairs(traces) == expected(6, 2) and len(read_rows(traces)) == 12
    asked = {k: v - before.get(k, 0) for k, v in teacher.calls.items() if v - before.get(k, 0)}
    assert sum(asked.values()) == len(lost)
