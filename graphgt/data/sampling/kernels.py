"""Compiled kernels of the neighbourhood samplers (numba, single-threaded).

Every kernel is ``@njit(cache=True)`` and sequential: the parallelism of sampled training comes
from the loader's worker processes (forked workers and numba's threading layers do not mix), and a
kernel call samples one mini-batch, so it should stay within the cache of one core.

Three building blocks:

**Random numbers.**  A SplitMix64 generator whose whole state is one ``uint64`` (kept in a
one-element array so that helpers can advance it).  Each batch is sampled from an explicit seed
(:func:`mix_seed`), never from a global generator, so a batch is a pure function of
``(graph, seeds, fan-outs, seed)`` whichever process computes it.  Integers below ``n`` use
Lemire's multiply-shift with rejection, which is exactly uniform:

.. math::
    m = r_{32} \\cdot n,\\quad \\text{accept if } (m \\bmod 2^{32}) \\ge (2^{32} \\bmod n),
    \\quad \\text{return } \\lfloor m / 2^{32} \\rfloor .

**Hash map global id -> local id.**  Open addressing with linear probing in one interleaved
``int64`` array ``[key0, val0, key1, val1, ...]`` of ``2 * 2**bits`` entries (``-1`` = empty
slot); the slot of a key is Fibonacci hashing, the top ``bits`` bits of ``key * 0x9E37...``.  The
table is sized to the batch (kept at most half full, grown between hops), so no ``O(N)`` array is
touched per batch and a batch's map stays in cache.

**Sampling k of d without replacement.**  Robert Floyd's algorithm draws ``k`` distinct positions
out of ``range(d)`` with exactly ``k`` random numbers and no ``O(d)`` work (hubs of degree 10^6
cost as much as any node)::

    for j in range(d - k, d):
        t = randint(0, j)            # inclusive
        take(j if t already taken else t)

Every ``k``-subset is equally likely.  "Already taken" is a linear scan for small ``k`` and a
small per-target hash set for ``k > 32``.
"""
from __future__ import annotations

import numpy as np
from numba import njit

#: 2**64 / golden ratio, the multiplier of Fibonacci hashing and SplitMix64's increment.
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_SMALL_K = 32  # fan-outs up to this use a linear "already taken" scan in Floyd's algorithm

#: status codes returned by the kernels (the Python wrappers turn them into exceptions)
OK = 0
DUPLICATE_SEED = 1


# --------------------------------------------------------------------------- random numbers
def mix_seed(*parts: int) -> int:
    """A 63-bit seed from integers (e.g. ``(seed, epoch, batch index)``), well mixed.

    Uses numpy's ``SeedSequence`` hashing, so nearby tuples give unrelated streams.
    """
    words = np.random.SeedSequence([int(p) & 0xFFFFFFFFFFFFFFFF for p in parts]).generate_state(2, np.uint32)
    return int((int(words[0]) << 31) ^ int(words[1])) & 0x7FFFFFFFFFFFFFFF


@njit(cache=True)
def _rng_init(seed):
    state = np.empty(1, np.uint64)
    state[0] = np.uint64(seed) ^ np.uint64(0x5DEECE66D)
    return state


@njit(cache=True)
def _next_u64(state):
    """SplitMix64: advance the state by the golden increment and return its mixed value."""
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True)
def _randbelow(state, n):
    """A uniform integer in ``[0, n)`` (``n >= 1``), Lemire's method with rejection."""
    if n >= 4294967296:  # beyond 32 bits (never for real degrees): modulo of 64 random bits
        return np.int64(_next_u64(state) % np.uint64(n))
    un = np.uint64(n)
    m = (_next_u64(state) >> np.uint64(32)) * un
    low = m & _LOW32
    if low < un:
        threshold = (np.uint64(4294967296) - un) % un
        while low < threshold:
            m = (_next_u64(state) >> np.uint64(32)) * un
            low = m & _LOW32
    return np.int64(m >> np.uint64(32))


# --------------------------------------------------------------------------- hash map
@njit(cache=True)
def _bits_for(count):
    """Smallest ``bits >= 4`` with ``2**bits >= 2 * count`` (load factor at most 1/2)."""
    bits = 4
    while (np.int64(1) << bits) < 2 * count:
        bits += 1
    return bits


@njit(cache=True)
def _slot(key, bits):
    return np.int64((np.uint64(key) * _GOLDEN) >> np.uint64(64 - bits))


@njit(cache=True)
def _set_probe(set_keys, set_stamp, stamp, key, bits):
    """Look ``key`` up in a stamped open-addressing set (a slot belongs to the current set when its
    stamp equals ``stamp``): ``(slot, True)`` where it is, or ``(free slot for it, False)``."""
    mask = (np.int64(1) << bits) - 1
    i = _slot(key, bits)
    while set_stamp[i] == stamp:
        if set_keys[i] == key:
            return i, True
        i = (i + 1) & mask
    return i, False


@njit(cache=True)
def map_new(bits):
    """An empty map of ``2**bits`` slots."""
    return np.full(2 * (np.int64(1) << bits), -1, np.int64)


@njit(cache=True)
def map_new_like(bits, like):
    """An empty map of ``2**bits`` slots whose keys and values have ``like``'s dtype (int32 for graphs
    below 2**31 nodes: half the bytes per slot, so a batch's map stays in a faster cache level)."""
    return np.full(2 * (np.int64(1) << bits), -1, like.dtype)


@njit(cache=True)
def map_get_or_insert(table, bits, key, val):
    """The value of ``key`` if present (``>= 0``); otherwise insert ``key -> val`` and return -1."""
    mask = (np.int64(1) << bits) - 1
    i = _slot(key, bits)
    while True:
        k = table[2 * i]
        if k == -1:
            table[2 * i] = key
            table[2 * i + 1] = val
            return -1
        if k == key:
            return table[2 * i + 1]
        i = (i + 1) & mask


@njit(cache=True)
def map_grow(table, bits, new_bits):
    """A copy of ``table`` with ``2**new_bits`` slots (every entry re-inserted)."""
    out = np.full(2 * (np.int64(1) << new_bits), -1, table.dtype)
    for s in range(np.int64(1) << bits):
        k = table[2 * s]
        if k != -1:
            map_get_or_insert(out, new_bits, k, table[2 * s + 1])
    return out


@njit(cache=True)
def map_get(table, bits, key):
    """The value of ``key``, or -1 when it is absent (nothing is inserted)."""
    mask = (np.int64(1) << bits) - 1
    i = _slot(key, bits)
    while True:
        k = table[2 * i]
        if k == -1:
            return -1
        if k == key:
            return table[2 * i + 1]
        i = (i + 1) & mask


# --------------------------------------------------------------------------- small helpers
@njit(cache=True)
def _grow_1d(buf, need):
    """``buf`` if it holds ``need`` entries, else a copy at least twice as long."""
    if buf.shape[0] >= need:
        return buf
    size = max(need, 2 * buf.shape[0])
    out = np.empty(size, buf.dtype)
    out[: buf.shape[0]] = buf
    return out


@njit(cache=True)
def _floyd(state, d, k, chosen, set_keys, set_stamp, stamp, set_bits):
    """Write ``k`` distinct uniform positions of ``range(d)`` (``k < d``) into ``chosen[:k]``.

    For ``k <= 32`` membership is a scan of ``chosen``; otherwise a hash set whose slots are valid
    when ``set_stamp[slot] == stamp`` (so it never needs clearing).
    """
    c = 0
    if k <= _SMALL_K:
        for j in range(d - k, d):
            t = _randbelow(state, j + 1)
            for q in range(c):
                if chosen[q] == t:
                    t = j
                    break
            chosen[c] = t
            c += 1
        return
    for j in range(d - k, d):
        t = _randbelow(state, j + 1)
        # is t taken?  (j itself is never taken yet: earlier draws are all < j)
        i, taken = _set_probe(set_keys, set_stamp, stamp, t, set_bits)
        if taken:
            t = j
            i = _set_probe(set_keys, set_stamp, stamp, t, set_bits)[0]
        set_stamp[i] = stamp
        set_keys[i] = t
        chosen[c] = t
        c += 1


# --------------------------------------------------------------------------- neighbour sampling
@njit(cache=True)
def sample_neighbors(indptr, indices, seeds, fanouts, rng_seed):
    """Multi-hop neighbour sampling without replacement (GraphSAGE / PyG ``NeighborLoader`` style).

    Hop ``h`` expands the nodes that were new at hop ``h - 1`` (the seeds at hop 0): for each
    such target ``t`` of degree ``d`` it takes ``min(d, fanouts[h])`` distinct CSR entries of row
    ``t`` uniformly at random (all of them when ``d <= fanouts[h]`` or ``fanouts[h] < 0``), adds
    unseen neighbours to the node list and emits one edge (neighbour -> t) per entry.

    Args:
        indptr: int64 ``[N + 1]`` CSR row pointers.
        indices: int32/int64 ``[E]`` CSR columns.
        seeds: int64 ``[B]`` distinct seed node ids.
        fanouts: int64 ``[L]`` per-hop fan-outs (``-1`` = all neighbours).
        rng_seed: int64 seed of this batch's generator.

    Returns:
        ``(status, node_ids int64 [n], src int64 [E'], dst int64 [E'], nodes_per_hop int64
        [L + 1], edges_per_hop int64 [L])`` with ``src``/``dst`` local ids (positions in
        ``node_ids``); ``status`` is :data:`OK` or :data:`DUPLICATE_SEED` (then the arrays are
        empty).
    """
    b = seeds.shape[0]
    num_hops = fanouts.shape[0]
    nodes_per_hop = np.zeros(num_hops + 1, np.int64)
    edges_per_hop = np.zeros(num_hops, np.int64)
    state = _rng_init(rng_seed)

    bits = _bits_for(max(b, 8))
    table = map_new_like(bits, indices)
    num_nodes = indptr.shape[0] - 1
    nodes = np.empty(max(b, 16), np.int64)
    for j in range(b):
        if map_get_or_insert(table, bits, seeds[j], j) != -1:
            return (DUPLICATE_SEED, nodes[:0], nodes[:0], nodes[:0], nodes_per_hop, edges_per_hop)
        nodes[j] = seeds[j]
    n = b
    nodes_per_hop[0] = b

    max_fanout = 1
    for h in range(num_hops):
        max_fanout = max(max_fanout, fanouts[h])
    chosen = np.empty(max_fanout, np.int64)
    set_bits = _bits_for(max_fanout)
    set_keys = np.empty(np.int64(1) << set_bits, np.int64)
    set_stamp = np.zeros(np.int64(1) << set_bits, np.int64)
    stamp = 0

    src = np.empty(16, np.int64)
    dst = np.empty(16, np.int64)
    e = 0
    start, stop = 0, b
    for h in range(num_hops):
        f = fanouts[h]
        # exact number of edges of this hop (also a bound on its new nodes): grow buffers once
        count = 0
        for t in range(start, stop):
            v = nodes[t]
            d = indptr[v + 1] - indptr[v]
            count += d if (f < 0 or d <= f) else f
        src = _grow_1d(src, e + count)
        dst = _grow_1d(dst, e + count)
        nodes = _grow_1d(nodes, n + count)
        new_bits = _bits_for(min(n + count, num_nodes))  # distinct nodes never exceed the graph's
        if new_bits > bits:
            table = map_grow(table, bits, new_bits)
            bits = new_bits
        e0 = e
        for t in range(start, stop):
            v = nodes[t]
            lo = indptr[v]
            d = indptr[v + 1] - lo
            if f < 0 or d <= f:
                for p in range(lo, lo + d):
                    u = np.int64(indices[p])
                    lu = map_get_or_insert(table, bits, u, n)
                    if lu == -1:
                        nodes[n] = u
                        lu = n
                        n += 1
                    src[e] = lu
                    dst[e] = t
                    e += 1
            else:
                stamp += 1
                _floyd(state, d, f, chosen, set_keys, set_stamp, stamp, set_bits)
                for q in range(f):
                    u = np.int64(indices[lo + chosen[q]])
                    lu = map_get_or_insert(table, bits, u, n)
                    if lu == -1:
                        nodes[n] = u
                        lu = n
                        n += 1
                    src[e] = lu
                    dst[e] = t
                    e += 1
        nodes_per_hop[h + 1] = n - stop
        edges_per_hop[h] = e - e0
        start, stop = stop, n
    return (OK, nodes[:n], src[:e], dst[:e], nodes_per_hop, edges_per_hop)


# --------------------------------------------------------------------------- random-node subgraphs
@njit(cache=True)
def sample_random_nodes(indptr, indices, seeds, threshold, rng_seed):
    """The subgraph induced on the seeds plus random context nodes (GraphSAINT's node sampler with
    uniform probabilities; one part of PyG's ``RandomNodeLoader`` when ``threshold / 2**64 = 1/parts``).

    Every node ``v`` of ``0..N-1`` draws one 64-bit number ``r_v`` (in id order, from this batch's
    generator) and joins as context when ``r_v < threshold`` and it is not a seed.  The edges are every
    CSR entry ``u`` of a kept node ``t`` whose ``u`` is kept too, one edge ``u -> t`` each, grouped by
    target in node order.

    Args:
        indptr, indices: the CSR (int64 ``[N + 1]``, int32/int64 ``[E]``).
        seeds: int64 ``[B]`` distinct node ids, local ids ``0..B-1``.
        threshold: uint64, the probability of a non-seed node times ``2**64``.
        rng_seed: int64 seed of this batch's generator.

    Returns:
        ``(status, node_ids int64 [n], src int64 [E'], dst int64 [E'])``: seeds first (given order),
        then the context nodes in id order; ``src``/``dst`` local ids; ``status`` :data:`OK` or
        :data:`DUPLICATE_SEED` (then the arrays are empty).
    """
    b = seeds.shape[0]
    num_nodes = indptr.shape[0] - 1
    state = _rng_init(rng_seed)
    bits = _bits_for(max(b, 8))
    table = map_new_like(bits, indices)
    for j in range(b):
        if map_get_or_insert(table, bits, seeds[j], j) != -1:
            return (DUPLICATE_SEED, np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.int64))
    nodes = np.empty(max(b + 16, 16), np.int64)
    nodes[:b] = seeds
    n = b
    for v in range(num_nodes):
        if _next_u64(state) < threshold and map_get(table, bits, v) == -1:
            nodes = _grow_1d(nodes, n + 1)
            nodes[n] = v
            n += 1
    new_bits = _bits_for(max(n, 8))
    if new_bits != bits:
        table = map_grow(table, bits, new_bits)
        bits = new_bits
    for j in range(b, n):
        map_get_or_insert(table, bits, nodes[j], j)
    src = np.empty(max(16, 4 * n), np.int64)
    dst = np.empty(max(16, 4 * n), np.int64)
    e = 0
    for t in range(n):
        v = nodes[t]
        for k in range(indptr[v], indptr[v + 1]):
            lu = map_get(table, bits, np.int64(indices[k]))
            if lu >= 0:
                if e == src.shape[0]:
                    src = _grow_1d(src, e + 1)
                    dst = _grow_1d(dst, e + 1)
                src[e] = lu
                dst[e] = t
                e += 1
    return (OK, nodes[:n].copy(), src[:e].copy(), dst[:e].copy())


# --------------------------------------------------------------------------- token sampling
@njit(cache=True)
def sample_tokens(indptr, indices, seeds, num_tokens, include_seed, hop2_fanout, repeat, rng_seed):
    """LargeGT-style tokens: for each seed, tokens drawn from its 1-hop and 2-hop neighbourhood.

    For seed ``s`` the candidates are the distinct nodes at shortest-path distance 1 and 2
    (``N1 = N(s) \\ {s}``, ``N2 = (∪_{u ∈ N1'} N(u)) \\ (N1 ∪ {s})`` where ``N1'`` is ``N1`` or,
    with ``hop2_fanout >= 0``, a uniform sample of ``hop2_fanout`` of its nodes, bounding the work
    of hubs).  ``m = num_tokens - include_seed`` of them are drawn uniformly without replacement
    (partial Fisher-Yates over the candidate list), every candidate equally likely whatever its
    hop, so the 1-hop/2-hop mix follows the neighbourhood's own proportions as in LargeGT.

    When there are ``c < m`` candidates, the remaining slots are padding (``mask = False``,
    ``hop = -1``, token = the seed) or, with ``repeat``, the ``c`` drawn candidates cycled again
    (``mask = True``) as LargeGT does; a seed without neighbours always gets padding.

    Returns:
        ``(tokens int64 [B, K], hop int8 [B, K], mask bool [B, K], num_candidates int64 [B])``;
        hop is 0 for the seed itself, 1 or 2 for neighbours, -1 for padding.
    """
    b = seeds.shape[0]
    k = num_tokens
    tokens = np.empty((b, k), np.int64)
    hops = np.full((b, k), -1, np.int8)
    mask = np.zeros((b, k), np.bool_)
    num_cand = np.zeros(b, np.int64)
    state = _rng_init(rng_seed)
    off = 1 if include_seed else 0
    m = k - off

    cand = np.empty(16, np.int64)
    cand_hop = np.empty(16, np.int8)
    bits = 4
    set_keys = np.empty(np.int64(1) << bits, np.int64)
    set_stamp = np.zeros(np.int64(1) << bits, np.int64)
    stamp = 0
    for r in range(b):
        s = seeds[r]
        lo_s = indptr[s]
        hi_s = indptr[s + 1]
        # bound on the candidates: deg(s) + sum of the degrees of its neighbours
        bound = hi_s - lo_s
        for p in range(lo_s, hi_s):
            u = indices[p]
            bound += indptr[u + 1] - indptr[u]
        cand = _grow_1d(cand, bound + 1)
        if cand_hop.shape[0] < bound + 1:
            cand_hop = np.empty(cand.shape[0], np.int8)
        need_bits = _bits_for(bound + 1)
        if need_bits > bits:
            bits = need_bits
            set_keys = np.empty(np.int64(1) << bits, np.int64)
            set_stamp = np.zeros(np.int64(1) << bits, np.int64)
            stamp = 0
        stamp += 1

        # insert s, then N1, then N2 into the stamped set; candidates collect the new ones
        c = -1  # the seed takes no candidate slot
        c1 = 0
        for level in range(3):
            if level == 0:
                first, last = 0, 1
            elif level == 1:
                first, last = lo_s, hi_s
            else:
                first, last = 0, c1
                if hop2_fanout >= 0 and c1 > hop2_fanout:
                    # partial Fisher-Yates: a uniform subset of the 1-hop nodes to expand
                    for q in range(hop2_fanout):
                        j = q + _randbelow(state, c1 - q)
                        tmp = cand[q]
                        cand[q] = cand[j]
                        cand[j] = tmp
                    last = hop2_fanout
            for pos in range(first, last):
                if level == 0:
                    lo, hi = np.int64(0), np.int64(1)
                elif level == 1:
                    lo, hi = pos, pos + 1
                else:
                    u = cand[pos]
                    lo, hi = indptr[u], indptr[u + 1]
                for p in range(lo, hi):
                    if level == 0:
                        w = np.int64(s)
                    else:
                        w = np.int64(indices[p])
                    i, seen = _set_probe(set_keys, set_stamp, stamp, w, bits)
                    if seen:
                        continue
                    set_stamp[i] = stamp
                    set_keys[i] = w
                    if c >= 0:
                        cand[c] = w
                        cand_hop[c] = level
                    c += 1
            if level == 0:
                c = 0
            elif level == 1:
                c1 = c
        num_cand[r] = c

        if include_seed:
            tokens[r, 0] = s
            hops[r, 0] = 0
            mask[r, 0] = True
        take = min(m, c)
        for q in range(take):  # partial Fisher-Yates: cand[:take] becomes a uniform sample
            j = q + _randbelow(state, c - q)
            tmp = cand[q]
            cand[q] = cand[j]
            cand[j] = tmp
            th = cand_hop[q]
            cand_hop[q] = cand_hop[j]
            cand_hop[j] = th
            tokens[r, off + q] = cand[q]
            hops[r, off + q] = cand_hop[q]
            mask[r, off + q] = True
        for q in range(take, m):
            if repeat and take > 0:
                tokens[r, off + q] = cand[q % take]
                hops[r, off + q] = cand_hop[q % take]
                mask[r, off + q] = True
            else:
                tokens[r, off + q] = s
    return tokens, hops, mask, num_cand
