"""Issue 36's hostile invocations, end to end, as a new user would type them (docs/reliability.md).

Each case runs ``python -m ista_nas.cli`` in a fresh sandbox of tiny runs and checks what the issue asks of it:
exit code 2 with one ``ista-nas: error:`` line and no traceback (a refusal), or exit code 0 (it works), within a
time limit (no hang), and every file that existed before byte-identical afterwards (the outputs a case is meant
to write excepted). Full disks are a size-limited tmpfs where this user may mount one (else a file-size limit);
permissions bind through ``capsh`` (root without its override capabilities). Prints one line per case and a
summary; ``--json FILE`` writes every result.

    python bench/hostile.py [--only SUBSTRING] [--json results.json] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from conftest import make_image_folder  # noqa: E402  (the tests' tiny image folder; needs the test dependencies)

TINY = ["--subset", "0", "--batch-size", "12", "--channels", "4", "--layers", "1", "--device", "cpu"]
CAPSH = ["capsh", "--drop=cap_dac_override,cap_dac_read_search", "--", "-c", '"$0" "$@"']
EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"


def snapshot(root: Path) -> dict[str, str]:
    """SHA-256 of every regular file under ``root`` (a run's ``.lock`` holds its last writer's pid, not data)."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in root.rglob("*")
            if p.is_file() and not p.is_symlink() and p.name != ".lock" and "cache" not in p.parts}


class Sandbox:
    def __init__(self, root: Path):
        self.root = root
        self.env = {**os.environ, "ISTA_NAS_CACHE": str(root / "cache"), "PYTHONWARNINGS": "ignore"}
        self.can_mount = os.geteuid() == 0 and self._mount_works()
        self.capsh = shutil.which("capsh") is not None if os.geteuid() == 0 else True

    def _mount_works(self) -> bool:
        probe = self.root / "mount-probe"
        probe.mkdir()
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "none", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        probe.rmdir()
        return ok

    def cli(self, *argv, timeout: float = 300, wrap: list[str] | None = None, fsize: int | None = None,
            cwd: Path | None = None, env: dict | None = None) -> dict:
        cmd = [*(wrap or []), sys.executable, "-m", "ista_nas.cli", *map(str, argv)]
        limit = (lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, resource.RLIM_INFINITY))) if fsize \
            else None
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=cwd or self.root,
                                  env=env or self.env, preexec_fn=limit)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = "hang", exc.stdout or "", exc.stderr or ""
            out, err = (s.decode() if isinstance(s, bytes) else s for s in (out, err))
        return {"code": code, "out": out, "err": err, "seconds": round(time.perf_counter() - start, 1)}

    def background(self, *argv) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "ista_nas.cli", *map(str, argv)], cwd=self.root,
                                env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    @contextlib.contextmanager
    def small_disk(self, name: str, kib: int):
        """A folder on a disk of ``kib`` KiB (a tmpfs), or, where this user cannot mount, a plain folder and the
        same size as a file-size limit (``fsize`` of the yielded dict)."""
        folder = self.root / name
        folder.mkdir()
        if self.can_mount:
            subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={kib}k", "none", str(folder)], check=True)
        try:
            yield {"path": folder, "fsize": None if self.can_mount else kib * 1024}
        finally:
            if self.can_mount:
                leftover = sorted(p.name for p in folder.rglob("*") if p.is_file())
                (self.root / f"{name}.left").write_text(json.dumps(leftover))
                subprocess.run(["umount", str(folder)], check=True)


def wait_for_epochs(run: Path, count: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline and proc.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= count and \
                (run / "checkpoint.pt").exists():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{run} did not reach {count} epochs")


def setup(box: Sandbox) -> dict[str, Path]:
    root = box.root
    data = make_image_folder(root / "data")
    paths = {"data": data, "run": root / "run", "train": root / "train", "seeds": root / "seeds",
             "other": root / "other"}
    search = ["search", "--preset", "quick", "--space", "nb201", "--dataset", f"folder:{data}", *TINY]
    for argv in ([*search, "--epochs", "2", "--out", paths["run"]],
                 [*search, "--epochs", "2", "--seed", "7", "--out", paths["other"]],
                 [*search, "--epochs", "2", "--seeds", "0", "1", "--out", paths["seeds"]],
                 ["train", "--preset", "quick", "--space", "nb201", "--arch", EXAMPLE, "--dataset", f"folder:{data}",
                  *TINY, "--epochs", "1", "--out", paths["train"]]):
        result = box.cli(*argv)
        if result["code"] != 0:
            raise RuntimeError(f"setup {argv[0]} failed: {result['err'][-2000:]}")
    # seed-1 continued for more epochs and killed after one of them: an unfinished run.
    proc = box.background("search", "--resume", paths["seeds"] / "seed-1", "--epochs", "40")
    wait_for_epochs(paths["seeds"] / "seed-1", 3, proc)
    proc.kill()
    proc.wait()
    paths["search"] = search
    return paths


def refused(result: dict, expect: str = "") -> str:
    """'' when ``result`` is a one-line refusal (containing ``expect``), else what is wrong."""
    lines = [line for line in result["err"].splitlines() if line.strip()]
    if result["code"] != 2:
        return f"exit {result['code']}"
    if not lines or not lines[-1].startswith("ista-nas: error:"):
        return "no error line"
    if sum(line.startswith("ista-nas: error:") for line in lines) != 1 or "Traceback" in result["err"]:
        return "more than one line"
    if expect and not re.search(expect, lines[-1]):
        return f"message lacks {expect!r}"
    return ""


def worked(result: dict, expect: str = "") -> str:
    if result["code"] != 0:
        return f"exit {result['code']}: {result['err'].strip().splitlines()[-1:] or ''}"
    if "Traceback" in result["err"]:
        return "traceback"
    if expect and not re.search(expect, result["out"] + result["err"]):
        return f"output lacks {expect!r}"
    return ""


def cases(box: Sandbox, p: dict[str, Path]):
    """(class, name, function returning (result, problem or '', outputs it may write)) of every case."""
    root, data, run, search = box.root, p["data"], p["run"], p["search"]

    def copy(src: Path, name: str) -> Path:
        return Path(shutil.copytree(src, root / name, symlinks=True))

    def case(kind, name):
        def register(fn):
            found.append((kind, name, fn))
            return fn
        return register

    found = []

    @case("locks", "the same search --out started twice, 1.5 s apart")
    def _():
        first = box.background(*search, "--epochs", "60", "--out", root / "l1")
        time.sleep(1.5)
        second = box.cli(*search, "--epochs", "60", "--out", root / "l1")
        first.communicate()
        epochs = [json.loads(line)["epoch"] for line in (root / "l1" / "metrics.jsonl").read_text().splitlines()]
        problem = refused(second, "pid") or ("" if first.returncode == 0 and epochs == list(range(1, 61))
                                            else f"first exit {first.returncode}, epochs {epochs}")
        return second, problem, ["l1"]

    @case("locks", "search --resume R while R's search still runs")
    def _():
        first = box.background(*search, "--epochs", "60", "--out", root / "l2")
        wait_for_epochs(root / "l2", 1, first)
        second = box.cli("search", "--resume", root / "l2", "--epochs", "61")
        first.communicate()
        epochs = [json.loads(line)["epoch"] for line in (root / "l2" / "metrics.jsonl").read_text().splitlines()]
        problem = refused(second, "pid") or ("" if epochs == list(range(1, 61)) else f"epochs {epochs}")
        return second, problem, ["l2"]

    @case("locks", "two searches without --out started in the same second")
    def _():
        (root / "l3").mkdir()
        procs = [subprocess.Popen([sys.executable, "-m", "ista_nas.cli", *search, "--epochs", "1"], cwd=root / "l3",
                                  env=box.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
        results = [proc.communicate() + (proc.returncode,) for proc in procs]
        made = sorted(d.name for d in (root / "l3" / "runs").iterdir())
        problem = "" if [r[2] for r in results] == [0, 0] and len(made) == 2 else f"exits {[r[2] for r in results]}"
        return {"code": 0, "out": results[0][0], "err": results[0][1], "seconds": 0}, problem, ["l3"]

    @case("unfinished", "compare a --seeds folder holding a seed killed mid-run")
    def _():
        result = box.cli("compare", p["seeds"])
        return result, worked(result, r"unfinished"), ["compare.png"]

    @case("unfinished", "train --genotype of a search killed mid-run")
    def _():
        result = box.cli("train", "--genotype", p["seeds"] / "seed-1", "--dataset", f"folder:{data}", *TINY,
                         "--epochs", "1", "--out", root / "u2")
        return result, refused(result, "stopped early|unfinished|finish"), []

    @case("unfinished", "a resumed folder search whose folder gained images")
    def _():
        folder = copy(data, "d3")
        result = box.cli("search", "--preset", "quick", "--space", "nb201", "--dataset", f"folder:{folder}", *TINY,
                         "--epochs", "1", "--out", root / "u3")
        make_image_folder(root / "d3-more", per_class=(70, 0), seed=1)
        for src in (root / "d3-more" / "train").rglob("*.png"):
            shutil.copy(src, folder / "train" / src.parent.name / f"new-{src.name}")
        result = box.cli("search", "--resume", root / "u3", "--epochs", "2")
        return result, refused(result, "changed|differ"), ["u3/status.json", "u3/.lock"]

    @case("unfinished", "correlate RUN with a checkpoint copied in from another run")
    def _():
        target = copy(run, "u4")
        shutil.copy(p["other"] / "checkpoint.pt", target / "checkpoint.pt")
        result = box.cli("correlate", target, "--protocol", "ranking", "--k", "2", "--benchmark", "none")
        return result, refused(result, "not written by|another run|other settings"), []

    @case("unfinished", "10 images moved between two classes: the cache gives the new labels")
    def _():
        folder = copy(data, "d5")
        probe = ("import sys, collections; from ista_nas.engine.data import load_dataset; "
                 "d = load_dataset('folder:' + sys.argv[1], 'train'); print(sorted(collections.Counter("
                 "d.labels.tolist()).items()))")
        before = subprocess.run([sys.executable, "-c", probe, folder], capture_output=True, text=True, env=box.env)
        for path in sorted((folder / "train" / "class0").iterdir())[:10]:
            path.rename(folder / "train" / "class1" / f"moved-{path.name}")
        after = subprocess.run([sys.executable, "-c", probe, folder], capture_output=True, text=True, env=box.env)
        problem = "" if after.stdout.strip() == "[(0, 30), (1, 50), (2, 40)]" else f"{before.stdout} -> {after.stdout}"
        return {"code": after.returncode, "out": after.stdout, "err": after.stderr, "seconds": 0}, problem, []

    @case("images", "one greyscale JPEG among colour images")
    def _():
        folder = copy(data, "d6")
        Image.fromarray(np.full((16, 16), 90, np.uint8), "L").save(folder / "train" / "class0" / "grey.jpg")
        result = box.cli("search", "--preset", "quick", "--space", "nb201", "--dataset", f"folder:{folder}", *TINY,
                         "--epochs", "1", "--out", root / "i1")
        problem = worked(result)
        if not problem:
            probe = ("import sys; from ista_nas.engine.data import load_dataset; "
                     "print(load_dataset('folder:' + sys.argv[1], 'train').channels)")
            channels = subprocess.run([sys.executable, "-c", probe, folder], capture_output=True, text=True,
                                      env=box.env).stdout.strip()
            problem = "" if channels == "3" else f"read as {channels} channels"
        return result, problem, ["i1"]

    @case("images", "a PNG whose header claims 30000x30000 pixels")
    def _():
        folder = copy(data, "d7")
        header = bytearray((folder / "train" / "class0" / "000.png").read_bytes())
        header[16:24] = (30000).to_bytes(4, "big") * 2  # IHDR width, height (its CRC left stale, as a forger would)
        (folder / "train" / "class0" / "000.png").write_bytes(bytes(header))
        result = box.cli("search", "--preset", "quick", "--space", "nb201", "--dataset", f"folder:{folder}", *TINY,
                         "--epochs", "1", "--out", root / "i2")
        return result, refused(result, "000.png"), []

    @case("images", "a class folder without read permission")
    def _():
        folder = copy(data, "d8")
        (folder / "train" / "class1").chmod(0)
        result = box.cli("search", "--preset", "quick", "--space", "nb201", "--dataset", f"folder:{folder}", *TINY,
                         "--epochs", "1", "--out", root / "i3", wrap=CAPSH if os.geteuid() == 0 else None)
        (folder / "train" / "class1").chmod(0o755)
        return result, refused(result, "class1"), []

    for label, content in (("empty", b""), ("short", None), ("label out of range", "label")):
        @case("images", f"Fashion-MNIST idx files: {label}")
        def _(content=content, label=label):
            folder = root / f"fm-{label.split()[0]}"
            folder.mkdir()
            for prefix in ("train", "t10k"):
                imgs = b"\x00\x00\x08\x03" + (4).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(4 * 784)
                labs = b"\x00\x00\x08\x01" + (4).to_bytes(4, "big") + bytes([0, 1, 2, 40 if content else 3])
                if content == b"":
                    imgs = labs = b""
                elif content is None:
                    imgs = imgs[:100]
                (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(imgs))
                (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labs))
            result = box.cli("search", "--preset", "quick", "--space", "nb201", "--dataset", "fashion-mnist",
                             "--data-dir", folder, *TINY, "--epochs", "1", "--out", root / f"i4-{label[:5]}")
            return result, refused(result, "reinstall"), []

    @case("images", "a FIFO named like an image")
    def _():
        folder = copy(data, "d9")
        os.mkfifo(folder / "train" / "class0" / "fifo.png")
        result = box.cli("search", "--preset", "quick", "--space", "nb201", "--dataset", f"folder:{folder}", *TINY,
                         "--epochs", "1", "--out", root / "i5", timeout=120)
        return result, worked(result), ["i5"]

    @case("images", "ISTA_NAS_CACHE set but empty")
    def _():
        (root / "i6").mkdir()
        result = box.cli(*search, "--epochs", "1", "--out", root / "i6" / "run", cwd=root / "i6",
                         env={**box.env, "ISTA_NAS_CACHE": "", "HOME": str(root / "home")})
        stray = [p.name for p in (root / "i6").iterdir() if p.name != "run"]
        return result, worked(result) or (f"wrote {stray} into the current folder" if stray else ""), ["i6", "home"]

    @case("images", "a one-class folder")
    def _():
        folder = make_image_folder(root / "d10", classes=1)
        result = box.cli("search", "--preset", "quick", "--space", "nb201", "--dataset", f"folder:{folder}", *TINY,
                         "--epochs", "1", "--out", root / "i7")
        return result, refused(result, "one class"), []

    writers = [("search", 64, lambda out: [*search, "--epochs", "1", "--out", out / "run"]),
               ("train", 64, lambda out: ["train", "--preset", "quick", "--space", "nb201", "--arch", EXAMPLE,
                                          "--dataset", f"folder:{data}", *TINY, "--epochs", "1", "--out",
                                          out / "run"]),
               ("correlate", 4, lambda out: ["correlate", run, "--benchmark", "none", "--out", out / "c"]),
               ("compare --plot", 4, lambda out: ["compare", p["seeds"], "--plot", out / "c.png"]),
               ("show --out", 4, lambda out: ["show", EXAMPLE, "--out", out / "d"]),
               ("report --out", 4, lambda out: ["report", run, "--out", out / "r.html"]),
               ("export", 16, lambda out: ["export", p["train"], "--out", out / "m.pt"])]
    for name, kib, argv in writers:
        @case("disks", f"a full disk under {name}")
        def _(name=name, kib=kib, argv=argv):
            slug = "f-" + name.split()[0]
            with box.small_disk(slug, kib) as disk:
                result = box.cli(*argv(disk["path"]), fsize=disk["fsize"])
            left = (json.loads((root / f"{slug}.left").read_text()) if box.can_mount else
                    sorted(q.name for q in disk["path"].rglob("*") if q.is_file()))
            temporary = [n for n in left if ".tmp" in n or n.startswith("tmp")]
            problem = refused(result, "cannot write|no space|No space|File too large")
            return result, problem or (f"left {temporary}" if temporary else ""), [slug, f"{slug}.left"]

    @case("disks", "search --resume of a read-only run directory")
    def _():
        target = copy(run, "ro1")
        target.chmod(0o555)
        result = box.cli("search", "--resume", target, "--epochs", "3", wrap=CAPSH if os.geteuid() == 0 else None)
        target.chmod(0o755)
        return result, refused(result, "cannot write in"), []

    deep = "[" * 100_000 + "]" * 100_000
    edits = [("config.json", deep, ("report", "compare", "correlate", "resume")),
             ("config.json", '{"seed": ' + "9" * 5000 + "}", ("report", "resume")),
             ("config.json", "400 digits", ("report", "compare")),
             ("config.json", {"dataset": 7}, ("report", "resume")),
             ("config.json", {"space": "no-such-space"}, ("report", "correlate", "resume")),
             ("genotype.json", deep, ("report", "train")), ("genotype.json", '{"normal": 5}', ("report", "train")),
             ("ranking.json", deep, ("report",)), ("ranking.json", '{"normal": 5}', ("report", "correlate")),
             ("metrics.jsonl", deep + "\n", ("report", "compare")),
             ("metrics.jsonl", '{"epoch": 1, "seconds": "x"}\n', ("compare",)),
             ("metrics.jsonl", '{"epoch": ' + "9" * 5000 + "}\n", ("compare",))]
    for number, (name, content, commands) in enumerate(edits):
        for command in commands:
            label = content if isinstance(content, str) and len(content) < 40 else \
                (json.dumps(content) if isinstance(content, dict) else f"{len(str(content))} characters")
            @case("hand-edited", f"{name} holding {label}: {command}")
            def _(name=name, content=content, command=command, number=number):
                target = copy(run, f"h{number}-{command}")
                if content == "400 digits":
                    config = json.loads((target / name).read_text())
                    text = json.dumps(config).replace(f'"lr": {json.dumps(config["lr"])}',
                                                      '"lr": 1' + "0" * 400 + ".5")  # beyond a float: inf
                elif isinstance(content, dict):
                    text = json.dumps({**json.loads((target / name).read_text()), **content})
                else:
                    text = content
                (target / name).write_text(text)
                argv = {"report": ["report", target, "--out", root / f"h{number}.html"],
                        "compare": ["compare", target], "correlate": ["correlate", target, "--benchmark", "none",
                                                                       "--out", root / f"h{number}-c"],
                        "resume": ["search", "--resume", target, "--epochs", "3"],
                        "train": ["train", "--genotype", target, "--dataset", f"folder:{data}", *TINY, "--epochs",
                                  "1", "--out", root / f"h{number}-t"]}[command]
                result = box.cli(*argv)
                problem = "" if result["code"] == 0 and "Traceback" not in result["err"] else refused(result)
                return result, problem, [f"h{number}.html", f"h{number}-c", f"h{number}-t", "compare.png",
                                         f"h{number}-{command}/status.json"]

    @case("hand-edited", "a JSON-lines table nested 100,000 deep: lookup")
    def _():
        (root / "table.jsonl").write_text('{"arch": "x", "acc": 1}\n' + deep + "\n")
        result = box.cli("lookup", EXAMPLE, "--benchmark", root / "table.jsonl")
        return result, refused(result, "table.jsonl"), []

    for flag in ("--lr", "--arch-lr", "--weight-decay"):
        @case("numbers", f"{flag} 1e300")
        def _(flag=flag):
            result = box.cli(*search, "--epochs", "1", flag, "1e300", "--out", root / "n1")
            return result, refused(result, flag), []

    sizes = [("--channels 100000", [*search, "--channels", "100000"]),
             ("--layers 100000", [*search, "--layers", "100000"]),
             ("darts --nodes 3000", ["search", "--preset", "quick", "--space", "darts", "--dataset",
                                     f"folder:{data}", *TINY, "--nodes", "3000"]),
             ("--proj-dims 1000000000", [*search, "--proj-dims", "1000000000"]),
             ("--batch-size 100000000 of 16x16 images", [*search, "--batch-size", "100000000"]),
             ("train --layers 100000", ["train", "--preset", "quick", "--space", "nb201", "--arch", EXAMPLE,
                                        "--dataset", f"folder:{data}", *TINY, "--layers", "100000"]),
             ("train --channels 100000", ["train", "--preset", "quick", "--space", "nb201", "--arch", EXAMPLE,
                                          "--dataset", f"folder:{data}", *TINY, "--channels", "100000"]),
             ("proxies --channels 4000 --batch-size 40", ["proxies", EXAMPLE, "--dataset", f"folder:{data}",
                                                          "--batch-size", "40", "--channels", "4000"])]
    for label, argv in sizes:
        @case("numbers", f"a size that cannot fit: {label}")
        def _(argv=argv):
            result = box.cli(*argv, "--epochs", "1", "--out", root / "n2") if argv[0] != "proxies" else \
                box.cli(*argv)
            problem = refused(result)
            return result, problem or ("took over 60 s" if result["seconds"] > 60 else ""), []

    @case("numbers", "--lam 1 zeroes every node: warned")
    def _():
        result = box.cli(*search, "--epochs", "1", "--lam", "1", "--out", root / "n3")
        return result, worked(result, "lam"), ["n3"]

    @case("smaller", "a smaller correlate --k sample into the same --out")
    def _():
        out = root / "s1"
        first = box.cli("correlate", run, "--protocol", "ranking", "--k", "4", "--benchmark", "none", "--out", out)
        second = box.cli("correlate", run, "--protocol", "ranking", "--k", "2", "--benchmark", "none", "--out", out)
        names = sorted(q.name for q in (out / "architectures").iterdir()) if (out / "architectures").exists() else []
        problem = worked(first) or worked(second) or ("" if len(names) == 2 else f"architectures {names}")
        return second, problem, ["s1"]

    @case("smaller", "a one-stage search resumed for more epochs logs a sane epoch count")
    def _():
        one = ["search", "--preset", "quick", "--space", "nb201", "--method", "one-stage", "--dataset",
               f"folder:{data}", *TINY]
        first = box.cli(*one, "--epochs", "2", "--out", root / "s2")
        result = box.cli("search", "--resume", root / "s2", "--epochs", "3")
        wrong = [m for m in re.findall(r"epoch (\d+) of (\d+)", result["err"] + result["out"]) if int(m[0]) > int(m[1])]
        return result, worked(first) or worked(result) or (f"logged {wrong}" if wrong else ""), ["s2"]

    @case("smaller", "compare --plot RUN/cell.png")
    def _():
        result = box.cli("compare", p["seeds"], "--plot", run / "cell.png")
        return result, refused(result), []

    @case("smaller", "show NAME --out RUN")
    def _():
        result = box.cli("show", EXAMPLE, "--out", run)
        return result, refused(result), []

    @case("smaller", "export --out DIR/ writes DIR/model.pt")
    def _():
        (root / "s5").mkdir()
        result = box.cli("export", p["train"], "--out", f"{root / 's5'}/")
        return result, worked(result) or ("" if (root / "s5" / "model.pt").is_file() else "no s5/model.pt"), ["s5"]

    @case("smaller", "a double Ctrl-C prints the resume hint")
    def _():
        proc = box.background(*search, "--epochs", "200", "--out", root / "s6")
        wait_for_epochs(root / "s6", 1, proc)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        result = {"code": proc.returncode, "out": out, "err": err, "seconds": 0}
        hint = "--resume" in err + out and "Traceback" not in err
        return result, "" if hint else f"no hint (exit {proc.returncode})", ["s6"]

    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the cases whose class or name contains this")
    parser.add_argument("--json", type=Path, help="write every result here")
    parser.add_argument("--keep", action="store_true", help="keep the sandbox")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ista-nas-hostile-"))
    box = Sandbox(root)
    print(f"sandbox {root}; full disks: {'tmpfs' if box.can_mount else 'file-size limit'}; permissions: "
          f"{'bind' if box.capsh else 'cannot be tested (root without capsh)'}", flush=True)
    paths = setup(box)
    results = []
    for kind, name, fn in cases(box, paths):
        if args.only not in f"{kind} {name}":
            continue
        before = snapshot(root)
        try:
            result, problem, outputs = fn()
        except Exception as exc:  # a case that could not be set up is a failure of the case, not of the run
            result, problem, outputs = {"code": None, "out": "", "err": "", "seconds": 0}, f"case: {exc!r}", []
        after = snapshot(root)
        changed = sorted(k for k in before if after.get(k) != before[k] and
                         not any(k == o or k.startswith(o.rstrip("/") + "/") for o in outputs))
        problem = problem or (f"changed {changed[:3]}" if changed else "")
        line = next((s for s in reversed(result["err"].splitlines()) if s.strip()), "")
        results.append({"class": kind, "case": name, "ok": not problem, "problem": problem, "exit": result["code"],
                        "seconds": result["seconds"], "last_line": line[:300]})
        print(f"{'ok  ' if not problem else 'FAIL'} [{kind}] {name}: exit {result['code']}, {result['seconds']} s"
              f"{'; ' + problem if problem else ''}\n      {line[:200]}", flush=True)
    failed = [r for r in results if not r["ok"]]
    print(f"{len(results) - len(failed)} of {len(results)} cases held")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
