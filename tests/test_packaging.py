"""The package as users install it: in a fresh virtual environment holding only torch, `pip wheel .` and an
sdist both build the C++ extension in pip's isolated build environment (pybind11 from the build
requirements, never a torch build), and the installed wheel imports it. The sources are copied from the
checkout (tracked and untracked, not ignored files), so build artefacts here do not leak in."""

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]


def run(*args, cwd=None):
    out = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True)
    assert out.returncode == 0, f"{' '.join(map(str, args))} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_wheel_and_sdist_build_the_extension_in_isolation(tmp_path):
    files = run("git", "ls-files", "-co", "--exclude-standard", cwd=REPO).split()
    src = tmp_path / "src"
    for f in files:
        if (REPO / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            (src / f).write_bytes((REPO / f).read_bytes())
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    py = venv / "bin" / "python"
    run(py, "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}", "numpy", "tqdm", "build")
    dist = tmp_path / "dist"
    run(py, "-m", "pip", "wheel", "-q", "--no-deps", "-w", dist, src)  # isolated build
    run(py, "-m", "build", "--sdist", "-o", dist, src)
    (wheel,) = dist.glob("mipp-*.whl")
    (sdist,) = dist.glob("mipp-*.tar.gz")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        assert any(n.startswith("mipp/_C") and n.endswith(".so") for n in names)
        assert "mipp/py.typed" in names and not any(n.endswith("_build_status.json") for n in names)
        meta = z.read(next(n for n in names if n.endswith("METADATA"))).decode()
        assert "License-Expression: MIT" in meta
        assert not re.search(r"^Requires-Dist: torch(\s|[<>=!~;]|$)", meta, re.M)  # torch is never pulled
    with tarfile.open(sdist) as t:
        members = {m.split("/", 1)[1] for m in t.getnames() if "/" in m}
    assert {"csrc/digamma_sum_cuda.cu", "csrc/bindings.cpp", "LICENSE", "pyproject.toml"} <= members
    check = (
        "import mipp, mipp._C; info = mipp.build_info(); assert info['extension'], info; "
        "print(float(mipp.mi([[0.1], [0.5], [0.2], [0.9], [0.4]], [[1.0], [0.2], [0.3], [0.8], [0.5]], 2)))"
    )
    for artefact in (wheel, sdist):
        run(py, "-m", "pip", "install", "-q", "--no-deps", "--force-reinstall", artefact)
        assert float(run(py, "-c", check, cwd=tmp_path).strip()) < 10
        run(py, "-m", "pip", "uninstall", "-q", "-y", "mipp")
