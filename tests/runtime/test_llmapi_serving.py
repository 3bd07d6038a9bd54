"""The LLM-API target end to end: render → launcher → real tritonserver → router → official openai client.

No TensorRT-LLM runs here, so the rendered ``1/model.py`` (a loader of the container's LLM-API model)
and ``1/model.yaml`` are replaced, in the test's temporary copy only, by a TEST STAND-IN of the
LLM-API model's tensor contract (reference/triton-trtllm-backend.md §1.4 and the upstream
model.py): ``text_input`` + ``streaming`` + ``sampling_param_*`` in; ``text_output`` holding the
*whole* text so far in every streamed response (upstream sends ``output.text``, not a difference),
``finish_reason`` when ``return_finish_reason`` is set, the prompt leading the text unless
``sampling_param_exclude_input_from_output`` is true (upstream's default is false). It is not an
engine: it echoes words of its input. Everything else — the rendered config.pbtxt, the launcher's
load list, routes.yaml, the router — is the real thing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import yaml

from generator.exporter.triton_metrics import parse_triton_metrics
from generator.naming import pool_triton_models
from generator.pipeline import build
from generator.render.deploy.topology import topology, tritonserver_args
from generator.render.options import RenderOptions
from generator.render.routes import ROUTES_PATH, local_routes, render_routes
from generator.router.config import parse_routes
from generator.runtime import launcher as launcher_module
from generator.runtime.launcher import Launcher, LaunchSettings, Replica
from generator.runtime.tritonserver import find_tritonserver
from generator.spec import Stack, parse_spec
from generator.write import write_output
from tests.support.paths import EXAMPLES
from tests.support.router import RunningRouter, start_router

TOKENIZER = EXAMPLES / "tokenizers" / "tiny-chat"
MODEL = "tiny-llm"
TRITON_MODEL = f"{MODEL}_llmapi"

SPEC = f"""
apiVersion: tritonstack/v1
name: llmapi-serving
target: {{triton: "26.07", gpu: b200}}
models:
- name: {MODEL}
  llm_api: true
  checkpoint_dir: /checkpoints/tiny-llm
  tokenizer_dir: {TOKENIZER}
  max_input_len: 1024
  max_output_len: 64
- name: tiny-engine
  reference_engine: {{}}
  tokenizer_dir: {TOKENIZER}
pools:
- {{name: llm, models: [{MODEL}, tiny-engine]}}
"""

# The stand-in's text function, exec'd here too so the tests know the expected answers.
ANSWER_SOURCE = '''
def standin_answer(prompt, max_tokens, stop=None):
    """Deterministic words built from the prompt: word i is the prompt's word (3*i mod n).
    Returns (text, finish_reason); stops before `stop` like tensorrt_llm (stop string excluded)."""
    words = prompt.split() or ["empty"]
    text = ""
    for i in range(max_tokens):
        text += " " + words[(3 * i) % len(words)]
        if stop and stop in text:
            return text[: text.find(stop)], "stop"
    return text, "length"
'''

STANDIN_MODEL_PY = (
    '''"""TEST STAND-IN of the LLM-API Triton model's contract (tests/runtime/test_llmapi_serving.py); not an engine."""
import os
import numpy as np
import yaml
import triton_python_backend_utils as pb_utils
'''
    + ANSWER_SOURCE
    + '''

class TritonPythonModel:
    def initialize(self, args):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "model.yaml")
        with open(path) as f:
            self.decoupled = bool(yaml.safe_load(f)["triton_config"]["decoupled"])

    def _scalar(self, request, name, default=None):
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        return default if tensor is None else tensor.as_numpy().reshape(-1)[0]

    def execute(self, requests):
        for request in requests:
            sender = request.get_response_sender()
            try:
                self._serve(request, sender)
            except Exception as exc:  # reported to the caller, as the real model does
                sender.send(pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc))),
                            flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
        return None

    def _serve(self, request, sender):
        prompt = self._scalar(request, "text_input").decode()
        streaming = bool(self._scalar(request, "streaming", False))
        if streaming and not self.decoupled:
            raise ValueError("Streaming is only supported in decoupled mode.")
        max_tokens = int(self._scalar(request, "sampling_param_max_tokens", 16))
        stop = self._scalar(request, "sampling_param_stop")
        exclude_input = bool(self._scalar(request, "sampling_param_exclude_input_from_output", False))
        want_reason = bool(self._scalar(request, "return_finish_reason", False))
        text, reason = standin_answer(prompt, max_tokens, stop.decode() if stop is not None else None)
        lead = "" if exclude_input else prompt
        words = text.split(" ")[1:]
        if streaming:  # cumulative text: each response repeats everything so far plus one word
            cuts = [len(" " + " ".join(words[: n + 1])) for n in range(len(words))] or [0]
            cuts[-1] = len(text)
        else:
            cuts = [len(text)]
        for n, cut in enumerate(cuts):
            if sender.is_cancelled():
                break
            outputs = [pb_utils.Tensor("text_output", np.array([(lead + text[:cut]).encode()], dtype=object))]
            if want_reason:
                done = n == len(cuts) - 1
                outputs.append(pb_utils.Tensor("finish_reason", np.array([reason if done else "None"], dtype=object)))
            sender.send(pb_utils.InferenceResponse(output_tensors=outputs))
        sender.send(flags=pb_utils.TRITONSERVER_RESPONSE_COMPLETE_FINAL)
'''
)

STANDIN_MODEL_YAML = """# TEST STAND-IN (tests/runtime/test_llmapi_serving.py): only triton_config is read.
triton_config:
  max_batch_size: 0
  decoupled: true
"""

_namespace: dict[str, object] = {}
exec(ANSWER_SOURCE, _namespace)  # noqa: S102 (our own source, shared with the stand-in)
standin_answer = _namespace["standin_answer"]


def _stack() -> Stack:
    return parse_spec(SPEC)


# ------------------------------------------------------------------------------------------ units


def test_routes_name_the_llmapi_model_with_its_protocol(tmp_path: Path) -> None:
    stack = _stack()
    text = render_routes(stack, RenderOptions(tmp_path, tmp_path))[ROUTES_PATH].decode()
    routes = parse_routes(text)
    llm = routes.models[MODEL].serving
    assert (llm.kind, llm.triton_model, llm.protocol) == ("aggregated", TRITON_MODEL, "llmapi")  # type: ignore[union-attr]
    engine = routes.models["tiny-engine"].serving
    assert (engine.triton_model, engine.protocol) == ("tiny-engine_tensorrt_llm", "engine")  # type: ignore[union-attr]
    # Files rendered before the field existed stay valid: the default is the ensemble protocol.
    old = yaml.safe_load(text)
    del old["models"]["tiny-engine"]["serving"]["protocol"]
    assert parse_routes(yaml.safe_dump(old)).models["tiny-engine"].serving.protocol == "ensemble"  # type: ignore[union-attr]


def test_pool_loads_the_llmapi_model_instead_of_the_engine_set() -> None:
    stack = _stack()
    assert pool_triton_models(stack, stack.pools[0]) == [
        TRITON_MODEL,
        "tiny-engine_preprocessing",
        "tiny-engine_tensorrt_llm",
        "tiny-engine_postprocessing",
        "tiny-engine_ensemble",
        "tiny-engine_bls",
    ]


def test_launcher_load_list_names_the_llmapi_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    commands: list[list[str]] = []
    monkeypatch.setattr(launcher_module, "_spawn", lambda member, command, env: commands.append(command))
    (tmp_path / "model_repos" / "llm").mkdir(parents=True)
    Launcher(_stack(), tmp_path, find_tritonserver(), tmp_path / "logs").start()
    loads = [a.split("=", 1)[1] for a in commands[0] if a.startswith("--load-model=")]
    assert loads == pool_triton_models(_stack(), _stack().pools[0]) and TRITON_MODEL in loads
    assert f"{MODEL}_bls" not in loads and f"{MODEL}_tensorrt_llm" not in loads


def test_deploy_load_list_names_the_llmapi_model(tmp_path: Path) -> None:
    stack = _stack()
    pool = topology(stack).pools[0]
    args = tritonserver_args(stack, pool, "$(ADMIN_KEY)")
    assert f"--load-model={TRITON_MODEL}" in args and f"--load-model={MODEL}_ensemble" not in args
    assert pool.llm_models == (("tiny-engine_tensorrt_llm", 1),)  # MPI ranks never load the LLM-API model
    assert pool.gpus >= 1, "the LLM-API model runs on GPUs too: the pod must request them"
    spec = tmp_path / "stack.yaml"
    spec.write_text(SPEC)
    files = build(spec, tmp_path / "out").files
    manifests = {p: d.decode() for p, d in files.items() if p.startswith("deploy/")}
    with_loads = [p for p, text in manifests.items() if "--load-model=" in text]
    assert with_loads, "no deployment file carries a --load-model list"
    for path in with_loads:
        assert f"--load-model={TRITON_MODEL}" in manifests[path], path
        assert f"--load-model={MODEL}_bls" not in manifests[path], path


# ----------------------------------------------------------------------- real tritonserver + router


@dataclass
class Served:
    stack: Stack
    out_dir: Path
    replica: Replica
    routers: dict[str, RunningRouter]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    base = tmp_path_factory.mktemp("llmapi-serving")
    spec = base / "stack.yaml"
    spec.write_text(SPEC)
    out = base / "build"
    built = build(spec, out, reference_engine=False)
    write_output(built.files, out)
    version = out / "model_repos" / "llm" / TRITON_MODEL / "1"
    assert (version / "model.py").is_file() and (version / "model.yaml").is_file()  # rendered, now replaced
    (version / "model.py").write_text(STANDIN_MODEL_PY)
    (version / "model.yaml").write_text(STANDIN_MODEL_YAML)
    launcher = Launcher(built.stack, out, find_tritonserver(), base / "logs", LaunchSettings())
    routers: dict[str, RunningRouter] = {}
    try:
        launcher.start()
        launcher.wait_ready()
        routes_text = local_routes(built.stack, launcher.endpoints(), RenderOptions(base, out))
        for upstream in ("grpc", "http"):
            document = yaml.safe_load(routes_text)
            document["router"]["upstream"] = upstream
            path = out / "router" / f"routes-{upstream}.yaml"  # next to routes.yaml: relative paths hold
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(yaml.safe_dump(document, sort_keys=False))
            routers[upstream] = start_router(path)
        yield Served(built.stack, out, launcher.replicas[0], routers)
    finally:
        for running in routers.values():
            running.stop()
        launcher.stop()


@pytest.fixture(params=["grpc", "http"])
def client(request: pytest.FixtureRequest, served: Served) -> openai.OpenAI:
    url = served.routers[request.param].url
    return openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def tokenizer():  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(TOKENIZER), local_files_only=True)


def _count(tokenizer, text: str) -> int:  # type: ignore[no-untyped-def]
    return len(tokenizer.encode(text, add_special_tokens=False))


@pytest.mark.triton
@pytest.mark.slow
def test_models_list(client: openai.OpenAI) -> None:
    assert {m.id for m in client.models.list()} == {MODEL, "tiny-engine"}


@pytest.mark.triton
@pytest.mark.slow
def test_completions_streaming_and_not(client: openai.OpenAI, tokenizer) -> None:  # type: ignore[no-untyped-def]
    prompt = "alpha beta gamma delta epsilon"
    expected, _ = standin_answer(prompt, 7)
    done = client.completions.create(model=MODEL, prompt=prompt, max_tokens=7, temperature=0.5, top_p=0.9, seed=3)
    choice = done.choices[0]
    assert choice.text == expected and choice.finish_reason == "length"  # no prompt echo: exclude_input sent
    assert done.usage.prompt_tokens == len(tokenizer.encode(prompt))
    assert done.usage.completion_tokens == _count(tokenizer, expected)
    chunks = list(
        client.completions.create(
            model=MODEL, prompt=prompt, max_tokens=7, stream=True, stream_options={"include_usage": True}
        )
    )
    texts = [ch.choices[0].text for ch in chunks if ch.choices and ch.choices[0].text]
    assert len(texts) == 7 and "".join(texts) == expected  # one word per piece: deltas, not repeats
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "length"
    assert chunks[-1].usage.completion_tokens == _count(tokenizer, expected)


@pytest.mark.triton
@pytest.mark.slow
def test_chat_uses_the_chat_template_streaming_and_not(client: openai.OpenAI, tokenizer) -> None:  # type: ignore[no-untyped-def]
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    # The router leaves the BOS to the model's tokenizer (it adds one), so the text starts after it.
    assert rendered.startswith(tokenizer.bos_token)
    expected, _ = standin_answer(rendered[len(tokenizer.bos_token) :], 9)
    assert "<|assistant|>" in expected  # the stand-in echoes the template's words
    chat = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=9)  # type: ignore[arg-type]
    assert chat.choices[0].message.content == expected and chat.choices[0].finish_reason == "length"
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    assert chat.usage.prompt_tokens == len(ids["input_ids"] if hasattr(ids, "keys") else ids)
    assert chat.usage.completion_tokens == _count(tokenizer, expected)
    chunks = list(
        client.chat.completions.create(model=MODEL, messages=messages, max_tokens=9, stream=True)  # type: ignore[arg-type]
    )
    assert "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices) == expected
    assert chunks[0].choices[0].delta.role == "assistant"


@pytest.mark.triton
@pytest.mark.slow
def test_stop_strings_end_the_answer(client: openai.OpenAI) -> None:
    prompt = "one two three four five six seven"
    full, _ = standin_answer(prompt, 12)
    # The model gets the first stop string and stops there itself.
    done = client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, stop=["seven"])
    assert done.choices[0].text == full[: full.find("seven")] and done.choices[0].finish_reason == "stop"
    # A later stop string that occurs first: the router cuts and cancels (the model only gets "seven").
    chunks = list(
        client.completions.create(model=MODEL, prompt=prompt, max_tokens=12, stop=["seven", "fo"], stream=True)
    )
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == full[: full.find("fo")]
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == "stop"


@pytest.mark.triton
@pytest.mark.slow
def test_exporter_attributes_the_llmapi_model(served: Served, client: openai.OpenAI) -> None:
    client.completions.create(model=MODEL, prompt="count me", max_tokens=2)
    text = httpx.get(served.replica.metrics_url, timeout=10).text
    values = parse_triton_metrics(text, frozenset({MODEL}))
    assert values.steps[(MODEL, "entry")]["success"] >= 1
