"""Work on a second core (machine.processes): the same bits as in one process, errors raised
where they happen, no child left behind — for split work, for the analyses that split, and for
figures rendered by forked children."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import make_model, numbers

from analyses import head_ablation, pe_ablation, qk_circuit
from analyses.frame.figures import figure_formats, save_figure
from machine import processes


@pytest.fixture(autouse=True)
def forking_allowed(monkeypatch):
    """Fork whatever the CPU count: one CPU only makes the second process not worth it, it still works."""
    monkeypatch.setattr(processes, "can_fork_workers", lambda: True)


def _children() -> set[int]:
    return {int(p) for p in os.listdir("/proc") if p.isdigit() and _parent_of(p) == os.getpid()}


_BEFORE: set[int] = set()  # this process' children when the test began (e.g. a browser kept by the session)


@pytest.fixture(autouse=True)
def children_before():
    """The children the test found: a test process may keep one (the browser tests share one Chromium
    per process, through Playwright's driver), and only the children made during the test are its own."""
    _BEFORE.clear()
    _BEFORE.update(_children())
    yield


def no_children_left() -> bool:
    """No child made during the test is alive, or dead and not reaped."""
    for pid in _children() - _BEFORE:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        if done == 0 or pid in _children():
            return False
    return not (_children() - _BEFORE)


def _parent_of(pid: str) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None


def test_split_runs_the_second_part_in_another_process_and_returns_the_same_arrays():
    def there():
        return {"pid": np.array([os.getpid()]), "x": np.arange(6.0).reshape(2, 3) / 7}

    with processes.parallel():
        here, theirs = processes.split(lambda: os.getpid(), there)
    assert here == os.getpid() and int(theirs["pid"][0]) != os.getpid()
    np.testing.assert_array_equal(theirs["x"], np.arange(6.0).reshape(2, 3) / 7)
    here, alone = processes.split(lambda: os.getpid(), there)  # off: both here
    assert int(alone["pid"][0]) == os.getpid()
    assert no_children_left()


def test_a_failing_part_is_run_again_here_and_raises_its_own_error():
    calls = []

    def there():
        calls.append(os.getpid())
        raise ZeroDivisionError("the real error")

    with processes.parallel(), pytest.raises(ZeroDivisionError, match="the real error"):
        processes.split(lambda: 1, there)
    assert calls == [os.getpid()]  # the child's call is not in this process' list
    assert no_children_left()


def test_an_error_here_stops_the_child():
    def there():
        time.sleep(30)
        return {}

    started = time.monotonic()
    with processes.parallel(), pytest.raises(KeyError):
        processes.split(lambda: {}["missing"], there)
    assert time.monotonic() - started < 10 and no_children_left()


def test_the_child_dies_with_a_killed_parent(tmp_path):
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import os, time
        import numpy as np
        from machine import processes
        processes.can_fork_workers = lambda: True  # whatever the CPU count
        def there():
            open({str(pid_file)!r}, "w").write(str(os.getpid()))
            time.sleep(60)
            return {{}}
        with processes.parallel():
            processes.split(lambda: time.sleep(60), there)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[1])
    try:
        deadline = time.monotonic() + 30
        while not (pid_file.exists() and pid_file.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        child = int(pid_file.read_text())
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not Path(f"/proc/{child}").exists()
        assert not list(Path(tempfile.gettempdir()).glob("analysis-part-*"))  # the shared file has no name
    finally:
        parent.kill()


def test_pe_ablation_in_two_processes_gives_the_same_numbers():
    kwargs = dict(
        num_sequences=48, batch_size=16, bootstrap_resamples=40, shuffle_seeds=2, monte_carlo_sequences=500
    )
    alone = pe_ablation.run(make_model(), **kwargs)
    with processes.parallel():
        split = pe_ablation.run(make_model(), **kwargs)
    assert numbers(split) == numbers(alone)
    assert list(split.conditions) == list(alone.conditions)
    here, there = pe_ablation.measure._groups(
        pe_ablation.measure.build_conditions(make_model(), shuffle_seeds=2)
    )
    assert here[0].name == there[0].name == "none" and abs(len(here) - len(there)) <= 1
    assert {c.family for c in here if c.family == "shuffle"} and not any(c.family == "shuffle" for c in there)


def test_head_ablation_in_two_processes_gives_the_same_numbers(multi_model):
    kwargs = dict(
        num_sequences=40,
        batch_size=16,
        bootstrap_resamples=30,
        permutations=3,
        permutation_sequences=24,
        reference_sequences=16,
        patch_sequences=8,
        progress=False,
    )
    alone = head_ablation.run(multi_model, **kwargs)
    with processes.parallel():
        split = head_ablation.run(multi_model, **kwargs)
    assert numbers(split) == numbers(alone)
    assert list(split.conditions) == list(alone.conditions)  # the same order in metrics.json


def test_qk_circuit_in_two_processes_gives_the_same_numbers(multi_model):
    kwargs = dict(num_sequences=40, batch_size=16, bootstrap_resamples=30)
    alone = qk_circuit.run(multi_model, **kwargs)
    with processes.parallel():
        split = qk_circuit.run(multi_model, **kwargs)
    assert numbers(split) == numbers(alone)


def _figure(title: str):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(3, 2), layout="constrained")
    ax.plot([0, 1, 2], [2, 0, 1])
    ax.set_title(title)
    return fig


def test_figures_rendered_by_children_are_the_files_rendered_here(tmp_path):
    import matplotlib.pyplot as plt

    for where, on in (("here", False), ("children", True)):
        with processes.parallel(on), figure_formats(svg=True):
            for k in range(5):
                save_figure(_figure(f"figure {k}"), tmp_path / where, f"f{k}")
        assert not plt.get_fignums()  # every figure closed
    files = sorted(p.name for p in (tmp_path / "here").iterdir())
    assert files == sorted(p.name for p in (tmp_path / "children").iterdir()) and len(files) == 10
    for name in files:
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "children" / name).read_bytes()
    assert no_children_left()


def test_a_figure_failing_in_a_child_raises_here(tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.artist import Artist

    class Broken(Artist):
        def draw(self, renderer):
            raise RuntimeError("cannot draw this")

    fig = _figure("fails")
    fig.add_artist(Broken())  # fails only when drawn: in the child first, then here
    with (
        pytest.raises(RuntimeError, match="cannot draw this"),
        processes.parallel(),
        figure_formats(svg=False),
    ):
        save_figure(fig, tmp_path, "bad")
    assert not (tmp_path / "bad.png").exists() and not plt.get_fignums()
    assert no_children_left()


def test_no_fork_while_a_ray_connection_is_open(monkeypatch):
    import types

    fake_ray = types.ModuleType("ray")
    fake_ray.is_initialized = lambda: True
    with processes.parallel():
        assert processes.parallel_enabled()
        monkeypatch.setitem(sys.modules, "ray", fake_ray)
        assert not processes.parallel_enabled()  # Ray's threads and sockets must not be forked
        fake_ray.is_initialized = lambda: False
        assert processes.parallel_enabled()
    assert not processes.parallel_enabled()


def test_without_a_new_process_the_work_is_done_here(tmp_path, monkeypatch):
    def refuse():
        raise BlockingIOError(11, "Resource temporarily unavailable")  # EAGAIN

    monkeypatch.setattr(processes.os, "fork", refuse)
    with processes.parallel():
        here, theirs = processes.split(lambda: 1, lambda: {"x": np.arange(3)})
        with figure_formats(svg=False):
            save_figure(_figure("here"), tmp_path, "f")
    assert here == 1 and theirs["x"].tolist() == [0, 1, 2] and (tmp_path / "f.png").exists()


def test_split_gives_numpy_arrays_under_any_name_in_both_modes():
    import torch

    def there():
        return {"file": [1, 2], "allow_pickle": torch.tensor([1.5]), "names": np.float64(2.0)}

    alone = processes.split(lambda: 0, there)[1]
    with processes.parallel():
        forked = processes.split(lambda: 0, there)[1]
    for result in (alone, forked):
        assert list(result) == ["file", "allow_pickle", "names"]
        assert all(isinstance(v, np.ndarray) for v in result.values())
        assert result["file"].tolist() == [1, 2] and result["allow_pickle"].tolist() == [1.5]
    for on in (False, True):
        with processes.parallel(on), pytest.raises(TypeError, match="numeric arrays; 'o'"):
            processes.split(lambda: 0, lambda: {"o": np.array([object()])})
