"""The embedded models' weight parts are checked before conversion: size and sha256 of every part and of the
assembled GGUF against the pins, and parts only from site-packages (a folder of the wheel's name in the working
directory, first on Python's import path, once stood in for a part and assembled a 402 MB GGUF silently)."""

import hashlib

import pytest

from distill.common import models
from distill.common.errors import DistillError
from distill.common.models import EMBEDDED, Embedded


def fake_wheel(root, name, data: bytes):
    (root / name / "data").mkdir(parents=True)
    (root / name / "data" / "part01.bin").write_bytes(data)


def embedded(parts: list[bytes]) -> Embedded:
    digests = tuple(hashlib.sha256(p).hexdigest() for p in parts)
    return Embedded(
        name="fake", hf_id="org/fake", packages=tuple(f"fakepart{i}" for i in range(len(parts))),
        files=("data/part01.bin",) * len(parts), pip_names=tuple(f"fake-part{i}" for i in range(len(parts))),
        max_length=16, part_sha256=digests, part_bytes=tuple(len(p) for p in parts),
        gguf_sha256=hashlib.sha256(b"".join(parts)).hexdigest(),
    )  # fmt: skip


@pytest.fixture
def site(tmp_path, monkeypatch):
    root = tmp_path / "site-packages"
    root.mkdir()
    monkeypatch.setattr(models, "site_dirs", lambda: [root])
    return root


def test_pinned_parts_assemble_and_a_tampered_one_is_refused_by_name(tmp_path, site):
    parts = [b"GGUF" + b"a" * 100, b"b" * 50]
    for i, data in enumerate(parts):
        fake_wheel(site, f"fakepart{i}", data)
    emb = embedded(parts)
    out = models._assemble_gguf(emb, tmp_path / "model.gguf")
    assert out.read_bytes() == b"".join(parts)
    (site / "fakepart1" / "data" / "part01.bin").write_bytes(b"c" * 50)  # same size, other bytes
    with pytest.raises(DistillError, match=r"fakepart1/data/part01.bin \(fake-part1\) has sha256 .* refused"):
        models._assemble_gguf(emb, tmp_path / "model.gguf")
    (site / "fakepart1" / "data" / "part01.bin").write_bytes(b"b" * 49)
    with pytest.raises(DistillError, match="has 49 bytes, not the pinned 50"):
        models._assemble_gguf(emb, tmp_path / "model.gguf")


def test_a_part_in_the_working_directory_does_not_stand_in_for_the_wheel(tmp_path, site, monkeypatch):
    cwd = tmp_path / "repo"
    fake_wheel(cwd, "fakepart0", b"shadow")
    monkeypatch.chdir(cwd)
    monkeypatch.syspath_prepend(str(cwd))
    with pytest.raises(DistillError, match="outside site-packages: refused"):
        models._assemble_gguf(embedded([b"shadow"]), tmp_path / "model.gguf")


@pytest.mark.model
def test_the_installed_weight_wheels_match_their_pins(tmp_path):
    for role in EMBEDDED:
        emb = EMBEDDED[role]
        out = models._assemble_gguf(emb, tmp_path / f"{role}.gguf")
        assert out.stat().st_size == sum(emb.part_bytes)
    assert EMBEDDED["teacher"].gguf_sha256.startswith("1d9614638d18")  # the sha256 the weights were audited at
