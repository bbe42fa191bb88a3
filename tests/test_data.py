import gzip

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ista_nas import UserError
from ista_nas.engine.data import Augment, DeviceLoader, ImageData, load_dataset

from conftest import make_image_folder


def test_image_folder_decodes_losslessly_and_caches(tmp_path):
    root = make_image_folder(tmp_path / "d", classes=2, per_class=(3, 2), size=8)
    data = load_dataset(f"folder:{root}", "train", cache_dir=tmp_path / "cache")
    from PIL import Image
    first = np.asarray(Image.open(root / "train" / "class0" / "000.png"))
    assert data.images.shape == (6, 3, 8, 8) and data.images.dtype == torch.uint8
    assert np.array_equal(data.images[0].permute(1, 2, 0).numpy(), first)
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1] and data.classes == ["class0", "class1"]
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1
    again = load_dataset(f"folder:{root}", "train", cache_dir=tmp_path / "cache")
    assert torch.equal(again.images, data.images)


def test_grey_folder_has_one_channel(tmp_path):
    root = make_image_folder(tmp_path / "g", classes=2, per_class=(2, 2), size=8, mode="L")
    assert load_dataset(f"folder:{root}", "test", cache_dir=tmp_path / "c").channels == 1


def test_folder_errors_name_the_fix(tmp_path):
    with pytest.raises(UserError, match="has no train/ directory"):
        load_dataset(f"folder:{tmp_path}", "train")
    root = make_image_folder(tmp_path / "mixed", classes=2, per_class=(2, 1), size=8)
    from PIL import Image
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(root / "train" / "class0" / "odd.png")
    with pytest.raises(UserError, match="resize"):
        load_dataset(f"folder:{root}", "train", cache_dir=tmp_path / "c")
    with pytest.raises(UserError, match="unknown dataset"):
        load_dataset("mnist3d", "train")


def _write_idx(path, array):
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_fashion_mnist_idx_files_are_parsed(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (5, 28, 28))
    labels = rng.integers(0, 10, 5)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", labels)
    data = load_dataset("fashion-mnist", "test", data_dir=tmp_path)
    assert np.array_equal(data.images[:, 0].numpy(), images)
    assert data.labels.tolist() == labels.tolist() and data.info().num_classes == len(data.classes) == 10


def _data(n=6, c=2, h=8, w=8):
    images = torch.arange(n * c * h * w, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, c, h, w)
    return ImageData(images, torch.arange(n), [str(i) for i in range(n)])


def test_crop_and_flip_match_a_per_image_reference():
    data = _data()
    loader = DeviceLoader(data, torch.arange(6), 6, torch.device("cpu"), [0.0, 0.0], [1 / 255, 1 / 255],
                          Augment(crop_padding=2, flip=True), shuffle=False)
    (x, y), = list(loader.epoch(0))
    # Replay the generator the same way the loader drew its parameters.
    from ista_nas.engine.data import epoch_generator
    gen = epoch_generator(0, 0, 0)
    off = torch.randint(0, 5, (6, 2), generator=gen)
    flip = torch.rand(6, generator=gen) < 0.5
    for i in range(6):
        padded = F.pad(data.images[i].float(), (2, 2, 2, 2))
        ref = padded[:, off[i, 0]:off[i, 0] + 8, off[i, 1]:off[i, 1] + 8]
        if flip[i]:
            ref = ref.flip(2)
        torch.testing.assert_close(x[i], ref)
    assert y.tolist() == list(range(6))


def test_cutout_zeroes_a_square_of_the_given_side():
    data = ImageData(torch.full((50, 1, 20, 20), 200, dtype=torch.uint8), torch.zeros(50, dtype=torch.long), ["a"])
    loader = DeviceLoader(data, torch.arange(50), 50, torch.device("cpu"), [0.0], [1.0], Augment(cutout=6))
    (x, _), = list(loader.epoch(3))
    holes = (x == 0).sum((1, 2, 3))
    assert int(holes.max()) == 36  # a square fully inside the image
    assert bool((holes > 0).all()) and bool((holes <= 36).all())


def test_epoch_order_is_a_seeded_permutation_and_drop_last():
    data = _data(n=10)
    loader = DeviceLoader(data, torch.arange(10), 4, torch.device("cpu"), [0.0, 0.0], [1.0, 1.0], seed=5)
    assert len(loader) == 2
    first = torch.cat([y for _, y in loader.epoch(0)])
    assert len(set(first.tolist())) == 8
    assert torch.equal(first, torch.cat([y for _, y in loader.epoch(0)]))
    assert not torch.equal(first, torch.cat([y for _, y in loader.epoch(1)]))


def test_missing_torchvision_dataset_names_the_folder_to_provide(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    class Offline:
        base_folder = "cifar-10-batches-py"

        def __init__(self, root, train, download):
            raise RuntimeError("Dataset not found" if not download else "no network")

    monkeypatch.setattr(tvd, "CIFAR10", Offline)
    with pytest.raises(UserError, match="could not be downloaded.*cifar-10-batches-py.*--data-dir"):
        load_dataset("cifar10", "train", data_dir=tmp_path)


def test_hostile_image_folders_are_read_right_or_refused_in_one_line(tmp_path, monkeypatch):
    import os

    from PIL import Image

    root = make_image_folder(tmp_path / "f", classes=2, per_class=(4, 2), size=8)
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(grey, "L").save(root / "train" / "class1" / "zzz.png")  # one greyscale image among colour ones
    os.mkfifo(root / "train" / "class0" / "fifo.png")  # named like an image: skipped, never opened
    monkeypatch.setenv("ISTA_NAS_CACHE", "")  # set but empty: the default cache, not the current folder
    monkeypatch.chdir(tmp_path)
    data = load_dataset(f"folder:{root}", "train", cache_dir=None)
    assert data.images.shape == (9, 3, 8, 8) and list(tmp_path.glob("*.pt")) == []
    assert all(torch.equal(data.images[-1, c], torch.from_numpy(grey)) for c in range(3))
    # Moving an image to the other class gives its new label, not the cached one.
    cache = tmp_path / "cache"
    before = load_dataset(f"folder:{root}", "train", cache_dir=cache)
    os.replace(root / "train" / "class0" / "000.png", root / "train" / "class1" / "moved.png")
    after = load_dataset(f"folder:{root}", "train", cache_dir=cache)
    assert int(before.labels.sum()) + 1 == int(after.labels.sum())
    # An image with more pixels than the decoder allows, and a folder of one class: one line each.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 16)  # 8x8 = 64 pixels is then over twice the bound
    with pytest.raises(UserError, match="cannot decode image .*remove or replace the file"):
        load_dataset(f"folder:{root}", "test", cache_dir=cache)
    monkeypatch.undo()
    one = make_image_folder(tmp_path / "one", classes=1, per_class=(3, 1), size=8)
    with pytest.raises(UserError, match="holds one class"):
        load_dataset(f"folder:{one}", "train", cache_dir=cache)


@pytest.mark.parametrize("labels", [b"", b"\x00\x00\x08\x01\x00\x00\x00\x02\x00\x0b",
                                    b"\x00\x00\x08\x01\x00\x00\x00\x05\x00"])
def test_damaged_fashion_mnist_files_are_refused_in_one_line(labels, tmp_path):
    """An empty labels file, one whose label 11 is out of range, one shorter than its header says."""
    images = b"\x00\x00\x08\x03" + (2).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + bytes(2 * 28 * 28)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    with pytest.raises(UserError, match="cannot read Fashion-MNIST file"):
        load_dataset("fashion-mnist", "train", data_dir=tmp_path)


def _forged_cache_is_rebuilt(tmp_path, caplog, forge, reason="cache"):
    """Decode a tiny folder, let ``forge`` rewrite its cache, and check the next load rebuilds it with one warning
    (naming ``reason``) and gives exactly a fresh decode; the rebuilt cache is then used without a word."""
    import logging

    root = make_image_folder(tmp_path / "d", classes=2, per_class=(3, 1), size=4)
    cache_dir = tmp_path / "cache"
    fresh = load_dataset(f"folder:{root}", "train", cache_dir=cache_dir)
    forge(root, cache_dir)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ista_nas.engine.data"):
        again = load_dataset(f"folder:{root}", "train", cache_dir=cache_dir)
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "ignoring cache" in warnings[0] and reason in warnings[0], warnings
    assert torch.equal(again.images, fresh.images) and torch.equal(again.labels, fresh.labels)
    assert again.labels.dtype == torch.int64 and again.classes == fresh.classes
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ista_nas.engine.data"):
        third = load_dataset(f"folder:{root}", "train", cache_dir=cache_dir)
    assert not caplog.records and torch.equal(third.labels, fresh.labels)


def _edit_cache(edit):
    """A forger that edits the cache file and leaves its checksum as it was."""
    def forge(root, cache_dir):
        (path,) = cache_dir.glob("*.pt")
        saved = torch.load(path, weights_only=True)
        edit(saved)
        torch.save(saved, path)
    return forge


def _rewrite_cache(monkeypatch, change):
    """A forger that writes its payload through the cache's own writer, so the checksum matches it."""
    import ista_nas.engine.data as data_module

    def forge(root, cache_dir):
        decode = data_module._decode
        for path in cache_dir.glob("*.pt"):
            path.unlink()
        with monkeypatch.context() as m:
            m.setattr(data_module, "_decode", lambda files: (lambda i, lab: (i, change(lab)))(*decode(files)))
            forged = load_dataset(f"folder:{root}", "train", cache_dir=cache_dir)
        assert forged.labels.tolist() == change(torch.tensor([0, 0, 0, 1, 1, 1])).tolist()
    return forge


def _out_of_range(bad):
    return lambda labels: torch.cat([torch.tensor([bad]), labels[1:]])


@pytest.mark.parametrize("bad", [2, -1])
@pytest.mark.parametrize("checksum", ["stale", "recomputed"])
def test_a_cache_with_labels_out_of_range_is_rebuilt_with_a_warning(bad, checksum, tmp_path, caplog, monkeypatch):
    if checksum == "stale":
        forge, reason = _edit_cache(lambda saved: saved.update(labels=_out_of_range(bad)(saved["labels"]))), "checksum"
    else:
        forge, reason = _rewrite_cache(monkeypatch, _out_of_range(bad)), "out of range"
    _forged_cache_is_rebuilt(tmp_path, caplog, forge, reason)


def _shifted(labels):
    """The labels one image off: in range, each class's count no longer the listing's."""
    return torch.cat([labels[1:], labels[-1:]])


def test_a_cache_with_labels_shifted_by_one_and_a_stale_checksum_is_rebuilt_with_a_warning(tmp_path, caplog):
    forge = _edit_cache(lambda saved: saved.update(labels=_shifted(saved["labels"])))
    _forged_cache_is_rebuilt(tmp_path, caplog, forge, "checksum")


@pytest.mark.parametrize("shift, reason", [(_shifted, "per class"), (lambda labels: labels.roll(1), "labels differ")],
                         ids=["counts-differ", "rolled"])
def test_a_cache_with_shifted_labels_and_a_recomputed_checksum_is_rebuilt_with_a_warning(shift, reason, tmp_path,
                                                                                         caplog, monkeypatch):
    """The checksum matches the forged payload; its labels do not match the folder's listing (per-class counts,
    or the order where the counts agree)."""
    _forged_cache_is_rebuilt(tmp_path, caplog, _rewrite_cache(monkeypatch, shift), reason)


@pytest.mark.parametrize("how", ["pixel", "checksum", "missing", "images-dtype"])
def test_a_cache_whose_checksum_does_not_match_is_rebuilt_with_a_warning(how, tmp_path, caplog):
    """An image byte changed under the checksum, a wrong checksum, none at all (an older cache), images widened."""
    def edit(saved):
        if how == "pixel":
            saved["images"] = saved["images"].clone()
            saved["images"][0, 0, 0, 0] ^= 1
        elif how == "checksum":
            saved["sha256"] = "0" * 64
        elif how == "missing":
            saved.pop("sha256", None)
        else:
            saved["images"] = saved["images"].to(torch.int16)
    reason = {"pixel": "checksum", "checksum": "checksum", "missing": "not a checksummed", "images-dtype": "int16"}
    _forged_cache_is_rebuilt(tmp_path, caplog, _edit_cache(edit), reason[how])
