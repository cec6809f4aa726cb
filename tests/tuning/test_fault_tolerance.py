"""Real subprocesses: a chief with two workers on 127.0.0.1, SIGKILL of a local search and of a worker."""

import json
import os
import signal

import pytest

from tests.tuning.conftest import TINY, free_port, start_cli, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.backend_agnostic]
# Four grid points: augmentation none/light1 x weight decay 0.1/0.03.
GRID = ["--tuner", "grid", "--search", "augmentation=none,light1", "--search", "regularization=noreg",
        "--search", "weight_decay=0.1,0.03"]


def _attempts(out, trial_id):
    path = out / "search" / f"trial_{trial_id}" / "attempts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _status(out, trial_id):
    path = out / "search" / f"trial_{trial_id}" / "trial.json"
    try:
        return json.loads(path.read_text())["status"]
    except (OSError, ValueError):
        return None


def _trial_ids(out):
    return sorted(name[len("trial_"):] for name in os.listdir(out / "search") if name.startswith("trial_"))


def _finish(processes, timeout=300):
    for process in processes:
        try:
            process.wait(timeout)
        except Exception:
            process.kill()
            raise


def _log(path):
    return path.read_text()[-3000:]


def test_interrupted_search_continues_without_rerunning_finished_trials(tmp_path, shapes_data_dir):
    out = tmp_path / "search"
    command = ["tune", *TINY, *GRID, "--data-dir", shapes_data_dir, "--output-dir", out]
    first = start_cli(command, tmp_path / "first.log")
    try:
        # Kill the search while trial 1 runs, after trial 0 finished.
        wait_for(lambda: _status(out, "0") == "COMPLETED" and _attempts(out, "1"), 240, "trial 1 to start", [first])
        score = json.loads((out / "search" / "trial_0" / "trial.json").read_text())["score"]
        assert _trial_ids(out) == ["0", "1"]
        first.send_signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
    assert _status(out, "1") == "RUNNING"
    second = start_cli(command, tmp_path / "second.log")
    _finish([second])
    assert second.returncode == 0, _log(tmp_path / "second.log")
    trials = json.loads((out / "trials.json").read_text())
    assert [t["status"] for t in trials] == ["COMPLETED"] * 4
    by_id = {t["trial_id"]: t for t in trials}
    assert by_id["0"]["attempts"] == 1 and by_id["0"]["val_accuracy"] == score  # not run again, result kept
    assert by_id["1"]["attempts"] == 2  # the killed attempt and its rerun
    assert [by_id[i]["attempts"] for i in ("2", "3")] == [1, 1]
    assert len({(t["augmentation"], t["weight_decay"]) for t in trials}) == 4
    assert (out / "best_model.keras").exists()
    assert "Reloading Tuner" in (tmp_path / "second.log").read_text()


def _distributed(tmp_path, shapes_data_dir, extra=()):
    port = free_port()
    out = tmp_path / "search"
    common = ["tune", *TINY, *GRID, "--data-dir", shapes_data_dir, "--output-dir", out,
              "--oracle-address", f"127.0.0.1:{port}", *extra]
    chief = start_cli([*common, "--chief"], tmp_path / "chief.log")
    workers = [start_cli([*common, "--worker", f"worker{i}"], tmp_path / f"worker{i}.log") for i in range(2)]
    return out, chief, workers


def test_a_killed_worker_loses_only_its_attempt_and_every_trial_runs_to_completion_once(tmp_path, shapes_data_dir):
    """A chief and two workers share the grid; one worker is killed inside a trial. The other
    reruns that trial; every other trial ran exactly once, and the search finishes."""
    out, chief, workers = _distributed(tmp_path, shapes_data_dir, ["--heartbeat-timeout", "5"])
    try:

        def a_running_trial():
            for trial_id in _trial_ids(out) if (out / "search").exists() else []:
                events = _attempts(out, trial_id)
                if events and events[-1]["event"] == "start":
                    return trial_id, events[-1]["tuner_id"]
            return None

        # Kill whichever worker is first inside a trial; the other one goes on.
        killed, victim = wait_for(a_running_trial, 240, "a worker to start a trial", [chief, *workers])
        dead, alive = (0, 1) if victim == "worker0" else (1, 0)
        workers[dead].send_signal(signal.SIGKILL)
        _finish([chief, workers[alive]])
    finally:
        for process in (chief, *workers):
            process.kill()
    survivor = f"worker{alive}"
    assert chief.returncode == 0, _log(tmp_path / "chief.log")
    assert workers[alive].returncode == 0, _log(tmp_path / f"{survivor}.log")
    assert "sent no heartbeat" in (tmp_path / "chief.log").read_text()
    trials = json.loads((out / "trials.json").read_text())
    assert [t["trial_id"] for t in trials] == _trial_ids(out) == ["0", "1", "2", "3"]
    assert [t["status"] for t in trials] == ["COMPLETED"] * 4
    assert len({(t["augmentation"], t["weight_decay"]) for t in trials}) == 4
    assert (out / "best_hyperparameters.json").exists() and (out / "best_model.keras").exists()
    by_id = {t["trial_id"]: t for t in trials}
    assert by_id[killed]["attempts"] == 2 and by_id[killed]["workers"] == sorted([victim, survivor])
    finished = [e for e in _attempts(out, killed) if e["event"] == "end"]
    assert [e["tuner_id"] for e in finished] == [survivor]
    assert all(t["attempts"] == 1 for i, t in by_id.items() if i != killed)
