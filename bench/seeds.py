"""Every random stream of a run, derived from the run seed and a purpose — the one seed rule.

A run is reproducible and seeds are independent because nothing draws from global RNG state: each part of
a run asks for ``generator(seed, purpose, step, salt)``. The purposes and their derivations are listed
here once; a new random choice adds a purpose to ``PURPOSES`` (its coefficients must give streams no other
purpose gives for small seeds and steps). The simulated features are not run randomness: they follow the
stream file's own ``[simulation] seed`` (world 0), or one derived from it (world k > 0).
"""
from __future__ import annotations

import torch

# purpose -> (a, b, c): seed of the stream = a·run_seed + b·step + c + salt
PURPOSES: dict[str, tuple[int, int, int]] = {
    "heads": (1, 0, 0),                          # non-square heads' initial semi-orthogonal maps
    "batches": (1_000_003, 1, 0),                # each step's shuffling into batches
    "evaluation": (10_007, 0, 1),                # the test pairs each evaluation uses (same at every row)
    "buffer": (7_919 * 1_000_003, 7_919, 0),     # replay buffers (salt: 1 storing, 2 drawing,
                                                 # 3 bench.bridge.PairBuffer's sample of a step)
    "importance": (7_919 * 1_000_033, 7_919, 17),  # EWC's Fisher and MAS's importance batches
    "subspace": (1_000_003 * 7_907, 7_907, 31),  # GPM's sample of a step's inputs
    "validation": (1_000_039, 1_000_037, 101),   # a source's validation pairs (seed = the world, step = source
                                                 # index): the same for every run seed, method and setting
    "order": (0, 1_000_033, 307),                # the k-th task order's permutation (step = k, salt = retry)
    "world": (1, 7_919 * 1_000_037, 409),        # world k's simulation seed (seed = the file's, step = k)
}
WORLD_SALT = 104_729      # the evaluation draws of world k: salt k·WORLD_SALT (a prime: no (seed, world) pair
                          # below it shares a stream with another)


def derive(seed: int, purpose: str, step: int = 0, salt: int = 0) -> int:
    """The integer seed of one random stream: run ``seed``, ``purpose`` (a key of ``PURPOSES``), the step
    it serves and an optional ``salt`` for several streams of one purpose and step."""
    try:
        a, b, c = PURPOSES[purpose]
    except KeyError:
        raise ValueError(f"unknown random-stream purpose {purpose!r}; known: {', '.join(PURPOSES)}") from None
    return (a * int(seed) + b * int(step) + c + int(salt)) % (2 ** 63)


def generator(seed: int, purpose: str, step: int = 0, salt: int = 0) -> torch.Generator:
    """A CPU ``torch.Generator`` for one stream (draw indices on CPU; move them to the heads' device)."""
    return torch.Generator().manual_seed(derive(seed, purpose, step, salt))
