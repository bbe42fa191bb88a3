"""Property-based tests of every parser of user input: garbage gets a UserError (one line, exit code 2 on the
command line), valid input round-trips; never a traceback, never a silent default."""

import dataclasses
import json
import string

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ista_nas.cli import main
from ista_nas.config import TrainConfig
from ista_nas.methods import SearchConfig
from ista_nas.errors import UserError
from ista_nas.genotype import Genotype
from ista_nas.networks.nb201 import NB201_OPS, Nb201Arch
from ista_nas.spaces import load_genotype
from ista_nas.ops import PRIMITIVES
from ista_nas import methods

json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
                           | st.text(max_size=12), lambda inner: st.lists(inner, max_size=5)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=5), max_leaves=20)
pair = st.tuples(st.sampled_from(PRIMITIVES + ("none", "conv_9x9")), st.integers(-1, 6))
genotype_like = st.fixed_dictionaries(
    {"normal": st.lists(pair, max_size=9), "normal_concat": st.lists(st.integers(0, 6), max_size=5),
     "reduce": st.lists(pair, max_size=9), "reduce_concat": st.lists(st.integers(0, 6), max_size=5)},
    optional={"flavour": st.sampled_from(["standard", "one-stage", "other"])})
valid_genotype = st.builds(
    lambda normal, reduce, flavour: {"normal": normal, "normal_concat": [2, 3, 4, 5], "reduce": reduce,
                                     "reduce_concat": [2, 3, 4, 5], "flavour": flavour},
    *[st.tuples(*[st.tuples(st.sampled_from(PRIMITIVES), st.integers(0, n // 2 + 1)).map(list) for n in range(8)])
      .map(list) for _ in range(2)], st.sampled_from(["standard", "one-stage"]))


def parsed_or_refused(parse, value):
    """``parse(value)``, or None when it raised a one-line UserError (anything else fails the test)."""
    try:
        return parse(value)
    except UserError as exc:
        assert "\n" not in str(exc)
        return None


@given(st.one_of(json_values, genotype_like))
def test_genotype_json_is_parsed_or_refused(data):
    genotype = parsed_or_refused(Genotype.from_dict, data)
    if genotype is not None:
        assert Genotype.from_dict(json.loads(json.dumps(genotype.to_dict()))) == genotype


@given(valid_genotype)
def test_valid_genotypes_round_trip(data):
    genotype = Genotype.from_dict(data)
    assert json.loads(json.dumps(genotype.to_dict())) == data


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60)
@given(st.binary(max_size=200) | json_values.map(lambda v: json.dumps(v).encode()))
def test_genotype_files_are_parsed_or_refused(tmp_path, raw):
    path = tmp_path / "genotype.json"
    path.write_bytes(raw)
    try:
        load_genotype(path)
    except UserError as exc:
        assert "\n" not in str(exc)


arch_alphabet = st.sampled_from(list("|+~0123") + list(NB201_OPS) + ["conv"])


@given(st.text(max_size=80) | st.lists(arch_alphabet, max_size=25).map("".join))
def test_architecture_strings_are_parsed_or_refused(text):
    arch = parsed_or_refused(Nb201Arch.parse, text)
    if arch is not None:
        assert str(arch) == text  # only the canonical form is accepted


def _field_values(cls):
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "preset"}
    return st.dictionaries(st.sampled_from(sorted(fields)) | st.text(max_size=6), json_values, max_size=4)


@pytest.mark.parametrize("cls", [SearchConfig, TrainConfig])
@given(data=st.data())
def test_stored_configs_are_validated_or_refused(cls, data):
    values = data.draw(_field_values(cls))
    try:
        cfg = cls.from_dict(values).validate()
    except UserError as exc:
        assert "\n" not in str(exc)
        return
    assert cls.from_dict(cfg.to_dict()).validate() == cfg  # a config that passes round-trips


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=40, deadline=None)
@given(flag=st.sampled_from([f.name for f in dataclasses.fields(SearchConfig) if f.name != "preset"]),
       value=st.text(string.printable, max_size=10).filter(lambda v: not v.startswith("-")))
def test_flags_with_garbage_exit_2_in_one_line(flag, value, tmp_path, capsys):
    # A nonexistent dataset makes even a valid value stop (exit 2) before any work is done.
    args = ["search", "--out", str(tmp_path / "run"), f"--{flag.replace('_', '-')}", value]
    if flag != "dataset":
        args += ["--dataset", "no-such-dataset"]
    try:
        code = main(args)
    except SystemExit as exc:  # argparse: a value of the wrong type
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("ista-nas")


@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=60, deadline=None)
@given(raw=st.binary(max_size=120) | json_values.map(lambda v: json.dumps(v).encode())
       | _field_values(SearchConfig).map(lambda v: json.dumps(v).encode()))
def test_a_resumed_run_directory_with_a_garbage_config_is_refused(tmp_path, raw):

    run = tmp_path / "run"
    run.mkdir(exist_ok=True)
    (run / "config.json").write_bytes(raw)
    with pytest.raises(UserError) as info:  # the config, or else the missing checkpoint, is named
        methods.resume(run)
    assert "\n" not in str(info.value)
