"""``context_phase_params`` of the tritonstack reference engine: what a context (prefill) server hands
to a generation (decode) server in disaggregated serving.

TensorRT-LLM serializes ``executor::ContextPhaseParams`` (first generated tokens, request id and an
opaque KV-transfer state) into the UINT8 output ``context_phase_params``; the decode server gets
it back as an input together with the prompt. This blob plays the same role for the reference
engine. It is opaque to the router, but self-describing for a human who dumps it:

    b"TSREFCPP" | u16 version | u32 payload length | payload (UTF-8 JSON) | sha256(all before)

The JSON names the engine ("tritonstack reference engine"), the weights fingerprint (both servers
must run the same reference model), the prompt's digest and length (the decode request must carry
the same prompt) and the first generated token. Anything else — truncation, a flipped byte,
another engine's blob, another prompt — is refused with a message that says which.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass

from reference_lm import ENGINE_NAME, ReferenceEngineError

__all__ = ["BLOB_MAGIC", "BLOB_VERSION", "ContextPhaseState", "decode_context_phase", "encode_context_phase"]

BLOB_MAGIC = b"TSREFCPP"
BLOB_VERSION = 1
_HEADER = struct.Struct("<8sHI")
_DIGEST_SIZE = 32


@dataclass(frozen=True)
class ContextPhaseState:
    """What the decode side needs to resume a sequence the context side started."""

    model_fingerprint: str
    prompt_sha256: str
    prompt_len: int
    first_token: int
    kv_blocks: int
    tokens_per_block: int
    context_request_id: str


def encode_context_phase(state: ContextPhaseState) -> bytes:
    payload = json.dumps(
        {
            "engine": ENGINE_NAME,
            "what": "context_phase_params for a generation_only request",
            "model_fingerprint": state.model_fingerprint,
            "prompt_sha256": state.prompt_sha256,
            "prompt_len": state.prompt_len,
            "first_token": state.first_token,
            "kv_blocks": state.kv_blocks,
            "tokens_per_block": state.tokens_per_block,
            "context_request_id": state.context_request_id,
        },
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
    body = _HEADER.pack(BLOB_MAGIC, BLOB_VERSION, len(payload)) + payload
    return body + hashlib.sha256(body).digest()


def decode_context_phase(blob: bytes) -> ContextPhaseState:
    """Parse and verify a blob; every failure raises ReferenceEngineError naming what is wrong."""
    prefix = "context_phase_params"
    if len(blob) < _HEADER.size + _DIGEST_SIZE:
        raise ReferenceEngineError(
            f"{prefix}: {len(blob)} bytes is too short to come from a {ENGINE_NAME} context server"
        )
    magic, version, length = _HEADER.unpack_from(blob)
    if magic != BLOB_MAGIC:
        raise ReferenceEngineError(
            f"{prefix}: not produced by a {ENGINE_NAME} (bad magic); the context and generation "
            "models of one pair must both run the reference engine"
        )
    if version != BLOB_VERSION:
        raise ReferenceEngineError(
            f"{prefix}: format version {version}, this {ENGINE_NAME} reads version {BLOB_VERSION}; "
            "run the same tritonstack release on the prefill and decode pools"
        )
    end = _HEADER.size + length
    if len(blob) != end + _DIGEST_SIZE:
        raise ReferenceEngineError(f"{prefix}: length mismatch (truncated or padded blob)")
    if hashlib.sha256(blob[:end]).digest() != blob[end:]:
        raise ReferenceEngineError(f"{prefix}: checksum mismatch (the blob was altered in transit)")
    try:
        fields = json.loads(blob[_HEADER.size : end].decode())
        state = ContextPhaseState(
            model_fingerprint=str(fields["model_fingerprint"]),
            prompt_sha256=str(fields["prompt_sha256"]),
            prompt_len=int(fields["prompt_len"]),
            first_token=int(fields["first_token"]),
            kv_blocks=int(fields["kv_blocks"]),
            tokens_per_block=int(fields["tokens_per_block"]),
            context_request_id=str(fields["context_request_id"]),
        )
    except (ValueError, KeyError, TypeError) as exc:
        raise ReferenceEngineError(f"{prefix}: malformed payload ({exc})") from None
    if fields.get("engine") != ENGINE_NAME:
        raise ReferenceEngineError(
            f"{prefix}: payload names engine {fields.get('engine')!r}, not {ENGINE_NAME!r}"
        )
    return state
