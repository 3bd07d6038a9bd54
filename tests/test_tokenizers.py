"""The tokenizers shipped in examples/tokenizers/: reproducible, loadable offline, and with the
properties the streaming tests rely on (SentencePiece space loss, byte-level character splits)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from tests.support import paths

TOKENIZERS = paths.REPO_ROOT / "examples" / "tokenizers"
NAMES = ["tiny-chat", "tiny-base", "tiny-sp"]


@pytest.fixture(autouse=True)
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # Any attempt to reach the hub fails instead of silently downloading.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def _load(name: str):
    return AutoTokenizer.from_pretrained(str(TOKENIZERS / name), local_files_only=True)


def _build_module():
    spec = importlib.util.spec_from_file_location("tokenizer_build", TOKENIZERS / "build.py")
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_rebuild_is_byte_identical_to_the_committed_files(tmp_path: Path) -> None:
    build = _build_module()
    assert build.main(["--out", str(tmp_path)]) == 0
    rebuilt = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert [str(p) for p in rebuilt] == sorted(build.render_all())
    for relative in rebuilt:
        assert (tmp_path / relative).read_bytes() == (TOKENIZERS / relative).read_bytes(), relative


@pytest.mark.parametrize("name", NAMES)
def test_loads_offline_and_stays_small(name: str) -> None:
    tokenizer = _load(name)
    assert 1500 <= len(tokenizer) <= 2100
    assert tokenizer.eos_token is not None and tokenizer.bos_token is not None
    for path in (TOKENIZERS / name).iterdir():
        assert path.stat().st_size < 300_000, path
    text = "Serving LLMs: café, 東京, 👍 — done."
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_chat_and_base_share_the_vocabulary_but_only_chat_has_a_template() -> None:
    chat, base = _load("tiny-chat"), _load("tiny-base")
    assert (TOKENIZERS / "tiny-chat/tokenizer.json").read_bytes() == (
        TOKENIZERS / "tiny-base/tokenizer.json"
    ).read_bytes()
    assert chat.get_vocab() == base.get_vocab()
    assert chat.chat_template and not base.chat_template
    config = json.loads((TOKENIZERS / "tiny-base/tokenizer_config.json").read_text())
    assert "chat_template" not in config
    assert not (TOKENIZERS / "tiny-base/chat_template.jinja").exists()


def test_chat_template_marks_roles_and_ends_with_the_generation_prompt() -> None:
    chat = _load("tiny-chat")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    prompt = chat.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert prompt == "<|begin|><|system|>\nBe brief.<|end|>\n<|user|>\nHi there<|end|>\n<|assistant|>\n"
    ids = chat.encode(prompt, add_special_tokens=False)
    specials = {
        chat.convert_tokens_to_ids(t)
        for t in ["<|begin|>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"]
    }
    assert specials <= set(ids), "role markers must be single special tokens, not spelled out"
    with pytest.raises(Exception, match="roles system, user and assistant"):
        chat.apply_chat_template([{"role": "tool", "content": "x"}], tokenize=False)


def test_special_token_ids_are_configured() -> None:
    chat = _load("tiny-chat")
    assert (chat.bos_token, chat.eos_token, chat.pad_token) == ("<|begin|>", "<|end|>", "<|pad|>")
    assert chat.encode("Hello")[0] == chat.bos_token_id  # add_special_tokens prepends bos
    assert chat.encode("Hello", add_special_tokens=False)[0] != chat.bos_token_id
    sp = _load("tiny-sp")
    assert (sp.bos_token, sp.eos_token, sp.pad_token) == ("<s>", "</s>", None)


def test_sentencepiece_style_decoding_one_token_loses_its_leading_space() -> None:
    sp = _load("tiny-sp")
    ids = sp.encode("Hello world", add_special_tokens=False)
    assert sp.decode(ids) == "Hello world"
    naive = "".join(sp.decode([i]) for i in ids)
    assert naive == "Helloworld"


def test_byte_level_splits_rare_characters_over_several_tokens() -> None:
    for name in ["tiny-chat", "tiny-sp"]:
        tokenizer = _load(name)
        ids = tokenizer.encode("龍🦀", add_special_tokens=False)
        pieces = [tokenizer.decode([i]) for i in ids]
        assert len(ids) >= 4 and any("\ufffd" in piece for piece in pieces), (name, pieces)
        assert tokenizer.decode(ids).strip() == "龍🦀"
