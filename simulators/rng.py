"""Seeded random streams that do not depend on the order in which they are created.

Each stream is named by the run's seed and a key ("sensor", "gh1-plc/level"). The key is hashed
with BLAKE2b, never Python's `hash()` (salted per process), and fed to numpy's `SeedSequence`,
so a sensor's noise is the same whatever other sensors the registry holds or the caller filters
out, and the same on every machine and Python version.
"""

from __future__ import annotations

import hashlib

import numpy as np


def stable_words(*parts: str) -> tuple[int, ...]:
    """A key as four 32-bit words, the same in every process."""
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=16).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


def stream(seed: int, *key: str) -> np.random.Generator:
    """The random stream of one named part of a simulation run."""
    if seed < 0:
        raise ValueError(f"seed must not be negative, got {seed}")
    sequence = np.random.SeedSequence(entropy=seed, spawn_key=stable_words(*key))
    return np.random.Generator(np.random.PCG64(sequence))


class Streams:
    """The random streams of one run: `streams.get("sensor", key)`. Each name gets its own
    independent stream, so one part drawing more or fewer numbers never shifts another."""

    def __init__(self, seed: int) -> None:
        if seed < 0:
            raise ValueError(f"seed must not be negative, got {seed}")
        self.seed = seed

    def get(self, *key: str) -> np.random.Generator:
        return stream(self.seed, *key)
