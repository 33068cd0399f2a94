"""`mipp prune` end to end on a tiny configuration: the printed table and the CSV agree and make sense."""

import csv

import pytest

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


def test_prune_cli_rejects_a_bad_tolerance():
    with pytest.raises(ValueError, match="tolerance"):
        main(TINY[:-6] + ["--tolerance", "-1"])


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


def test_prune_cli_names_a_bad_model_spec(tmp_path):
    with pytest.raises(SystemExit, match="no_such_module"):
        main(["prune", "--model", "no_such_module:make", "--inputs", str(tmp_path / "x.pt")])
    with pytest.raises(SystemExit, match="--inputs"):
        main(["prune", "--model", "torch.nn:Linear"])
