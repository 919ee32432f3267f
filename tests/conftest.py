"""Shared fixtures. End-to-end tests (marker `e2e`) share one real vLLM server per model per session:
each CPU start costs ~80 s."""

import os

import pytest

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# No test may reach the Hugging Face Hub: Hub benchmarks fail at once instead of retrying for ~25 s.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"


@pytest.fixture(scope="session")
def student_path() -> str:
    from distill.models import ensure_embedded

    return str(ensure_embedded("student"))


@pytest.fixture(scope="session")
def teacher_server():
    from distill.config import ServeConfig
    from distill.server import vllm_server

    with vllm_server(ServeConfig(model="embedded:teacher", max_model_len=2048, cpu_kvcache_gb=2)) as server:
        yield server
