"""Which replica of a pool serves a request. Pure functions of the candidates and the request hints.

Candidates reach a policy already filtered (ready, not ejected, under the in-flight cap), so every
policy always returns one of them. Load is the router's own in-flight count, corrected by Triton's
reported queue (see replicas.py).

* least in-flight: fewest requests, round-robin among ties (so an idle pool still spreads load);
* round robin;
* session affinity: consistent hashing of the session key with bounded load (a replica takes at
  most ``factor × average`` before the walk moves on), so a hot session cannot bury one replica;
* prefix-aware (approximate): chained hashes of prompt token blocks remembered in a bounded LRU;
  the replica that last served the longest matching prefix wins unless it carries more than
  ``slack`` requests above the least-loaded candidate. Triton exposes no KV-cache event stream, so
  the router's own decisions are the cache model.
"""

from __future__ import annotations

import hashlib
import math
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from generator.router.replicas import Replica
from generator.spec.router import Policy, RouterSettings

__all__ = [
    "Hints",
    "LeastInflight",
    "POLICIES",
    "PolicyKind",
    "PrefixAware",
    "ReplicaPolicy",
    "RoundRobin",
    "SessionAffinity",
    "block_hashes",
    "make_policy",
    "policy_kind",
]


@dataclass(frozen=True)
class Hints:
    session: str | None = None
    blocks: tuple[int, ...] = ()


class ReplicaPolicy(Protocol):
    def choose(self, candidates: Sequence[Replica], hints: Hints) -> Replica: ...


class RoundRobin:
    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[Replica], hints: Hints) -> Replica:
        ordered = sorted(candidates, key=lambda r: r.key)
        pick = ordered[self._next % len(ordered)]
        self._next += 1
        return pick


class LeastInflight:
    def __init__(self) -> None:
        self._next = 0

    def choose(self, candidates: Sequence[Replica], hints: Hints) -> Replica:
        least = min(r.load for r in candidates)
        ties = sorted((r for r in candidates if r.load == least), key=lambda r: r.key)
        pick = ties[self._next % len(ties)]
        self._next += 1
        return pick


def _stable_hash(text: str) -> int:
    # Stable across processes and hosts, so every router worker maps a session the same way.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


class SessionAffinity:
    def __init__(self, load_factor: float, virtual_nodes: int = 64) -> None:
        self.load_factor = load_factor
        self.virtual_nodes = virtual_nodes
        self._fallback = LeastInflight()
        self._members: tuple[str, ...] = ()
        self._ring: list[tuple[int, str]] = []
        self._points: list[int] = []

    def _ring_for(self, keys: tuple[str, ...]) -> None:
        if keys != self._members:
            self._members = keys
            self._ring = sorted(
                (_stable_hash(f"{k}#{v}"), k) for k in keys for v in range(self.virtual_nodes)
            )
            self._points = [p for p, _ in self._ring]

    def choose(self, candidates: Sequence[Replica], hints: Hints) -> Replica:
        if hints.session is None:
            return self._fallback.choose(candidates, hints)
        by_key = {r.key: r for r in candidates}
        self._ring_for(tuple(sorted(by_key)))
        total = sum(r.load for r in candidates) + 1
        capacity = math.ceil(self.load_factor * total / len(candidates))
        start = bisect_left(self._points, _stable_hash(hints.session)) % len(self._ring)
        for step in range(len(self._ring)):
            replica = by_key[self._ring[(start + step) % len(self._ring)][1]]
            if replica.load + 1 <= capacity:
                return replica
        return self._fallback.choose(candidates, hints)


def block_hashes(token_ids: Sequence[int], block_tokens: int) -> tuple[int, ...]:
    """Chained hashes of the full blocks of a prompt: equal hash i ⇔ equal first (i+1) blocks."""
    hashes, previous = [], 0
    for start in range(0, len(token_ids) - block_tokens + 1, block_tokens):
        previous = hash((previous, *token_ids[start : start + block_tokens]))
        hashes.append(previous)
    return tuple(hashes)


@dataclass
class PrefixAware:
    capacity_blocks: int
    load_slack: int
    _owners: OrderedDict[int, str] = field(default_factory=OrderedDict)
    _fallback: LeastInflight = field(default_factory=LeastInflight)
    hits: int = 0
    misses: int = 0

    def choose(self, candidates: Sequence[Replica], hints: Hints) -> Replica:
        by_key = {r.key: r for r in candidates}
        best: Replica | None = None
        for block in hints.blocks:
            owner = self._owners.get(block)
            if owner is None:
                break
            if owner in by_key:
                best = by_key[owner]
        least = min(r.load for r in candidates)
        if best is not None and best.load <= least + self.load_slack:
            self.hits += 1
            pick = best
        else:
            self.misses += 1
            pick = self._fallback.choose(candidates, hints)
        self._remember(hints.blocks, pick.key)
        return pick

    def _remember(self, blocks: tuple[int, ...], key: str) -> None:
        for block in blocks:
            self._owners[block] = key
            self._owners.move_to_end(block)
        while len(self._owners) > self.capacity_blocks:
            self._owners.popitem(last=False)

    def __len__(self) -> int:
        return len(self._owners)


@dataclass(frozen=True)
class PolicyKind:
    """A policy by name: how to build one per pool, and whether it reads the prompt's token ids
    (the router then tokenizes every request, not only those near the input limit)."""

    build: Callable[[RouterSettings], ReplicaPolicy]
    needs_token_ids: bool = False


POLICIES: dict[str, PolicyKind] = {
    "least_inflight": PolicyKind(lambda settings: LeastInflight()),
    "round_robin": PolicyKind(lambda settings: RoundRobin()),
    "session_affinity": PolicyKind(lambda settings: SessionAffinity(settings.affinity_load_factor)),
    "prefix_aware": PolicyKind(
        lambda settings: PrefixAware(settings.prefix_cache_blocks, settings.prefix_load_slack),
        needs_token_ids=True,
    ),
}


def policy_kind(name: Policy) -> PolicyKind:
    """The registered policy ``name``; an unknown name is an error, never a silent fallback."""
    kind = POLICIES.get(name)
    if kind is None:
        raise ValueError(f"unknown routing policy {name!r}; known: {', '.join(sorted(POLICIES))}")
    return kind


def make_policy(name: Policy, settings: RouterSettings) -> ReplicaPolicy:
    return policy_kind(name).build(settings)
