"""`mipp prune` end to end on a tiny configuration (the printed table and the CSV agree and make sense), on
the user's own model (budgets, the console script importing from the current folder), and every bad input
answered with one line naming the problem and exit code 2."""

import csv
import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from mipp.cli import main

TINY = [
    "prune",
    "--no-progress",
    "--setting",
    "trained",
    "--tolerance",
    "1.0",
    "--epochs",
    "2",
    "--n-train",
    "1000",
    "--n-samples",
    "300",
]


def test_prune_cli_smoke(tmp_path, capsys):
    path = tmp_path / "rows.csv"
    assert main(TINY + ["--csv", str(path)]) == 0
    out = capsys.readouterr().out
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["mipp", "screen", "random", "l1", "taylor"]
    assert len({r["kept"] for r in rows}) == 1  # baselines at MIPP's per-group counts
    assert 0 < float(rows[0]["node_sparsity"]) < 1
    assert 0.5 < float(rows[0]["acc_dense"]) <= 1  # trained well above chance (0.1)
    for r in rows:
        assert 0 <= float(r["acc_finetuned"]) <= 1
        assert float(r["params_frac"]) < 1 and float(r["macs_frac"]) < 1
    table = [line.split() for line in out.splitlines() if line.startswith("trained ")]
    assert [t[2] for t in table] == ["mipp", "screen", "random", "l1", "taylor"]
    for t, r in zip(table, rows):
        assert t[3] == r["kept"]
        assert float(t[-2]) == pytest.approx(float(r["acc_pruned"]), abs=5e-5)
        assert float(t[-1]) == pytest.approx(float(r["acc_finetuned"]), abs=5e-5)
    assert "recon err" in out and "params" in out  # the per-group report is printed


def test_prune_cli_rejects_a_bad_tolerance(capsys):
    assert main(TINY[:-6] + ["--tolerance", "-1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--tolerance" in err and "-1 is not a finite number >= 0" in err


def test_prune_cli_on_your_own_model(tmp_path, monkeypatch, capsys):
    """--model package.module:factory with --weights and --inputs writes the pruned model, the selection
    (JSON, loadable) and the report."""
    import torch

    from mipp.pruning import Selection

    (tmp_path / "mymodels.py").write_text(
        "from torch import nn\n"
        "def make():\n"
        "    return nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 3))\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import mymodels

    torch.manual_seed(0)
    model = mymodels.make()
    with torch.no_grad():
        model[0].weight[12:] = model[0].weight[:12]  # 12 duplicated hidden units: removable exactly
        model[0].bias[12:] = model[0].bias[:12]
    torch.save(model.state_dict(), tmp_path / "w.pt")
    x = torch.randn(400, 6)
    torch.save(x, tmp_path / "x.pt")
    out = tmp_path / "out"
    assert (
        main(
            [
                "prune",
                "--model",
                "mymodels:make",
                "--weights",
                str(tmp_path / "w.pt"),
                "--inputs",
                str(tmp_path / "x.pt"),
                "--out",
                str(out),
                "--no-progress",
                "--tolerance",
                "0.2",
            ]
        )
        == 0
    )
    small = torch.load(out / "pruned.pt", weights_only=False)
    assert small[0].out_features <= 12
    with torch.no_grad():
        ref = model(x)
        assert float((small(x) - ref).norm() / (ref - ref.mean(0)).norm()) < 0.1  # re-fitted, close
    sel = Selection.load(str(out / "selection.json"), model)
    assert len(sel.keep["0"]) == small[0].out_features
    assert (out / "report.txt").read_text().startswith("group") and (out / "selection.png").exists()


MODELS = (
    "from torch import nn\n"
    "def make():\n"
    "    return nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 3))\n"
    "def broken():\n"
    "    raise RuntimeError('no weights here')\n"
)


@pytest.fixture
def own(tmp_path, monkeypatch):
    """A user's folder: usermodels.py, w.pt (state_dict), x.pt (inputs); the current folder."""
    (tmp_path / "usermodels.py").write_text(MODELS)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 24), nn.ReLU(), nn.Linear(24, 12), nn.ReLU(), nn.Linear(12, 3))
    torch.save(model.state_dict(), tmp_path / "w.pt")
    torch.save(torch.randn(300, 6), tmp_path / "x.pt")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def base(*extra):
    return ["prune", "--model", "usermodels:make", "--weights", "w.pt", "--inputs", "x.pt", "--no-progress", *extra]


def test_prune_cli_budgets(own, capsys):
    import json

    for flag, value, key, want in (
        ("--sparsity", "0.5", "sparsity", 0.5),
        ("--macs-removed", "0.4", "macs_removed", 0.4),
        ("--macs", "0.6", "macs_removed", 0.4),  # deprecated: the fraction kept
    ):
        out = own / flag[2:]
        assert main(base(flag, value, "--out", str(out))) == 0
        data = json.loads((out / "selection.json").read_text())
        assert data["settings"][key] == pytest.approx(want)
        small = torch.load(out / "pruned.pt", weights_only=False)
        if flag == "--sparsity":
            assert small[0].out_features + small[2].out_features == 18  # half of the 36 hidden nodes
    assert "deprecated" in capsys.readouterr().err
    out = own / "refined"
    assert main(base("--sparsity", "0.5", "--refine", "8", "--out", str(out))) == 0
    data = json.loads((out / "selection.json").read_text())
    assert data["settings"]["refine"] == 8
    losses = data["settings"]["refine_losses"]
    assert losses["refined"] <= min(losses["one-shot"], losses["uniform"])
    assert main(base("--sparsity", "0.5", "--macs-removed", "0.5")) == 2
    assert "not allowed with argument" in capsys.readouterr().err


def write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content, path)


BAD = {
    "missing inputs file": (["--inputs", "nope.pt"], "--inputs nope.pt: no such file"),
    "missing weights file": (["--weights", "nope.pt"], "--weights nope.pt: no such file"),
    "inputs not torch": (["--inputs", "junk.pt"], "--inputs junk.pt is not a file torch.save wrote"),
    "inputs a folder": (["--inputs", "."], "is a folder"),
    "inputs a dict": (["--inputs", "dict.pt"], "--inputs must hold a tensor of samples, got dict"),
    "wrong shape": (["--inputs", "wide.pt"], r"Sequential fails on the inputs \(float32 tensor of shape \(2, 9\)\)"),
    "too few samples": (["--inputs", "one.pt"], "holds 6 value"),
    "few samples": (["--inputs", "three.pt"], "samples"),
    "weights mismatch": (["--weights", "other.pt"], "does not fit the model: 0.weight has shape"),
    "weights not a dict": (["--weights", "x.pt"], "must hold a state_dict"),
    "negative tolerance": (["--tolerance", "-1"], "-1 is not a finite number >= 0"),
    "sparsity 1": (["--sparsity", "1"], "argument --sparsity: 1 is not in \\(0, 1\\)"),
    "n-samples 0": (["--n-samples", "0"], "0 is not a positive integer"),
    "refine not an integer": (["--refine", "2.5"], "argument --refine: '2.5' is not an integer"),
    "refine without a budget": (["--refine", "10"], "refine searches a budget's allocation"),
    "refine 1": (["--refine", "1", "--sparsity", "0.5"], "refine must be 0 or at least 2"),
    "factory raises": (["--model", "usermodels:broken"], "failed: RuntimeError: no weights here"),
    "no module": (["--model", "no_such_module:make"], "cannot import 'no_such_module'"),
    "no attribute": (["--model", "usermodels:nothing"], "has no attribute 'nothing'"),
    "no factory": (["--model", "usermodels:"], "must be package.module:factory"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_prune_cli_bad_inputs_one_line_exit_2(own, capsys, case):
    write(own / "junk.pt", b"this is not a torch file")
    write(own / "dict.pt", {"x": torch.randn(3, 6)})
    write(own / "wide.pt", torch.randn(50, 9))
    write(own / "one.pt", torch.randn(1, 6))
    write(own / "three.pt", torch.randn(3, 6))
    write(own / "other.pt", nn.Sequential(nn.Linear(5, 24), nn.ReLU(), nn.Linear(24, 12)).state_dict())
    extra, message = BAD[case]
    argv = base()
    for flag, value in zip(extra[::2], extra[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err.count("\n") == 1 and captured.err.startswith("mipp"), captured.err
    assert "Traceback" not in captured.err + captured.out
    assert __import__("re").search(message, captured.err), captured.err
    assert not os.path.exists(own / "mipp-out")


def test_prune_cli_without_inputs(capsys):
    assert main(["prune", "--model", "torch.nn:Linear"]) == 2
    assert "--inputs is required" in capsys.readouterr().err


def test_console_script_imports_from_the_current_folder(own):
    """The installed `mipp` script's sys.path starts at its bin folder, not the current one: the user's
    module is found all the same; a missing file is one line and exit code 2."""
    script = os.path.join(os.path.dirname(sys.executable), "mipp")
    if not os.path.exists(script):
        pytest.skip("the mipp console script is not installed beside this Python")
    env = {**os.environ, "PYTHONPATH": ""}
    run = subprocess.run(
        [script, *base("--out", "out", "--n-samples", "300")], cwd=own, env=env, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert (own / "out" / "selection.json").exists()
    run = subprocess.run([script, *base("--inputs", "gone.pt")], cwd=own, env=env, capture_output=True, text=True)
    assert run.returncode == 2 and run.stderr.strip().count("\n") == 0 and "gone.pt: no such file" in run.stderr
