"""Runs survive kills and damaged files: SIGKILL at random moments and inside checkpoint writes, then --resume,
ends exactly where an uninterrupted run ends; damaged checkpoints are named and the previous one is used."""

import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from ista_nas.engine.checkpoint import load_checkpoint, previous_path, save_checkpoint
from ista_nas.errors import UserError
from ista_nas import methods

# The CLI, optionally killed (SIGKILL, no cleanup) at the N-th rename of checkpoint writes: the first write
# renames once (temporary -> current), every later one twice (current -> previous, then temporary -> current).
LAUNCHER = textwrap.dedent("""
    import os, signal, sys
    from ista_nas.engine import checkpoint
    kill_at = int(os.environ.get("KILL_AT_REPLACE", "0"))
    calls = [0]
    real = os.replace
    def replace(a, b):
        if str(b).endswith(".pt") or str(b).endswith(".prev.pt"):
            calls[0] += 1
            if calls[0] == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)
        real(a, b)
    checkpoint.os.replace = replace
    from ista_nas.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _args(folder, out, epochs=4):
    return ["search", "--preset", "quick", "--dataset", f"folder:{folder}", "--subset", "0", "--batch-size", "12",
            "--channels", "4", "--layers", "3", "--device", "cpu", "--seed", "0", "--epochs", str(epochs),
            "--out", str(out)]


def _start(tmp_path, args, kill_at=0):
    script = tmp_path / "launch.py"
    script.write_text(LAUNCHER)
    env = {**os.environ, "KILL_AT_REPLACE": str(kill_at), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, str(script)] + args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, env=env)


def _continue_args(folder, out):
    """Resume the run in ``out``, or start it again when no checkpoint was written."""
    has_checkpoint = (out / "checkpoint.pt").exists() or previous_path(out / "checkpoint.pt").exists()
    return ["search", "--resume", str(out)] if has_checkpoint else _args(folder, out)


def _finish(tmp_path, folder, out):
    """Resume (or restart, when no epoch finished) until the run completes."""
    for _ in range(5):
        proc = _start(tmp_path, _continue_args(folder, out))
        _, err = proc.communicate(timeout=300)
        if proc.returncode == 0:
            return
        assert "error" in err, err[-2000:]
    raise AssertionError("the run did not finish after 5 resumes")


def _final_state(out):
    state = load_checkpoint(out / "checkpoint.pt")
    return state["epoch"], state["search"]["model"], json.loads((out / "genotype.json").read_text())


def _assert_same_run(a, b):
    assert a[0] == b[0] and a[2] == b[2]
    assert a[1].keys() == b[1].keys()
    for key in a[1]:
        assert torch.equal(a[1][key], b[1][key]), key


@pytest.fixture(scope="module")
def reference(tiny_folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("reference")
    proc = _start(tmp, _args(tiny_folder, tmp / "run"))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    return _final_state(tmp / "run")


@pytest.mark.slow  # launches processes or runs several short searches
@pytest.mark.parametrize("kill_at", [1, 2, 3, 5])  # no checkpoint yet; current intact; only previous; again
def test_killed_inside_a_checkpoint_write_resumes_to_the_same_end(kill_at, reference, tiny_folder, tmp_path,
                                                                   monkeypatch):
    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    proc = _start(tmp_path, _args(tiny_folder, out), kill_at=kill_at)
    proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL
    _finish(tmp_path, tiny_folder, out)
    _assert_same_run(_final_state(out), reference)
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2, 3, 4]


@pytest.mark.slow  # launches processes or runs several short searches
def test_killed_at_random_moments_resumes_to_the_same_end(reference, tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    rng = random.Random(0)
    for attempt in range(2):
        out = tmp_path / f"run{attempt}"
        kills = 0
        while kills < 2:  # kill twice, wherever the run is, then let it finish
            proc = _start(tmp_path, _continue_args(tiny_folder, out))
            time.sleep(rng.uniform(1.0, 5.0))
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            kills += 1
        _finish(tmp_path, tiny_folder, out)
        _assert_same_run(_final_state(out), reference)


def test_damaged_checkpoints_are_refused_by_name_and_the_previous_one_is_used(tmp_path, caplog):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"epoch": 1, "config": {"seed": 0}, "w": torch.arange(5.0)})
    save_checkpoint(path, {"epoch": 2, "config": {"seed": 0}, "w": torch.arange(5.0) * 2})
    assert load_checkpoint(previous_path(path))["epoch"] == 1
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])  # truncated
    with pytest.raises(UserError, match=f"checkpoint {path} cannot be read"):
        load_checkpoint(path)

    wrapped = torch.load(io.BytesIO(good), weights_only=False)
    payload = bytearray(wrapped["payload"])
    payload[len(payload) // 2] ^= 0xFF  # one flipped byte
    torch.save({**wrapped, "payload": bytes(payload)}, path)
    with pytest.raises(UserError, match=f"checkpoint {path} does not match its checksum"):
        load_checkpoint(path)

    from ista_nas.engine.checkpoint import load_latest_good

    state, used = load_latest_good(path)
    assert used == previous_path(path) and state["epoch"] == 1
    assert str(path) in caplog.text and "previous checkpoint" in caplog.text
    previous_path(path).write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=f"checkpoint {path} does not match"):
        load_latest_good(path)


def _interrupt_once_checkpointed(proc, out):
    for _ in range(600):  # wait for the first checkpoint, then press Ctrl-C mid-run
        if (out / "checkpoint.pt").exists():
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    return proc.communicate(timeout=120)[1]


@pytest.mark.slow  # launches processes or runs several short searches
def test_ctrl_c_checkpoints_the_step_and_resumes_to_the_same_end(reference, tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    err = _interrupt_once_checkpointed(_start(tmp_path, _args(tiny_folder, out)), out)
    assert "Traceback" not in err
    state = load_checkpoint(out / "checkpoint.pt")
    if "partial" in state:  # stopped inside an epoch: that step is in the checkpoint
        where = f"in epoch {state['partial']['epoch'] + 1} after step {state['partial']['step']}"
    else:
        where = f"after {state['epoch']} finished epochs"
    assert f"interrupted {where}" in err and f"continue with --resume {out}" in err
    assert err.rstrip().endswith("ista-nas: interrupted")
    _finish(tmp_path, tiny_folder, out)
    _assert_same_run(_final_state(out), reference)


@pytest.mark.slow  # launches processes or runs several short searches
def test_ctrl_c_inside_a_training_epoch_resumes_to_the_same_weights(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("ISTA_NAS_CACHE", str(tmp_path / "cache"))
    common = ["train", "--preset", "quick", "--dataset", f"folder:{tiny_folder}", "--subset", "0", "--batch-size",
              "6", "--channels", "4", "--layers", "3", "--device", "cpu", "--epochs", "3", "--drop-path", "0.3"]
    full = _start(tmp_path, common + ["--out", str(tmp_path / "full")])
    assert full.wait(timeout=300) == 0
    out = tmp_path / "run"
    proc = _start(tmp_path, common + ["--out", str(out)])
    _interrupt_once_checkpointed(proc, out)
    assert proc.returncode == 130
    resumed = _start(tmp_path, ["train", "--resume", str(out)])
    assert resumed.wait(timeout=300) == 0
    a = load_checkpoint(out / "checkpoint.pt")["trainer"]["model"]
    b = load_checkpoint(tmp_path / "full" / "checkpoint.pt")["trainer"]["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_an_epoch_stopped_between_steps_resumes_to_the_same_sums_and_random_state():
    from ista_nas.engine import loop

    def make_step(stop_after=None):
        calls = []

        def step(x):
            calls.append(x)
            noise = torch.rand(1)  # the run's random state moves with every step, like drop-path masks
            if stop_after is not None and len(calls) == stop_after:
                loop.STOP.requested = True
            return {"loss": x * noise.sum(), "n": torch.tensor(1.0)}
        return step, calls

    batches = [torch.tensor(float(k)) for k in range(7)]

    def run(step, resume=None, interruptible=False):
        return loop.run_epoch(step, ([b] for b in batches), len(batches), "test",
                              lambda s: {"loss": s["loss"] / s["n"]}, interruptible=interruptible, resume=resume)

    torch.manual_seed(0)
    whole_step, _ = make_step()
    expected = run(whole_step)
    torch.manual_seed(0)
    first, calls = make_step(stop_after=3)
    with loop.graceful_stop():
        with pytest.raises(loop.EpochInterrupted) as stop:
            run(first, interruptible=True)
    assert stop.value.progress["step"] == 3 and len(calls) == 3 and not loop.STOP.requested
    torch.manual_seed(123)  # whatever happened in between
    rest, rest_calls = make_step()
    assert run(rest, resume=stop.value.progress) == expected
    assert [float(c) for c in rest_calls] == [3.0, 4.0, 5.0, 6.0]


def test_checkpoint_files_without_a_checksum_are_refused_in_one_line(tmp_path):
    from ista_nas.errors import UserError

    path = tmp_path / "old.pt"
    torch.save({"format": 1, "epoch": 3, "trainer": {"w": torch.ones(2)}}, path)  # format 1: no checksum
    with pytest.raises(UserError) as refused:
        load_checkpoint(path, required=("trainer",))
    assert "not an ista-nas checkpoint (format 2)" in str(refused.value)
    assert len(str(refused.value).splitlines()) == 1


def test_a_damaged_latest_checkpoint_is_moved_aside_and_the_previous_one_kept(tiny_config, tmp_path):
    from ista_nas.engine.rundir import RunDir

    cfg = tiny_config(epochs=2)
    methods.search(cfg, tmp_path / "run")
    run = RunDir(tmp_path / "run")
    run.checkpoint_path.write_bytes(b"garbage")
    # Not a fresh start either: only --resume continues a directory that holds checkpoints.
    run.checkpoint_path.rename(tmp_path / "hidden.pt")
    with pytest.raises(UserError, match="already holds this run"):
        RunDir.check_new(run.path, cfg.record())
    (tmp_path / "hidden.pt").rename(run.checkpoint_path)
    result = methods.resume(run.path, epochs=3)  # falls back to epoch 1, moves the damaged file aside
    assert [m["epoch"] for m in result.metrics] == [1, 2, 3]
    assert (run.path / "checkpoint.damaged.pt").read_bytes() == b"garbage"
    assert load_checkpoint(run.checkpoint_path)["epoch"] == 3
    assert load_checkpoint(previous_path(run.checkpoint_path))["epoch"] == 2


HOLDER = "import sys; from ista_nas.engine.rundir import lock; lock(sys.argv[1]); print('held', flush=True); " \
         "sys.stdin.read()"


def _holder(path):
    """A process that holds the run directory's lock until it is killed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


@pytest.mark.slow  # launches processes
def test_a_run_directory_has_one_writer_and_a_killed_writers_lock_is_taken_over(tiny_config, tmp_path):
    out, cfg = tmp_path / "run", tiny_config(epochs=1)
    holder = _holder(out)
    with pytest.raises(UserError, match=f"being written by another ista-nas process \\(pid {holder.pid}\\)"):
        methods.search(cfg, out)
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # refused before anything was written
    holder.kill()
    holder.wait()
    methods.search(cfg, out)  # the dead holder's lock is taken over
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    holder = _holder(out)
    for again in (lambda: methods.resume(out, epochs=2), lambda: methods.search(cfg, out)):
        # refused before the data loads or any file changes; a fresh start is told of the writer, not advised to
        # --resume the folder it writes
        with pytest.raises(UserError, match=f"being written by another ista-nas process \\(pid {holder.pid}\\)"):
            again()
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == files
    holder.kill()
    holder.wait()
    assert methods.resume(out, epochs=2).metrics[-1]["epoch"] == 2


def test_the_default_run_name_is_one_no_other_run_holds_and_goes_when_left_empty(tmp_path, monkeypatch):
    """Names taken are skipped; two runs choosing at once (nested here: the first has not written yet) get two
    folders; a default folder the run left empty is removed, one it wrote into stays; --out passes through."""
    import time

    from ista_nas.engine.rundir import default_out

    monkeypatch.setattr(time, "strftime", lambda fmt: fmt.replace("%Y%m%d-%H%M%S", "20261205-120000"))
    monkeypatch.chdir(tmp_path)
    stem = "runs/search-20261205-120000"
    (tmp_path / "runs").mkdir()
    (tmp_path / f"{stem}-2").mkdir()
    with default_out(None, "runs/search") as first, default_out(None, "runs/search") as second:
        assert (first, second) == (stem, f"{stem}-3") and (tmp_path / first).is_dir()
        (tmp_path / second / "config.json").write_text("{}")
    assert not (tmp_path / stem).exists() and (tmp_path / f"{stem}-3" / "config.json").is_file()
    with default_out("mine", "runs/search") as given:
        assert given == "mine" and not (tmp_path / "mine").exists()


def test_resume_refuses_data_that_changed_since_the_run_started(tiny_folder, tiny_config, tmp_path):
    import shutil

    folder = tmp_path / "data"
    shutil.copytree(tiny_folder, folder)
    out = tmp_path / "run"
    methods.search(tiny_config(dataset=f"folder:{folder}", epochs=1), out)
    extra = folder / "train" / "class0" / "extra.png"
    shutil.copy(folder / "train" / "class1" / "000.png", extra)  # one more image: another split
    files = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"}
    with pytest.raises(UserError, match="changed since the run started"):
        methods.resume(out, epochs=2)
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file() and p.name != ".lock"} == files
    extra.unlink()
    assert methods.resume(out, epochs=2).metrics[-1]["epoch"] == 2  # the same data again: it continues


def test_a_double_ctrl_c_and_one_more_during_the_hint_still_give_the_resume_hint(tiny_config, tmp_path, caplog,
                                                                                  monkeypatch):
    """Ctrl-C twice inside a step of the second epoch (the second stops at once), and once more while the hint is
    written: the hint names the checkpoint the run holds (after epoch 1)."""
    from ista_nas.engine.rundir import RunDir
    from ista_nas.methods.bilevel import BilevelStepper

    eager, calls = BilevelStepper.eager_step, []

    def step(self, *batch):
        calls.append(1)
        if len(calls) == 7:  # inside the second epoch (5 steps an epoch)
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return eager(self, *batch)

    report = RunDir.report_interrupt

    def pressed_again(self, state):
        signal.raise_signal(signal.SIGINT)
        report(self, state)

    monkeypatch.setattr(BilevelStepper, "eager_step", step)
    monkeypatch.setattr(RunDir, "report_interrupt", pressed_again)
    out = tmp_path / "run"
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal (a CI job may ignore it)
    try:
        with pytest.raises(KeyboardInterrupt):
            methods.search(tiny_config(), out)
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # given back after the hint
    finally:
        signal.signal(signal.SIGINT, previous)
    assert f"interrupted after 1 finished epochs; continue with --resume {out}" in caplog.text
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
