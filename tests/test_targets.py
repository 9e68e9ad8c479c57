"""Device profiles: shipped TOMLs load, every validation error names the file and key,
size / latency strings parse."""

from __future__ import annotations

import os
import platform
import shutil
import sys

import pytest

from edgecompress.errors import TargetError
from edgecompress.targets import (
    BACKENDS, COST_KEYS, ENV_VAR, Target, format_size, list_targets, load_target, parse_latency,
    parse_size, targets_dir,
)

SHIPPED = {"raspberry-pi-4", "raspberry-pi-5", "jetson-nano", "jetson-orin-nano", "android-phone",
           "generic-aarch64", "local"}


@pytest.fixture(autouse=True)
def _default_targets_dir(monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)


# --------------------------------------------------------------------------- a tiny TOML writer


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(v)


def _to_toml(data: dict) -> str:
    lines, tables = [], []
    for k, v in data.items():
        (tables if isinstance(v, dict) else lines).append((k, v))
    out = [f"{k} = {_toml_value(v)}" for k, v in lines]
    for k, table in tables:
        out.append(f"\n[{k}]")
        out += [f"{kk} = {_toml_value(vv)}" for kk, vv in table.items()]
    return "\n".join(out) + "\n"


def _valid(name: str = "my-board") -> dict:
    return {
        "name": name,
        "description": "test board",
        "arch": "aarch64",
        "cores": 4,
        "ram_mb": 4096,
        "python": "3.11",
        "memory_budget": "16MB",
        "latency_budget": "5ms@64",
        "batch_sizes": [1, 64, 256],
        "backends": ["numpy", "litert"],
        "platform_tags": ["manylinux_2_28_aarch64", "manylinux2014_aarch64"],
        "cost": {"gather_bytes_per_s": 8e8, "fp32_macs_per_s": 3e9, "int8_macs_per_s": 3e8,
                 "op_overhead_s": 2.5e-5},
    }


def _write(tmp_path, data: dict, stem: str = "my-board"):
    path = tmp_path / f"{stem}.toml"
    path.write_text(_to_toml(data))
    return path


# --------------------------------------------------------------------------- shipped profiles


def test_shipped_profiles_load():
    targets = list_targets()
    assert {t.name for t in targets} == SHIPPED
    assert [t.name for t in targets] == sorted(t.name for t in targets)
    for t in targets:
        assert isinstance(t, Target)
        assert os.path.basename(t.source) == f"{t.name}.toml"
        assert t.memory_budget_bytes > 0 and t.memory_budget_bytes <= t.ram_mb * 2**20
        assert t.latency_budget_s > 0 and t.latency_batch >= 1
        assert set(t.backends) <= set(BACKENDS)
        assert set(t.cost) == set(COST_KEYS) and all(isinstance(v, float) and v > 0 for v in t.cost.values())
        assert t.cost["int8_macs_per_s"] < t.cost["fp32_macs_per_s"]  # numpy has no int8 BLAS
        assert all(isinstance(b, int) for b in t.batch_sizes)
        assert t.python_version >= (3, 9)  # edgecompress-runtime requires Python >= 3.9
        hash(t)  # frozen and hashable
        assert load_target(t.name) == t
        assert load_target(t.source) == t
        assert Target.from_dict(t.to_dict()) == t.__class__(**{**t.__dict__, "source": "<dict>"})


def test_shipped_values():
    pi4 = load_target("raspberry-pi-4")
    assert (pi4.arch, pi4.cores, pi4.memory_budget_bytes) == ("aarch64", 4, 16_000_000)
    assert (pi4.latency_budget_s, pi4.latency_batch) == (0.005, 64)
    for t in list_targets():
        if t.name != "local":
            assert t.arch == "aarch64"


def test_local_profile_is_this_host():
    t = load_target("local")
    machine = platform.machine().lower()
    assert t.arch == {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    assert t.python == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert t.cores >= 1 and t.ram_mb >= 1
    assert t.platform_tags and all(tag.endswith(("_" + t.arch, "_amd64", "_arm64")) for tag in t.platform_tags)
    d = t.to_dict()
    assert d["arch"] == t.arch and isinstance(d["platform_tags"], list) and d["cost"] == t.cost


def test_to_dict_is_plain():
    d = load_target("raspberry-pi-5").to_dict()
    assert isinstance(d["batch_sizes"], list) and isinstance(d["backends"], list)
    assert d["name"] == "raspberry-pi-5" and d["source"].endswith("raspberry-pi-5.toml")


def test_targets_dir_default_and_env(tmp_path, monkeypatch):
    assert targets_dir().name == "targets"
    assert (targets_dir() / "local.toml").is_file()
    shutil.copy(targets_dir() / "raspberry-pi-4.toml", tmp_path)
    _write(tmp_path, _valid())
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    assert targets_dir() == tmp_path
    assert [t.name for t in list_targets()] == ["my-board", "raspberry-pi-4"]
    with pytest.raises(TargetError, match="jetson-nano.*Available targets: my-board, raspberry-pi-4"):
        load_target("jetson-nano")
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "nope"))
    with pytest.raises(TargetError, match=ENV_VAR):
        list_targets()


def test_unknown_target_lists_available():
    with pytest.raises(TargetError) as e:
        load_target("raspbery-pi-4")
    msg = str(e.value)
    assert "Did you mean 'raspberry-pi-4'" in msg
    for name in SHIPPED:
        assert name in msg


def test_load_by_path(tmp_path):
    path = _write(tmp_path, _valid())
    t = load_target(path)
    assert t.name == "my-board" and t.source == str(path)
    assert load_target(str(path)) == t
    assert load_target(t) is t
    assert t.batch_sizes == (1, 64, 256) and t.backends == ("numpy", "litert")
    with pytest.raises(TargetError, match="does not exist"):
        load_target(tmp_path / "missing.toml")


def test_optional_notes_and_int_costs(tmp_path):
    data = _valid()
    data["notes"] = "hello"
    data["cost"]["fp32_macs_per_s"] = 3000000000  # an integer is fine for a float key
    t = load_target(_write(tmp_path, data))
    assert t.notes == "hello" and t.cost["fp32_macs_per_s"] == 3e9
    assert isinstance(t.cost["fp32_macs_per_s"], float)


def test_auto_keys(tmp_path):
    data = _valid()
    for k in ("arch", "cores", "ram_mb", "python", "platform_tags"):
        data[k] = "auto"
    t = load_target(_write(tmp_path, data))
    assert t.python == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert isinstance(t.cores, int) and isinstance(t.ram_mb, int) and t.platform_tags


# --------------------------------------------------------------------------- validation errors


def _set(key, value):
    def mutate(d):
        if "." in key:
            table, sub = key.split(".")
            d[table][sub] = value
        else:
            d[key] = value
    return mutate


def _drop(key):
    def mutate(d):
        if "." in key:
            table, sub = key.split(".")
            del d[table][sub]
        else:
            del d[key]
    return mutate


BAD = [
    # (id, mutation, key that must appear in the message, other text that must appear)
    ("unknown key", _set("colour", "red"), "colour", "unknown key"),
    ("unknown key typo", _set("memory_budgets", "8MB"), "memory_budgets", "did you mean 'memory_budget'"),
    ("missing name", _drop("name"), "name", "missing"),
    ("missing cores", _drop("cores"), "cores", "missing"),
    ("missing cost", _drop("cost"), "cost", "missing"),
    ("name not stem", _set("name", "other-board"), "name", "file name"),
    ("name wrong type", _set("name", 3), "name", "expected a string"),
    ("description empty", _set("description", " "), "description", "empty"),
    ("arch unknown", _set("arch", "mips"), "arch", "aarch64, x86_64, armv7l"),
    ("arch wrong type", _set("arch", 64), "arch", "expected a string"),
    ("cores bool", _set("cores", True), "cores", "got a boolean"),
    ("cores zero", _set("cores", 0), "cores", "> 0"),
    ("cores string", _set("cores", "4"), "cores", "expected an integer"),
    ("ram float", _set("ram_mb", 4096.0), "ram_mb", "expected an integer"),
    ("ram negative", _set("ram_mb", -1), "ram_mb", "> 0"),
    ("python float", _set("python", 3.11), "python", "expected a string"),
    ("python 2", _set("python", "2.7"), "python", "3.11"),
    ("python patch", _set("python", "3.11.4"), "python", "minor version"),
    ("memory garbage", _set("memory_budget", "abc"), "memory_budget", "invalid size"),
    ("memory negative", _set("memory_budget", "-1MB"), "memory_budget", "positive"),
    ("memory zero", _set("memory_budget", "0MB"), "memory_budget", "positive"),
    ("memory int", _set("memory_budget", 8000000), "memory_budget", "expected a string"),
    ("memory over ram", _set("memory_budget", "8GB"), "memory_budget", "RAM"),
    ("memory auto", _set("memory_budget", "auto"), "memory_budget", "invalid size"),
    ("latency no batch", _set("latency_budget", "2ms@"), "latency_budget", "invalid latency"),
    ("latency no @", _set("latency_budget", "5ms"), "latency_budget", "@<batch size>"),
    ("latency no unit", _set("latency_budget", "5@64"), "latency_budget", "unit"),
    ("latency zero batch", _set("latency_budget", "5ms@0"), "latency_budget", "batch size"),
    ("latency float", _set("latency_budget", 0.005), "latency_budget", "expected a string"),
    ("batch empty", _set("batch_sizes", []), "batch_sizes", "empty"),
    ("batch bool", _set("batch_sizes", [1, True]), "batch_sizes", "boolean"),
    ("batch zero", _set("batch_sizes", [0, 64]), "batch_sizes", "> 0"),
    ("batch dupes", _set("batch_sizes", [64, 64]), "batch_sizes", "duplicate"),
    ("batch not list", _set("batch_sizes", 64), "batch_sizes", "expected an array"),
    ("backend unknown", _set("backends", ["numpy", "tensorrt"]), "backends", "tensorrt"),
    ("backend empty", _set("backends", []), "backends", "empty"),
    ("backend dupes", _set("backends", ["numpy", "numpy"]), "backends", "duplicate"),
    ("backend type", _set("backends", "numpy"), "backends", "expected an array"),
    ("tag wrong arch", _set("platform_tags", ["manylinux_2_28_x86_64"]), "platform_tags", "arch"),
    ("tag not a tag", _set("platform_tags", ["manylinux 2.28"]), "platform_tags", "not a wheel platform tag"),
    ("tag not list", _set("platform_tags", "manylinux2014_aarch64"), "platform_tags", "expected an array"),
    ("tag type", _set("platform_tags", [1]), "platform_tags", "strings"),
    ("cost not table", _set("cost", 5), "cost", "expected a table"),
    ("cost unknown", _set("cost.fp16_macs_per_s", 1e9), "cost.fp16_macs_per_s", "unknown key"),
    ("cost missing", _drop("cost.op_overhead_s"), "cost.op_overhead_s", "missing"),
    ("cost negative", _set("cost.op_overhead_s", -1.0), "cost.op_overhead_s", "> 0"),
    ("cost zero", _set("cost.gather_bytes_per_s", 0.0), "cost.gather_bytes_per_s", "> 0"),
    ("cost inf", _set("cost.gather_bytes_per_s", float("inf")), "cost.gather_bytes_per_s", "finite"),
    ("cost bool", _set("cost.fp32_macs_per_s", True), "cost.fp32_macs_per_s", "boolean"),
    ("cost string", _set("cost.int8_macs_per_s", "1e9"), "cost.int8_macs_per_s", "expected a number"),
    ("notes type", _set("notes", 5), "notes", "expected a string"),
]


@pytest.mark.parametrize("mutate,key,text", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_invalid_profile(tmp_path, mutate, key, text):
    data = _valid()
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(TargetError) as e:
        load_target(path)
    msg = str(e.value)
    assert "my-board.toml" in msg
    assert f"'{key}'" in msg
    assert text in msg


def test_target_error_is_value_error(tmp_path):
    data = _valid()
    data["cores"] = -3
    with pytest.raises(ValueError):
        load_target(_write(tmp_path, data))


def test_invalid_toml_syntax(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text('name = "broken"\ncores = \n')
    with pytest.raises(TargetError, match=r"broken\.toml: not valid TOML"):
        load_target(path)


def test_bad_profile_in_dir_fails_list(tmp_path, monkeypatch):
    data = _valid()
    data["cores"] = True
    _write(tmp_path, data)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(TargetError, match=r"my-board\.toml: key 'cores'"):
        list_targets()


# --------------------------------------------------------------------------- parse_size / parse_latency


@pytest.mark.parametrize("text,expected", [
    ("8MB", 8_000_000),
    ("8 MB", 8_000_000),
    ("512KB", 512_000),
    ("4kB", 4_000),
    ("1.5GB", 1_500_000_000),
    ("1234", 1234),
    ("1234B", 1234),
    ("8MiB", 8 * 2**20),
    ("512KiB", 512 * 2**10),
    ("1.5GiB", 3 * 2**29),
    ("0.5KiB", 512),
    ("2TB", 2 * 10**12),
    (" 16MB ", 16_000_000),
    (4096, 4096),
])
def test_parse_size_good(text, expected):
    assert parse_size(text) == expected
    assert isinstance(parse_size(text), int)


@pytest.mark.parametrize("text", ["", "abc", "MB", "-1MB", "0MB", "0", "1.5B", "0.1KiB", "8mb", "8Mb", "8 XB",
                                  "8M", "1e3MB", "2ms@", "8MB8", 0, -5, True, 1.5, None])
def test_parse_size_bad(text):
    with pytest.raises(TargetError, match="invalid size"):
        parse_size(text)


def test_format_size():
    assert format_size(16_000_000) == "16MB"
    assert format_size(512) == "512B"


@pytest.mark.parametrize("text,expected", [
    ("2ms@64", (0.002, 64)),
    ("500us@1", (0.0005, 1)),
    ("0.01s@256", (0.01, 256)),
    ("250ns@1", (2.5e-7, 1)),
    ("1.5 ms @ 32", (0.0015, 32)),
    ("1e-3s@8", (0.001, 8)),
    ("5MS@64", (0.005, 64)),
])
def test_parse_latency_good(text, expected):
    seconds, batch = parse_latency(text)
    assert seconds == pytest.approx(expected[0], rel=1e-12)
    assert batch == expected[1]
    assert isinstance(seconds, float) and isinstance(batch, int)


@pytest.mark.parametrize("text", ["2ms@", "2ms", "@64", "2@64", "abc", "-1ms@64", "0ms@64", "2ms@0",
                                  "2ms@-1", "2ms@1.5", "2min@64", "2ms@64@1", "", 0.002, None])
def test_parse_latency_bad(text):
    with pytest.raises(TargetError, match="invalid latency"):
        parse_latency(text)


def test_a_built_wheel_carries_the_target_profiles(tmp_path):
    """`pip install edgecompress` (not editable) has no source tree: the wheel carries the
    profiles as edgecompress/_targets, and targets_dir() finds them there."""
    import subprocess
    import zipfile
    from pathlib import Path
    repo = Path(__file__).resolve().parent.parent
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(repo / name, src / name)
    for d in ("edgecompress", "targets"):
        shutil.copytree(repo / d, src / d, ignore=shutil.ignore_patterns("__pycache__", "_targets"))
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                        "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("edgecompress-*.whl"))
    shipped = sorted(p.name for p in (repo / "targets").glob("*.toml"))
    with zipfile.ZipFile(wheel) as zf:
        inside = sorted(n.rsplit("/", 1)[1] for n in zf.namelist() if n.startswith("edgecompress/_targets/"))
        assert inside == shipped and len(shipped) >= 5
        zf.extractall(tmp_path / "site")
    env = {k: v for k, v in os.environ.items() if k != "EDGECOMPRESS_TARGETS"}
    env["PYTHONPATH"] = str(tmp_path / "site")
    r = subprocess.run([sys.executable, "-c", "import edgecompress.targets as t; print(t.targets_dir()); "
                        "print(t.load_target('raspberry-pi-4').name)"],
                       capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    where, name = r.stdout.split()
    assert where == str(tmp_path / "site" / "edgecompress" / "_targets") and name == "raspberry-pi-4"
