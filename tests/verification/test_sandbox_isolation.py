"""The sandbox's allow-listed filesystem and per-sample cgroup: real processes, no mocks.

A program must not find files outside what the interpreter needs (a problems file with its expected
outputs, the venv, the checkout), and one sample's whole process tree (forks through ctypes included)
must stay within its memory_mb and max_processes. Tests that need namespaces or a writable cgroup
hierarchy skip, with the reason, only where the kernel or the container refuses them."""

import json
import os
import secrets
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest

from distill.verification import sandbox
from distill.verification.sandbox import describe_isolation, network_isolation, run_sandboxed

REPO = Path(__file__).resolve().parents[2]
NETNS = network_isolation() == "netns"
needs_netns = pytest.mark.skipif(not NETNS, reason=f"namespaces not available here ({describe_isolation()})")


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(fstype, root, mount point, super options) of the cgroup mounts this test process sees."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        lf, rf = left.split(), right.split()
        if rf and rf[0] in ("cgroup", "cgroup2"):
            found.append((rf[0], lf[3], lf[4], set(rf[2].split(","))))
    return found


def _cgroup_dir(line: str) -> str | None:
    """The directory of one /proc/<pid>/cgroup line ("id:controllers:path") for the memory or pids
    controller (v1) or of cgroup2, as seen from this test process."""
    _, controllers, path = line.split(":", 2)
    for fstype, root, mountpoint, options in _mounts():
        v1 = fstype == "cgroup" and controllers and set(controllers.split(",")) & options & {"memory", "pids"}
        v2 = fstype == "cgroup2" and not controllers
        if (v1 or v2) and (root == "/" or path.startswith(root)):
            rel = path if root == "/" else path[len(root) :]
            candidate = os.path.normpath(mountpoint + "/" + rel.lstrip("/"))
            if v1 or os.path.exists(os.path.join(candidate, "memory.max")):
                return candidate
    return None


def _cgroups_expected() -> str:
    """Why per-run cgroups must work here ("" if they need not): root, and a child cgroup can be made
    where the memory controller is (v1: below our memory cgroup; v2: our cgroup delegates memory)."""
    if os.geteuid() != 0:
        return ""
    own: dict[str, str] = {}  # controller ("" for cgroup2) -> our cgroup's path
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(",") if controllers else [""]:
            own[controller] = path
    for fstype, root, mountpoint, options in _mounts():
        if fstype == "cgroup" and "memory" in options and "memory" in own:
            path = own["memory"]
            base = os.path.normpath(mountpoint + "/" + (path if root == "/" else path[len(root) :]).lstrip("/"))
        elif fstype == "cgroup2" and "" in own:
            path = own[""]
            base = os.path.normpath(mountpoint + "/" + (path if root == "/" else path[len(root) :]).lstrip("/"))
            try:
                if not {"memory", "pids"} <= set(Path(base, "cgroup.subtree_control").read_text().split()):
                    continue
            except OSError:
                continue
        else:
            continue
        trial = os.path.join(base, f"distill-test-{os.getpid()}-{secrets.token_hex(3)}")
        try:
            os.mkdir(trial)
            os.rmdir(trial)
            return f"a child cgroup can be created in {base}"
        except OSError:
            continue
    return ""


CGROUPS_EXPECTED = _cgroups_expected()
CGROUPS_IN_FORCE = "cgroup-v" in describe_isolation()
needs_cgroups = pytest.mark.skipif(
    not CGROUPS_EXPECTED and not CGROUPS_IN_FORCE,
    reason=f"no writable memory cgroup here (root: {os.geteuid() == 0}; {describe_isolation()})",
)
CGROUP_LINES = "print(open('/proc/self/cgroup').read().strip())"


def _run_cgroup_dirs(stdout: str) -> list[str]:
    """The run's own cgroup directories, from the /proc/self/cgroup lines a sandboxed program printed."""
    dirs = []
    for line in stdout.splitlines():
        if line.count(":") >= 2 and "distill-sbx-" in line:
            directory = _cgroup_dir(line)
            if directory:
                dirs.append(directory)
    return dirs


# --------------------------------------------------------------------------------------------------
# Filesystem: an allow-list, everything else absent


@needs_netns
def test_a_data_file_outside_the_usual_folders_cannot_be_read():
    token = secrets.token_hex(6)
    answer = f"expected-output-{token}"
    made: list[Path] = []
    for parent in (Path("/opt"), Path("/srv"), REPO.parent, Path.home(), Path(tempfile.gettempdir())):
        if parent.is_dir() and os.access(parent, os.W_OK):
            directory = parent / f"distill-iso-{token}"
            directory.mkdir()
            directory.chmod(0o755)
            (directory / "problems.jsonl").write_text(json.dumps({"output": answer}) + "\n")
            (directory / "problems.jsonl").chmod(0o644)
            made.append(directory)
    assert made, "no writable folder to plant the data file in"
    targets = [str(d / "problems.jsonl") for d in made]
    code = (
        "import os, json\n"
        f"for path in {targets!r}:\n"
        "    try:\n        print('READ', open(path).read())\n"
        "    except OSError as e:\n        print('refused', e.errno, os.path.exists(os.path.dirname(path)))\n"
        "print(json.dumps(sorted(os.listdir('/'))))\n"
        "print(json.dumps(sorted(os.listdir('/etc'))))\n"
    )
    try:
        r = run_sandboxed(code)
    finally:
        for directory in made:
            (directory / "problems.jsonl").unlink()
            directory.rmdir()
    assert r.status == "ok", r.stderr
    assert answer not in r.stdout and "READ" not in r.stdout
    lines = r.stdout.splitlines()
    assert lines[: len(targets)] == ["refused 2 False"] * len(targets)  # ENOENT: not there at all
    top = set(json.loads(lines[-2]))
    needed = {Path(os.path.realpath(p)).parts[1] for p in [sys.executable, *sys.path] if p and os.path.exists(p)}
    needed |= {"dev", "proc", "etc", "usr", "lib", "lib64", "lib32", "libx32", "bin", "sbin"}
    needed.add(Path(tempfile.gettempdir()).parts[1])  # the work directory's
    assert top <= needed, top - needed
    assert not top & {"opt", "srv", "home", "var", "run", "sys", "boot", "mnt", "media", REPO.parts[1]} - needed
    assert set(json.loads(lines[-1])) <= {"ld.so.cache"}  # no passwd, hosts, ssl, ...


@needs_netns
def test_the_venv_the_checkout_and_site_packages_are_absent():
    venv_site = sysconfig.get_paths()["purelib"]  # this test process's (a venv's, usually)
    base_site = os.path.join(sysconfig.get_paths()["stdlib"], "site-packages")
    paths = [venv_site, base_site, str(REPO), str(REPO / "pyproject.toml"), "/work", sys.prefix]
    code = (
        "import os, importlib\n"
        f"for path in {paths!r}:\n"
        "    print('entries' if os.path.isdir(path) and os.listdir(path) else 'empty-or-absent', path)\n"
        "for name in ('pytest', 'distill', 'numpy', 'torch'):\n"
        "    try:\n        importlib.import_module(name)\n        print('IMPORTED', name)\n"
        "    except ImportError:\n        print('no', name)\n"
    )
    r = run_sandboxed(code)
    assert r.status == "ok", r.stderr
    assert "entries" not in r.stdout and "IMPORTED" not in r.stdout, r.stdout
    assert os.listdir(venv_site) and os.listdir("/work" if os.path.isdir("/work") else REPO)  # there outside


@needs_netns
def test_the_standard_library_still_works():
    code = r"""
import bisect, collections, datetime, decimal, fractions, functools, hashlib, heapq, itertools, json
import math, random, re, statistics, string, struct, sys, threading, unicodedata, zlib, array, os
out = []
out.append(json.dumps({"a": [1, 2.5, None]}, sort_keys=True))
out.append(re.sub(r"(\d+)", lambda m: str(int(m.group(1)) * 2), "a1b22c333"))
out.append(f"{math.comb(50, 25)} {math.isqrt(10**20)} {math.gcd(12, 18)} {math.sqrt(2):.12f}")
out.append(str(collections.Counter("mississippi").most_common(2)))
out.append(str(list(itertools.permutations(range(3), 2))[:4]))
out.append(str(fractions.Fraction(3, 4) + fractions.Fraction(1, 6)))
decimal.getcontext().prec = 40
out.append(str(decimal.Decimal(1) / decimal.Decimal(7)))
h = [5, 1, 4]; heapq.heapify(h); out.append(str([heapq.heappop(h) for _ in range(3)]))
out.append(str(bisect.bisect_left([1, 3, 5, 7], 5)))
out.append((datetime.date(2024, 2, 28) + datetime.timedelta(days=2)).isoformat())
out.append(datetime.datetime(2024, 1, 1, 12).strftime("%A %d %B %Y %H:%M"))
rng = random.Random(1234); out.append(f"{rng.random():.12f} {rng.randint(1, 100)}")
out.append(hashlib.sha256(b"abc").hexdigest() + " " + hashlib.md5(b"abc").hexdigest())
out.append(str(statistics.median([3, 1, 4, 1, 5])) + " " + string.ascii_lowercase[:5])
out.append(struct.pack("<iH", 7, 3).hex() + " " + unicodedata.name("é") + " " + str(zlib.crc32(b"x")))
out.append(str(functools.reduce(lambda a, b: a * b, range(1, 10))) + " " + str(array.array("i", [1, 2]).tolist()))
sys.setrecursionlimit(10000)
f = lambda n: 0 if n == 0 else 1 + f(n - 1)
res = []
t = threading.Thread(target=lambda: res.append(f(3000))); t.start(); t.join()
out.append(str(res))
out.append(str(len(os.urandom(16))) + " " + str(len(open("/dev/urandom", "rb").read(8))))
open("/dev/null", "w").write("discarded")
out.append(sys.stdin.read().strip())
print("\n".join(out))
"""
    expected = subprocess.run(
        [sys.executable, "-S", "-c", code], input="the input\n", capture_output=True, text=True, check=True
    ).stdout
    r = run_sandboxed(code, "the input\n")
    assert r.status == "ok", r.stderr
    assert r.stdout == expected
    r = run_sandboxed("import sys\nprint(open('/dev/stdin').read().upper(), end='')", "via dev stdin\n")
    assert (r.status, r.stdout) == ("ok", "VIA DEV STDIN\n"), r.stderr


def test_the_trace_of_a_path_records_each_symlink(tmp_path):
    (tmp_path / "real" / "lib").mkdir(parents=True)
    (tmp_path / "real" / "lib" / "libz.so.1.2.13").write_text("")
    (tmp_path / "lib").symlink_to("real/lib")
    (tmp_path / "real" / "lib" / "libz.so.1").symlink_to("libz.so.1.2.13")
    links: dict[str, str] = {}
    real = sandbox._trace(str(tmp_path / "lib" / "libz.so.1"), links)
    assert real == str(tmp_path.resolve() / "real" / "lib" / "libz.so.1.2.13")
    assert links == {
        str(tmp_path.resolve() / "lib"): "real/lib",
        str(tmp_path.resolve() / "real" / "lib" / "libz.so.1"): "libz.so.1.2.13",
    }
    assert sandbox._trace(str(tmp_path / "missing" / "x"), {}) is None


# --------------------------------------------------------------------------------------------------
# One cgroup per run: memory and processes of the whole tree


def test_describe_isolation_names_the_mechanism():
    text = describe_isolation()
    if CGROUPS_EXPECTED:
        assert "cgroup-v1(memory,pids)" in text or "cgroup-v2(memory,pids)" in text, (CGROUPS_EXPECTED, text)
    elif not CGROUPS_IN_FORCE:
        assert "rlimit-as" in text and "rlimit-nproc" in text
    if NETNS:
        assert "allowlist-root" in text
    r = run_sandboxed("print(1)")
    assert r.isolation == text.split(" (not available")[0]
    assert run_sandboxed("print(1)", isolation="shim").isolation.startswith("python-shim")


@needs_cgroups
def test_ctypes_forks_land_in_the_run_cgroup_and_count_against_max_processes():
    code = (
        "import ctypes, os, time\nlibc = ctypes.CDLL(None)\n"
        "mine = open('/proc/self/cgroup').read()\n"
        "n = 0\n"
        "for _ in range(200):\n"
        "    pid = libc.fork()\n"
        "    if pid == 0:\n"
        "        same = open('/proc/self/cgroup').read() == mine\n"
        "        os.write(1, b'child same-cgroup\\n' if same else b'child OTHER-cgroup\\n')\n"
        "        time.sleep(0.5)\n"
        "        os._exit(0)\n"
        "    if pid < 0:\n"
        "        break\n"
        "    n += 1\n"
        "for _ in range(n):\n    os.wait()\n"
        "print('forked', n)\n" + CGROUP_LINES + "\n"
    )
    r = run_sandboxed(code, max_processes=10, wall_seconds=10)
    assert r.status == "ok", r.stderr
    forked = int(next(line for line in r.stdout.splitlines() if line.startswith("forked")).split()[1])
    assert 1 <= forked <= 9  # the program itself is one of the 10
    assert r.stdout.count("child same-cgroup") == forked and "OTHER" not in r.stdout
    dirs = _run_cgroup_dirs(r.stdout)
    assert dirs, r.stdout  # it ran in a cgroup of its own ...
    assert not any(os.path.exists(d) for d in dirs)  # ... which is gone now


@needs_cgroups
def test_ctypes_forked_children_share_one_memory_budget():
    # six children holding 150 MB each: each is far below RLIMIT_AS, together 3.5x memory_mb
    code = (
        "import ctypes, os, time\nlibc = ctypes.CDLL(None)\nkids = []\n"
        "for i in range(6):\n"
        "    pid = libc.fork()\n"
        "    if pid == 0:\n"
        "        block = b'x' * (150 << 20)\n"
        "        os.write(1, b'holding\\n')\n"
        "        time.sleep(2)\n"
        "        os._exit(0)\n"
        "    kids.append(pid)\n"
        "print('statuses', [os.waitpid(p, 0)[1] for p in kids])\n"
    )
    r = run_sandboxed(code, memory_mb=256, wall_seconds=15)
    assert r.status == "memory" and r.memory_exceeded, (r.status, r.stdout, r.stderr)
    assert r.stdout.count("holding") < 6
    assert r.memory_peak is not None and r.memory_peak <= 256 << 20
    r = run_sandboxed("print('next run is fine')")
    assert (r.status, r.stdout) == ("ok", "next run is fine\n")


@needs_cgroups
def test_a_single_process_over_the_limit_gets_memory_status():
    # files in the work directory's tmpfs are memory too, and RLIMIT_AS does not see them
    code = (
        "for i in range(8):\n"
        "    with open(f'scratch{i}', 'wb') as f:\n"
        "        f.write(b'x' * (24 << 20))\n"
        "print('all written')\n" + CGROUP_LINES + "\n"
    )
    r = run_sandboxed(code, memory_mb=96, max_file_mb=64, wall_seconds=15)
    assert r.status == "memory" and r.memory_exceeded, (r.status, r.stdout, r.stderr)
    assert "all written" not in r.stdout
    assert r.memory_peak is not None and r.memory_peak <= 96 << 20
    # and an ordinary allocation over the limit (RLIMIT_AS: a MemoryError)
    r = run_sandboxed("block = b'x' * (400 << 20)\nprint(len(block))", memory_mb=128)
    assert r.status == "memory" and r.stdout == ""


@needs_cgroups
def test_the_run_cgroup_is_removed_also_after_a_timeout():
    code = (
        CGROUP_LINES + "\nimport ctypes, time, sys\nsys.stdout.flush()\nlibc = ctypes.CDLL(None)\n"
        "for _ in range(50):\n    libc.fork()\nlibc.setsid()\ntime.sleep(60)\n"
    )
    t0 = time.monotonic()
    r = run_sandboxed(code, wall_seconds=1.5, max_processes=16, isolation="auto")
    assert r.status == "timeout" and time.monotonic() - t0 < 8
    dirs = _run_cgroup_dirs(r.stdout)
    assert dirs, r.stdout
    assert not any(os.path.exists(d) for d in dirs)
    for directory in {os.path.dirname(d) for d in dirs}:
        assert not [n for n in os.listdir(directory) if n.startswith(f"distill-sbx-{os.getpid()}-")]


@needs_cgroups
def test_the_shim_mode_runs_in_a_cgroup_too():
    r = run_sandboxed(CGROUP_LINES + "\nx = b'x' * (40 << 20)\nprint('ok')", isolation="shim", memory_mb=256)
    assert r.status == "ok" and r.isolation.startswith("python-shim") and "cgroup-v" in r.isolation
    dirs = _run_cgroup_dirs(r.stdout)
    assert dirs and not any(os.path.exists(d) for d in dirs)
    assert r.memory_peak is not None and r.memory_peak >= 40 << 20


def test_cgroup_hierarchies_are_found_in_v1_v2_and_hybrid_layouts(tmp_path):
    def fake(path: str, controllers: str = "", subtree: str = "") -> None:
        d = tmp_path / path.lstrip("/")
        d.mkdir(parents=True, exist_ok=True)
        (d / "cgroup.controllers").write_text(controllers)
        (d / "cgroup.subtree_control").write_text(subtree)

    mnt = str(tmp_path)
    # pure cgroup v2, our cgroup /svc/app inside
    fake("/unified/svc/app", "cpu memory pids")
    info = f"41 31 0:38 / {mnt}/unified rw,relatime - cgroup2 cgroup2 rw\n"
    found, notes = sandbox._cgroup_dirs(info, "0::/svc/app\n")
    assert found == {"memory": (2, f"{mnt}/unified/svc/app"), "pids": (2, f"{mnt}/unified/svc/app")} and not notes
    # hybrid: v1 memory and pids, v2 without them (this machine's layout)
    fake("/unified2", "hugetlb")
    (tmp_path / "memory" / "a" / "b").mkdir(parents=True)
    (tmp_path / "pids").mkdir()
    info = (
        f"35 31 0:32 / {mnt}/memory rw - cgroup cgroup rw,memory\n"
        f"39 31 0:36 / {mnt}/pids rw - cgroup cgroup rw,pids\n"
        f"41 31 0:38 / {mnt}/unified2 rw - cgroup2 cgroup2 rw\n"
    )
    found, notes = sandbox._cgroup_dirs(info, "8:pids:/\n4:memory:/a/b\n0::/\n")
    assert found == {"memory": (1, f"{mnt}/memory/a/b"), "pids": (1, f"{mnt}/pids")} and not notes
    # a container whose mount root is its own cgroup (no cgroup namespace): the path is relative to it
    (tmp_path / "cmem").mkdir()
    info = f"35 31 0:32 /docker/abc {mnt}/cmem rw - cgroup cgroup rw,memory\n"
    found, notes = sandbox._cgroup_dirs(info, "4:memory:/docker/abc\n")
    assert found == {"memory": (1, f"{mnt}/cmem")} and notes == ["no cgroup hierarchy offers pids"]
    # v2 delegation: our cgroup delegates already; or it holds processes (the write is refused) and
    # its parent delegates memory and pids: the run cgroups become its siblings; or neither
    fake("/deleg/parent", "memory pids", "memory pids")
    fake("/deleg/parent/ready", "memory pids", "memory pids")
    assert sandbox._delegated_v2(f"{mnt}/deleg/parent/ready", ["memory", "pids"]) == f"{mnt}/deleg/parent/ready"
    (tmp_path / "deleg" / "parent" / "busy").mkdir()
    (tmp_path / "deleg" / "parent" / "busy" / "cgroup.subtree_control").symlink_to("/proc/version")  # unwritable
    assert sandbox._delegated_v2(f"{mnt}/deleg/parent/busy", ["memory", "pids"]) == f"{mnt}/deleg/parent"
    (tmp_path / "deleg" / "parent" / "cgroup.subtree_control").write_text("cpu")
    with pytest.raises(OSError, match="not delegated"):
        sandbox._delegated_v2(f"{mnt}/deleg/parent/busy", ["memory", "pids"])
