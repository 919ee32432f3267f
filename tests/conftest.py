"""Shared fixtures and the test tiers.

Tiers, by marker (registered in pyproject.toml):
  (none)  unit: seconds, no model weights loaded          make test-fast: pytest -m "not model and not e2e and not gpu"
  model   loads the embedded student/teacher weights or trains on CPU (tens of seconds)
  e2e     starts the real vLLM server on the embedded models (~80 s per start, shared per session)
  gpu     needs a CUDA GPU: skipped here, with the reason, when torch.cuda.is_available() is False
`make test` (plain `pytest`) runs every CPU tier.

End-to-end tests share one real vLLM server per model per session: each CPU start costs ~80 s."""

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No test may reach the Hugging Face Hub: Hub benchmarks fail at once instead of retrying for ~25 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.hookimpl(trylast=True)  # after -m has deselected: a run without gpu tests never imports torch here
def pytest_collection_modifyitems(config, items):  # noqa: ARG001 - pytest's hook signature
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False on this machine")
    for item in gpu:
        item.add_marker(skip)


@pytest.fixture(scope="session")
def student_path() -> str:
    from distill.common.models import ensure_embedded

    return str(ensure_embedded("student"))


# The session's teacher server holds R1's protocol (32,768 new tokens after a prompt), so that every eval
# definition's real requests can be checked against it. The 0.5B teacher has 32,768 positions: vLLM accepts a
# longer max_model_len only with this variable (the check streams one token per request, nothing long runs).
LONG_CONTEXT = 36_864


@pytest.fixture(scope="session")
def teacher_server():
    from distill.common.config import ServeConfig
    from distill.common.server import vllm_server

    os.environ["VLLM_ALLOW_LONG_MAX_MODEL_LEN"] = "1"
    try:
        with vllm_server(ServeConfig(model="embedded:teacher", max_model_len=LONG_CONTEXT, cpu_kvcache_gb=2)) as server:
            yield server
    finally:
        os.environ.pop("VLLM_ALLOW_LONG_MAX_MODEL_LEN", None)
