"""The Triton-free helpers of the python models (prompt encoding, parameters) on the real tokenizers."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from tests.support import paths

ROOT = paths.REPO_ROOT
TOKENIZERS = ROOT / "examples" / "tokenizers"
sys.path.insert(0, str(ROOT / "templates" / "model_repo" / "shared"))
sys.path.insert(0, str(ROOT / "templates" / "model_repo" / "preprocessing"))

from model_parameters import ModelParameters, RequestError, bls_request_parameters, load_tokenizer
from prompt_encoder import PromptEncoder, pad_rows, parse_messages


def encoder(name: str, max_input_len: int | None = 32, add_special_tokens: bool = True) -> PromptEncoder:
    tokenizer = load_tokenizer(str(TOKENIZERS / name), f"{name}_preprocessing")
    return PromptEncoder(tokenizer, str(TOKENIZERS / name), add_special_tokens, max_input_len)


def test_bls_request_parameters_carry_floats_as_text() -> None:
    # Triton's python backend refuses float parameter values on a BLS InferenceRequest.
    passed = bls_request_parameters('{"a": true, "b": 3, "c": "x", "d": 0.5, "e": [1, 2]}')
    assert passed == {"a": True, "b": 3, "c": "x", "d": "0.5", "e": "[1, 2]"}
    assert bls_request_parameters("") == {}


def test_query_encoding_follows_add_special_tokens() -> None:
    tok = AutoTokenizer.from_pretrained(str(TOKENIZERS / "tiny-chat"), local_files_only=True)
    assert encoder("tiny-chat").encode_query("Hello world") == tok.encode("Hello world")
    assert encoder("tiny-chat", add_special_tokens=False).encode_query("Hello world") == tok.encode(
        "Hello world", add_special_tokens=False
    )


def test_messages_are_rendered_with_the_chat_template_once() -> None:
    enc = encoder("tiny-chat", max_input_len=None)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZERS / "tiny-chat"), local_files_only=True)
    messages = [{"role": "user", "content": "Hi"}]
    ids = enc.encode_messages(json.dumps(messages))
    assert ids == tok.apply_chat_template(
        messages, tokenize=True, add_generation_prompt=True, return_dict=False
    )
    assert ids.count(tok.bos_token_id) == 1


def test_messages_without_chat_template_name_the_tokenizer_dir() -> None:
    with pytest.raises(RequestError, match="has no chat template") as caught:
        encoder("tiny-base").encode_messages(json.dumps([{"role": "user", "content": "Hi"}]))
    assert str(TOKENIZERS / "tiny-base") in str(caught.value)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[]", "non-empty JSON array"),
        ('{"role": "user"}', "non-empty JSON array"),
        ('[{"content": "x"}]', "item 0 has no string 'role'"),
        ('[{"role": "user", "content": 3}]', "item 0 has no string 'content'"),
    ],
)
def test_malformed_messages_are_request_errors(payload: str, message: str) -> None:
    with pytest.raises(RequestError, match=message):
        parse_messages(payload)


def test_unknown_role_is_reported_from_the_template() -> None:
    with pytest.raises(RequestError, match="rejected the messages.*roles system, user and assistant"):
        encoder("tiny-chat").encode_messages(json.dumps([{"role": "tool", "content": "x"}]))


def test_prompt_length_limits() -> None:
    with pytest.raises(RequestError, match="max_input_len of 4"):
        encoder("tiny-sp", max_input_len=4).encode_query("one two three four five six")
    with pytest.raises(RequestError, match="prompt is empty"):
        encoder("tiny-sp", add_special_tokens=False).encode_query("")


def test_word_lists_pack_ids_and_offsets_per_row() -> None:
    enc = encoder("tiny-sp")
    packed = enc.word_lists([["world", "model"], ["", "done"]], batch_size=2)
    tok = AutoTokenizer.from_pretrained(str(TOKENIZERS / "tiny-sp"), local_files_only=True)
    world, model, done = (tok.encode(w, add_special_tokens=False) for w in ["world", "model", "done"])
    width = len(world) + len(model)
    assert packed.shape == (2, 2, width) and packed.dtype == np.int32
    assert packed[0, 0].tolist() == world + model
    assert packed[0, 1].tolist()[:2] == [len(world), width] and set(packed[0, 1, 2:].tolist()) <= {-1}
    assert packed[1, 0, : len(done)].tolist() == done and packed[1, 1, 0] == len(done)
    assert enc.word_lists(None, batch_size=3).shape == (3, 2, 0)


def test_embedding_bias_weights_must_match_words() -> None:
    enc = encoder("tiny-chat")
    with pytest.raises(RequestError, match="one weight per word"):
        enc.embedding_bias([["a", "b"]], np.array([[1.0]], dtype=np.float32), batch_size=1)
    assert enc.embedding_bias(None, None, batch_size=2).shape == (2, 0)


def test_special_ids_and_padding() -> None:
    sp = encoder("tiny-sp")  # no pad token: padded with eos, like Llama
    assert sp.pad_id == sp.end_id
    ids, lengths = pad_rows([[5, 6, 7], [8]], pad_id=sp.pad_id)
    assert ids.tolist() == [[5, 6, 7], [8, sp.pad_id, sp.pad_id]] and lengths.tolist() == [[3], [1]]
    chat = encoder("tiny-chat")
    assert chat.pad_id != chat.end_id


def test_parameters_treat_placeholders_as_unset_and_name_the_model() -> None:
    params = ModelParameters(
        {
            "name": "tiny-chat_bls",
            "parameters": {
                "accumulate_tokens": {"string_value": "${accumulate_tokens}"},
                "max_input_len": {"string_value": "12"},
                "flag": {"string_value": "maybe"},
                "empty": {"string_value": ""},
            },
        }
    )
    assert params.flag("accumulate_tokens", False) is False
    assert params.integer("max_input_len", 0) == 12
    assert not params.has("empty")
    with pytest.raises(ValueError, match="model 'tiny-chat_bls': parameter 'flag' must be true or false"):
        params.flag("flag", True)
    with pytest.raises(ValueError, match="parameter 'tokenizer_dir' is required"):
        params.text("tokenizer_dir")


def test_missing_tokenizer_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="is not a directory on this node"):
        load_tokenizer(str(tmp_path / "nope"), "m_preprocessing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="cannot load the tokenizer"):
        load_tokenizer(str(tmp_path / "empty"), "m_preprocessing")
