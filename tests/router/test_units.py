"""Router parts that need no server: policies, admission, auth, request parsing, config, routes
rendering (the dispatcher's retries, migration and ejection are in test_dispatch.py)."""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from pathlib import Path
from typing import get_args

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from generator import cli
from generator.errors import RuntimeSetupError
from generator.render.options import RenderOptions
from generator.render.routes import ROUTES_PATH, local_routes, render_routes
from generator.router.admission import Admission, Refused
from generator.router.auth import load_api_keys
from generator.router.config import (
    Disaggregated,
    DnsEndpoints,
    PoolRoute,
    load_routes,
    parse_routes,
)
from generator.router.policies import (
    POLICIES,
    Hints,
    LeastInflight,
    PrefixAware,
    RoundRobin,
    SessionAffinity,
    block_hashes,
    make_policy,
)
from generator.router.protocol import ApiError, parse_request
from generator.router.replicas import PoolState, external_load, resolve_pool
from generator.spec import load_spec
from generator.spec.router import Policy, RouterSettings
from tests.support import paths
from tests.support.router import replicas

REPO = paths.REPO_ROOT


# ------------------------------------------------------------------------------------------ policies


def test_round_robin_cycles_evenly() -> None:
    pool, policy = replicas(3), RoundRobin()
    picks = Counter(policy.choose(pool, Hints()).key for _ in range(300))
    assert sorted(picks.values()) == [100, 100, 100]


def test_least_inflight_prefers_idle_and_breaks_ties_round_robin() -> None:
    pool = replicas(3)
    pool[0].inflight, pool[1].inflight = 5, 0
    policy = LeastInflight()
    assert policy.choose(pool, Hints()) in pool[1:]
    pool[0].inflight = pool[1].inflight = pool[2].inflight = 0
    picks = Counter(policy.choose(pool, Hints()).key for _ in range(30))
    assert sorted(picks.values()) == [10, 10, 10]


def test_least_inflight_counts_load_reported_by_triton() -> None:
    pool = replicas(2)
    pool[0].external = 7  # e.g. another router instance's requests
    assert LeastInflight().choose(pool, Hints()) is pool[1]


def test_session_affinity_is_sticky_and_spreads_sessions() -> None:
    pool = replicas(4)
    policy = SessionAffinity(load_factor=1.25)
    homes = {f"user-{i}": policy.choose(pool, Hints(session=f"user-{i}")).key for i in range(200)}
    assert all(policy.choose(pool, Hints(session=s)).key == k for s, k in homes.items())
    spread = Counter(homes.values())
    assert len(spread) == 4 and min(spread.values()) >= 20


def test_session_affinity_bounded_load_moves_a_hot_session() -> None:
    pool = replicas(2)
    policy = SessionAffinity(load_factor=1.25)
    home = policy.choose(pool, Hints(session="hot"))
    home.inflight = 10  # capacity is ceil(1.25 * 11 / 2) = 7: home is over it
    assert policy.choose(pool, Hints(session="hot")) is not home


def test_session_affinity_survives_membership_change_for_most_sessions() -> None:
    pool = replicas(4)
    policy = SessionAffinity(load_factor=100.0)
    before = {f"s{i}": policy.choose(pool, Hints(session=f"s{i}")).key for i in range(400)}
    after = {s: policy.choose(pool[:3], Hints(session=s)).key for s in before}
    moved = sum(1 for s in before if before[s] != after[s] and before[s] != pool[3].key)
    assert moved == 0  # consistent hashing: only the removed replica's sessions move


def test_prefix_aware_follows_shared_prefix_under_load_guard() -> None:
    pool = replicas(2)
    policy = PrefixAware(capacity_blocks=1000, load_slack=2)
    system = list(range(64))
    first = policy.choose(pool, Hints(blocks=block_hashes(system + [100, 101], 16)))
    first.inflight = 2
    again = policy.choose(pool, Hints(blocks=block_hashes(system + [200, 201, 202], 16)))
    assert again is first and policy.hits == 1
    first.inflight = 3  # now 3 above the other replica: the guard sends it elsewhere
    guarded = policy.choose(pool, Hints(blocks=block_hashes(system, 16)))
    assert guarded is not first


@given(st.lists(st.lists(st.integers(0, 50), min_size=0, max_size=80), min_size=1, max_size=60))
@settings(max_examples=50, deadline=None)
def test_prefix_memory_is_bounded(prompts: list[list[int]]) -> None:
    policy = PrefixAware(capacity_blocks=16, load_slack=4)
    pool = replicas(3)
    for prompt in prompts:
        assert policy.choose(pool, Hints(blocks=block_hashes(prompt, 4))) in pool
        assert len(policy) <= 16


@given(st.lists(st.integers(0, 1000), max_size=64), st.lists(st.integers(0, 1000), max_size=64))
def test_block_hashes_equal_exactly_on_equal_prefixes(a: list[int], b: list[int]) -> None:
    ha, hb = block_hashes(a, 4), block_hashes(b, 4)
    for i in range(min(len(ha), len(hb))):
        assert (ha[i] == hb[i]) == (a[: 4 * (i + 1)] == b[: 4 * (i + 1)])


def test_every_policy_name_the_settings_accept_is_registered() -> None:
    assert set(POLICIES) == set(get_args(Policy))
    settings = RouterSettings()
    assert isinstance(make_policy("prefix_aware", settings), PrefixAware)
    assert isinstance(make_policy("least_inflight", settings), LeastInflight)
    assert [name for name, kind in POLICIES.items() if kind.needs_token_ids] == ["prefix_aware"]


def test_an_unknown_policy_name_is_refused_by_the_settings_and_by_make_policy() -> None:
    with pytest.raises(ValidationError, match="policy"):
        RouterSettings.model_validate({"policy": "fastest"})
    with pytest.raises(ValueError, match="unknown routing policy 'fastest'; known: least_inflight"):
        make_policy("fastest", RouterSettings())  # type: ignore[arg-type]


def test_dns_pools_resolve_to_one_replica_per_address() -> None:
    route = PoolRoute(
        role="aggregated", dns=DnsEndpoints(name="localhost", http=8000, grpc=8001, metrics=8002)
    )
    endpoints = asyncio.run(resolve_pool(route))
    assert "127.0.0.1" in {e.host for e in endpoints} and {e.grpc for e in endpoints} == {8001}
    missing = PoolRoute(role="aggregated", dns=DnsEndpoints(name="no-such-pool.invalid"))
    assert asyncio.run(resolve_pool(missing)) == []


def test_external_load_reads_triton_request_metrics() -> None:
    text = (
        "# TYPE nv_trt_llm_request_metrics gauge\n"
        'nv_trt_llm_request_metrics{model="m_tensorrt_llm",request_type="active",version="1"} 5\n'
        'nv_trt_llm_request_metrics{model="m_tensorrt_llm",request_type="waiting",version="1"} 3\n'
        'nv_trt_llm_request_metrics{model="m_tensorrt_llm",request_type="max",version="1"} 64\n'
    )
    assert external_load(text, own_inflight=2) == 6
    assert external_load(text, own_inflight=20) == 0


# ------------------------------------------------------------------------------------------ admission


def test_admission_caps_queues_then_refuses() -> None:
    async def scenario() -> None:
        settings = RouterSettings(
            max_inflight_per_replica=1, max_queue=1, queue_timeout_s=0.5, retry_after_s=2
        )
        admission, policy = Admission(settings), LeastInflight()
        pool = PoolState("a", "aggregated", replicas(1))
        held = await admission.acquire(pool, policy, Hints())
        waiting = asyncio.create_task(admission.acquire(pool, policy, Hints()))
        await asyncio.sleep(0)
        with pytest.raises(Refused) as full:
            await admission.acquire(pool, policy, Hints())
        assert full.value.status == 429 and full.value.retry_after == 2
        admission.release(pool, held)
        assert await waiting is held and held.inflight == 1
        with pytest.raises(Refused) as slow:
            await admission.acquire(pool, policy, Hints())
        assert slow.value.status == 503
        pool.replicas[0].ejected = True
        admission.release(pool, held)
        with pytest.raises(Refused) as none:
            await admission.acquire(pool, policy, Hints())
        assert none.value.status == 503 and "no ready replica" in none.value.message

    asyncio.run(scenario())


# ------------------------------------------------------------------------------------------ auth


def test_api_keys_from_env_and_file(tmp_path: Path) -> None:
    keyfile = tmp_path / "keys"
    keyfile.write_text("# router keys\nfile-key\n")
    keys = load_api_keys(RouterSettings(api_keys_env="K", api_keys_file=str(keyfile)), {"K": "a, b"})
    assert keys.allows(b"Bearer a") and keys.allows(b"bearer file-key")
    assert not keys.allows(None) and not keys.allows(b"Bearer c") and not keys.allows(b"a")
    assert load_api_keys(RouterSettings(), {}).allows(None)
    with pytest.raises(RuntimeSetupError, match="none were found"):
        load_api_keys(RouterSettings(api_keys_env="K"), {})


# ------------------------------------------------------------------------------------------ protocol


@pytest.mark.parametrize(
    ("body", "chat", "fragment"),
    [
        (b"{not json", False, "not valid JSON"),
        (b"[1]", False, "JSON object"),
        (b'{"prompt": "x"}', False, "'model' is required"),
        (b'{"model": "m", "prompt": 5}', False, "'prompt' must be a string"),
        (b'{"model": "m", "messages": []}', True, "non-empty array"),
        (b'{"model": "m", "messages": [{"role": "user", "content": 3}]}', True, "content must be"),
        (b'{"model": "m", "prompt": "x", "max_tokens": "9"}', False, "'max_tokens' must be an integer"),
        (b'{"model": "m", "prompt": "x", "max_tokens": 0}', False, "between 1 and"),
        (b'{"model": "m", "prompt": "x", "temperature": 3}', False, "in [0, 2]"),
        (b'{"model": "m", "prompt": "x", "n": 2}', False, "'n' is not supported"),
        (b'{"model": "m", "prompt": "x", "stream": "yes"}', False, "'stream' must be a boolean"),
        (b'{"model": "m", "prompt": "x", "stop": [1]}', False, "'stop' must be"),
    ],
)
def test_bad_requests_are_400_with_a_message(body: bytes, chat: bool, fragment: str) -> None:
    with pytest.raises(ApiError) as error:
        parse_request(body, chat)
    assert error.value.status == 400 and fragment in error.value.message


def test_request_fields_are_read() -> None:
    request = parse_request(
        b'{"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],'
        b' "max_completion_tokens": 7, "stream": true, "stream_options": {"include_usage": true},'
        b' "stop": "END", "seed": 3, "temperature": 0.5, "user": "u1"}',
        chat=True,
    )
    assert request.messages == [{"role": "user", "content": "hi"}]
    assert (request.max_tokens, request.stream, request.include_usage) == (7, True, True)
    assert (request.stop, request.seed, request.temperature, request.user) == (["END"], 3, 0.5, "u1")


# ------------------------------------------------------------------------------------------ config


def test_routes_errors_name_the_field() -> None:
    text = """apiVersion: tritonstack/routes-v1
models:
  m: {tokenizer_dir: t, max_input_len: 8, max_output_len: 8,
      serving: {kind: aggregated, pool: nope, triton_model: m_ensemble}}
pools:
  a: {role: aggregated, endpoints: [{host: h, http: 1, grpc: 2, metrics: 3}]}
"""
    with pytest.raises(RuntimeSetupError, match="pool 'nope' is not under pools"):
        parse_routes(text)
    with pytest.raises(RuntimeSetupError, match="not a routes file"):
        parse_routes("apiVersion: v0\n")
    with pytest.raises(RuntimeSetupError, match="exactly one of endpoints"):
        parse_routes(
            text.replace("pool: nope", "pool: a").replace(
                ", endpoints: [{host: h, http: 1, grpc: 2, metrics: 3}]", ""
            )
        )


def test_render_routes_for_quickstart_uses_headless_services(tmp_path: Path) -> None:
    stack = load_spec(REPO / "examples" / "quickstart.yaml")
    files = render_routes(stack, RenderOptions(REPO / "examples", tmp_path))
    assert list(files) == [ROUTES_PATH]
    (tmp_path / "router").mkdir()
    (tmp_path / ROUTES_PATH).write_bytes(files[ROUTES_PATH])
    routes = load_routes(tmp_path / ROUTES_PATH)
    assert routes.pools["chat"].dns is not None
    assert routes.pools["chat"].dns.name == "chat-headless.tritonstack.svc.cluster.local"
    chat = routes.models["tiny-chat"].serving
    # Engine-direct by default (issue 14): the engine models themselves, spoken to with token ids.
    assert (chat.triton_model, chat.protocol) == ("tiny-chat_tensorrt_llm", "engine")  # type: ignore[union-attr]
    pd = routes.models["tiny-pd"].serving
    assert isinstance(pd, Disaggregated)
    assert (pd.prefill.pool, pd.prefill.triton_model) == ("pd-prefill", "tiny-pd_context")
    assert (pd.decode.pool, pd.decode.triton_model, pd.protocol) == (
        "pd-decode",
        "tiny-pd_generation",
        "engine",
    )
    # The relative tokenizer path still points at the spec's tokenizer after loading.
    assert (Path(routes.models["tiny-chat"].tokenizer_dir) / "tokenizer.json").exists()
    assert render_routes(stack, RenderOptions(REPO / "examples", tmp_path)) == files  # deterministic


@pytest.mark.parametrize(
    ("data_path", "chat_model", "prefill_model", "decode_model", "protocol"),
    [
        ("bls", "tiny-chat_bls", "tiny-pd_prefill", "tiny-pd_bls", "ensemble"),
        ("ensemble", "tiny-chat_ensemble", "tiny-pd_prefill", "tiny-pd_decode", "ensemble"),
    ],
)
def test_router_data_path_still_picks_the_bls_or_the_ensemble(
    data_path: str, chat_model: str, prefill_model: str, decode_model: str, protocol: str
) -> None:
    stack = load_spec(REPO / "examples" / "quickstart.yaml")
    stack = stack.model_copy(update={"router": stack.router.model_copy(update={"data_path": data_path})})
    routes = parse_routes(render_routes(stack)[ROUTES_PATH].decode())
    chat, pd = routes.models["tiny-chat"].serving, routes.models["tiny-pd"].serving
    assert isinstance(pd, Disaggregated)
    assert (chat.triton_model, chat.protocol) == (chat_model, protocol)  # type: ignore[union-attr]
    assert (pd.prefill.triton_model, pd.decode.triton_model, pd.protocol) == (
        prefill_model,
        decode_model,
        protocol,
    )


def test_local_routes_lists_static_endpoints() -> None:
    stack = load_spec(REPO / "examples" / "quickstart.yaml")
    endpoints = {
        "chat": [("127.0.0.1", 1, 2, 3), ("127.0.0.1", 4, 5, 6)],
        "pd-prefill": [("127.0.0.1", 7, 8, 9)],
        "pd-decode": [("127.0.0.1", 10, 11, 12)],
    }
    document = yaml.safe_load(local_routes(stack, endpoints))
    assert [e["grpc"] for e in document["pools"]["chat"]["endpoints"]] == [2, 5]
    assert parse_routes(yaml.safe_dump(document)).pools["pd-decode"].endpoints[0].metrics == 12


def test_router_command_reports_a_busy_port_and_a_missing_config_through_the_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    routes = tmp_path / ROUTES_PATH
    routes.parent.mkdir(parents=True)
    stack = load_spec(REPO / "examples" / "quickstart.yaml")
    routes.write_bytes(render_routes(stack, RenderOptions(REPO / "examples", tmp_path))[ROUTES_PATH])
    with socket.socket() as busy:  # bound without SO_REUSEPORT: the router cannot share it
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert cli.main(["router", "--config", str(routes), "--host", "127.0.0.1", "--port", str(port)]) == 1
    assert capsys.readouterr().err.startswith(f"error: cannot listen on 127.0.0.1:{port}: ")
    assert cli.main(["router", "--config", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err
