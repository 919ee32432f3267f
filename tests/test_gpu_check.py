"""bench/gpu_check.py, the script a lent GPU runs, checked here on its miniature shapes (--tiny, CPU): every
section runs distill's code and prints its row; a broken section would be a FAIL row and exit 1."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.model
def test_the_gpu_check_runs_every_section_on_miniature_shapes(tmp_path):
    out = tmp_path / "table.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--tiny", "--out", str(out)],
        capture_output=True, text=True, timeout=1200, cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    import json

    rows = {r["section"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"padding-free", "kd-32k", "onpolicy-4k", "sft-1.5b", "sft-7b-lora", "plan"}
    assert all(r["status"] == "ok" for r in rows.values()), rows
    assert "tokens/s" in rows["sft-1.5b"]["numbers"] and "padding-free" in rows["padding-free"]["numbers"]
