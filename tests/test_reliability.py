"""What the tool promises about user files (docs/reliability.md), command by command: an output flag never replaces
a file ista-nas did not write, damaged or hostile inputs get one line and exit code 2 before any work, a run is
counted once however it is reached, and a damaged metrics line is named, not hidden."""

import contextlib
import hashlib
import json
import os
import resource
import shutil

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ista_nas import methods, retrain
from ista_nas.benchmark import load_table
from ista_nas.cli import build_parser, main
from ista_nas.config import make_train_config
from ista_nas.engine.rundir import RunDir
from ista_nas.errors import UserError
from ista_nas.files import LIMITS, MiB, claim_output, read_text
from ista_nas.networks.nb201 import NB201_EXAMPLE

from conftest import refused, snapshot

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


FOREIGN = b"a user's file: not written by the tool\n"


def output_cases(runs, tmp_path):
    """(flag, argv) for every output flag of every command, each pointing at a foreign file (or a folder holding
    one where the flag names a folder)."""
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("cell.png", "correlation.json"):
        (folder / name).write_bytes(FOREIGN)
    file = tmp_path / "foreign.png"
    file.write_bytes(FOREIGN)
    table = tmp_path / "foreign.json"
    table.write_bytes(FOREIGN)
    search, train = runs["search"], runs["train"]
    return [
        ("search --out", ["search", "--space", "nb201", "--out", file, "--epochs", "1"]),
        ("search --out (seeds)", ["search", "--space", "nb201", "--seeds", "0", "1", "--out", file]),
        ("train --out", ["train", "--space", "nb201", "--genotype", NB201_EXAMPLE, "--out", file]),
        ("export --out", ["export", train, "--out", file]),
        ("export --out (onnx)", ["export", train, "--format", "onnx", "--out", file]),
        ("show --out", ["show", NB201_EXAMPLE, "--out", folder]),
        ("report --out", ["report", search, "--out", file]),
        ("correlate --out", ["correlate", search, "--out", folder]),
        ("compare --plot", ["compare", search, "--plot", file]),
        ("pareto --plot", ["pareto", search, "--latency", "fpga", "--plot", file]),
        ("latency --out", ["latency", "--out", table]),
    ], [file, folder, table]


def test_every_output_flag_refuses_a_file_it_did_not_write(runs, tmp_path, capsys):
    cases, foreign = output_cases(runs, tmp_path)
    # Every output flag the parser has is walked here: a new one must join the cases.
    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    flags = {f"{name} {option}" for name, sub in commands.items() for action in sub._actions
             for option in action.option_strings if option in ("--out", "--plot")}
    assert flags == {flag.split(" (")[0] for flag, _ in cases}
    for flag, argv in cases:
        err = refused(argv, capsys, *foreign, runs["search"], runs["train"])
        assert flag.split()[1] in err and any(str(path) in err for path in foreign), (flag, err)


def test_a_runs_own_files_are_never_an_output(runs, tmp_path, capsys):
    run = tmp_path / "copy"
    shutil.copytree(runs["train"], run)
    for name in ("checkpoint.pt", "config.json", "metrics.jsonl"):
        refused(["export", run, "--out", run / name], capsys, run, expect="was not written by ista-nas")
        refused(["report", run, "--out", run / name], capsys, run)
    assert main(["evaluate", str(run)]) == 0  # the checkpoint still loads
    capsys.readouterr()


def test_outputs_the_tool_wrote_are_replaced(runs, tmp_path, capsys):
    search = tmp_path / "search"
    shutil.copytree(runs["search"], search)
    for argv in (["report", search, "--out", tmp_path / "r.html"], ["show", NB201_EXAMPLE, "--out", tmp_path / "d"],
                 ["compare", search, "--plot", tmp_path / "c.svg"], ["correlate", search, "--out", tmp_path / "c"],
                 ["export", runs["train"], "--out", tmp_path / "m.pt"]):
        assert main([str(a) for a in argv]) == 0, argv
        first = snapshot(tmp_path)
        assert main([str(a) for a in argv]) == 0, argv  # the second run replaces its own files
        assert set(snapshot(tmp_path)) == set(first)
    capsys.readouterr()
    # A file of another kind, even one ista-nas wrote, is not replaced: a report is no plot.
    with pytest.raises(UserError, match="not written by ista-nas as a plot"):
        claim_output(tmp_path / "r.html", "plot", "--plot")


def test_a_search_checkpoint_gets_advice_that_keeps_it(runs, capsys):
    for command in ("evaluate", "export"):
        err = refused([command, runs["search"]], capsys, runs["search"], expect="ista-nas train --genotype")
        assert "two-stage search" in err


def test_a_run_counts_once_however_it_is_reached(runs, tmp_path, capsys):
    search, seeds = runs["search"], runs["seeds"]
    link = tmp_path / "link"
    link.symlink_to(search)
    # Distinct runs behind each list: seed-0 alone; the two seeds (seed-0 reached twice); seed-0 and a link to it.
    for argv, distinct in (([search, search], 1), ([seeds, search], 2), ([search, link], 1)):
        assert main(["compare", *map(str, argv), "--plot", str(tmp_path / "c.png"), "--json"]) == 0
        groups = json.loads(capsys.readouterr().out)
        assert sorted(s for g in groups for s in g["seeds"]) == list(range(distinct))
    twin = tmp_path / "twin"
    shutil.copytree(search, twin)
    refused(["compare", search, twin, "--plot", tmp_path / "t.png"], capsys, expect="the same seed 0")
    assert not (tmp_path / "t.png").exists()


def test_a_run_recording_a_since_removed_setting_off_reads_as_one_without_it(runs, tmp_path, capsys):
    """--cost-l1 was removed after its study: a run that recorded it at 0 (off) reads as the same run without it;
    one that recorded it on is refused in one line naming the commit that had it; nothing is written."""
    from ista_nas.methods import SearchConfig, stored_settings

    run = tmp_path / "run"
    shutil.copytree(runs["search"], run)
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "cost_l1": 0.0}))
    assert SearchConfig.from_dict({**config, "cost_l1": 0.0}) == SearchConfig.from_dict(config)
    assert stored_settings(run / "config.json") == stored_settings(runs["search"] / "config.json")
    (run / "config.json").write_text(json.dumps({**config, "cost_l1": 1.0}))
    before = snapshot(tmp_path)
    assert main(["search", "--resume", str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert "records cost_l1 1.0, a setting since removed" in err and "commit 47da30c" in err
    assert len(err.splitlines()) == 1 and snapshot(tmp_path) == before


def test_a_run_of_the_earlier_version_is_refused_naming_its_retired_settings(runs, tmp_path, capsys):
    """A run made by 0.1.0 (its config.json holds settings 0.2.0 removed or renamed): resume, --seeds and
    correlate refuse it in one line naming them and the version to continue it with; nothing is written."""
    old = tmp_path / "seeds" / "seed-0"
    shutil.copytree(runs["search"], old)
    config = json.loads((old / "config.json").read_text())
    config["steps"] = config.pop("nodes")
    config.update(explore=0, weight_warmup_epochs=0)
    (old / "config.json").write_text(json.dumps(config))
    before = snapshot(tmp_path)
    seeds = ["search", "--space", "nb201", "--preset", "quick", "--dataset", config["dataset"], "--subset", "0",
             "--epochs", "2", "--batch-size", "12", "--channels", "4", "--layers", "1", "--device", "cpu", "--seeds",
             "0", "--out", str(tmp_path / "seeds")]
    for argv in (["search", "--resume", str(old)], seeds, ["correlate", str(old), "--protocol", "ranking"]):
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert "written by ista-nas 0.1.0" in err and "steps (renamed nodes)" in err and "explore (removed)" in err
        assert len(err.splitlines()) == 1, err
    assert snapshot(tmp_path) == before


def test_a_damaged_metrics_line_is_named_and_the_rest_shown(runs, tmp_path, capsys, caplog):
    run = tmp_path / "cut"
    shutil.copytree(runs["search"], run)
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    whole = [json.loads(line) for line in lines[:-1]]
    (run / "metrics.jsonl").write_text("".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])
    with caplog.at_level("WARNING"):
        assert main(["compare", str(run), "--plot", str(tmp_path / "c.png"), "--json"]) == 0
    assert f"line {len(lines)} damaged" in caplog.text
    [group] = json.loads(capsys.readouterr().out)
    accuracies = [r["valid_acc"] for r in whole if "valid_acc" in r]
    assert group["best_accuracy"]["values"] == [max(accuracies)]
    assert group["seconds"]["values"][0] == pytest.approx(sum(r.get("seconds", 0.0) for r in whole))


def test_readers_refuse_devices_fifos_folders_and_oversized_files(tmp_path, capsys, monkeypatch):
    refused(["lookup", NB201_EXAMPLE, "--benchmark", "/dev/zero", "--metric", "cifar10"], capsys,
            expect="not a regular file")
    fifo = tmp_path / "fifo.csv"
    os.mkfifo(fifo)  # opening it would block for ever: it is refused before
    refused(["lookup", NB201_EXAMPLE, "--benchmark", fifo], capsys, expect="not a regular file")
    refused(["show", str(tmp_path)], capsys, expect="folder without genotype.json")
    big = tmp_path / "big.csv"
    big.write_text("arch,test_acc\n" + f"{NB201_EXAMPLE},1.0\n" * 100)
    monkeypatch.setitem(LIMITS, "table", 1024)
    refused(["lookup", NB201_EXAMPLE, "--benchmark", big], capsys, expect="larger than the 1024 bytes")
    with pytest.raises(UserError, match="larger than"):
        read_text(big, "table", 1024, "fix")
    assert read_text(big, "table", MiB, "fix").startswith("arch")


def test_a_byte_order_mark_is_dropped(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(f"\ufeffarch,test_acc\n{NB201_EXAMPLE},93.5\n", encoding="utf-8")
    assert load_table(path).values == {NB201_EXAMPLE: 93.5}


def test_arguments_are_checked_before_any_work(runs, tmp_path, capsys, tiny_folder):
    out = tmp_path / "seeds"
    refused(["search", "--space", "nb201", "--dataset", f"folder:{tiny_folder}", "--seeds", "0",
             "9223372036854775808", "--out", out], capsys, expect="2^63-1")
    assert not out.exists()
    (out / "seed-1").mkdir(parents=True)
    (out / "seed-1" / "notes.txt").write_bytes(FOREIGN)
    refused(["search", "--space", "nb201", "--dataset", f"folder:{tiny_folder}", "--seeds", "0", "1", "--out", out],
            capsys, out, expect="seed-1 exists")
    assert not (out / "seed-0").exists()
    refused(["correlate", runs["search"], "--protocol", "ranking", "--k", "1000000", "--out", tmp_path / "c"],
            capsys, expect="at most 4096")
    assert not (tmp_path / "c").exists()
    refused(["compare", runs["search"], "--plot", "/nonexistent/dir/x.png"], capsys, expect="does not exist")
    refused(["compare", runs["search"], "--plot", tmp_path / "cmp.txt"], capsys, expect="unknown plot format")


def test_messages_point_the_right_way(runs, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["correlate", empty], ["compare", empty], ["report", empty]):
        err = refused(argv, capsys, expect="not a run directory")
        assert "--resume" not in err
    err = refused(["search", "--resume", runs["train"]], capsys, runs["train"], expect="not a run of this command")
    assert len(err) < 400
    refused(["train", "--resume", runs["search"]], capsys, runs["search"], expect="not a run of this command")
    table = tmp_path / "t.csv"
    table.write_text("")
    refused(["lookup", NB201_EXAMPLE, "--benchmark", table], capsys, expect="is empty")
    table.write_text(f"arch,test_acc\n{NB201_EXAMPLE},93.5\n")
    refused(["lookup", str(empty), "--benchmark", table], capsys, expect="folder without genotype.json")


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.dictionaries(st.sampled_from(["epoch", "valid_acc", "seconds"]),
                                          st.integers(0, 99), min_size=1).map(lambda r: ("record", r)),
                          st.binary(max_size=20).map(lambda b: ("damaged", b"#" + b.replace(b"\n", b" ")))),
                max_size=8))
def test_metrics_keep_every_whole_record_and_name_every_damaged_line(tmp_path_factory, caplog, lines):
    run = RunDir(tmp_path_factory.mktemp("m"))
    run.metrics_path.write_bytes(b"".join((json.dumps(v).encode() if kind == "record" else v) + b"\n"
                                          for kind, v in lines))
    caplog.clear()
    with caplog.at_level("WARNING"):
        records = run.read_metrics(warn=True)
    assert records == [v for kind, v in lines if kind == "record"]
    damaged = [number for number, (kind, _) in enumerate(lines, start=1) if kind == "damaged"]
    assert ("damaged" in caplog.text) == bool(damaged)
    if damaged:
        assert f"{', '.join(map(str, damaged[:5]))} damaged" in caplog.text


@contextlib.contextmanager
def file_size_limit(limit):
    """A full disk for this process: no file may grow past ``limit`` bytes (Python ignores SIGXFSZ, so a write
    past it is an OSError, EFBIG)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_full_disk_under_any_writing_command_is_one_line_and_leaves_no_file_behind(runs, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    for argv in (["report", runs["search"], "--out", out / "r.html"],
                 ["compare", runs["seeds"], "--plot", out / "c.png"], ["export", runs["train"], "--out", out / "m.pt"],
                 ["show", NB201_EXAMPLE, "--out", out / "d"]):
        with file_size_limit(4096):
            refused(argv, capsys, runs["seeds"], runs["train"], expect="cannot write")
        assert [p for p in out.rglob("*") if p.is_file()] == []  # no temporary or half-written file stays


def test_a_full_disk_under_a_run_is_one_line_and_leaves_no_temporary_file(runs, tiny_folder, tmp_path, capsys):
    """search, train and correlate on a disk that fills at their first file over 4 KiB (a checkpoint) or 256 bytes:
    one line naming the file, exit 2, no temporary file anywhere, the runs they read untouched."""
    data = ["--dataset", f"folder:{tiny_folder}", "--subset", "0", "--batch-size", "12", "--channels", "4",
            "--layers", "1", "--device", "cpu", "--epochs", "1"]
    for limit, argv in ((4096, ["search", "--preset", "quick", "--space", "nb201", *data, "--out", tmp_path / "s"]),
                        (4096, ["train", "--preset", "quick", "--space", "nb201", "--arch", NB201_EXAMPLE, *data,
                                "--out", tmp_path / "t"]),
                        (256, ["correlate", runs["search"], "--out", tmp_path / "c", "--benchmark", "none"])):
        with file_size_limit(limit):
            refused(argv, capsys, runs["seeds"], runs["train"], expect="cannot write")
    assert [p for p in tmp_path.rglob("*") if ".tmp" in p.name] == []


UNPRIVILEGED = """
import contextlib, io, json, sys
from ista_nas.cli import main
try:
    open(sys.argv[1], "rb").close()
    sys.exit(3)  # the permission was not enforced: nothing to test
except PermissionError:
    pass
results = []
for argv in json.loads(sys.argv[2]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        results.append([main(argv), err.getvalue()])
print(json.dumps(results))
"""


def test_files_and_folders_this_user_may_not_read_or_write_are_one_line_naming_the_permission(runs, tiny_folder,
                                                                                              tmp_path):
    """Run as a user whom permissions bind (root without its override capabilities, through capsh): a read-only run
    directory, an unreadable config, checkpoint or class folder and a read-only output folder are each one line,
    exit code 2, every file as it was. An unreadable checkpoint is a permission to grant, not a damaged file: the
    resume does not fall back to the previous one or move it aside."""
    import subprocess
    import sys

    prefix = []
    if os.geteuid() == 0:
        if shutil.which("capsh") is None:
            pytest.skip("root ignores permissions and capsh is not installed to drop that")
        prefix = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", '"$0" "$@"']
    run = {name: shutil.copytree(runs["search"], tmp_path / name) for name in ("ro", "config", "ckpt")}
    data = shutil.copytree(tiny_folder, tmp_path / "data")
    probe, out = tmp_path / "probe", tmp_path / "out"
    probe.write_bytes(b"")
    out.mkdir()
    for path, mode in ((probe, 0), (run["config"] / "config.json", 0), (run["ckpt"] / "checkpoint.pt", 0),
                       (data / "train" / "class1", 0), (run["ro"], 0o555), (out, 0o555)):
        path.chmod(mode)
    flags = ["--subset", "0", "--batch-size", "12", "--channels", "4", "--layers", "1", "--device", "cpu"]
    cases = [(["search", "--resume", run["ro"], "--epochs", "3"], f"cannot write in {run['ro']}: Permission denied"),
             (["report", run["config"]], "config.json: permission denied; make it readable"),
             (["search", "--resume", run["ckpt"], "--epochs", "3"], "checkpoint.pt: permission denied; make it"),
             (["search", "--preset", "quick", "--space", "nb201", "--dataset", f"folder:{data}", *flags, "--out",
               tmp_path / "new"], "class1: Permission denied; make the image folder readable"),
             (["report", runs["search"], "--out", out / "r.html"], "r.html: Permission denied")]
    def files():  # a run's .lock holds the pid of its last writer, not data
        return {path: digest for path, digest in snapshot(tmp_path, runs["seeds"]).items() if ".lock" not in path}

    before = files()
    env = {**os.environ, "ISTA_NAS_CACHE": str(tmp_path.with_name(tmp_path.name + "-cache"))}
    proc = subprocess.run([*prefix, sys.executable, "-c", UNPRIVILEGED, str(probe),
                           json.dumps([[str(a) for a in argv] for argv, _ in cases])],
                          capture_output=True, text=True, env=env, timeout=600)
    if proc.returncode == 3:
        pytest.skip("this user is not bound by file permissions here")
    assert proc.returncode == 0, proc.stderr
    for (argv, expected), (code, err) in zip(cases, json.loads(proc.stdout.splitlines()[-1])):
        assert code == 2 and err.startswith("ista-nas: error:") and err.count("\n") == 1, (argv, err)
        assert expected in err, (argv, err)
    for path in (run["ro"], out):
        path.chmod(0o755)
    assert files() == before and not (tmp_path / "new").exists()
    assert not (run["ckpt"] / "checkpoint.damaged.pt").exists()


def test_a_checkpoint_that_cannot_be_written_keeps_the_last_good_one(tmp_path, monkeypatch):
    import errno

    import torch

    from ista_nas.engine import checkpoint

    path = tmp_path / "checkpoint.pt"
    checkpoint.save_checkpoint(path, {"epoch": 1, "w": torch.zeros(10)})
    good = path.read_bytes()
    with file_size_limit(64_000), pytest.raises(UserError, match="cannot write .*checkpoint.pt: File too large; .*"
                                                                 "--resume continues"):
        checkpoint.save_checkpoint(path, {"epoch": 2, "w": torch.zeros(100_000)})
    assert sorted(tmp_path.iterdir()) == [path] and path.read_bytes() == good  # not rotated, nothing left over

    def read_only(src, dst):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr(checkpoint.os, "replace", read_only)
    with pytest.raises(UserError, match="Read-only file system"):
        checkpoint.save_checkpoint(path, {"epoch": 2, "w": torch.zeros(10)})
    assert sorted(tmp_path.iterdir()) == [path] and path.read_bytes() == good


DEEP = "[" * 100_000 + "]" * 100_000
MALFORMED = [  # (file of a finished search run, what a hand edit or damage left in it)
    ("config.json", DEEP), ("config.json", '{"seed": ' + "9" * 5000 + "}"), ("config.json", {"dataset": 7}),
    ("config.json", {"space": "no-such-space"}), ("config.json", {"epochs": "x"}),
    ("genotype.json", DEEP), ("genotype.json", '{"normal": 5}'), ("ranking.json", '{"normal": 5}'),
    ("ranking.json", DEEP), ("benchmark.json", DEEP), ("metrics.jsonl", '{"epoch": 1, "seconds": "x"}\n'),
    ("metrics.jsonl", DEEP + "\n"), ("metrics.jsonl", '{"epoch": ' + "9" * 5000 + "}\n"),
]


@pytest.mark.parametrize("name,content", MALFORMED, ids=lambda v: str(v)[:24])
def test_a_hand_edited_run_file_is_read_or_refused_in_one_line_by_every_command(name, content, runs, tmp_path,
                                                                                 capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["search"], run)
    if isinstance(content, dict):  # the stored config with one setting changed
        content = json.dumps({**json.loads((run / name).read_text()), **content})
    (run / name).write_text(content)
    before = snapshot(run)
    readers = [["report", run, "--out", tmp_path / "r.html"], ["compare", run, "--plot", tmp_path / "c.png"],
               ["lookup", run], ["correlate", run, "--out", tmp_path / "c", "--benchmark", "none"]]
    for argv in readers + ([["search", "--resume", run, "--epochs", "3"]] if name == "config.json" else []):
        code = main([str(a) for a in argv])
        err = capsys.readouterr().err
        assert "Traceback" not in err and code in (0, 2), (argv, code, err[-2000:])
        if code == 2:
            assert err.startswith("ista-nas: error:") and err.count("\n") == 1, err
            assert name in err or str(run) in err, err
    after = snapshot(run)
    changed = {k for k in before if before[k] != after.get(k)}
    assert not changed or argv[0] == "search"  # only --resume writes into the run (it continued a readable one)


def test_a_runs_own_files_are_left_to_it_and_outputs_land_where_asked(runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(runs["search"], run)
    # Its cell drawing carries the plot mark, but it is the run's: compare and show leave it alone.
    refused(["compare", run, "--plot", run / "cell.png"], capsys, run, expect="a file of the run in")
    refused(["show", NB201_EXAMPLE, "--out", run], capsys, run, expect="a file of the run in")
    # export --out FOLDER/ writes the default name inside the folder, not a file named like the folder.
    (tmp_path / "exports").mkdir()
    assert main(["export", str(runs["train"]), "--out", str(tmp_path / "exports") + "/"]) == 0
    assert [p.name for p in (tmp_path / "exports").iterdir()] == ["model.pt"]
    capsys.readouterr()
    # A smaller correlate sample into the same --out leaves no file of the larger one behind.
    out = tmp_path / "c"
    for k in (4, 2):
        assert main(["correlate", str(run), "--protocol", "ranking", "--k", str(k), "--calibration-batches", "1",
                     "--out", str(out), "--device", "cpu"]) == 0
    assert sorted(p.name for p in (out / "architectures").iterdir()) == ["arch-00.json", "arch-01.json"]
    # A checkpoint copied in from another run is refused by correlate as by --resume.
    shutil.copy(runs["seeds"] / "seed-1" / "checkpoint.pt", run / "checkpoint.pt")
    refused(["correlate", run, "--protocol", "ranking", "--k", "2", "--out", tmp_path / "c2"], capsys, run,
            expect="was not written by the search in")


# Generated JSON as a hand edit or damage leaves it: any depth, integers of any length, any type where a number or
# an object is expected.
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                    st.text(max_size=5), st.integers(1, 6000).map(lambda n: "9" * n))
JSONISH = st.recursive(SCALARS.map(lambda v: v if not (isinstance(v, str) and v.isdigit()) else int(v[:4000])),
                       lambda inner: st.one_of(st.lists(inner, max_size=3),
                                               st.dictionaries(st.sampled_from(["epoch", "seconds", "valid_acc",
                                                                                "normal", "space", "dataset", "op",
                                                                                "abs_z", "arch"]), inner, max_size=4)),
                       max_leaves=8)
TEXTS = st.one_of(JSONISH.map(json.dumps), st.integers(1, 200_000).map(lambda d: "[" * d + "]" * d),
                  st.integers(4301, 6000).map(lambda n: '{"epoch": ' + "7" * n + "}"))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(name=st.sampled_from(["config.json", "metrics.jsonl", "ranking.json", "genotype.json", "benchmark.json"]),
       text=TEXTS)
def test_any_json_in_a_run_file_is_read_or_refused_as_a_user_error(runs, tmp_path_factory, name, text):
    from ista_nas.analysis.compare import format_comparison, format_groups, summarize_groups
    from ista_nas.analysis.report import read_run, render

    run = tmp_path_factory.mktemp("run")
    for keep in ("config.json", "metrics.jsonl", "genotype.json", "benchmark.json", "ranking.json"):
        shutil.copy(runs["search"] / keep, run / keep)
    (run / name).write_text(text + "\n")
    try:
        info = read_run(run)
        render(info)
        format_comparison([info])
        format_groups(summarize_groups([info]))
    except UserError as exc:
        assert "\n" not in str(exc)
