"""A normal install (`pip install .`, not editable) carries recipes/, eval/ and data/ and works outside the checkout.

setup.py's build hook copies the three top-level folders into the wheel as distill/_shipped/; resources.py reads
them there when they exist, else the checkout's. Here: a wheel is built offline from a copy of the checkout's
build inputs (building in place would leave build/ and distill.egg-info/ in the checkout) with the venv's
setuptools, installed with `pip install --target`, and run from a folder outside the checkout with only that
folder on PYTHONPATH, which shadows the editable install of the venv (its dependencies still import).
Also: the sdist carries the same files, and an editable install still reads the checkout.
"""

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

import distill
from distill.common import resources

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ("recipes", "eval", "data")
PACKAGED = "distill/_shipped"  # where the wheel carries them
# Files whose absence would break a command after install; the full list is compared below.
KEY_FILES = (
    "recipes/sft/qwen2.5-math-7b.yaml",
    "recipes/logit-kd/qwen2.5-math-7b.yaml",
    "recipes/onpolicy/smollm2-tiny.yaml",
    "recipes/grpo/tiny-cpu.yaml",
    "recipes/generate/deepseek-r1.yaml",
    "recipes/accelerate/zero2.yaml",
    "recipes/chat_templates/chatml-think.jinja",
    "recipes/slurm/train.slurm",
    "eval/gsm8k.yaml",
    "eval/sample.yaml",
    "data/gsm8k/test.jsonl",
    "data/gsm8k/LICENSE",
    "data/sample_problems.jsonl",
    "data/safety_keywords.txt",
    "data/reflection_words.txt",
)
GSM8K_TEST_PROBLEMS = 1319


def skipped(name: str) -> bool:
    """The droppings setup.py's hook and MANIFEST.in leave out."""
    return name.startswith(".") or name == "__pycache__" or name.endswith((".pyc", ".pyo", "~"))


def shipped_files(root: Path) -> dict[str, Path]:
    """'recipes/sft/x.yaml' -> its path, for every file under root's recipes/, eval/ and data/."""
    files = {}
    for folder in SHIPPED:
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root)
            if path.is_file() and not any(skipped(part) for part in rel.parts):
                files[rel.as_posix()] = path
    return files


def run(args: list[str], cwd: Path, env: dict | None = None, timeout: int = 120) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def pip(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The venv's pip, offline: no index, no dependencies, the venv's setuptools (no build isolation)."""
    return run([sys.executable, "-m", "pip", *args, "--no-deps", "--no-index", "--disable-pip-version-check"], cwd)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("wheel")


@pytest.fixture(scope="module")
def source(work) -> Path:
    """The checkout's build inputs: its top-level files (pyproject.toml, setup.py, MANIFEST.in, README.md...)
    and the folders the wheel holds."""
    src = work / "src"
    src.mkdir()
    for item in REPO.iterdir():
        if item.is_file():
            shutil.copy2(item, src / item.name)
    for folder in ("distill", *SHIPPED):
        shutil.copytree(REPO / folder, src / folder, ignore=shutil.ignore_patterns("__pycache__", "*.py[co]"))
    return src


@pytest.fixture(scope="module")
def wheel(work, source) -> Path:
    """What `pip install .` builds."""
    pip("wheel", "--no-build-isolation", "--wheel-dir", str(work / "dist"), str(source), cwd=work)
    (built,) = (work / "dist").glob("distill-*.whl")
    return built


@pytest.fixture(scope="module")
def site(work, wheel) -> Path:
    target = work / "site"
    pip("install", "--no-compile", "--target", str(target), str(wheel), cwd=work)
    return target


@pytest.fixture(scope="module")
def outside(work) -> Path:
    """A working directory with no recipes/, eval/ or data/ in it or above it."""
    cwd = work / "elsewhere"
    cwd.mkdir()
    assert not any((parent / "recipes").exists() for parent in (cwd, *cwd.parents))
    return cwd


def installed(site: Path, *args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """`python ARGS` with the installed wheel first on the path (ahead of the venv's editable distill)."""
    env = {**os.environ, "PYTHONPATH": str(site)}
    return run([sys.executable, *args], cwd, env=env, timeout=timeout)


def test_a_checkout_reads_its_own_folders():
    """No distill/_shipped/ in a checkout (builds write to build/): ROOT is the checkout."""
    package = Path(distill.__file__).resolve().parent
    assert not (package / "_shipped").exists()
    assert resources.ROOT == package.parent
    assert resources.EVAL_DIR == package.parent / "eval"
    assert resources.recipe_for("7b") == package.parent / "recipes" / "sft" / "qwen2.5-math-7b.yaml"


def test_the_wheel_carries_every_shipped_file(wheel, source):
    expected = shipped_files(source)
    assert set(KEY_FILES) <= set(expected), set(KEY_FILES) - set(expected)
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        packaged = {n.removeprefix(PACKAGED + "/") for n in names if n.startswith(PACKAGED + "/")}
        assert packaged == set(expected), {
            "missing": sorted(set(expected) - packaged),
            "extra": sorted(packaged - set(expected)),
        }
        for rel, path in expected.items():
            assert z.read(f"{PACKAGED}/{rel}") == path.read_bytes(), rel
        record = z.read(next(n for n in names if n.endswith(".dist-info/RECORD"))).decode()
    assert all(f"{PACKAGED}/{rel}," in record for rel in expected)  # pip installs and uninstalls them
    # one copy in git: the package in the checkout holds none of them
    assert not (source / PACKAGED).exists()


def test_the_installed_wheel_works_outside_the_checkout(site, outside):
    probe = """
import json, distill
from distill.common import resources as r
from distill.common.resources import EVAL_DIR, recipe_for, resolve_chat_template
from distill.curation.safety import KEYWORDS_FILE
from distill.evaluation.config import REFLECTION_WORDS_FILE
from distill.problems.benchmarks import available, load_benchmark, load_benchmark_prompts
gsm8k, sample = load_benchmark("gsm8k"), load_benchmark("sample")
print(json.dumps({
    "distill": distill.__file__, "root": str(r.ROOT), "eval_dir": str(EVAL_DIR),
    "recipe_7b": str(recipe_for("7b")), "recipe_kd_7b": str(recipe_for("7b", "logit-kd")),
    "template": str(resolve_chat_template("chatml-think")),
    "accelerate": str(r.ACCELERATE_CONFIGS / "zero2.yaml"),
    "accelerate_is_file": (r.ACCELERATE_CONFIGS / "zero2.yaml").is_file(),
    "keywords": str(KEYWORDS_FILE), "keywords_is_file": KEYWORDS_FILE.is_file(),
    "reflection": str(REFLECTION_WORDS_FILE), "reflection_is_file": REFLECTION_WORDS_FILE.is_file(),
    "benchmarks": available(),
    "gsm8k_dataset": gsm8k.dataset, "gsm8k_problems": len(load_benchmark_prompts(gsm8k)),
    "sample_dataset": sample.dataset, "sample_problems": len(load_benchmark_prompts(sample)),
}))
"""
    got = json.loads(installed(site, "-c", probe, cwd=outside).stdout)
    packaged = (site / PACKAGED).resolve()
    assert Path(got["distill"]).resolve() == site.resolve() / "distill" / "__init__.py"
    assert Path(got["root"]) == packaged
    assert Path(got["eval_dir"]) == packaged / "eval"
    assert Path(got["recipe_7b"]) == packaged / "recipes" / "sft" / "qwen2.5-math-7b.yaml"
    assert Path(got["recipe_kd_7b"]) == packaged / "recipes" / "logit-kd" / "qwen2.5-math-7b.yaml"
    assert Path(got["template"]) == packaged / "recipes" / "chat_templates" / "chatml-think.jinja"
    assert got["accelerate_is_file"] and Path(got["accelerate"]).is_relative_to(packaged)
    assert got["keywords_is_file"] and Path(got["keywords"]).is_relative_to(packaged)
    assert got["reflection_is_file"] and Path(got["reflection"]).is_relative_to(packaged)
    assert got["benchmarks"] == sorted(p.stem for p in (REPO / "eval").glob("*.yaml"))
    # eval/*.yaml's `../data/...` paths resolve inside the package (eval/ and data/ are siblings there too)
    assert Path(got["gsm8k_dataset"]) == packaged / "data" / "gsm8k" / "test.jsonl"
    assert got["gsm8k_problems"] == GSM8K_TEST_PROBLEMS
    assert Path(got["sample_dataset"]) == packaged / "data" / "sample_problems.jsonl"
    assert got["sample_problems"] == sum(1 for line in (REPO / "data" / "sample_problems.jsonl").open() if line.strip())

    plan = json.loads(installed(site, "-m", "distill.cli", "plan", "--size", "7b", "--json", cwd=outside).stdout)
    assert plan["model"] == "Qwen/Qwen2.5-Math-7B"
    assert plan["model_from"] == "recipe"
    assert plan["recipe"] == "recipes/sft/qwen2.5-math-7b.yaml"

    usage = installed(site, "-m", "distill.cli", "eval", "--help", cwd=outside).stdout
    assert "--tasks" in usage


def test_the_sdist_carries_every_shipped_file(work, source):
    """`python -m build` builds the wheel from the sdist: MANIFEST.in must put the folders (and setup.py) in it."""
    out = work / "sdist"
    code = f"from setuptools import build_meta; print(build_meta.build_sdist({str(out)!r}))"
    name = run([sys.executable, "-c", code], source).stdout.strip().splitlines()[-1]
    with tarfile.open(out / name) as tar:
        members = {m.name.split("/", 1)[1] for m in tar.getmembers() if m.isfile()}
    assert {"setup.py", "MANIFEST.in", "pyproject.toml"} <= members
    missing = set(shipped_files(source)) - members
    assert not missing, sorted(missing)


def test_an_editable_install_reads_the_checkout(work, source):
    """`make install` (pip install -e): the hook copies nothing and the finder maps distill to the source folder,
    where there is no _shipped/, so ROOT is the checkout."""
    target = work / "editable"
    done = pip("install", "--no-build-isolation", "--target", str(target), "-e", str(source), cwd=work)
    assert "Customization incompatible with editable install" not in done.stdout + done.stderr
    assert not list(target.rglob("_shipped")) and not (source / PACKAGED).exists()
    (finder,) = target.glob("__editable___distill_*_finder.py")
    assert repr(str(source / "distill")) in finder.read_text()


@pytest.mark.model  # trains a random miniature of the 7B student for two steps on CPU (~20 s)
def test_a_rehearsal_runs_from_the_installed_wheel(site, outside):
    """`distill train --size 7b --rehearse true --data kept.jsonl`, from outside the checkout."""
    usage = installed(site, "-m", "distill.cli", "train", "--help", cwd=outside).stdout
    if "--rehearse" not in usage:
        pytest.skip("distill train has no --rehearse (yet)")
    kept = outside / "kept.jsonl"
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {a} + {b}? Put your final answer within \\boxed{{}}."},
                {"role": "assistant", "content": f"{a} + {b} = {a + b}. The answer is \\boxed{{{a + b}}}."},
            ]
        }
        for a, b in [(12, 30), (7, 8), (41, 19), (100, 23)]
    ]
    kept.write_text("".join(json.dumps(row) + "\n" for row in rows))
    args = ["-m", "distill.cli", "train", "--size", "7b", "--rehearse", "true", "--data", str(kept)]
    args += ["--output", str(outside / "rehearsal")]
    done = installed(site, *args, cwd=outside, timeout=600)
    report = done.stdout + done.stderr
    assert "all checks passed" in report, report[-3000:]
    # the launch command it prints names the accelerate config the wheel carries
    assert str((site / PACKAGED).resolve() / "recipes" / "accelerate") in report, report[-3000:]
