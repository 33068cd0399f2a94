"""The MI demo (`python -m mipp mi-demo`) passes its own checks: closed forms, CMI, k-d tree oracle."""

from mipp.demo import run_demo


def test_mi_demo_checks_pass(capsys):
    assert run_demo(n=4000, k=3) == 0
    out = capsys.readouterr().out
    assert out.count("\nok   ") == 4 and "FAIL" not in out
