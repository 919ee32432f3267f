"""`distill push` pieces: the dataset card, the file selection, staging and Hub errors (all offline)."""

import http.server
import json
import shlex
import socket
import threading
import time
from pathlib import Path

import pytest
import yaml

from distill.common import hub
from distill.common.config import CONFIG_FILENAME
from distill.common.errors import DistillError
from distill.common.records import write_json, write_jsonl

TEMPLATE = "{problem}\nPlease reason step by step, and put your final answer within \\boxed{{}}."


def trace(pid: str, sample: int, level: int = 1, finish: str = "stop", tokens: int = 10, **extra) -> dict:
    return {
        "id": pid,
        "sample": sample,
        "problem": f"What is {pid}?",
        "answer": "4",
        "domain": "math",
        "level": level,
        "messages": [
            {"role": "user", "content": f"What is {pid}?"},
            {"role": "assistant", "content": "2+2=4 \\boxed{4}"},
        ],
        "completion": "2+2=4 \\boxed{4}",
        "reasoning": "",
        "finish_reason": finish,
        "prompt_tokens": 7,
        "completion_tokens": tokens,
        "teacher": "tiny-teacher",
        "sampling": {"temperature": 0.6, "top_p": 1.0, "max_tokens": 64, "seed": None},
        **extra,
    }


GEN_ROWS = [
    trace("p0", 0, level=1, tokens=10),
    trace("p0", 1, level=1, tokens=20),
    trace("p1", 0, level=2, tokens=30),
    trace("p1", 1, level=2, tokens=64, finish="length"),
    trace("p2", 0, level=2, tokens=40),
    trace("p2", 1, level=2, tokens=50),
]


def gen_config(output: Path) -> dict:
    return {
        "stage": "generate",
        "output": str(output),
        "teacher": "embedded:teacher",
        "server_url": "",
        "served_model_name": "",
        "dataset": "builtin",
        "split": "train",
        "problem_column": "problem",
        "answer_column": "answer",
        "id_column": "",
        "num_prompts": 3,
        "levels": [1, 2],
        "seed": 7,
        "num_samples": 2,
        "temperature": 0.6,
        "top_p": 1.0,
        "max_tokens": 64,
        "prompt_template": TEMPLATE,
        "system_prompt": "You are careful.",
        "per_request_seed": False,
        "concurrency": 4,
        "request_timeout": 60.0,
        "serve": {"model": "embedded:teacher", "max_model_len": 2048},
    }


def make_generate(folder: Path, junk: bool = True) -> Path:
    write_jsonl(folder / "traces.jsonl", GEN_ROWS)
    write_json(folder / "summary.json", {"prompts": 3, "written": 6, "failed": 1, "finish_reasons": {}})
    (folder / CONFIG_FILENAME).write_text(yaml.safe_dump(gen_config(folder), sort_keys=False))
    if junk:
        write_jsonl(folder / "failures.jsonl", [{"id": "p3", "error": "HTTP 500"}])
        (folder / "vllm-embedded-teacher-1234.log").write_text("INFO started\n")
        (folder / "traces.jsonl.tmp").write_text("{partial")
        (folder / "summary.json.lock").write_text("")
        (folder / "notes.txt").write_text("mine\n")
    return folder


def make_filter(tmp_path: Path) -> Path:
    gen = make_generate(tmp_path / "gen")
    folder = tmp_path / "filtered"
    kept = [
        dict(r, correct=True, verify_reason="match", extracted="4") for r in (GEN_ROWS[0], GEN_ROWS[2], GEN_ROWS[4])
    ]
    reasons = ["wrong_answer", "truncated", "wrong_answer"]
    rejected = [
        dict(r, correct=False, verify_reason=why, extracted="5", reject_reason=why)
        for r, why in zip((GEN_ROWS[1], GEN_ROWS[3], GEN_ROWS[5]), reasons, strict=True)
    ]
    write_jsonl(folder / "kept.jsonl", kept)
    write_jsonl(folder / "rejected.jsonl", rejected)
    write_json(folder / "report.json", {"total": 6, "kept": 3, "rejected": 3, "input": str(gen / "traces.jsonl")})
    cfg = {"stage": "filter", "output": str(folder), "timeout": 5.0, "workers": 0, "input": str(gen / "traces.jsonl")}
    (folder / CONFIG_FILENAME).write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "verify.log").write_text("noise\n")
    return folder


def front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def code_blocks(card: str, lang: str) -> list[str]:
    parts = card.split(f"```{lang}\n")[1:]
    return [p.split("\n```", 1)[0] for p in parts]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir())}


# --------------------------------------------------------------------------------------------------
# The card


def test_generate_card_front_matter_and_numbers(tmp_path):
    folder = make_generate(tmp_path / "gen")
    card = hub.dataset_card(folder, repo_id="alice/traces")
    meta = front_matter(card)
    assert meta["configs"] == [{"config_name": "default", "data_files": [{"split": "train", "path": "traces.jsonl"}]}]
    assert meta["tags"] == ["distill", "reasoning", "synthetic"]
    assert meta["license"] == "other"
    assert meta["task_categories"] == ["text-generation"]
    assert meta["size_categories"] == ["n<1K"]

    assert "| rows | 6 |" in card
    assert "| distinct prompts | 3 |" in card
    assert "| completion tokens | 214 |" in card
    assert "| truncated (finish_reason `length`) | 1 |" in card
    assert "| `stop` | 5 |" in card and "| `length` | 1 |" in card
    assert "| 0.6 | 1.0 | 64 | 2 |" in card  # temperature, top_p, max_tokens, samples per prompt
    assert "`tiny-teacher` (served by vLLM from `embedded:teacher`)" in card
    assert "1 request(s) failed" in card
    assert TEMPLATE in code_blocks(card, "text")
    assert "You are careful." in code_blocks(card, "text")
    assert 'load_dataset("alice/traces", split="train")' in card
    assert "rejected" not in meta["configs"][0]["config_name"]


def test_generate_card_command_reproduces_the_config(tmp_path):
    from distill import cli
    from distill.common.config import from_args
    from distill.generation.config import GenerateConfig

    folder = make_generate(tmp_path / "gen")
    (cmd,) = code_blocks(hub.dataset_card(folder), "bash")
    argv = shlex.split(cmd.replace("\\\n", " "))
    assert argv[:2] == ["distill", "generate"]
    cfg = from_args(GenerateConfig, cli.build_parser().parse_args(argv[1:]))
    want = gen_config(folder)
    assert cfg.output == "runs/gen"  # an absolute output folder is shown without the local directories
    for key in ("teacher", "dataset", "num_prompts", "levels", "seed", "num_samples", "temperature"):
        assert getattr(cfg, key) == want[key], key
    assert (cfg.top_p, cfg.max_tokens, cfg.prompt_template, cfg.system_prompt) == (
        1.0,
        64,
        TEMPLATE,
        "You are careful.",
    )
    assert cfg.serve.max_model_len == 2048


def test_filter_card_configs_pass_rate_and_reasons(tmp_path):
    folder = make_filter(tmp_path)
    card = hub.dataset_card(folder, repo_id="alice/verified")
    meta = front_matter(card)
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": "train", "path": "kept.jsonl"}]},
        {"config_name": "rejected", "data_files": [{"split": "train", "path": "rejected.jsonl"}]},
    ]
    assert "- Kept: 3 of 6 samples (50.0%)" in card
    assert "- Prompts with at least one kept sample: 3 of 3" in card
    assert "| `wrong_answer` | 2 | 66.7% |" in card
    assert "| `truncated` | 1 | 33.3% |" in card
    assert "| 1 | 1 | 2 | 50.0% |" in card  # level 1: kept 1 of 2
    assert "| 2 | 2 | 4 | 50.0% |" in card  # level 2: kept 2 of 4
    assert "| rows | 3 | 3 |" in card  # kept, rejected
    assert "| truncated (finish_reason `length`) | 0 | 1 |" in card
    assert 'load_dataset("alice/verified", "rejected", split="train")' in card
    # the generate settings come from the input's folder, so the template and both commands are there
    assert TEMPLATE in code_blocks(card, "text")
    (cmds,) = code_blocks(card, "bash")
    assert "distill generate" in cmds
    assert f"settings read from `runs/gen/{CONFIG_FILENAME}`" in card
    assert "distill filter runs/gen/traces.jsonl --output runs/filtered --timeout 5.0" in cmds
    assert str(tmp_path) not in card


def test_card_from_rows_alone(tmp_path):
    folder = make_generate(tmp_path / "gen", junk=False)
    (folder / CONFIG_FILENAME).unlink()
    (folder / "summary.json").unlink()
    card = hub.dataset_card(folder)
    assert front_matter(card)["configs"][0]["data_files"][0]["path"] == "traces.jsonl"
    assert "| rows | 6 |" in card
    assert "| 0.6 | 1.0 | 64 | 2 |" in card  # read from the rows' sampling and sample indices
    assert "Teacher: `tiny-teacher`" in card
    assert "Prompt template: not recorded" in card
    assert "Not derivable" in card
    assert 'load_dataset("<owner>/<name>", split="train")' in card


def test_folder_without_data_is_an_error(tmp_path):
    empty = tmp_path / "nothing-here"
    empty.mkdir()
    (empty / "summary.json").write_text("{}")
    for call in (hub.dataset_card, hub.files_to_upload):
        with pytest.raises(DistillError, match=r"nothing-here holds no traces\.jsonl .* or kept\.jsonl"):
            call(empty)
    with pytest.raises(DistillError, match="missing-folder does not exist"):
        hub.dataset_card(tmp_path / "missing-folder")
    write_jsonl(empty / "traces.jsonl", [])
    with pytest.raises(DistillError, match="hold no rows"):
        hub.dataset_card(empty)


def test_files_to_upload_leaves_logs_failures_and_temp_files(tmp_path):
    gen = make_generate(tmp_path / "gen")
    assert [p.name for p in hub.files_to_upload(gen)] == ["traces.jsonl", "summary.json", CONFIG_FILENAME]
    filt = make_filter(tmp_path)
    names = [p.name for p in hub.files_to_upload(filt)]
    assert names == ["kept.jsonl", "rejected.jsonl", "report.json", CONFIG_FILENAME]


# --------------------------------------------------------------------------------------------------
# Staging


def test_stage_holds_exactly_the_upload_and_leaves_the_folder_alone(tmp_path):
    gen = make_generate(tmp_path / "gen")
    before = snapshot(gen)
    dest = tmp_path / "staged"
    names = hub.stage(gen, dest, repo_id="alice/traces")
    assert names == ["README.md", CONFIG_FILENAME, "summary.json", "traces.jsonl"]
    assert sorted(p.name for p in dest.iterdir()) == names
    for name in ("traces.jsonl", "summary.json", CONFIG_FILENAME):
        assert (dest / name).read_bytes() == (gen / name).read_bytes()
    assert (dest / "README.md").read_text() == hub.dataset_card(gen, repo_id="alice/traces")
    assert snapshot(gen) == before

    filt = make_filter(tmp_path)
    names = hub.stage(filt, tmp_path / "staged-filter")
    assert names == ["README.md", CONFIG_FILENAME, "kept.jsonl", "rejected.jsonl", "report.json"]


def test_staged_folder_loads_with_datasets(tmp_path):
    datasets = pytest.importorskip("datasets")
    dest = tmp_path / "staged"
    hub.stage(make_filter(tmp_path), dest)
    kept = datasets.load_dataset(str(dest), split="train", cache_dir=str(tmp_path / "cache"))
    rejected = datasets.load_dataset(str(dest), "rejected", split="train", cache_dir=str(tmp_path / "cache"))
    assert (kept.num_rows, rejected.num_rows) == (3, 3)
    assert sorted(rejected["reject_reason"]) == ["truncated", "wrong_answer", "wrong_answer"]


# --------------------------------------------------------------------------------------------------
# Repo ids and Hub errors


@pytest.mark.parametrize("repo_id", ["alice/math-traces", "traces", "Org_1/r1.distill-v2"])
def test_good_repo_ids(repo_id):
    hub.check_repo_id(repo_id)


@pytest.mark.parametrize(
    "repo_id, why",
    [
        ("", "empty"),
        ("a/b/c", "not valid"),
        ("-alice/x", "not valid"),
        ("alice/x.", "not valid"),
        ("alice/my traces", "not valid"),
        ("alice/a--b", "not valid"),
        ("alice/" + "x" * 97, "not valid"),
        ("https://huggingface.co/datasets/alice/x", "is a URL: pass just the id, e.g. 'alice/x'"),
        ("datasets/alice/x", "leave out 'datasets/'"),
    ],
)
def test_bad_repo_id_is_an_error(tmp_path, repo_id, why):
    with pytest.raises(DistillError, match=f"repo id.*{why}"):
        hub.push_dataset(make_generate(tmp_path / "gen"), repo_id)


@pytest.fixture
def hub_env(monkeypatch):
    """A fake token and no offline mode, whatever the machine's environment says."""
    import huggingface_hub.constants as hf_constants

    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    return hf_constants


def assert_one_line(err: DistillError, *parts: str) -> None:
    msg = str(err)
    assert "\n" not in msg
    for part in parts:
        assert part in msg, (part, msg)


def test_push_to_unreachable_endpoint_fails_fast(tmp_path, monkeypatch, hub_env):
    gen = make_generate(tmp_path / "gen")
    before = snapshot(gen)
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setattr(hub_env, "ENDPOINT", endpoint)  # read from HF_ENDPOINT at import time
    start = time.monotonic()
    with pytest.raises(DistillError) as e:
        hub.push_dataset(gen, "alice/traces")
    assert time.monotonic() - start < 15
    assert_one_line(e.value, "alice/traces", "creating the dataset repo", f"cannot reach {endpoint}", "network")
    assert snapshot(gen) == before

    with pytest.raises(DistillError) as e:  # the same through the endpoint argument
        hub.push_dataset(gen, "alice/traces", endpoint=f"http://127.0.0.1:{free_port()}")
    assert_one_line(e.value, "cannot reach http://127.0.0.1:")


def test_push_in_offline_mode_says_so(tmp_path, monkeypatch, hub_env):
    monkeypatch.setattr(hub_env, "HF_HUB_OFFLINE", True)
    with pytest.raises(DistillError) as e:
        hub.push_dataset(make_generate(tmp_path / "gen"), "alice/traces", endpoint=f"http://127.0.0.1:{free_port()}")
    assert_one_line(e.value, "alice/traces", "HF_HUB_OFFLINE")


@pytest.mark.parametrize(
    "status, hint",
    [(401, "hf auth login"), (403, "may not write to alice"), (500, "server error (HTTP 500)")],
)
def test_push_http_errors_say_what_to_do(tmp_path, hub_env, status, hint):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (the http.server spelling)
            body = json.dumps({"error": "nope"}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_PUT = do_POST  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    # a short poll interval: shutdown() waits for the next poll (0.5 s by default)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        with pytest.raises(DistillError) as e:
            hub.push_dataset(
                make_generate(tmp_path / "gen"), "alice/traces", endpoint=f"http://127.0.0.1:{server.server_port}"
            )
    finally:
        server.shutdown()
        server.server_close()
    assert_one_line(e.value, "alice/traces", "creating the dataset repo", hint)
