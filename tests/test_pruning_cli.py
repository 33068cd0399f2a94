"""`mipp prune` end to end on a tiny configuration: the printed table and the CSV agree and make sense."""
import csv

import pytest

from mipp.cli import main

TINY = ["prune", "--no-progress", "--setting", "trained", "--tolerance", "1.0", "--epochs", "2", "--n-train",
        "1000", "--n-samples", "300"]


def test_prune_cli_smoke(tmp_path, capsys):
    path = tmp_path / "rows.csv"
    assert main(TINY + ["--csv", str(path)]) == 0
    out = capsys.readouterr().out
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert [r["method"] for r in rows] == ["mipp", "screen", "random", "l1", "taylor"]
    assert len({r["kept"] for r in rows}) == 1                      # baselines at MIPP's per-group counts
    assert 0 < float(rows[0]["node_sparsity"]) < 1
    assert 0.5 < float(rows[0]["acc_dense"]) <= 1                    # trained well above chance (0.1)
    for r in rows:
        assert 0 <= float(r["acc_finetuned"]) <= 1
        assert float(r["params_frac"]) < 1 and float(r["macs_frac"]) < 1
    table = [line.split() for line in out.splitlines() if line.startswith("trained ")]
    assert [t[2] for t in table] == ["mipp", "screen", "random", "l1", "taylor"]
    for t, r in zip(table, rows):
        assert t[3] == r["kept"]
        assert float(t[-2]) == pytest.approx(float(r["acc_pruned"]), abs=5e-5)
        assert float(t[-1]) == pytest.approx(float(r["acc_finetuned"]), abs=5e-5)
    assert "recon err" in out and "params" in out                    # the per-group report is printed


def test_prune_cli_rejects_a_bad_tolerance():
    with pytest.raises(ValueError, match="tolerance"):
        main(TINY[:-6] + ["--tolerance", "-1"])
