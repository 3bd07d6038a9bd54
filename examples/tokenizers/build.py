"""Build the three small tokenizers shipped in ``examples/tokenizers/`` from ``corpus.txt``.

They exist so that the whole stack (pre/postprocessing, streaming, the chat path, the planner's
lints) runs against real Hugging Face tokenizers with no hub access:

* ``tiny-chat/`` — byte-level BPE (GPT-2/Llama-3 style), special tokens ``<|begin|>``, ``<|end|>``,
  ``<|pad|>``, ``<|system|>``, ``<|user|>``, ``<|assistant|>`` and a Jinja ``chat_template``.
  Characters outside ASCII are several byte tokens, so one token alone can be half a character.
* ``tiny-base/`` — the same vocabulary with **no** chat template: the case of a quantized export that
  lost its template (the planner lints it and points at the sibling ``tiny-chat``).
* ``tiny-sp/`` — SentencePiece-style BPE (``▁`` marks a word start, byte fallback, Llama-style
  decoder that strips the first leading space): decoding one token alone loses its leading space,
  which is exactly what breaks naive token-by-token streaming.

The output is deterministic: rebuilding gives byte-identical files (tests/test_tokenizers.py rebuilds
into a temporary directory and compares with the committed files). Run it from anywhere::

    python examples/tokenizers/build.py            # rewrites the committed tokenizers
    python examples/tokenizers/build.py --out DIR  # builds into DIR instead
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus.txt"

# Training runs on one thread so that no scheduling order can leak into the result.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tokenizers import (
    Tokenizer,
    decoders,
    models,
    pre_tokenizers,
    processors,
    trainers,
)

VOCAB_SIZE = 2000

CHAT_SPECIAL_TOKENS = ["<|begin|>", "<|end|>", "<|pad|>", "<|system|>", "<|user|>", "<|assistant|>"]
SP_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]

# The template marks each turn with its role token and closes it with the eos token, so a model that
# stops at eos stops at the end of its own turn. Unknown roles fail loudly instead of being dropped.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{% if message['role'] not in ['system', 'user', 'assistant'] %}"
    "{{ raise_exception('tiny-chat knows the roles system, user and assistant, not ' + message['role']) }}"
    "{% endif %}"
    "<|{{ message['role'] }}|>\n{{ message['content'] }}<|end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def corpus_lines(corpus: Path) -> list[str]:
    return [line for line in corpus.read_text(encoding="utf-8").splitlines() if line.strip()]


def build_byte_level(lines: list[str]) -> Tokenizer:
    """Byte-level BPE with a beginning-of-text token added by the post-processor."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        special_tokens=CHAT_SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_iterate(lines), trainer=trainer)
    begin_id = tokenizer.token_to_id("<|begin|>")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="<|begin|> $A",
        pair="<|begin|> $A <|begin|> $B",
        special_tokens=[("<|begin|>", begin_id)],
    )
    return tokenizer


def build_sentencepiece_style(lines: list[str]) -> Tokenizer:
    """BPE over ``▁``-marked words with byte fallback and a Llama-style decoder.

    Characters seen only once in the corpus (some CJK, emoji) are left out of the training text, so
    they are encoded as ``<0xNN>`` byte tokens, as in Llama/Mistral tokenizers: streaming must then
    also hold back half characters. (The trainer's own ``limit_alphabet`` breaks frequency ties in
    hash order, which would make the output differ between runs.)
    """
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", fuse_unk=True, byte_fallback=True))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always")
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - 256,
        min_frequency=1,
        special_tokens=SP_SPECIAL_TOKENS,
        show_progress=False,
    )
    tokenizer.train_from_iterator(_iterate(_without_rare_characters(lines)), trainer=trainer)
    # Byte-fallback needs the 256 byte tokens <0x00>..<0xFF> in the vocabulary (not as special tokens:
    # skip_special_tokens must not drop them). They go right after the special tokens, as in Llama.
    spec = json.loads(tokenizer.to_str())
    trained = spec["model"]["vocab"]
    first_regular = len(SP_SPECIAL_TOKENS)
    vocab: dict[str, int] = {}
    for token, index in sorted(trained.items(), key=lambda item: item[1]):
        if index < first_regular:
            vocab[token] = index
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = first_regular + byte
    for token, index in sorted(trained.items(), key=lambda item: item[1]):
        if index >= first_regular and token not in vocab:
            vocab[token] = index + 256
    spec["model"]["vocab"] = vocab
    spec["decoder"] = {
        "type": "Sequence",
        "decoders": [
            {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
            {"type": "ByteFallback"},
            {"type": "Fuse"},
            {"type": "Strip", "content": " ", "start": 1, "stop": 0},
        ],
    }
    rebuilt = Tokenizer.from_str(json.dumps(spec))
    bos_id = rebuilt.token_to_id("<s>")
    rebuilt.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
    )
    return rebuilt


def _iterate(lines: list[str]) -> Iterator[str]:
    yield from lines


def _without_rare_characters(lines: list[str]) -> list[str]:
    counts = Counter(char for line in lines for char in line)
    rare = {char for char, count in counts.items() if count < 2 and not char.isascii()}
    return ["".join(char for char in line if char not in rare) for line in lines]


def tokenizer_config(
    *, bos: str, eos: str, pad: str | None, unk: str | None, chat_template: str | None
) -> dict[str, object]:
    config: dict[str, object] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 4096,
        # Keep decode(a + b) == decode(a) + decode(b) modulo boundaries; the clean-up would turn
        # " ." into "." and make streaming and full decoding disagree.
        "clean_up_tokenization_spaces": False,
        "bos_token": bos,
        "eos_token": eos,
    }
    if pad is not None:
        config["pad_token"] = pad
    if unk is not None:
        config["unk_token"] = unk
    if chat_template is not None:
        config["chat_template"] = chat_template
    return config


def _dump(data: object) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False, sort_keys=False) + "\n").encode("utf-8")


def _tokenizer_json(tokenizer: Tokenizer) -> bytes:
    return _dump(json.loads(tokenizer.to_str()))


def render_all(corpus: Path = CORPUS) -> dict[str, bytes]:
    """Every file of the three tokenizers, as relative path -> bytes (pure; nothing written)."""
    lines = corpus_lines(corpus)
    byte_level = _tokenizer_json(build_byte_level(lines))
    sentencepiece = _tokenizer_json(build_sentencepiece_style(lines))
    chat_special = {"bos": "<|begin|>", "eos": "<|end|>", "pad": "<|pad|>", "unk": None}
    return {
        "tiny-chat/tokenizer.json": byte_level,
        "tiny-chat/tokenizer_config.json": _dump(
            tokenizer_config(**chat_special, chat_template=CHAT_TEMPLATE)
        ),
        "tiny-base/tokenizer.json": byte_level,
        "tiny-base/tokenizer_config.json": _dump(tokenizer_config(**chat_special, chat_template=None)),
        # No pad token, like Llama: preprocessing must fall back to eos for padding.
        "tiny-sp/tokenizer.json": sentencepiece,
        "tiny-sp/tokenizer_config.json": _dump(
            tokenizer_config(bos="<s>", eos="</s>", pad=None, unk="<unk>", chat_template=None)
        ),
    }


def write_all(out_dir: Path, corpus: Path = CORPUS) -> list[Path]:
    written = []
    for relative, content in render_all(corpus).items():
        path = out_dir / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=HERE, help="directory to write into (default: next to this script)"
    )
    parser.add_argument(
        "--corpus", type=Path, default=CORPUS, help="training text (default: corpus.txt here)"
    )
    args = parser.parse_args(argv)
    for path in write_all(args.out, args.corpus):
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
