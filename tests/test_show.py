import json
import xml.etree.ElementTree as ET

import pytest
from PIL import Image

from ista_nas.spaces import write_diagrams
from ista_nas.published import PUBLISHED
from ista_nas.analysis.summary import network_summary


def test_diagrams_are_valid_png_and_svg_showing_every_op(tmp_path):
    genotype = PUBLISHED["ista_twostage"]
    paths = write_diagrams(genotype, tmp_path)
    assert sorted(p.name for p in paths) == ["normal.png", "normal.svg", "reduce.png", "reduce.svg"]
    for path in paths:
        if path.suffix == ".png":
            with Image.open(path) as im:
                im.verify()
                assert im.format == "PNG" and im.size[0] > 300
        else:
            root = ET.parse(path).getroot()
            assert root.tag.endswith("svg")
    # Every op label is drawn as text (matplotlib keeps it as a comment/path id in SVG output).
    for cell, pairs in (("normal", genotype.normal), ("reduce", genotype.reduce)):
        svg = (tmp_path / f"{cell}.svg").read_text()
        for op, _ in pairs:
            assert op in svg


def test_flops_match_a_hand_count_for_a_tiny_network():
    # All-pool cells have no conv FLOPs in the cells, so the total is stem + preprocessing + classifier convs.
    from ista_nas.genotype import Genotype
    from ista_nas.networks.cnn import Network

    g = Genotype(tuple([("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4), (2, 3, 4, 5),
                 tuple([("max_pool_3x3", 0), ("max_pool_3x3", 1)] * 4), (2, 3, 4, 5))
    info = network_summary(g, channels=4, layers=1, dataset="cifar10")
    # layers=1: no reductions. stem conv 3->12 at 32x32, two 1x1 preprocessing convs 12->4, classifier 16->10.
    expected = 2 * (3 * 12 * 9 * 32 * 32 + 2 * 12 * 4 * 32 * 32 + 16 * 10)
    assert info["flops"] == expected and info["macs"] == expected // 2
    # Parameters by hand: stem conv + BN, two 1x1 convs + BNs, classifier (the auxiliary head excluded).
    assert info["params"] == (3 * 12 * 9 + 2 * 12) + 2 * (12 * 4 + 2 * 4) + (16 * 10 + 10)
    net = Network(g, channels=4, layers=1, num_classes=10)
    assert info["params_with_aux"] == sum(p.numel() for p in net.parameters())


@pytest.mark.slow  # launches processes
def test_show_json_and_text(tmp_path, capsys):
    from ista_nas.cli import main

    def show(*args):
        code = main(["show", *map(str, args)])
        out = capsys.readouterr()
        return code, out.out, out.err

    code, out, err = show("darts_v2", "--json", "--out", tmp_path / "d")
    assert code == 0, err
    info = json.loads(out)
    assert isinstance(info["params"], int) and isinstance(info["flops"], int)
    assert abs(info["params"] / 1e6 - 3.35) < 0.01
    assert len(info["diagrams"]) == 4 and all((tmp_path / "d" / n).exists() for n in ("normal.png", "reduce.svg"))
    _, out, _ = show("darts_v2", "--json", "--channels", "16", "--layers", "8", "--dataset", "fashion-mnist", "--out",
                     tmp_path / "e")
    assert json.loads(out)["input"] == [1, 28, 28]
    _, out, _ = show("pc_darts", "--out", tmp_path / "f")
    assert "node 3:" in out and "parameters 3.6" in out
    code, _, err = show("nope")
    assert code == 2 and "neither a built-in name" in err
