"""The README's Python snippets run as written: the estimator blocks in order in one namespace, the
torchrun block under torchrun with 2 gloo ranks, the pruning block on the objects its first comment names
(a small BERT-style model with attention heads, its inputs, batches, activations X and a target Y)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def _block(marker: str) -> str:
    found = [b for b in _blocks() if marker in b]
    assert len(found) == 1, f"expected one README block with {marker!r}, found {len(found)}"
    return found[0]


def test_every_python_block_is_run_here():
    markers = ("mipp.mi(x, y, k=3)", "discrete_y=True)          #", "torchrun", "from mipp.pruning import MIPP\n#")
    assert sorted(_blocks()) == sorted(_block(m) for m in markers)


def test_estimator_blocks_run_in_order(tmp_path, monkeypatch):
    pytest.importorskip("sklearn")
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(_block("mipp.mi(x, y, k=3)"), "README-estimators", "exec"), namespace)
    exec(compile(_block("discrete_y=True)          #"), "README-discrete", "exec"), namespace)
    assert namespace["res"].null.shape == (100,)


@pytest.mark.slow
def test_torchrun_block_runs_on_two_ranks(tmp_path):
    script = tmp_path / "script.py"
    script.write_text(_block("torchrun") + "\ndist.destroy_process_group()\n")
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*calibration samples, fewer")
def test_pruning_block_runs_on_a_model_with_heads(tmp_path, monkeypatch):
    pytest.importorskip("torch_pruning")
    sys.path.insert(0, str(ROOT / "tests" / "pruning"))
    from zoo import BertNet

    monkeypatch.chdir(tmp_path)  # sel.plot writes mipp.png here
    torch.manual_seed(0)
    model = BertNet().eval()
    inputs = torch.randn(300, 7, 6)
    namespace = {
        "model": model,
        "inputs": inputs,
        "batches": list(inputs.split(100)),
        "X": torch.randn(500, 12, dtype=torch.float64),
        "Y": torch.randn(500, 2, dtype=torch.float64),
    }
    exec(compile(_block("from mipp.pruning import MIPP\n#"), "README-pruning", "exec"), namespace)
    assert (tmp_path / "mipp.png").stat().st_size > 0
    assert namespace["small"](inputs[:4]).shape == (4, 5)
