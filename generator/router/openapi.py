"""``GET /openapi.json``: the router's API as an OpenAPI 3.1 document, built from the served routes.

The request schemas state what :mod:`generator.router.protocol` accepts (its ranges and limits are
imported, not repeated), the response schemas what its ``Shaper`` sends, and every error status the
router answers carries the one error schema. The model names and the largest ``max_tokens`` come
from ``routes.yaml``; a model's own smaller limit is still a 400. ``tests/router/test_hostile.py``
runs schemathesis against this document.
"""

from __future__ import annotations

from typing import Any

from generator.router.config import Routes
from generator.router.protocol import (
    CHAT_ROLES,
    INT32_MAX,
    MAX_STOP_CHARS,
    MAX_STOP_SEQUENCES,
    MAX_TEXT_FIELD_CHARS,
    UINT64_MAX,
)

__all__ = ["openapi_document"]

# The statuses each inference path may answer besides 200, and why.
_GENERATE_ERRORS = {
    "400": "The request is invalid or asks for something this router does not support (the error's "
    "param names the field), or the model rejected its inputs",
    "401": "Missing or invalid API key",
    "404": "No such model",
    "413": "Request body too large",
    "429": "The pool's queue is full; retry after Retry-After seconds",
    "500": "Internal error in the router (logged with the request id)",
    "502": "The model server failed this request",
    "503": "No ready replica, the router is draining, or the pool stayed at capacity",
    "504": "The model server did not answer in time",
}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    return {"anyOf": [schema, {"type": "null"}]}


def _error_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "headers": {
            "Retry-After": {"schema": {"type": "string"}, "description": "Seconds to wait (429, 503)"},
        },
        "content": {"application/json": {"schema": _ref("Error")}},
    }


def _sampling(models: list[str], max_tokens: int) -> dict[str, Any]:
    return {
        "model": {"type": "string", "enum": models} if models else {"type": "string"},
        "max_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": max_tokens}),
        "temperature": _nullable({"type": "number", "minimum": 0, "maximum": 2}),
        "top_p": _nullable({"type": "number", "exclusiveMinimum": 0, "maximum": 1}),
        "top_k": _nullable({"type": "integer", "minimum": 0, "maximum": INT32_MAX}),
        "seed": _nullable({"type": "integer", "minimum": 0, "maximum": UINT64_MAX}),
        "presence_penalty": _nullable({"type": "number", "minimum": -2, "maximum": 2}),
        "frequency_penalty": _nullable({"type": "number", "minimum": -2, "maximum": 2}),
        "min_tokens": _nullable({"type": "integer", "minimum": 0, "maximum": INT32_MAX}),
        "stop": _nullable(
            {
                "anyOf": [
                    _ref("StopSequence"),
                    {"type": "array", "items": _ref("StopSequence"), "maxItems": MAX_STOP_SEQUENCES},
                ]
            }
        ),
        "stream": _nullable({"type": "boolean"}),
        "stream_options": _nullable({"type": "object", "properties": {"include_usage": {"type": "boolean"}}}),
        "user": _nullable({"type": "string", "maxLength": MAX_TEXT_FIELD_CHARS}),
    }


def _schemas(models: list[str], max_tokens: int) -> dict[str, Any]:
    usage = {
        "type": "object",
        "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
        "properties": {
            k: {"type": "integer", "minimum": 0}
            for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        },
    }
    finish = {"type": "string", "enum": ["stop", "length"]}

    def answer(obj: str, choice: dict[str, Any]) -> dict[str, Any]:
        return {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices", "usage"],
            "properties": {
                "id": {"type": "string"},
                "object": {"const": obj},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {"type": "array", "minItems": 1, "maxItems": 1, "items": choice},
                "usage": _ref("Usage"),
            },
        }

    choice_base = {"index": {"const": 0}, "logprobs": {"type": "null"}, "finish_reason": finish}
    return {
        "Error": {
            "type": "object",
            "required": ["error"],
            "additionalProperties": False,
            "properties": {
                "error": {
                    "type": "object",
                    "required": ["message", "type", "param", "code"],
                    "additionalProperties": False,
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                        "code": {"type": ["string", "null"]},
                    },
                }
            },
        },
        "StopSequence": {"type": "string", "minLength": 1, "maxLength": MAX_STOP_CHARS},
        "Usage": usage,
        "CompletionRequest": {
            "type": "object",
            "required": ["model", "prompt"],
            "properties": {
                **_sampling(models, max_tokens),
                "prompt": {
                    "anyOf": [
                        {"type": "string"},
                        {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1},
                    ]
                },
            },
        },
        "ChatMessage": {
            "type": "object",
            "required": ["role", "content"],
            "properties": {
                "role": {"type": "string", "enum": list(CHAT_ROLES)},
                "content": {
                    "anyOf": [
                        {"type": "string"},
                        {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["type", "text"],
                                "properties": {"type": {"const": "text"}, "text": {"type": "string"}},
                            },
                        },
                    ]
                },
                "name": {"type": "string"},
            },
        },
        "ChatCompletionRequest": {
            "type": "object",
            "required": ["model", "messages"],
            "properties": {
                **_sampling(models, max_tokens),
                "max_completion_tokens": _nullable({"type": "integer", "minimum": 1, "maximum": max_tokens}),
                "messages": {"type": "array", "minItems": 1, "items": _ref("ChatMessage")},
            },
        },
        "Completion": answer(
            "text_completion",
            {
                "type": "object",
                "required": ["index", "text", "logprobs", "finish_reason"],
                "properties": {**choice_base, "text": {"type": "string"}},
            },
        ),
        "ChatCompletion": answer(
            "chat.completion",
            {
                "type": "object",
                "required": ["index", "message", "logprobs", "finish_reason"],
                "properties": {
                    **choice_base,
                    "message": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {"role": {"const": "assistant"}, "content": {"type": "string"}},
                    },
                },
            },
        ),
        # One server-sent event (OpenAPI before 3.2: ``schema`` describes each event of a stream):
        # a chunk, an error after the stream began, or the closing "[DONE]".
        "StreamEvent": {
            "type": "object",
            "required": ["data"],
            "properties": {
                "data": {
                    "anyOf": [
                        {"const": "[DONE]"},
                        {
                            "type": "string",
                            "contentMediaType": "application/json",
                            "contentSchema": {"anyOf": [_ref("Chunk"), _ref("Error")]},
                        },
                    ]
                },
            },
        },
        "Chunk": {
            "type": "object",
            "required": ["id", "object", "created", "model", "choices"],
            "properties": {
                "id": {"type": "string"},
                "object": {"enum": ["text_completion", "chat.completion.chunk"]},
                "created": {"type": "integer"},
                "model": {"type": "string"},
                "choices": {"type": "array", "maxItems": 1},
                "usage": {"anyOf": [_ref("Usage"), {"type": "null"}]},
            },
        },
        "ModelList": {
            "type": "object",
            "required": ["object", "data"],
            "properties": {
                "object": {"const": "list"},
                "data": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["id", "object", "created", "owned_by"],
                        "properties": {
                            "id": {"type": "string"},
                            "object": {"const": "model"},
                            "created": {"type": "integer"},
                            "owned_by": {"type": "string"},
                        },
                    },
                },
            },
        },
        "Readiness": {
            "type": "object",
            "required": ["ready", "draining", "models"],
            "properties": {
                "ready": {"type": "boolean"},
                "draining": {"type": "boolean"},
                "models": {"type": "object", "additionalProperties": {"type": "boolean"}},
            },
        },
    }


def _generate(summary: str, request: str, answer: str, secured: bool) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request)}}},
        "responses": {
            "200": {
                "description": "The answer; with stream=true, server-sent events of chunks ending in "
                "'data: [DONE]' (an error after the first event arrives as an error event)",
                "content": {
                    "application/json": {"schema": _ref(answer)},
                    "text/event-stream": {"schema": _ref("StreamEvent")},
                },
            },
            **{status: _error_response(why) for status, why in _GENERATE_ERRORS.items()},
        },
    }
    if secured:
        operation["security"] = [{"bearer": []}]
    return operation


def _get(summary: str, schema: dict[str, Any], media: str = "application/json") -> dict[str, Any]:
    return {
        "summary": summary,
        "responses": {"200": {"description": summary, "content": {media: {"schema": schema}}}},
    }


def openapi_document(routes: Routes) -> dict[str, Any]:
    """The OpenAPI document of a router serving ``routes``."""
    settings = routes.router
    models = sorted(routes.models)
    max_tokens = max((m.max_output_len for m in routes.models.values()), default=INT32_MAX)
    secured = settings.api_keys_env is not None or settings.api_keys_file is not None
    models_op = _get("The models this router serves", _ref("ModelList"))
    if secured:
        models_op["security"] = [{"bearer": []}]
        models_op["responses"]["401"] = _error_response("Missing or invalid API key")
    ready = _get("Every model has a ready replica in each pool it needs", _ref("Readiness"))
    ready["responses"]["503"] = {
        "description": "Not ready (or draining)",
        "content": {"application/json": {"schema": _ref("Readiness")}},
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "tritonstack router",
            "version": "1",
            "description": "OpenAI-compatible completions and chat completions over Triton pools",
        },
        "paths": {
            "/v1/completions": {
                "post": _generate("Text completion", "CompletionRequest", "Completion", secured)
            },
            "/v1/chat/completions": {
                "post": _generate("Chat completion", "ChatCompletionRequest", "ChatCompletion", secured)
            },
            "/v1/models": {"get": models_op},
            "/health": {
                "get": _get(
                    "The router process is alive",
                    {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
                )
            },
            "/ready": {"get": ready},
            "/metrics": {"get": _get("Prometheus metrics", {"type": "string"}, "text/plain")},
            "/openapi.json": {"get": _get("This document", {"type": "object"})},
        },
        "components": {"schemas": _schemas(models, max_tokens)},
    }
    if secured:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document
