"""The README's layout claims: `jnn/` is pure (no printing, no files except the dataset
builders) and the wheel installs `jnn` only."""

import ast
import pathlib
import pytest
import setuptools

tomllib = pytest.importorskip("tomllib")  # Python 3.11+

ROOT = pathlib.Path(__file__).resolve().parents[1]
# The dataset builders write the tfds data dir on first use; nothing else in jnn/ may.
MAY_WRITE_FILES = {"jnn/data/builders.py"}
FILE_CALLS = {"open", "write_text", "write_bytes", "mkdir", "makedirs", "savez", "save"}


def _calls(path: pathlib.Path):
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            yield name, node.lineno


def test_the_library_never_prints_and_only_the_dataset_builders_touch_files():
    sources = sorted((ROOT / "jnn").rglob("*.py"))
    assert len(sources) > 20, "the scan must see the library"
    prints, files = [], []
    for path in sources:
        rel = path.relative_to(ROOT).as_posix()
        for name, line in _calls(path):
            if name == "print":
                prints.append(f"{rel}:{line}")
            if name in FILE_CALLS and rel not in MAY_WRITE_FILES:
                files.append(f"{rel}:{line} {name}")
    assert prints == [], f"jnn/ prints (return values instead): {prints}"
    assert files == [], f"jnn/ touches files outside the dataset builders: {files}"


def test_the_scan_finds_a_planted_print_and_open(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f(p):\n    print(p)\n    return open(p).read()\n")
    assert sorted(name for name, _ in _calls(planted)) == ["open", "print", "read"]


def test_the_wheel_installs_jnn_only():
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"]["find"]
    packages = setuptools.find_packages(str(ROOT), include=find["include"],
                                        exclude=find.get("exclude", ()))
    assert "jnn" in packages and "jnn.models" in packages and "jnn.data" in packages
    assert all(p == "jnn" or p.startswith("jnn.") for p in packages), packages
