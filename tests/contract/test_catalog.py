"""The per-era backend contract catalogs (generator/contract/catalog/trtllm-<era>.yaml) are complete and
well-formed: every entry names the upstream source it was read from, tensors are declared once, and the
facts other code relies on (required parameters, renamed sampling inputs) hold for each era."""

from __future__ import annotations

import re
from importlib import resources

import pytest
import yaml

from generator.contract import load_contract

ERAS = ("0.19", "1.x")
KINDS = ("tensorrt_llm", "preprocessing", "postprocessing", "ensemble", "tensorrt_llm_bls")
FORMATS = {"string", "path", "bool", "int", "float", "int_list", "enum"}
UPSTREAM_URL = re.compile(r"^https://github\.com/[\w.-]+/[\w.-]+/blob/[\w.-]+/\S+$")
LINE_ANCHOR = re.compile(r"#L\d+$")


def _raw(era: str) -> dict:
    text = (
        resources.files("generator.contract")
        .joinpath(f"catalog/trtllm-{era}.yaml")
        .read_text(encoding="utf-8")
    )
    return yaml.safe_load(text)


@pytest.mark.parametrize("era", ERAS)
def test_catalog_loads_with_every_model(era):
    contract = load_contract(era)
    assert contract.era == era
    assert contract.description
    assert set(contract.models) == set(KINDS)
    for kind in KINDS:
        model = contract.model(kind)
        assert model.inputs and model.outputs, kind


@pytest.mark.parametrize("era", ERAS)
def test_every_entry_names_its_upstream_source(era):
    contract = load_contract(era)
    for kind, model in contract.models.items():
        assert UPSTREAM_URL.match(model.source), (kind, model.source)
        for parameter in model.parameters:
            assert UPSTREAM_URL.match(parameter.source), (kind, parameter.name, parameter.source)
            assert LINE_ANCHOR.search(parameter.source), (kind, parameter.name, parameter.source)
    engine = contract.model("tensorrt_llm")
    assert UPSTREAM_URL.match(engine.response_order_source) and LINE_ANCHOR.search(
        engine.response_order_source
    )
    facts = _raw(era)["facts"]
    assert facts
    for entry in facts:
        assert entry["fact"].strip()
        assert UPSTREAM_URL.match(entry["source"]), entry


@pytest.mark.parametrize("era", ERAS)
def test_no_tensor_or_parameter_declared_twice(era):
    for kind, model in load_contract(era).models.items():
        for side in (model.inputs, model.outputs):
            names = [t.name for t in side]
            assert len(names) == len(set(names)), (kind, sorted(n for n in names if names.count(n) > 1))
        names = [p.name for p in model.parameters]
        assert len(names) == len(set(names)), kind


@pytest.mark.parametrize("era", ERAS)
def test_guided_decoding_keys_and_batching_strategy_are_required(era):
    engine = load_contract(era).model("tensorrt_llm")
    required = {p.name for p in engine.required_parameters}
    assert {
        "tokenizer_dir",
        "xgrammar_tokenizer_info_path",
        "guided_decoding_backend",
        "gpt_model_type",
    } <= required
    # gpt_model_path sits in a try/catch: missing only fails the load later, when encoder_model_path is empty too.
    assert engine.parameter("gpt_model_path") is not None and not engine.parameter("gpt_model_path").required
    # The python models index tokenizer_dir with no fallback.
    contract = load_contract(era)
    assert contract.model("preprocessing").parameter("tokenizer_dir").required
    assert contract.model("postprocessing").parameter("tokenizer_dir").required


@pytest.mark.parametrize(
    ("era", "present", "absent"),
    [
        ("0.19", ("min_length", "random_seed"), ("min_tokens", "seed")),
        ("1.x", ("min_tokens", "seed"), ("min_length", "random_seed")),
    ],
)
def test_sampling_inputs_are_named_per_era(era, present, absent):
    contract = load_contract(era)
    for kind in ("tensorrt_llm", "ensemble", "tensorrt_llm_bls"):
        names = {t.name for t in contract.model(kind).inputs}
        assert set(present) <= names, (kind, present)
        assert not set(absent) & names, (kind, absent)


@pytest.mark.parametrize("era", ERAS)
def test_tensor_dims_and_data_types_are_well_formed(era):
    contract = load_contract(era)
    raw = _raw(era)
    for kind, model in contract.models.items():
        for tensor in (*model.inputs, *model.outputs):
            assert tensor.dims and all(isinstance(d, int) and (d == -1 or d > 0) for d in tensor.dims), (
                kind,
                tensor,
            )
            if tensor.data_type.startswith("${"):
                assert tensor.data_type.endswith("}") and tensor.data_type[2:-1] in contract.placeholders, (
                    kind,
                    tensor,
                )
            else:
                assert re.fullmatch(r"TYPE_[A-Z0-9]+", tensor.data_type), (kind, tensor)
        for side in ("inputs", "outputs"):
            for entry in raw["models"][kind][side]:
                assert isinstance(entry["dims"], list), (kind, entry)
    for name, types in contract.placeholders.items():
        assert types and all(re.fullmatch(r"TYPE_[A-Z0-9]+", t) for t in types), name


@pytest.mark.parametrize("era", ERAS)
def test_parameter_formats_and_enum_values(era):
    for kind, model in load_contract(era).models.items():
        for parameter in model.parameters:
            assert parameter.format in FORMATS, (kind, parameter.name)
            if parameter.format == "enum":
                assert parameter.values, (kind, parameter.name)
                if parameter.default is not None:
                    assert parameter.default in parameter.values, (kind, parameter.name)


@pytest.mark.parametrize("era", ERAS)
def test_response_order_covers_declared_outputs_with_conditions(era):
    engine = load_contract(era).model("tensorrt_llm")
    outputs = [t.name for t in engine.outputs]
    order = list(engine.response_order)
    assert order[:2] == ["output_ids", "sequence_length"]
    assert len(order) == len(set(order))
    assert set(order) == set(outputs)
    conditions = _raw(era)["models"]["tensorrt_llm"]["response_conditions"]
    assert set(conditions) == set(order) - {"output_ids", "sequence_length"}
    assert all(isinstance(text, str) and text for text in conditions.values())
    for name in ("batch_index", "sequence_index", "cum_log_probs", "kv_cache_reused_blocks"):
        assert name in conditions


@pytest.mark.parametrize("era", ERAS)
def test_client_facing_facts(era):
    contract = load_contract(era)
    for kind in ("ensemble", "tensorrt_llm_bls"):
        stream = contract.model(kind).input("stream")
        assert stream is not None and stream.optional and stream.data_type == "TYPE_BOOL", kind
    assert contract.model("postprocessing").output("OUTPUT").dims == (-1,)
    assert contract.model("ensemble").output("text_output").dims == (-1,)
    assert contract.model("tensorrt_llm").input("stop").data_type == "TYPE_BOOL"


def test_eras_differ_where_upstream_changed():
    old, new = load_contract("0.19").model("tensorrt_llm"), load_contract("1.x").model("tensorrt_llm")
    assert old.input("prompt_embedding_table").data_type == "TYPE_FP16"
    assert new.input("prompt_embedding_table").data_type == "${prompt_embedding_table_data_type}"
    assert {"num_input_tokens", "num_output_tokens"} <= {t.name for t in new.outputs}
    assert not {"num_input_tokens", "num_output_tokens"} & {t.name for t in old.outputs}
    assert (
        old.parameter("enable_trt_overlap").default is None
        and new.parameter("enable_trt_overlap").default == "false"
    )


def test_flagged_outputs_are_engine_outputs_switched_by_engine_inputs_and_agree_across_eras():
    from generator.contract import load_contract

    engines = {era: load_contract(era).model("tensorrt_llm") for era in ("0.19", "1.x")}
    for engine in engines.values():
        outputs = {t.name for t in engine.outputs}
        inputs = {t.name for t in engine.inputs}
        for flag, names in engine.flagged_outputs.items():
            assert flag in inputs and set(names) <= outputs, flag
    for flag in ("return_perf_metrics", "return_log_probs"):
        assert engines["0.19"].flagged_outputs[flag] == engines["1.x"].flagged_outputs[flag]
