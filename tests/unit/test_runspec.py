"""Run specs: presets, overrides from every source, derived messages, errors that name the key."""

from __future__ import annotations

import pytest

from nasloop.v1 import novelty_pb2
from services.controller.runspec import (
    PRESETS,
    RunSpec,
    SpecError,
    dump_spec,
    evaluation_protocol,
    load_spec,
    lora_config,
    namespace_params,
    sampling_params,
    spec_from_proto,
    spec_to_proto,
    task_spec,
)


def _error(**kw) -> str:
    with pytest.raises(SpecError) as e:
        load_spec(**kw)
    return str(e.value)


# -- presets and derived messages --------------------------------------------------------------
def test_local_is_the_default_preset() -> None:
    s = load_spec()
    assert s.preset == "local" and s.name is None
    assert s.base_model == "models/bootstrap-default" and s.corpus == "seed"
    assert (s.cycles, s.candidates_per_cycle) == (5, 48)
    assert s.task.dataset == "digits" and s.protocol.train_subset == 0
    assert s.training.lora.r == 16 and s.training.continual
    assert load_spec("local") == s


def test_paper_preset_has_the_paper_settings() -> None:
    s = load_spec("paper")
    assert s.base_model == "deepseek-ai/deepseek-coder-7b-instruct-v1.5"
    assert (s.cycles, s.candidates_per_cycle, s.corpus) == (22, 150, "lemur")
    assert (s.task.dataset, s.task.template) == ("cifar10", "instruct")
    assert (s.sampling.temperature, s.sampling.top_k, s.sampling.top_p) == (0.7, 100, 0.95)
    assert s.sampling.max_tokens == 2048
    p = s.protocol
    assert (p.name, p.epochs, p.batch_size, p.lr, p.momentum, p.failure_floor) == (
        "paper",  # the evaluator's lemur-1epoch with LEMUR's norm_256_flip transform
        1,
        16,
        0.01,
        0.9,
        0.12,
    )
    assert p.max_parameters >= 129_000_000
    assert (p.input_size, p.random_resized_crop, p.horizontal_flip) == (256, False, True)
    assert s.novelty.params.mode == "raw"
    assert (s.novelty.params.shingle_size, s.novelty.params.num_perm) == (7, 128)
    assert s.novelty.params.threshold == 0.85
    sel = s.selection
    assert (sel.min_accuracy, sel.top_up_to, sel.top_up_min_accuracy) == (0.40, 15, 0.35)
    t = s.training
    assert (t.lora.r, t.lora.alpha, t.lora.dropout) == (32, 32.0, 0.05)
    assert len(t.lora.target_modules) == 7
    assert (t.lr, t.epochs, t.batch_size * t.grad_accum, t.continual) == (1e-5, 5, 8, True)
    assert t.precision == "bf16"


@pytest.mark.parametrize("preset", list(PRESETS))
def test_derived_task_and_protocol_agree(preset: str) -> None:
    s = load_spec(preset, overrides=["seed=7"])
    t, p = task_spec(s), evaluation_protocol(s)
    assert t.dataset == p.dataset == s.task.dataset
    size = s.protocol.input_size or 32  # paper: LEMUR's 256 px transform
    assert list(t.in_shape) == [s.protocol.batch_size, 3, size, size]
    assert p.input_size == s.protocol.input_size
    assert list(t.out_shape) == [10]
    budget = s.protocol.max_parameters if s.task.show_budget else 0
    assert t.parameter_budget == budget  # local states the budget (as the bootstrap LM learnt)
    assert p.HasField("momentum") and p.HasField("dropout") and p.HasField("failure_floor")
    assert p.seed == 7 and p.max_parameters == s.protocol.max_parameters
    shown = load_spec(preset, overrides=["task.show_budget=true"])
    assert task_spec(shown).parameter_budget == shown.protocol.max_parameters


def test_sampling_lora_and_namespace_messages() -> None:
    local = load_spec()
    sp = sampling_params(local, seed=123)
    assert sp.seed == 123 and sp.top_k == -1  # 0 in the spec = disabled, -1 in the proto
    assert sp.HasField("temperature") and sp.max_tokens == 600
    assert sampling_params(load_spec("paper"), 0).top_k == 100
    lo = lora_config(local)
    assert (lo.r, lo.alpha) == (16, 32.0) and lo.HasField("dropout")
    assert "q_proj" in lo.target_modules
    ns = namespace_params(local)
    assert ns.mode == novelty_pb2.TOKEN_MODE_CANONICAL and ns.num_perm == 128
    assert namespace_params(load_spec("paper")).mode == novelty_pb2.TOKEN_MODE_RAW


# -- overrides ---------------------------------------------------------------------------------
def test_file_then_yaml_then_extra_then_set(tmp_path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("preset: paper\nname: exp-1\ncycles: 3\ntraining:\n  lora:\n    r: 64\n")
    s = load_spec(
        spec_file=f,
        spec_yaml="cycles: 4\nsampling: {temperature: 0.5}",
        extra={"cycles": 6, "selection": {"top_up_to": 3}},
        overrides=["cycles=9"],
    )
    assert s.preset == "paper" and s.name == "exp-1"
    assert s.cycles == 9 and s.sampling.temperature == 0.5 and s.selection.top_up_to == 3
    assert s.training.lora.r == 64 and s.training.lora.alpha == 32.0  # deep merge
    assert s.base_model.startswith("deepseek-ai/")


def test_file_preset_wins_over_the_argument(tmp_path) -> None:
    f = tmp_path / "s.yaml"
    f.write_text("preset: local\n")
    assert load_spec("paper", spec_file=f).preset == "local"
    assert load_spec("paper").preset == "paper"
    assert load_spec(overrides=["preset=paper"]).corpus == "lemur"


def test_set_parses_yaml_values() -> None:
    s = load_spec(
        overrides=[
            "training.lora.target_modules=[q_proj, v_proj]",
            "training.continual=false",
            "training.lr=2.0e-4",
            "protocol.hyperparameters.weight_decay=0.1",
            r'sampling.stop=["\n\n"]',
            "task.template=instruct",
            "task.reference_code=",
            "protocol.device=cpu",
            "name=run-7",
            "seed=3",
        ]
    )
    assert s.training.lora.target_modules == ["q_proj", "v_proj"]
    assert s.training.continual is False and s.training.lr == 2e-4
    assert s.protocol.hyperparameters == {"weight_decay": 0.1}
    assert s.sampling.stop == ["\n\n"]
    assert s.task.template == "instruct" and s.task.reference_code == ""
    assert (s.protocol.device, s.name, s.seed) == ("cpu", "run-7", 3)


def test_numeric_run_name_from_set_is_a_string() -> None:
    assert load_spec(overrides=["name=123"]).name == "123"


# -- errors name the dotted path ---------------------------------------------------------------
def test_unknown_keys_top_level_and_nested() -> None:
    assert "cyclez: unknown key (did you mean 'cycles'?)" in _error(spec_yaml="cyclez: 3")
    msg = _error(overrides=["sampling.temprature=0.5"])
    assert "sampling.temprature: unknown key (did you mean 'temperature'?)" in msg
    assert "training.lora.rank: unknown key" in _error(spec_yaml="training: {lora: {rank: 8}}")
    bogus = {"novelty": {"params": {"bogus": 1}}}
    assert "novelty.params.bogus: unknown key" in _error(extra=bogus)


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("cycles=many", "cycles:"),
        ("training.continual=maybe", "training.continual:"),
        ("training.lora.target_modules=5", "training.lora.target_modules:"),
        ("task=digits", "task:"),
        ("protocol.hyperparameters={lr: high}", "protocol.hyperparameters.lr:"),
    ],
)
def test_wrong_type_names_the_path(override: str, path: str) -> None:
    assert path in _error(overrides=[override])


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ("cycles=0", "cycles: Input should be greater than or equal to 1"),
        ("candidates_per_cycle=5000", "candidates_per_cycle:"),
        ("sampling.top_p=0", "sampling.top_p:"),
        ("protocol.hyperparameters.wd=1.5", "protocol.hyperparameters: hyperparameter 'wd'"),
        ("novelty.params.threshold=1.0", "novelty.params.threshold:"),
        ("novelty.params.mode=words", "novelty.params.mode:"),
        ("protocol.name=fast", "protocol.name: unknown protocol 'fast'"),
        ("task.dataset=mnist", "task.dataset: unknown dataset 'mnist'; known: digits, cifar10"),
        ("training.precision=fp16", "training.precision:"),
        ("selection.top_up_min_accuracy=0.9", "selection: top_up_min_accuracy 0.9 is above"),
        ("training.lora.target_modules=[embed_tokens]", "training.lora.target_modules:"),
        ("seed=-1", "seed:"),
    ],
)
def test_out_of_range_names_the_path(override: str, expected: str) -> None:
    assert expected in _error(overrides=[override])


def test_bad_rank_lists_the_servable_ones() -> None:
    msg = _error(overrides=["training.lora.r=24"])
    assert "training.lora.r: must be one of 1, 8, 16, 32, 64, 128, 256, 320, 512" in msg


def test_bad_run_name() -> None:
    assert "name: run name 'Run_1'" in _error(overrides=["name=Run_1"])
    assert "name: run name" in _error(spec_yaml="name: " + "a" * 41)


def test_several_problems_are_all_reported() -> None:
    with pytest.raises(SpecError) as e:
        load_spec(overrides=["cycles=0", "training.lora.r=3", "bogus=1"])
    assert len(e.value.problems) == 3


def test_dataset_is_stated_once() -> None:
    msg = _error(spec_yaml="protocol: {dataset: cifar10}")
    assert "protocol.dataset: derived from task.dataset" in msg
    assert "task.in_shape: derived from" in _error(overrides=["task.in_shape=[1, 3, 32, 32]"])
    # from a proto (extra): equal is fine, different names both
    assert load_spec(extra={"protocol": {"dataset": "digits"}}).task.dataset == "digits"
    msg = _error(extra={"protocol": {"dataset": "cifar10"}})
    assert "protocol.dataset: 'cifar10' disagrees with 'digits' (derived from task.dataset)" in msg
    msg = _error(extra={"task": {"in_shape": [16, 1, 28, 28]}})
    assert "task.in_shape: [16, 1, 28, 28] disagrees with [16, 3, 32, 32]" in msg
    assert "task.parameter_budget: 5 disagrees with 1000000" in _error(
        extra={"task": {"parameter_budget": 5}}
    )


def test_malformed_set() -> None:
    assert "--set 'cycles': expected key=value" in _error(overrides=["cycles"])
    assert "expected key=value" in _error(overrides=["training..lr=1"])
    assert "cycles: not a mapping; cannot set x" in _error(overrides=["cycles.x=1"])
    assert "training.lora.r: not a mapping" in _error(overrides=["training.lora.r.x=1"])
    assert "sampling.stop: --set value" in _error(overrides=["sampling.stop=[a, "])


def test_unknown_preset() -> None:
    assert "preset: unknown preset 'huge'; known: local, paper" in _error(preset="huge")
    assert "preset: unknown preset 'huge'" in _error(spec_yaml="preset: huge")


def test_bad_yaml_and_bad_files(tmp_path) -> None:
    assert "spec yaml: not valid YAML" in _error(spec_yaml="cycles: [1, 2")
    assert "spec yaml: a run spec is a YAML mapping" in _error(spec_yaml="- 1\n- 2\n")
    binary = tmp_path / "x.bin"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    assert "x.bin: cannot read" in _error(spec_file=binary)
    assert "cannot read" in _error(spec_file=tmp_path / "missing.yaml")
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    assert load_spec(spec_file=empty) == load_spec()


def test_assignment_is_validated() -> None:
    s = load_spec()
    with pytest.raises(ValueError):
        s.training.lora.r = 3


# -- round trips -------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", list(PRESETS))
def test_dump_load_round_trip(preset: str) -> None:
    s = load_spec(
        preset,
        overrides=[
            "name=rt-1",
            "protocol.hyperparameters={b: 0.5, a: 0.25}",
            "training.lr=3.0e-7",
            "sampling.stop=['###']",
            "task.reference_code='class Net: pass'",
        ],
    )
    text = dump_spec(s)
    assert text.splitlines()[0] == "name: rt-1" and "\npreset: " in text
    again = load_spec(spec_yaml=text)
    assert again == s
    assert dump_spec(again) == text
    assert isinstance(RunSpec.model_validate(s.model_dump()), RunSpec)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_proto_round_trip(preset: str) -> None:
    s = load_spec(
        preset,
        overrides=[
            "name=exp-2",
            "seed=11",
            "task.show_budget=true",
            "sampling.stop=[END]",
            "protocol.hyperparameters.wd=0.5",
            "novelty.params.mode=" + ("canonical" if preset == "paper" else "raw"),
            "training.precision=qlora-4bit",
            "training.max_seq_len=0",
        ],
    )
    msg = spec_to_proto(s)
    assert msg.task.parameter_budget == s.protocol.max_parameters
    assert msg.protocol.dataset == s.task.dataset and not msg.sampling.HasField("seed")
    overrides = spec_from_proto(msg)
    assert isinstance(overrides["seed"], int)
    assert load_spec(extra=overrides) == s  # the proto's preset is used


def test_spec_from_proto_keeps_only_set_fields() -> None:
    from nasloop.v1 import controller_pb2

    msg = controller_pb2.RunSpec(preset="paper", cycles=2)
    msg.training.lora.r = 8
    msg.sampling.top_k = -1
    assert spec_from_proto(msg) == {
        "preset": "paper",
        "cycles": 2,
        "sampling": {"top_k": 0},
        "training": {"lora": {"r": 8}},
    }
    s = load_spec(extra=spec_from_proto(msg))
    assert (s.cycles, s.training.lora.r, s.training.lora.alpha, s.sampling.top_k) == (2, 8, 32, 0)
    msg.training.lora.r = 7
    assert "training.lora.r: must be one of" in _error(extra=spec_from_proto(msg))
