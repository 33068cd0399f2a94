"""OpenMP's wait policy: ``import mipp`` before torch makes waiting threads sleep (a default the user's
setting overrides); with spinning threads on a loaded machine the pruner warns once and says what to do."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

from mipp import _threads


def _policy_after(code: str, env_policy: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if env_policy is not None:
        env["OMP_WAIT_POLICY"] = env_policy
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport os; print(os.environ.get('OMP_WAIT_POLICY', '<unset>'))"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[-1]


def test_import_sets_a_passive_wait_only_as_a_default():
    assert _policy_after("import mipp", None) == "PASSIVE"
    assert _policy_after("import mipp", "ACTIVE") == "ACTIVE"  # the user's choice wins
    assert _policy_after("import torch, mipp", None) == "<unset>"  # too late to matter: left alone


@pytest.fixture
def loaded(monkeypatch):
    monkeypatch.setattr(_threads, "_warned", False)
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.setattr(os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield monkeypatch
    torch.set_num_threads(threads)


def test_loaded_machine_with_spinning_threads_warns_once(loaded):
    with pytest.warns(RuntimeWarning, match=r"load 9\.0 on 2 cores.*OMP_WAIT_POLICY=PASSIVE"):
        _threads.advise()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _threads.advise()  # once per process


@pytest.mark.parametrize("case", ["passive", "one thread", "idle"])
def test_no_warning_when_threads_cannot_spin_against_other_work(loaded, case):
    if case == "passive":
        loaded.setenv("OMP_WAIT_POLICY", "passive")
    elif case == "one thread":
        torch.set_num_threads(1)
    else:
        loaded.setattr(os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _threads.advise()
    assert not _threads._warned
