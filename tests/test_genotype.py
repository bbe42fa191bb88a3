import json

import pytest

from ista_nas import Genotype, UserError, load_genotype, save_genotype

VALID = {
    "normal": [["sep_conv_3x3", 0], ["sep_conv_3x3", 0], ["skip_connect", 1], ["sep_conv_5x5", 2],
               ["dil_conv_3x3", 3], ["avg_pool_3x3", 0], ["max_pool_3x3", 4], ["dil_conv_5x5", 1]],
    "normal_concat": [2, 3, 4, 5],
    "reduce": [["max_pool_3x3", 0], ["avg_pool_3x3", 1], ["skip_connect", 2], ["max_pool_3x3", 1],
               ["sep_conv_3x3", 0], ["dil_conv_5x5", 3], ["skip_connect", 2], ["sep_conv_5x5", 4]],
    "reduce_concat": [2, 3, 4, 5],
}


def test_json_round_trip(tmp_path):
    g = Genotype.from_dict(VALID)
    path = tmp_path / "g.json"
    save_genotype(g, path)
    assert load_genotype(path) == g
    assert json.loads(path.read_text()) == {**VALID, "flavour": "standard"}
    one_stage = Genotype.from_dict({**VALID, "flavour": "one-stage"})
    save_genotype(one_stage, path)
    assert load_genotype(path) == one_stage and one_stage.flavour == "one-stage"
    assert g.steps == 4


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["normal"].__setitem__(0, ["conv_9x9", 0]), "unknown op 'conv_9x9'"),
    (lambda d: d["normal"].__setitem__(2, ["skip_connect", 3]), "predecessor 3 is out of range for node 1"),
    (lambda d: d["reduce"].__setitem__(0, ["skip_connect", -1]), "out of range"),
    (lambda d: d["reduce"].__setitem__(0, ["skip_connect", "0"]), "out of range"),
    (lambda d: d.__setitem__("reduce", d["reduce"][:6]), "normal has 4 nodes but reduce has 3"),
    (lambda d: d.__setitem__("normal", d["normal"][:7]), "two per node"),
    (lambda d: d["normal"].__setitem__(1, ["skip_connect"]), "expected \\[op, predecessor\\]"),
    (lambda d: d.__setitem__("normal_concat", [2, 3, 9]), "normal_concat"),
    (lambda d: d.pop("reduce_concat"), "missing key"),
    (lambda d: d.__setitem__("flavor", "one-stage"), "unknown key\\(s\\) 'flavor'"),
    (lambda d: d.__setitem__("flavour", "three-stage"), "unknown flavour 'three-stage'"),
])
def test_invalid_genotypes_are_rejected(mutate, message):
    data = json.loads(json.dumps(VALID))
    mutate(data)
    with pytest.raises(UserError, match=message):
        Genotype.from_dict(data)


def test_bad_files_are_rejected(tmp_path):
    with pytest.raises(UserError, match="no genotype file at"):
        load_genotype(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(UserError, match="is not JSON"):
        load_genotype(bad)
    bad.write_text("[1, 2]")
    with pytest.raises(UserError, match="expected a JSON object"):
        load_genotype(bad)
