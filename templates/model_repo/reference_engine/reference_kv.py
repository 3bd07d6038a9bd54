"""Paged KV cache bookkeeping of the tritonstack reference engine, with prefix reuse.

The reference engine stores no tensors; it keeps the same block accounting a TensorRT-LLM KV cache
manager keeps, so that admission, waiting, reuse and the ``nv_trt_llm_kv_cache_block_metrics``
gauges behave like the real thing:

* a fixed pool of blocks of ``tokens_per_block`` tokens;
* a full block is identified by a hash chain over its token prefix (block i's key covers tokens
  0 .. (i+1)*tokens_per_block), so two prompts share blocks exactly as far as they share a prefix;
* with reuse enabled, a block whose last user finished stays cached (refcount 0) and is handed to
  the next request with the same prefix; cached blocks are evicted least-recently-used first;
* admission reserves every block the sequence can ever need (prompt + output budget), like TRT-LLM's
  ``guaranteed_no_evict`` scheduler: a running sequence never stalls for memory, and a request that
  does not fit waits until others finish. A request larger than the whole pool is refused up front,
  so waiting can never deadlock.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass, field

__all__ = ["BlockAllocation", "KvBlockPool", "KvStats"]


@dataclass
class BlockAllocation:
    """The blocks one sequence holds, and the blocks reserved for the tokens it may still produce."""

    blocks: list[int] = field(default_factory=list)
    reserved: int = 0
    reused_blocks: int = 0
    new_blocks: int = 0

    @property
    def total_blocks(self) -> int:
        return len(self.blocks)


@dataclass(frozen=True)
class KvStats:
    max_blocks: int
    free_blocks: int
    used_blocks: int
    tokens_per_block: int
    reused_blocks_total: int

    @property
    def used_fraction(self) -> float:
        return self.used_blocks / self.max_blocks if self.max_blocks else 0.0


class KvBlockPool:
    """Block accounting; not thread-safe (the engine's scheduler thread is its only user)."""

    def __init__(self, num_blocks: int, tokens_per_block: int, reuse: bool) -> None:
        if num_blocks < 1 or tokens_per_block < 1:
            raise ValueError("the KV cache needs at least one block of at least one token")
        self.num_blocks = num_blocks
        self.tokens_per_block = tokens_per_block
        self.reuse = reuse
        self._fresh: deque[int] = deque(range(num_blocks))  # free, holding nothing reusable
        self._cached: OrderedDict[int, None] = OrderedDict()  # free but reusable, LRU first
        self._refs = [0] * num_blocks
        self._key_of_block: dict[int, int] = {}
        self._block_of_key: dict[int, int] = {}
        self._reserved = 0
        self._reused_total = 0

    # ----------------------------------------------------------------------------- queries

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.tokens_per_block)

    def fits_ever(self, prompt_len: int, max_new_tokens: int) -> bool:
        return self.blocks_for(prompt_len + max_new_tokens) <= self.num_blocks

    def stats(self) -> KvStats:
        free = len(self._fresh) + len(self._cached)
        return KvStats(
            max_blocks=self.num_blocks,
            free_blocks=free,
            used_blocks=self.num_blocks - free,
            tokens_per_block=self.tokens_per_block,
            reused_blocks_total=self._reused_total,
        )

    def prefix_keys(self, tokens: list[int]) -> list[int]:
        """Hash-chain keys of every full block of ``tokens``."""
        keys = []
        parent = 0
        size = self.tokens_per_block
        for start in range(0, len(tokens) - size + 1, size):
            parent = hash((parent, tuple(tokens[start : start + size])))
            keys.append(parent)
        return keys

    # ----------------------------------------------------------------------------- admission

    def admit(self, prompt: list[int], max_new_tokens: int) -> BlockAllocation | None:
        """Take the prompt's blocks (reusing cached ones) and reserve the rest; None if it must wait."""
        size = self.tokens_per_block
        total_needed = self.blocks_for(len(prompt) + max_new_tokens)
        prompt_blocks = self.blocks_for(len(prompt))
        keys = self.prefix_keys(prompt)
        hits: list[int] = []
        if self.reuse:
            # The last prompt token is always recomputed (it yields the first output token), so only
            # blocks entirely inside prompt[:-1] can be reused, as in TensorRT-LLM.
            for key in keys[: (len(prompt) - 1) // size]:
                block = self._block_of_key.get(key)
                if block is None:
                    break
                hits.append(block)
        hits_from_cache = sum(1 for b in hits if self._refs[b] == 0)
        available = len(self._fresh) + len(self._cached) - self._reserved
        if (total_needed - len(hits)) + hits_from_cache > available:
            return None
        allocation = BlockAllocation()
        for block in hits:
            self._take_shared(block)
            allocation.blocks.append(block)
        allocation.reused_blocks = len(hits)
        self._reused_total += len(hits)
        for index in range(len(hits), prompt_blocks):
            block = self._take_free()
            if self.reuse and index < len(keys):
                self._register(block, keys[index])
            allocation.blocks.append(block)
        allocation.new_blocks = prompt_blocks - len(hits)
        allocation.reserved = total_needed - prompt_blocks
        self._reserved += allocation.reserved
        return allocation

    def grow(self, allocation: BlockAllocation, total_tokens: int) -> None:
        """Give the sequence the blocks it needs to hold ``total_tokens`` (from its reservation)."""
        while len(allocation.blocks) * self.tokens_per_block < total_tokens:
            if allocation.reserved <= 0:
                raise RuntimeError("sequence outgrew its KV reservation")  # a bug, not a user error
            allocation.reserved -= 1
            self._reserved -= 1
            allocation.blocks.append(self._take_free())
            allocation.new_blocks += 1

    def release(self, allocation: BlockAllocation, tokens: list[int]) -> None:
        """Return the sequence's blocks; with reuse, full blocks stay cached under their prefix key."""
        keys = self.prefix_keys(tokens) if self.reuse else []
        for index, block in enumerate(allocation.blocks):
            if (
                index < len(keys)
                and block not in self._key_of_block
                and keys[index] not in self._block_of_key
            ):
                self._register(block, keys[index])
            self._refs[block] -= 1
            if self._refs[block] > 0:
                continue
            if block in self._key_of_block:
                self._cached[block] = None
                self._cached.move_to_end(block)
            else:
                self._fresh.append(block)
        allocation.blocks = []
        self._reserved -= allocation.reserved
        allocation.reserved = 0

    # ----------------------------------------------------------------------------- internals

    def _take_shared(self, block: int) -> None:
        if self._refs[block] == 0:
            del self._cached[block]
        self._refs[block] += 1

    def _take_free(self) -> int:
        if self._fresh:
            block = self._fresh.popleft()
        else:
            block, _ = self._cached.popitem(last=False)  # evict the least recently used
            del self._block_of_key[self._key_of_block.pop(block)]
        self._refs[block] = 1
        return block

    def _register(self, block: int, key: int) -> None:
        if key in self._block_of_key or block in self._key_of_block:
            return
        self._key_of_block[block] = key
        self._block_of_key[key] = block
