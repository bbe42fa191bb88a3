"""Files from others are data, never code (docs/reliability.md, trust boundaries): a checkpoint that would run code
is refused by every command that reads one, no write goes through a link the tool did not make, correlate removes
only what it wrote, and every size a flag or a file sets is held to the one size rule before anything is built."""

import hashlib
import io
import json
import os
import pickle
import shutil

import pytest
import torch

from ista_nas.cli import main
from ista_nas.engine.checkpoint import FORMAT, load_checkpoint, save_checkpoint
from ista_nas.limits import MAX_CHANNELS, MAX_LAYERS, MAX_NODES, MAX_SHOWN, MAX_WORKERS, SEED_BOUND
from ista_nas.networks.nb201 import NB201_EXAMPLE

from conftest import refused, snapshot

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


class Planted:
    """What a hostile pickle asks for: unpickling it calls os.mkdir(marker), a visible side effect."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.mkdir, (self.marker,)


def plant_checkpoint(path, kind, marker):
    """Write at ``path`` a checkpoint whose loading would run ``os.mkdir(marker)``: a raw pickle, a torch zip, or
    the tool's own wrapper around such a payload with a correct SHA-256."""
    if kind == "raw pickle":
        path.write_bytes(pickle.dumps({"epoch": 1, "config": {}, "x": Planted(marker)}))
        return
    if kind == "torch zip":
        torch.save({"epoch": 1, "config": {}, "x": Planted(marker)}, path)
        return
    good = load_checkpoint(path)  # the run's own state, with the planted object beside it
    buffer = io.BytesIO()
    torch.save({**good, "x": Planted(marker)}, buffer)
    payload = buffer.getvalue()
    torch.save({"format": FORMAT, "sha256": hashlib.sha256(payload).hexdigest(), "config": good["config"],
                "epoch": good["epoch"], "payload": payload}, path)


KINDS = ("raw pickle", "torch zip", "wrapper with a valid digest")


@pytest.mark.parametrize("kind", KINDS)
def test_a_checkpoint_that_would_run_code_is_refused_by_every_command_that_reads_one(kind, runs, tmp_path, capsys):
    marker = tmp_path / "code-ran"
    cases = {
        "evaluate": ("train", "checkpoint.pt", lambda run: ["evaluate", run, "--device", "cpu"]),
        "export": ("train", "checkpoint.pt", lambda run: ["export", run, "--out", tmp_path / "model.pt"]),
        "correlate": ("search", "checkpoint.pt", lambda run: ["correlate", run, "--protocol", "ranking", "--k", "2",
                                                              "--benchmark", "none", "--out", tmp_path / "c"]),
        "search --resume": ("search", "checkpoint.pt", lambda run: ["search", "--resume", run, "--epochs", "3"]),
        "train --resume": ("train", "checkpoint.pt", lambda run: ["train", "--resume", run, "--epochs", "2"]),
        # A damaged latest checkpoint sends a resume to the previous one: that one is read as data too.
        "search --resume (previous)": ("search", "checkpoint.prev.pt",
                                       lambda run: ["search", "--resume", run, "--epochs", "3"]),
        "train --resume (previous)": ("train", "checkpoint.prev.pt",
                                      lambda run: ["train", "--resume", run, "--epochs", "2"]),
    }
    for name, (which, planted, argv) in cases.items():
        run = shutil.copytree(runs[which], tmp_path / name.replace(" ", "_"))
        if planted == "checkpoint.prev.pt":
            shutil.copy(run / "checkpoint.pt", run / planted)
            (run / "checkpoint.pt").write_bytes((run / "checkpoint.pt").read_bytes()[:1000])  # damaged
        else:
            (run / "checkpoint.prev.pt").unlink(missing_ok=True)
        plant_checkpoint(run / planted, kind, marker)
        err = refused(argv(run), capsys, run)
        assert "would run code" in err and planted in err, (name, err)
        assert not marker.exists(), f"{name}: the checkpoint's code ran"
        assert not (run / "checkpoint.damaged.pt").exists()  # refused, not taken for damage


def test_the_tools_own_checkpoints_still_load_as_data(tmp_path):
    state = {"epoch": 3, "config": {"seed": 1}, "model": {"w": torch.arange(4.0)}, "rng": torch.get_rng_state(),
             "partial": {"step": 2, "sums": {"loss": 1.5}}, "genotype": {"arch": NB201_EXAMPLE}}
    save_checkpoint(tmp_path / "checkpoint.pt", state)
    loaded = load_checkpoint(tmp_path / "checkpoint.pt")
    assert loaded["epoch"] == 3 and loaded["partial"] == state["partial"] and loaded["genotype"] == state["genotype"]
    torch.testing.assert_close(loaded["model"]["w"], state["model"]["w"])
    assert torch.equal(loaded["rng"], state["rng"])


def plant_links(run, victim):
    """A symbolic link to ``victim`` (a user's file) at every name a run writes in ``run``, and at names its
    temporary files had when they were derived from the process id."""
    for name in (".lock", "report.html", "metrics.jsonl", "genotype.json", "config.json", "status.json"):
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(victim)
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        for name in ("report.html", "metrics.jsonl", "checkpoint.pt", "genotype.json"):
            (run / f".{name}.tmp{pid}").symlink_to(victim)


def test_no_command_writes_through_a_link_planted_in_a_run(runs, tmp_path, capsys):
    victim_dir = tmp_path / "victim"
    victim_dir.mkdir()
    victim = victim_dir / "notes.txt"
    victim.write_text("a user's file\n")
    run = shutil.copytree(runs["search"], tmp_path / "run")
    # One planted link at a time, each at a name a command writes.
    for name, argv in [(".lock", ["search", "--resume", run, "--epochs", "3"]),
                       ("metrics.jsonl", ["search", "--resume", run, "--epochs", "3"]),
                       ("report.html", ["report", run]),
                       ("tensorboard", ["search", "--resume", run, "--epochs", "3", "--tensorboard"])]:
        target = victim_dir if name == "tensorboard" else victim
        (run / name).unlink(missing_ok=True)
        (run / name).symlink_to(target)
        if name == "tensorboard" and not _has_tensorboard():
            (run / name).unlink()
            continue
        err = refused(argv, capsys, victim_dir)
        assert "link" in err, (name, err)
        (run / name).unlink()
        shutil.copy(runs["search"] / name, run / name) if (runs["search"] / name).exists() else None
    # Every name at once, temporaries of the pid range included: report writes its page, never through them.
    fresh = shutil.copytree(runs["search"], tmp_path / "fresh")
    for pid in range(os.getpid() - 2, os.getpid() + 3):
        (fresh / f".report.html.tmp{pid}").symlink_to(victim)
    (fresh / "report.html").unlink()
    assert main(["report", str(fresh)]) == 0
    assert victim.read_text() == "a user's file\n"
    assert (fresh / "report.html").is_file() and not (fresh / "report.html").is_symlink()
    # A run directory, an output folder or its subfolder that is a link is refused.
    linked = tmp_path / "linked-run"
    linked.symlink_to(run)
    refused(["search", "--resume", linked, "--epochs", "3"], capsys, victim_dir, run, expect="symbolic link")
    out = tmp_path / "out-link"
    out.symlink_to(victim_dir)
    tiny = ["--space", "nb201", "--dataset", f"folder:{_folder(runs)}", "--subset", "0", "--channels", "4",
            "--layers", "1", "--epochs", "1", "--batch-size", "12", "--device", "cpu"]
    refused(["search", *tiny, "--out", out], capsys, victim_dir, expect="symbolic link")
    refused(["search", *tiny, "--seeds", "0", "1", "--out", out], capsys, victim_dir, expect="symbolic link")
    refused(["show", NB201_EXAMPLE, "--out", out], capsys, victim_dir, expect="symbolic link")
    refused(["correlate", run, "--out", out], capsys, victim_dir, expect="symbolic link")
    corr = tmp_path / "corr"
    corr.mkdir()
    (corr / "architectures").symlink_to(victim_dir)
    refused(["correlate", run, "--out", corr], capsys, victim_dir, expect="symbolic link")
    # A fresh --out holding only a planted lock link.
    fresh_out = tmp_path / "fresh-out"
    fresh_out.mkdir()
    (fresh_out / ".lock").symlink_to(victim)
    refused(["search", *tiny, "--out", fresh_out], capsys, victim_dir, expect="link")
    assert victim.read_text() == "a user's file\n"


def _folder(runs):
    return json.loads((runs["search"] / "config.json").read_text())["dataset"][len("folder:"):]


def _has_tensorboard():
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def test_correlate_removes_only_the_architecture_files_it_recorded_writing(runs, tmp_path, capsys):
    out = tmp_path / "corr"
    assert main(["correlate", str(runs["search"]), "--benchmark", "none", "--out", str(out)]) == 0
    result = json.loads((out / "correlation.json").read_text())
    written = {os.path.basename(p["file"]) for p in result["points"]}
    assert written and all((out / "architectures" / n).is_file() for n in written)
    # An earlier, larger sample's file that correlation.json names goes; a user's own file there stays.
    result["points"].append({**result["points"][0], "file": str(out / "architectures" / "arch-07.json")})
    (out / "correlation.json").write_text(json.dumps(result))
    (out / "architectures" / "arch-07.json").write_text("{}")
    (out / "architectures" / "arch-42.json").write_text('{"mine": true}\n')
    assert main(["correlate", str(runs["search"]), "--benchmark", "none", "--out", str(out)]) == 0
    assert not (out / "architectures" / "arch-07.json").exists()
    assert (out / "architectures" / "arch-42.json").read_text() == '{"mine": true}\n'
    assert all((out / "architectures" / n).is_file() for n in written)


def _big_genotype(path, nodes):
    pairs = [["skip_connect", 0]] * (2 * nodes)
    path.write_text(json.dumps({"normal": pairs, "normal_concat": [2], "reduce": pairs, "reduce_concat": [2]}))
    return path


def _spec_checkpoint(runs, tmp_path, entry="model_spec", **values):
    """A copy of the training run whose checkpoint (the tool's own wrapper, a valid digest) holds ``values`` in its
    ``entry`` (the model spec, or the run's config)."""
    run = shutil.copytree(runs["train"], tmp_path / f"{entry}-run")
    state = load_checkpoint(run / "checkpoint.pt")
    state[entry] = {**state[entry], **values}
    save_checkpoint(run / "checkpoint.pt", state)
    return run


def _hand_edited_search(runs, tmp_path, **config):
    run = shutil.copytree(runs["search"], tmp_path / "edited")
    stored = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**stored, **config}))
    return run


def test_each_size_flag_of_each_command_one_step_past_its_limit_is_refused_in_one_line(runs, tmp_path, capsys):
    big = _big_genotype(tmp_path / "big.json", MAX_NODES + 1)
    cases = [
        (["search", "--channels", MAX_CHANNELS + 1], "--channels must be at most"),
        (["search", "--layers", MAX_LAYERS + 1], "--layers must be at most"),
        (["search", "--nodes", MAX_NODES + 1], "--nodes must be in"),
        (["search", "--workers", MAX_WORKERS + 1, "--stream"], "--workers must be in"),
        (["search", "--method", "one-stage", "--workers", 2], "add --stream"),
        (["search", "--method", "one-stage", "--image-size", 64], "add --stream"),
        (["search", "--seed", SEED_BOUND], "--seed must be in"),
        (["search", "--seeds", 0, SEED_BOUND, "--out", tmp_path / "s"], "--seed must be in"),
        (["train", "--channels", MAX_CHANNELS + 1], "--channels must be at most"),
        (["train", "--layers", MAX_LAYERS + 1], "--layers must be at most"),
        (["train", "--workers", MAX_WORKERS + 1, "--stream"], "--workers must be in"),
        (["train", "--seed", SEED_BOUND], "--seed must be in"),
        (["train", "--genotype", big], f"at most {MAX_NODES}"),
        (["show", NB201_EXAMPLE, "--channels", MAX_CHANNELS + 1], "--channels must be at most"),
        (["show", NB201_EXAMPLE, "--layers", MAX_LAYERS + 1], "--layers must be at most"),
        (["show", big], f"at most {MAX_NODES}"),
        (["proxies", NB201_EXAMPLE, "--channels", MAX_CHANNELS + 1], "--channels must be at most"),
        (["proxies", NB201_EXAMPLE, "--layers", MAX_LAYERS + 1], "--layers must be at most"),
        (["proxies", NB201_EXAMPLE, "--seed", SEED_BOUND], "--seed must be at most"),
        (["proxies", NB201_EXAMPLE, "--sample-seed", SEED_BOUND], "--sample-seed must be at most"),
        (["proxies", big], f"at most {MAX_NODES}"),
        (["bench", "--channels", MAX_CHANNELS + 1], "--channels must be at most"),
        (["bench", "--layers", MAX_LAYERS + 1], "--layers must be at most"),
        (["bench", "--retrain-channels", MAX_CHANNELS + 1], "--retrain-channels must be at most"),
        (["bench", "--space", "nb201", "--retrain-layers", MAX_LAYERS + 1], "--retrain-layers must be at most"),
        (["correlate", runs["search"], "--protocol", "ranking", "--sample-seed", SEED_BOUND], "--sample-seed"),
        (["correlate", _hand_edited_search(runs, tmp_path, channels=MAX_CHANNELS + 1), "--protocol", "ranking",
          "--benchmark", "none", "--out", tmp_path / "c"], "--channels must be at most"),
        (["evaluate", _spec_checkpoint(runs, tmp_path, channels=MAX_CHANNELS + 1), "--device", "cpu"],
         "channels must be at most"),
        (["evaluate", _spec_checkpoint(runs, tmp_path, "config", stream=True, workers=MAX_WORKERS + 1), "--device",
          "cpu"], "--workers must be at most"),
    ]
    for argv, expect in cases:
        refused(argv, capsys, runs["search"], runs["train"], expect=expect)
    spec_run = tmp_path / "model_spec-run"
    shutil.rmtree(spec_run)
    _spec_checkpoint(runs, tmp_path, genotype={"arch": "|nor_conv_3x3~0|"})
    refused(["export", spec_run], capsys, spec_run, expect="checkpoint")


def test_a_value_echoed_into_an_error_is_cut_to_one_short_line(capsys):
    assert main(["train", "--arch", "|" + "x" * 10_000_000]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and len(err) <= MAX_SHOWN + len("ista-nas: error: \n")
    assert err.startswith("ista-nas: error:") and "characters cut" in err
