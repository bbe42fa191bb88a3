"""Export a trained network as one deployable file: TorchScript or ONNX, with its metadata inside.

The exported model takes images scaled to [0, 1] (N, C, H, W) and returns logits; the normalisation of
the training data is part of it. The metadata (JSON: genotype, classes, input size, mean/std, parameters
and the recorded test accuracy) travels in the same file: TorchScript's extra file ``ista_nas.json``,
ONNX's ``metadata_props`` key ``ista_nas``.
"""

from __future__ import annotations

import importlib.util
import io
import json
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import UserError
from .files import atomic_write_bytes, claim_output
from .networks.cnn import count_parameters
from .retrain import load_model

log = logging.getLogger(__name__)
FORMATS = ("torchscript", "onnx")
METADATA_KEY = "ista_nas"


class Deployable(nn.Module):
    """Normalisation + network: what the exported file computes."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.net((x - self.mean) / self.std)


def deployable(checkpoint_path: str | Path) -> tuple[Deployable, dict[str, Any]]:
    """The eval-mode deployable model of a training checkpoint and its metadata."""
    model, checkpoint = load_model(checkpoint_path)
    spec = checkpoint["model_spec"]
    meta = {"genotype": spec["genotype"], "classes": spec["classes"],
            "input": {"shape": [spec["in_channels"], *spec["image_size"]], "range": [0, 1],
                      "mean": spec["mean"], "std": spec["std"]},
            "network": {k: spec[k] for k in ("channels", "layers", "stem", "num_classes")},
            "params": count_parameters(model), "epochs_trained": checkpoint["epoch"],
            "test": checkpoint.get("test", {})}
    return Deployable(model, spec["mean"], spec["std"]).eval(), meta


def export(checkpoint_path: str | Path, fmt: str, out: str | Path | None = None) -> Path:
    """Write the deployable file; returns its path (default: next to the checkpoint, model.pt / model.onnx)."""
    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose one of {', '.join(FORMATS)}")
    name = "model.pt" if fmt == "torchscript" else "model.onnx"
    if out is not None and (str(out).endswith("/") or Path(out).is_dir()):
        out = Path(out) / name  # a folder: the default name inside it
    out = claim_output(out or Path(checkpoint_path).with_name(name), fmt, "--out")  # never a checkpoint
    model, meta = deployable(checkpoint_path)
    example = torch.rand(1, *meta["input"]["shape"])
    if fmt == "torchscript":
        # TorchScript is deprecated upstream in favour of torch.export, but it is still what C++ (libtorch) and
        # mobile runtimes load; its deprecation warnings are not the user's business here.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            traced = torch.jit.trace(model, example)
            data = io.BytesIO()  # into memory: torch's C++ writer aborts the process on a full disk
            torch.jit.save(traced, data, _extra_files={f"{METADATA_KEY}.json": json.dumps(meta)})
            atomic_write_bytes(out, data.getbuffer())
    else:
        _export_onnx(model, example, meta, out)
    log.info("exported %s (%s) with test top-1 %s", out, fmt, meta["test"].get("top1"))
    return out


def _export_onnx(model: nn.Module, example: Tensor, meta: dict[str, Any], out: Path) -> None:
    try:
        import onnx
    except ImportError:
        onnx = None
    if onnx is None or importlib.util.find_spec("onnxscript") is None:  # torch's exporter needs onnxscript
        raise UserError("ONNX export needs the onnx packages: pip install 'ista-nas[onnx]'")
    batch = torch.export.Dim("batch", min=1)

    program = torch.onnx.export(model, (example,), dynamic_shapes=({0: batch},), input_names=["images"],
                                output_names=["logits"], dynamo=True, verbose=False)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    data = proto.SerializeToString()
    atomic_write_bytes(out, data)
