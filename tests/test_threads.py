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
    monkeypatch.setattr(_threads, "other_cores", lambda: 1.0)  # another CPU-bound process
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield monkeypatch
    torch.set_num_threads(threads)


def test_loaded_machine_with_spinning_threads_warns_once(loaded):
    with pytest.warns(
        RuntimeWarning, match=r"load 9\.0 on 2 cores, other processes use 1\.0 cores.*OMP_WAIT_POLICY=PASSIVE"
    ):
        _threads.advise()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _threads.advise()  # once per process


def test_without_proc_stat_the_load_alone_decides(loaded):
    loaded.setattr(_threads, "other_cores", lambda: None)
    with pytest.warns(RuntimeWarning, match=r"load 9\.0 on 2 cores, torch runs 2"):
        _threads.advise()


@pytest.mark.parametrize("case", ["passive", "one thread", "idle", "own load only"])
def test_no_warning_when_threads_cannot_spin_against_other_work(loaded, case):
    if case == "passive":
        loaded.setenv("OMP_WAIT_POLICY", "passive")
    elif case == "one thread":
        torch.set_num_threads(1)
    elif case == "idle":
        loaded.setattr(os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    else:  # the load is this process's own (a job it just ran): nothing else uses the cores
        loaded.setattr(_threads, "other_cores", lambda: 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _threads.advise()
    assert not _threads._warned


def _median_other_cores(runs: int = 3) -> float:
    return sorted(_threads.other_cores(0.2) for _ in range(runs))[runs // 2]  # type: ignore[type-var]


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="other_cores reads Linux's /proc/stat")
def test_other_cores_sees_other_processes_and_not_this_one():
    """A CPU-bound subprocess reads as about a core of other work; a CPU-bound thread of this process does not
    (its time is the process's own). Relative to a reading without either, so that a shared machine's other
    load cancels."""
    import threading

    base = _median_other_cores()
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        assert _median_other_cores() - base > 0.5
    finally:
        spinner.kill()
        spinner.wait()
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            pass

    t = threading.Thread(target=spin)
    t.start()
    try:
        busy_self = _median_other_cores()
    finally:
        stop.set()
        t.join()
    assert busy_self - base < 0.5
