"""Synthetic graphs of the *shape* of ogbn-products and ogbn-papers100M, streamed into a graph store.

The real datasets need a download (and papers100M about 60 GB of RAM to load naively); these have
the same node and edge counts, feature widths and dtypes, class counts, split sizes and a power-law
degree distribution, carry learnable signal in both the features and the graph, are generated from a
seed, and are written straight into a :mod:`graph store <graphgt.data.store>` without ever holding
the edge list or the feature matrix in RAM (the full papers shape builds in a few GiB).

The model (a degree-corrected stochastic block model sampled Chung-Lu style, table-free)
--------------------------------------------------------------------------------------------------
* **Nodes.**  ``C`` classes, ``N`` nodes.  Slot ``i in [0, N)`` has class ``c = i mod C`` and rank
  ``r = i div C`` within its class (class ``c`` has ``R_c = ceil((N - c) / C)`` ranks, so the classes
  are balanced to one node).  The node id of slot ``i`` is the affine bijection
  ``node = (a * i + b) mod N`` with ``gcd(a, N) = 1`` (``a``, ``b`` drawn from the seed): ids are
  scrambled, so hubs and classes are spread over the id range as in a real graph, and the class of
  any node is recovered by inverting the map, ``i = a^-1 (node - b) mod N`` (:func:`node_classes`).
* **Edges.**  Candidate ``k = 0, 1, 2, ...`` is a function of ``(seed, k)`` only (SplitMix64 of a
  counter): endpoint ``u`` has a uniform class ``c_u`` and a rank drawn with probability
  ``P(r) ~ (r + 1)^-alpha`` (inverse CDF of the continuous power law on ``[1, R + 1)``, floored,
  so no tables); endpoint ``v`` is in class ``c_u`` with probability ``homophily``, else in a
  uniformly random class (possibly ``c_u`` again), with a rank drawn the same way.  The expected
  degree of a rank-``r`` node is ``~ (r + 1)^-alpha``: a power-law degree tail with exponent
  ``1 + 1/alpha``, and the largest degree grows like ``N^alpha``.  The edge homophily is about
  ``homophily + (1 - homophily) / C`` (a little lower after de-duplication, which removes more
  intra-class hub-hub repeats; the built value is recorded in ``meta["generator"]``).
* **Exact edge count.**  Self loops are dropped, and every unordered pair ``{u, v}`` keeps the index
  ``first(u, v)`` of its first candidate.  The graph is the ``E`` pairs with the smallest ``first``
  (equivalently: the distinct pairs of the shortest candidate prefix that holds ``E`` of them), so
  it has exactly ``E`` distinct undirected edges, stored in both directions, no self loops, no
  duplicates, each row sorted.  The number of candidates used and the self loops and duplicates
  removed are recorded in ``meta["generator"]["edges"]``.
* **Features.**  ``x[n] = signal * mu[class(n)] + eps[n]`` with ``mu_c`` random unit vectors (from the
  seed) and ``eps`` approximately standard normal (the sum of twelve uniforms minus six: unit
  variance) from a counter-based hash of ``(seed, n, f)``, so every row is computed independently
  and in parallel.
* **Labels and splits.**  ``y`` int16 ``[N]`` is the class of the labelled nodes and ``-1`` elsewhere;
  the labelled nodes are a uniformly random subset (from the seed) cut into ``split/train|val|test``
  (each stored sorted).

Every array depends on the seed and the shape only: not on the chunk size, the number of buckets,
the memory budget or the number of threads.

Building: a counting pass and a fill pass over node-range buckets
------------------------------------------------------------------
The candidate stream is never stored; it is regenerated (in chunks, in parallel) once per pass and
bucket.  *Pass 0* counts, per node, the candidates it is an endpoint of (an upper bound of its
degree) and the candidates it is the smaller endpoint of.  *Pass 1* (buckets of smaller endpoints)
places each canonical candidate ``(max << 32) | k`` into its row, sorts and de-duplicates every row
and finds the threshold ``T`` = the ``E``-th smallest ``first(u, v)`` (only the ``first`` values at
or above ``E - 1`` are kept, since the ``E``-th smallest of ``E`` distinct integers is at least
``E - 1``).  *Pass 2* (buckets of rows, in node order) places both directions of the candidates
``k <= T``, sorts and de-duplicates every row, and appends the rows to ``indices.npy``; then the
degrees give ``indptr.npy``; labels, splits and features are streamed in node chunks.  Memory: two
``int32 [N]`` count arrays, one bucket buffer (``mem_budget``, 8 bytes per candidate of a bucket)
and ~30 bytes per row of a bucket; the number of buckets (passes over the candidate stream) is
``~8E / mem_budget`` in pass 1 and ``~16E / mem_budget`` in pass 2.

Measured on 2 shared CPU cores (``NUMBA_NUM_THREADS=2``), default ``mem_budget`` (4 GiB):
products shape (scale 1): 29.5 s, peak RSS 1.7 GiB, 1.41 GiB on disk; papers shape at fraction
0.02: 19 s, 1.2 GiB; papers at fraction 0.1 with ``mem_budget`` scaled to 0.4 GiB (the full
shape's bucket counts: 4 and 7): 75-160 s (a busy machine), 1.22 GiB.  Extrapolated full papers
shape: ~15-25 min on 2 cores, peak RSS ~8.5 GiB, ~42 GB on disk.
"""
from __future__ import annotations

import math
import resource
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple, Union

import numba
import numpy as np
from numba import njit, prange

from graphgt.errors import ConfigError
from graphgt.data.store.core import GraphStore, StoreWriter, iter_chunks

# ----------------------------------------------------------------------------------------- shapes

#: ogbn-products: nodes, undirected edges, features, classes, split sizes (all nodes labelled).
PRODUCTS = dict(num_nodes=2_449_029, num_edges=61_859_140, num_features=100, num_classes=47,
                feature_dtype="float32", train=196_615, val=39_323, test=2_213_091)
#: ogbn-papers100M: about 1.4% of the nodes are labelled (the arXiv papers).
PAPERS = dict(num_nodes=111_059_956, num_edges=1_615_685_872, num_features=128, num_classes=172,
              feature_dtype="float16", train=1_207_179, val=125_265, test=214_338)

#: Generator parameters of the presets: power-law exponent of the within-class rank weights,
#: probability that an edge stays in its class, norm of the class means (noise has unit variance).
#: Chosen for the real datasets' gap between feature-only and graph models (products: MLP ~61%,
#: GNNs ~80%; papers100M: ~47% / ~67%).  Measured on the built stores, logistic regression on ``x``
#: vs on ``[x, mean of the neighbours' x]``: products 58.3% -> 81.5%, papers (fraction 0.02) 49.2% ->
#: 70.8% (majority class 2.2% / 0.7%).  Neighbour means average ~20-50 nodes, so a modest edge
#: homophily (0.22 / 0.25 after the uniform-class part) already carries much signal; the max degree
#: is ~18k (products, like the real 17k) and ~30k (full papers, extrapolated from N^alpha).
PRODUCTS_MODEL = dict(alpha=2.0 / 3.0, homophily=0.20, signal=2.5)
PAPERS_MODEL = dict(alpha=0.60, homophily=0.25, signal=3.0)

GiB = 1 << 30


@dataclass(frozen=True)
class ShapeSpec:
    """Everything that determines a synthetic graph, together with the seed.

    Args:
        name: dataset name written into ``meta.json``.
        num_nodes: ``N`` (``2 <= N < 2**31``).
        num_edges: number of distinct undirected edges ``E`` (the store holds ``2E`` CSR entries).
        num_features: feature width ``F``.
        num_classes: ``C`` (``2 <= C <= 32767``: labels are int16).
        feature_dtype: ``"float32"`` or ``"float16"``.
        train: number of training nodes (likewise ``val`` and ``test``); the three splits are
            disjoint and together are the labelled nodes.
        alpha: power-law exponent of the rank weights ``(r + 1)^-alpha`` (``>= 0``; degree tail
            exponent ``1 + 1/alpha``).
        homophily: probability that an edge's second endpoint is drawn from the first endpoint's
            class (else from a uniformly random class), in ``[0, 1]``.
        signal: norm of the class means of the features.
    """

    name: str
    num_nodes: int
    num_edges: int
    num_features: int
    num_classes: int
    feature_dtype: str
    train: int
    val: int
    test: int
    alpha: float
    homophily: float
    signal: float

    @property
    def num_labelled(self) -> int:
        return self.train + self.val + self.test

    def check(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        n, c = self.num_nodes, self.num_classes
        if not 2 <= n < 2 ** 31:
            raise ConfigError(f"{self.name}: num_nodes must be in [2, 2**31), got {n}")
        if not 2 <= c <= 32767:
            raise ConfigError(f"{self.name}: num_classes must be in [2, 32767] (labels are int16), got {c}")
        if c > n:
            raise ConfigError(f"{self.name}: num_classes={c} exceeds num_nodes={n}; raise the scale/fraction")
        if self.num_features < 1:
            raise ConfigError(f"{self.name}: num_features must be >= 1, got {self.num_features}")
        if np.dtype(self.feature_dtype) not in (np.dtype(np.float32), np.dtype(np.float16)):
            raise ConfigError(f"{self.name}: feature_dtype must be 'float32' or 'float16', got {self.feature_dtype!r}")
        if min(self.train, self.val, self.test) < 0 or self.num_labelled > n or self.train < 1:
            raise ConfigError(f"{self.name}: split sizes train={self.train}, val={self.val}, test={self.test} must be "
                              f">= 0 (train >= 1) and sum to at most num_nodes={n}")
        max_edges = n * (n - 1) // 2
        if not 1 <= self.num_edges <= max_edges // 4:
            raise ConfigError(f"{self.name}: num_edges must be in [1, N(N-1)/8] = [1, {max_edges // 4}] "
                              f"(a sparse graph), got {self.num_edges}")
        if 2 * self.num_edges >= 2 ** 31 * 4:  # candidate ids are packed in 32 bits
            raise ConfigError(f"{self.name}: num_edges={self.num_edges} is too large (at most ~4e9 candidates)")
        if not self.alpha >= 0.0:
            raise ConfigError(f"{self.name}: alpha must be >= 0, got {self.alpha}")
        if not 0.0 <= self.homophily <= 1.0:
            raise ConfigError(f"{self.name}: homophily must be in [0, 1], got {self.homophily}")
        if not self.signal >= 0.0:
            raise ConfigError(f"{self.name}: signal must be >= 0, got {self.signal}")


def _scaled(count: int, factor: float, minimum: int) -> int:
    return max(int(round(count * factor)), minimum)


def products_spec(scale: float = 1.0, **model: float) -> ShapeSpec:
    """The ogbn-products shape with every count multiplied by ``scale`` (all nodes labelled; at
    least ``20 C`` nodes, ``C`` training and 20 validation nodes; the mean degree is kept).

    ``model`` overrides ``alpha``, ``homophily`` or ``signal`` (defaults: :data:`PRODUCTS_MODEL`).
    """
    if not 0.0 < scale <= 1.0:
        raise ConfigError(f"products-shaped: scale must be in (0, 1], got {scale}")
    s = PRODUCTS
    c = s["num_classes"]
    n = _scaled(s["num_nodes"], scale, 20 * c)
    train = _scaled(s["train"], scale, c)
    val = _scaled(s["val"], scale, 20)
    e = int(round(s["num_edges"] * n / s["num_nodes"]))  # keep the mean degree
    spec = ShapeSpec(name="products-shaped" if scale == 1.0 else f"products-shaped-x{scale:g}", num_nodes=n,
                     num_edges=e, num_features=s["num_features"], num_classes=c, feature_dtype=s["feature_dtype"],
                     train=train, val=val, test=n - train - val, **_model(PRODUCTS_MODEL, model))
    spec.check()
    return spec


def papers_spec(fraction: float = 1.0, **model: float) -> ShapeSpec:
    """The ogbn-papers100M shape with every count multiplied by ``fraction`` (~1.4% labelled).

    For tiny fractions the graph keeps at least ``100 C`` nodes and the splits at least ``C`` training
    and 20 validation and test nodes (the labelled fraction stays ~1.4% down to ``fraction = 3e-4``).  ``model`` overrides ``alpha``, ``homophily`` or ``signal``.
    """
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"papers-shaped: fraction must be in (0, 1], got {fraction}")
    s = PAPERS
    c = s["num_classes"]
    n = _scaled(s["num_nodes"], fraction, 100 * c)
    e = int(round(s["num_edges"] * n / s["num_nodes"]))
    spec = ShapeSpec(name="papers-shaped" if fraction == 1.0 else f"papers-shaped-x{fraction:g}", num_nodes=n,
                     num_edges=e, num_features=s["num_features"], num_classes=c, feature_dtype=s["feature_dtype"],
                     train=_scaled(s["train"], fraction, c), val=_scaled(s["val"], fraction, 20),
                     test=_scaled(s["test"], fraction, 20), **_model(PAPERS_MODEL, model))
    spec.check()
    return spec


def _model(defaults: Dict[str, float], overrides: Dict[str, Any]) -> Dict[str, float]:
    unknown = set(overrides) - set(defaults)
    if unknown:
        raise ConfigError(f"unknown generator option(s) {sorted(unknown)}; known: {sorted(defaults)}")
    return {k: float(v if overrides.get(k) is None else overrides[k]) for k, v in defaults.items()}


def estimate_bytes(spec: ShapeSpec) -> int:
    """Size of the store of ``spec`` on disk in bytes (the arrays; headers and meta are ~kB)."""
    n, e = spec.num_nodes, spec.num_edges
    return (8 * (n + 1) + 4 * 2 * e + n * spec.num_features * np.dtype(spec.feature_dtype).itemsize
            + 2 * n + 8 * spec.num_labelled + 64 * 1024)


def check_disk_space(path: Union[str, Path], needed: int, margin: float = 0.05) -> int:
    """Raise :class:`ConfigError` if the file system of ``path`` has less than ``needed * (1 + margin)``
    bytes free; returns the free bytes.  (The store is built in a sibling temporary directory.)"""
    probe = Path(path).resolve()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    want = int(needed * (1.0 + margin))
    if free < want:
        raise ConfigError(f"not enough disk space for the store at '{path}': it needs about {want / GiB:.2f} GiB "
                          f"({needed / GiB:.2f} GiB + {margin:.0%} margin) and '{probe}' has {free / GiB:.2f} GiB "
                          "free; free some space, choose another --out, or build a smaller scale/fraction")
    return free


# ----------------------------------------------------------------------------------- numba kernels

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_LOW32 = np.uint64(0xFFFFFFFF)
_U53 = 1.0 / 9007199254740992.0  # 2**-53
_U32 = 1.0 / 4294967296.0        # 2**-32
_BLOCK = 1 << 14                 # candidates per parallel work item


def _mix_py(z: int) -> int:
    """SplitMix64's finaliser in Python (for deriving stream keys)."""
    m = (1 << 64) - 1
    z = (z + 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@njit(cache=True, inline="always")
def _hash(key, counter):
    """SplitMix64 output number ``counter`` of the stream ``key`` (a counter-based generator)."""
    z = key + np.uint64(counter) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MIX1
    z = (z ^ (z >> np.uint64(27))) * _MIX2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def _rank(h, scale, rmax, expo, mode):
    """A rank in ``[0, rmax)`` with ``P(r) ~ (r + 1)^-alpha``: the inverse CDF of the continuous power
    law on ``[1, rmax + 1)`` at a uniform from the top 53 bits of ``h``, floored, minus one.

    ``x = (1 + u * scale)^expo`` with ``scale = (rmax + 1)^(1 - alpha) - 1``, ``expo = 1 / (1 - alpha)``;
    ``mode``: ``-1`` alpha = 1 (``x = exp(u * scale)``, ``scale = log(rmax + 1)``), ``0`` generic
    ``pow``, ``m > 0`` when ``2 * expo = m`` is an integer (products + square roots: ~20x faster than
    ``pow``; alpha = 2/3 gives ``m = 6``, alpha = 0.6 gives ``m = 5``)."""
    u = (np.float64(h >> np.uint64(11)) + 0.5) * _U53
    y = 1.0 + u * scale
    if mode > 0:
        x = 1.0
        for _ in range(mode // 2):
            x *= y
        if mode % 2 == 1:
            x *= math.sqrt(y)
    elif mode == 0:
        x = math.exp(expo * math.log(y))
    else:
        x = math.exp(u * scale)
    r = np.int64(x) - 1
    if r < 0:
        r = 0
    if r >= rmax:
        r = rmax - 1
    return r


@njit(cache=True, inline="always")
def _node_class(node, n, c, a_inv, b):
    d = node - b
    if d < 0:
        d += n
    return ((a_inv * d) % n) % c


@njit(cache=True)
def _gen_block(key, k0, start, stop, n, c, a, b, hom32, scale, rmax, expo, mode, u_out, v_out):
    cc = np.uint64(c)
    for i in range(start, stop):
        ctr = (k0 + i) * 4
        h1 = _hash(key, ctr)
        h2 = _hash(key, ctr + 1)
        h3 = _hash(key, ctr + 2)
        h4 = _hash(key, ctr + 3)
        cu = np.int64(((h1 & _LOW32) * cc) >> np.uint64(32))
        if (h1 >> np.uint64(32)) < hom32:
            cv = cu
        else:
            cv = np.int64(((h2 & _LOW32) * cc) >> np.uint64(32))
        ru = _rank(h3, scale[cu], rmax[cu], expo, mode)
        rv = _rank(h4, scale[cv], rmax[cv], expo, mode)
        if cu == cv and ru == rv:
            u_out[i] = -1
            v_out[i] = -1
        else:
            u_out[i] = np.int32((a * (ru * c + cu) + b) % n)
            v_out[i] = np.int32((a * (rv * c + cv) + b) % n)


@njit(parallel=True, cache=True)
def _gen_candidates(key, k0, count, n, c, a, b, hom32, scale, rmax, expo, mode, u_out, v_out):
    """Candidates ``k0 .. k0 + count - 1`` into ``u_out``/``v_out`` (int32; ``u = -1`` marks a self loop).

    Candidate ``k`` uses outputs ``4k .. 4k + 3`` of the SplitMix64 stream ``key``: class of ``u`` and
    the homophily coin, class of ``v`` (if not ``u``'s), rank of ``u``, rank of ``v``."""
    nblk = (count + _BLOCK - 1) // _BLOCK
    for blk in prange(nblk):
        _gen_block(key, k0, blk * _BLOCK, min(count, (blk + 1) * _BLOCK), n, c, a, b, hom32, scale, rmax, expo,
                   mode, u_out, v_out)


@njit(parallel=True, cache=True)
def _count_chunk(u, v, count, deg, canon, nparts):
    """``deg[x] +=`` 1 per endpoint, ``canon[min(u, v)] += 1``; thread ``p`` owns a node range."""
    n = deg.size
    for p in prange(nparts):
        lo = n * p // nparts
        hi = n * (p + 1) // nparts
        for i in range(count):
            x = u[i]
            if x < 0:
                continue
            y = v[i]
            if x >= lo and x < hi:
                deg[x] += 1
            if y >= lo and y < hi:
                deg[y] += 1
            m = min(x, y)
            if m >= lo and m < hi:
                canon[m] += 1


@njit(parallel=True, cache=True)
def _fill_chunk(u, v, count, k0, row_lo, row_hi, cursor, buf, canonical, nparts):
    """Place ``(col << 32) | k`` of every candidate with a row in ``[row_lo, row_hi)`` at ``cursor[row]``.

    ``canonical``: only the row ``min(u, v)`` (column ``max``); else both directions."""
    rows = row_hi - row_lo
    for p in prange(nparts):
        lo = row_lo + rows * p // nparts
        hi = row_lo + rows * (p + 1) // nparts
        for i in range(count):
            x = np.int64(u[i])
            if x < 0:
                continue
            y = np.int64(v[i])
            kk = np.uint64(k0 + i)
            if canonical:
                if y < x:
                    x, y = y, x
                if x >= lo and x < hi:
                    pos = cursor[x - row_lo]
                    buf[pos] = (np.uint64(y) << np.uint64(32)) | kk
                    cursor[x - row_lo] = pos + 1
            else:
                if x >= lo and x < hi:
                    pos = cursor[x - row_lo]
                    buf[pos] = (np.uint64(y) << np.uint64(32)) | kk
                    cursor[x - row_lo] = pos + 1
                if y >= lo and y < hi:
                    pos = cursor[y - row_lo]
                    buf[pos] = (np.uint64(x) << np.uint64(32)) | kk
                    cursor[y - row_lo] = pos + 1


@njit(cache=True, inline="always")
def _sort_dedup(buf, s, cnt):
    """Sort ``buf[s:s+cnt]`` and keep the first entry of each column (the smallest ``k``) at its
    front; returns the number kept."""
    if cnt == 0:
        return 0
    seg = buf[s:s + cnt]
    seg.sort()
    m = 1
    prev = seg[0] >> np.uint64(32)
    for j in range(1, cnt):
        col = seg[j] >> np.uint64(32)
        if col != prev:
            seg[m] = seg[j]
            m += 1
            prev = col
    return m


@njit(parallel=True, cache=True)
def _dedup_canonical(buf, start, cnt, low, distinct, n_high):
    """Pass 1, per row: sort + de-duplicate; ``distinct[r]`` pairs, ``n_high[r]`` with ``first >= low``."""
    for r in prange(start.size):
        m = _sort_dedup(buf, start[r], cnt[r])
        distinct[r] = m
        h = 0
        s = start[r]
        for j in range(m):
            if (buf[s + j] & _LOW32) >= low:
                h += 1
        n_high[r] = h


@njit(parallel=True, cache=True)
def _collect_high(buf, start, distinct, offset, low, out):
    for r in prange(start.size):
        s = start[r]
        p = offset[r]
        for j in range(distinct[r]):
            k = buf[s + j] & _LOW32
            if k >= low:
                out[p] = np.uint32(k)
                p += 1


@njit(parallel=True, cache=True)
def _dedup_rows(buf, start, cnt, thresh, row_lo, n, c, a_inv, b, kept, intra):
    """Pass 2, per row: sort + de-duplicate, keep pairs with ``first <= thresh`` (columns at the row's
    front, ascending); ``kept[r]`` entries, ``intra[r]`` of them in the row's class."""
    th = np.uint64(thresh)
    for r in prange(start.size):
        m = _sort_dedup(buf, start[r], cnt[r])
        s = start[r]
        own = _node_class(row_lo + r, n, c, a_inv, b)
        q = 0
        same = 0
        for j in range(m):
            e = buf[s + j]
            if (e & _LOW32) <= th:
                col = np.int64(e >> np.uint64(32))
                buf[s + q] = np.uint64(col)
                q += 1
                if _node_class(col, n, c, a_inv, b) == own:
                    same += 1
        kept[r] = q
        intra[r] = same


@njit(cache=True)
def _gather(buf, start, kept, r0, r1, out):
    p = 0
    for r in range(r0, r1):
        s = start[r]
        for j in range(kept[r]):
            out[p] = np.int32(buf[s + j])
            p += 1
    return p


@njit(cache=True)
def _plan(counts, cap):
    """Cut ``[0, N)`` into node ranges of at most ``cap`` counted entries (a single row may exceed
    it); returns the boundaries ``[0, ..., N]``."""
    n = counts.size
    nb = 0
    acc = 0
    for i in range(n):  # first count the buckets, then fill (no N-sized scratch array)
        x = np.int64(counts[i])
        if acc > 0 and acc + x > cap:
            nb += 1
            acc = 0
        acc += x
    bounds = np.empty(nb + 2, np.int64)
    bounds[0] = 0
    nb = 0
    acc = 0
    for i in range(n):
        x = np.int64(counts[i])
        if acc > 0 and acc + x > cap:
            nb += 1
            bounds[nb] = i
            acc = 0
        acc += x
    bounds[nb + 1] = n
    return bounds


@njit(parallel=True, cache=True)
def _features(key, n0, n, c, a_inv, b, mu, signal, out):
    """Rows ``n0 ..`` of ``x = signal * mu[class] + eps``.  The noise of ``(node, f)`` is the classic
    approximate standard normal ``sum of 12 uniforms - 6`` (mean 0, variance 1, excess kurtosis
    -0.1, ``|eps| < 6``): the twelve 16-bit quarters of outputs ``3 (node F + f) + 0, 1, 2`` of the
    SplitMix64 stream ``key`` (counter based: any row, any order, any thread)."""
    rows, f_dim = out.shape
    m16 = np.uint64(0xFFFF)
    for i in prange(rows):
        node = n0 + i
        cls = _node_class(node, n, c, a_inv, b)
        base = node * f_dim * 3
        for f in range(f_dim):
            acc = np.uint64(0)
            for q in range(3):
                h = _hash(key, base + 3 * f + q)
                acc += (h & m16) + ((h >> np.uint64(16)) & m16) + ((h >> np.uint64(32)) & m16) + (h >> np.uint64(48))
            eps = (np.float64(acc) + 6.0) * (1.0 / 65536.0) - 6.0
            out[i, f] = signal * mu[cls, f] + eps


@njit(parallel=True, cache=True)
def _classes(nodes, n, c, a_inv, b, out):
    for i in prange(nodes.size):
        out[i] = _node_class(np.int64(nodes[i]), n, c, a_inv, b)


# ----------------------------------------------------------------------------------- the generator


@dataclass(frozen=True)
class _Stream:
    """The seed-derived constants of a graph: the id bijection, stream keys and rank samplers."""

    n: int
    c: int
    a: int
    a_inv: int
    b: int
    edge_key: int
    feature_key: int
    hom32: int
    scale: np.ndarray
    rmax: np.ndarray
    expo: float
    mode: int

    @classmethod
    def make(cls, spec: ShapeSpec, seed: int) -> "_Stream":
        n, c = spec.num_nodes, spec.num_classes
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, 0xA11CE])
        while True:  # a multiplier coprime to N, away from 0 and N so that neighbours in slot space scatter
            a = int(rng.integers(max(1, n // 4), max(2, 3 * n // 4))) if n > 4 else 1
            if math.gcd(a, n) == 1:
                break
        b = int(rng.integers(0, n))
        base = _mix_py(int(seed) & ((1 << 64) - 1))
        rmax = np.array([(n - k + c - 1) // c for k in range(c)], dtype=np.int64)
        alpha = spec.alpha
        if abs(alpha - 1.0) < 1e-12:
            scale, expo, mode = np.log(rmax + 1.0), 1.0, -1
        else:
            scale, expo = np.power(rmax + 1.0, 1.0 - alpha) - 1.0, 1.0 / (1.0 - alpha)
            twice = 2.0 * expo
            mode = int(round(twice)) if abs(twice - round(twice)) < 1e-9 and 0 < round(twice) <= 16 else 0
        hom32 = min(int(round(spec.homophily * 2 ** 32)), 2 ** 32)
        return cls(n=n, c=c, a=a, a_inv=pow(a, -1, n) if n > 1 else 0, b=b, edge_key=_mix_py(base ^ 0xED6E),
                   feature_key=_mix_py(base ^ 0xFEA7), hom32=hom32, scale=scale.astype(np.float64), rmax=rmax,
                   expo=float(expo), mode=mode)

    def candidates(self, k0: int, count: int, u: np.ndarray, v: np.ndarray) -> None:
        _gen_candidates(np.uint64(self.edge_key), np.int64(k0), np.int64(count), np.int64(self.n), np.int64(self.c),
                        np.int64(self.a), np.int64(self.b), np.uint64(self.hom32), self.scale, self.rmax,
                        float(self.expo), np.int64(self.mode), u, v)

    def classes(self, nodes: np.ndarray) -> np.ndarray:
        out = np.empty(len(nodes), dtype=np.int64)
        _classes(np.asarray(nodes, dtype=np.int64), np.int64(self.n), np.int64(self.c), np.int64(self.a_inv),
                 np.int64(self.b), out)
        return out


def node_classes(store: GraphStore, nodes: Optional[np.ndarray] = None) -> np.ndarray:
    """The latent class of ``nodes`` (default: all) of a synthetic store, labelled or not (int64).

    Recomputed from the id bijection recorded in ``meta["generator"]``."""
    gen = store.meta.get("generator")
    if not gen or "bijection" not in gen:
        raise ConfigError(f"graph store '{store.path}' was not built by graphgt.data.store.synthetic "
                          "(meta.json has no generator.bijection)")
    bij = gen["bijection"]
    n, c = store.num_nodes, int(store.meta["task"]["num_outputs"])
    nodes = np.arange(n, dtype=np.int64) if nodes is None else np.asarray(nodes, dtype=np.int64)
    out = np.empty(nodes.size, dtype=np.int64)
    _classes(nodes, np.int64(n), np.int64(c), np.int64(bij["a_inv"]), np.int64(bij["b"]), out)
    return out


class _Builder:
    """One build: the passes of the module docstring.  Not public; see :func:`build_shaped`."""

    def __init__(self, spec: ShapeSpec, seed: int, mem_budget: int, chunk_size: int,
                 num_buckets: Optional[int], oversample: float, log: Callable[[str], None]):
        self.spec, self.seed, self.log = spec, int(seed), log
        self.st = _Stream.make(spec, seed)
        self.chunk = int(chunk_size)
        self.cap = max(int(mem_budget) // 8, 1024)  # uint64 entries in a bucket buffer
        self.min_buckets = max(int(num_buckets or 1), 1)
        self.nparts = max(numba.get_num_threads(), 1)
        self.oversample = float(oversample)
        self.u = np.empty(self.chunk, dtype=np.int32)
        self.v = np.empty(self.chunk, dtype=np.int32)
        self.buf: Optional[np.ndarray] = None
        self.count_loops, self.loops = False, 0  # count self loops during the next fill
        self.stats: Dict[str, Any] = {}

    # -------------------------------------------------------------------- helpers
    def _stream(self, start: int, stop: int) -> Iterator[Tuple[int, int]]:
        """Generate candidates ``[start, stop)`` chunk by chunk into ``self.u``/``self.v``."""
        for k0 in range(start, stop, self.chunk):
            cnt = min(self.chunk, stop - k0)
            self.st.candidates(k0, cnt, self.u, self.v)
            yield k0, cnt

    def _buckets(self, counts: np.ndarray) -> np.ndarray:
        """Node-range bucket boundaries for ``counts``; sizes the (reused) bucket buffer for the largest."""
        total = int(counts.sum(dtype=np.int64))
        cap = min(self.cap, max(-(-total // self.min_buckets), 1))
        bounds = _plan(counts, np.int64(cap))
        largest = int(np.add.reduceat(counts, bounds[:-1], dtype=np.int64).max())
        if self.buf is None or self.buf.size < largest:
            self.buf = None  # free the old one first: one buffer at a time
            self.buf = np.empty(max(largest, 1), dtype=np.uint64)
        return bounds

    def _fill(self, counts: np.ndarray, lo: int, hi: int, stop: int, canonical: bool
              ) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Place the candidates ``[0, stop)`` of rows ``[lo, hi)`` into the bucket buffer (rows at the
        offsets of ``counts``); returns ``(buffer, row starts, row fill counts)``."""
        start = np.zeros(hi - lo + 1, dtype=np.int64)
        np.cumsum(counts[lo:hi], dtype=np.int64, out=start[1:])
        buf = self.buf
        assert buf is not None and buf.size >= start[-1]
        start = start[:-1]
        cursor = start.copy()
        for k0, cnt in self._stream(0, stop):
            if self.count_loops:
                self.loops += int(np.count_nonzero(self.u[:cnt] < 0))
            _fill_chunk(self.u, self.v, np.int64(cnt), np.int64(k0), np.int64(lo), np.int64(hi), cursor, buf,
                        canonical, self.nparts)
        self.count_loops = False
        cursor -= start  # now the fill count of each row
        return buf, start, cursor

    # -------------------------------------------------------------------- passes
    def count(self, deg: np.ndarray, canon: np.ndarray, start: int, stop: int) -> None:
        """Pass 0 over candidates ``[start, stop)`` (adds to the counts)."""
        for _, cnt in self._stream(start, stop):
            _count_chunk(self.u, self.v, np.int64(cnt), deg, canon, self.nparts)

    def threshold(self, canon: np.ndarray, stop: int) -> Tuple[int, int]:
        """Pass 1: ``(T, distinct)``; ``T = -1`` when the candidates ``[0, stop)`` hold fewer than ``E`` pairs."""
        e = self.spec.num_edges
        low = e - 1
        below = 0
        distinct_total = 0
        high: List[np.ndarray] = []
        bounds = self._buckets(canon)
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            lo, hi = int(lo), int(hi)
            buf, start, cnt = self._fill(canon, lo, hi, stop, canonical=True)
            distinct = np.empty(hi - lo, dtype=np.int32)
            n_high = np.empty(hi - lo, dtype=np.int32)
            _dedup_canonical(buf, start, cnt, np.uint64(low), distinct, n_high)
            offset = np.zeros(hi - lo, dtype=np.int64)
            np.cumsum(n_high[:-1], dtype=np.int64, out=offset[1:])
            out = np.empty(int(n_high.sum(dtype=np.int64)), dtype=np.uint32)
            _collect_high(buf, start, distinct, offset, np.uint64(low), out)
            high.append(out)
            d = int(distinct.sum(dtype=np.int64))
            distinct_total += d
            below += d - out.size
        self.stats["pass1_buckets"] = len(bounds) - 1
        if distinct_total < e:
            return -1, distinct_total
        need = e - below
        allh = np.concatenate(high) if high else np.zeros(0, np.uint32)
        del high
        t = int(np.partition(allh, need - 1)[need - 1])
        return t, distinct_total

    def write_indices(self, deg: np.ndarray, thresh: int, appender) -> None:
        """Pass 2: rows in node order into ``appender``; ``deg`` becomes the final degrees."""
        st = self.st
        bounds = self._buckets(deg)
        self.count_loops, self.loops = True, 0
        out = np.empty(min(max(self.cap // 4, 1 << 16), 1 << 24), dtype=np.int32)
        intra_total = 0
        for lo, hi in zip(bounds[:-1], bounds[1:]):
            lo, hi = int(lo), int(hi)
            buf, start, cnt = self._fill(deg, lo, hi, thresh + 1, canonical=False)
            kept = np.empty(hi - lo, dtype=np.int32)
            intra = np.empty(hi - lo, dtype=np.int32)
            _dedup_rows(buf, start, cnt, np.int64(thresh), np.int64(lo), np.int64(st.n), np.int64(st.c),
                        np.int64(st.a_inv), np.int64(st.b), kept, intra)
            intra_total += int(intra.sum(dtype=np.int64))
            deg[lo:hi] = kept
            ends = np.cumsum(kept, dtype=np.int64)
            r0 = 0
            while r0 < hi - lo:
                base = int(ends[r0 - 1]) if r0 > 0 else 0
                r1 = int(np.searchsorted(ends, base + out.size, side="right"))
                r1 = max(r1, r0 + 1)
                if int(ends[r1 - 1]) - base > out.size:  # one row larger than the buffer
                    out = np.empty(int(ends[r1 - 1]) - base, dtype=np.int32)
                p = _gather(buf, start, kept, np.int64(r0), np.int64(r1), out)
                appender.write(out[:p])
                r0 = r1
        self.stats["pass2_buckets"] = len(bounds) - 1
        self.stats["intra_entries"] = intra_total


def _choose_labelled(n: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` distinct node ids in random order (uniform subset)."""
    if count * 3 >= n:
        return rng.permutation(n)[:count].astype(np.int64)
    pool = np.zeros(0, dtype=np.int64)
    while pool.size < count:
        draw = rng.integers(0, n, size=int((count - pool.size) * 1.1) + 64, dtype=np.int64)
        pool = np.unique(np.concatenate([pool, draw]))
    return rng.permutation(pool)[:count]


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # Linux: kB


def _degree_stats(deg: np.ndarray) -> Dict[str, Any]:
    hist = np.bincount(deg)
    cum = np.cumsum(hist)
    n = int(deg.size)

    def q(p: float) -> int:
        return int(np.searchsorted(cum, p * n, side="left"))

    mean = float(np.dot(np.arange(hist.size, dtype=np.float64), hist) / max(n, 1))
    return {"min": int(np.nonzero(hist)[0][0]) if n else 0, "max": int(hist.size - 1), "mean": mean,
            "median": q(0.5), "p90": q(0.9), "p99": q(0.99), "p999": q(0.999), "isolated": int(hist[0]),
            "max_over_mean": float((hist.size - 1) / mean) if mean else 0.0}


def _check_build_args(path: Union[str, Path], spec: ShapeSpec, seed: int, overwrite: bool, mem_budget: int,
                      chunk_size: int, oversample: float) -> Path:
    """Validate the arguments of :func:`build_shaped` (first bad one raises); returns ``path`` as a Path."""
    spec.check()
    if chunk_size < 1:
        raise ConfigError(f"chunk_size must be >= 1, got {chunk_size}")
    if mem_budget < 8 * 1024:
        raise ConfigError(f"mem_budget must be at least 8 KiB, got {mem_budget}")
    if oversample < 1.0:
        raise ConfigError(f"oversample must be >= 1.0, got {oversample}")
    if int(seed) < 0:
        raise ConfigError(f"seed must be >= 0, got {seed}")
    path = Path(path)
    if path.exists() and not overwrite:
        raise ConfigError(f"graph store '{path}' already exists; remove it or pass overwrite=True (--overwrite)")
    return path


def _count_and_threshold(b: _Builder, oversample: float, timings: Dict[str, float]) -> Tuple[np.ndarray, int, int]:
    """Passes 0 and 1, adding candidates until the prefix holds ``E`` distinct pairs; returns
    ``(candidate counts per node, threshold T, candidates generated)``."""
    spec, say = b.spec, b.log
    n, e = spec.num_nodes, spec.num_edges
    deg = np.zeros(n, dtype=np.int32)
    canon = np.zeros(n, dtype=np.int32)
    k_done, k_stop = 0, int(math.ceil(e * oversample)) + 16
    for attempt in range(8):
        if k_stop >= 2 ** 32:
            raise ConfigError(f"{spec.name}: needs more than 2**32 edge candidates for {e} distinct edges; "
                              "lower num_edges or alpha")
        t = time.perf_counter()
        b.count(deg, canon, k_done, k_stop)
        k_done = k_stop
        timings["count"] = timings.get("count", 0.0) + time.perf_counter() - t
        say(f"[{spec.name}] pass 0: counted {k_stop:,} candidates ({time.perf_counter() - t:.1f}s, "
            f"peak RSS {_peak_rss_gib():.2f} GiB)")
        t = time.perf_counter()
        thresh, distinct = b.threshold(canon, k_stop)
        timings["threshold"] = timings.get("threshold", 0.0) + time.perf_counter() - t
        say(f"[{spec.name}] pass 1: {distinct:,} distinct pairs in {k_stop:,} candidates, "
            f"{b.stats['pass1_buckets']} bucket(s) ({time.perf_counter() - t:.1f}s, "
            f"peak RSS {_peak_rss_gib():.2f} GiB)")
        if thresh >= 0:
            break
        grow = (e - distinct) * k_stop / max(distinct, 1)
        k_stop = k_stop + int(math.ceil(grow * 1.25 + 0.01 * e)) + 1024
    else:
        raise ConfigError(f"{spec.name}: could not place {e} distinct edges on {n} nodes; lower num_edges or alpha")
    return deg, thresh, k_stop


def _write_csr(writer: StoreWriter, b: _Builder, deg: np.ndarray, thresh: int,
               timings: Dict[str, float]) -> Dict[str, Any]:
    """Pass 2 (``indices``) and ``indptr`` from the final degrees; returns the degree statistics."""
    name, n, e = b.spec.name, b.spec.num_nodes, b.spec.num_edges
    t = time.perf_counter()
    with writer.append_array("indices", (2 * e,), np.int32) as app:
        b.write_indices(deg, thresh, app)
    b.buf = None
    timings["indices"] = time.perf_counter() - t
    b.log(f"[{name}] pass 2: wrote {2 * e:,} CSR entries, {b.stats['pass2_buckets']} bucket(s) "
          f"({timings['indices']:.1f}s, peak RSS {_peak_rss_gib():.2f} GiB)")
    with writer.append_array("indptr", (n + 1,), np.int64) as app:
        app.write(np.zeros(1, np.int64))
        carry = 0
        for c0, c1 in iter_chunks(n, 1 << 22):
            part = np.cumsum(deg[c0:c1], dtype=np.int64) + carry
            app.write(part)
            carry = int(part[-1])
    if carry != 2 * e:
        raise AssertionError(f"internal error: {carry} CSR entries for {2 * e}")
    return _degree_stats(deg)


def _write_labels(writer: StoreWriter, st: _Stream, spec: ShapeSpec, seed: int) -> None:
    """The splits and ``y`` (the class of the labelled nodes, ``-1`` elsewhere), in node chunks."""
    n = spec.num_nodes
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, 0x5917])
    chosen = _choose_labelled(n, spec.num_labelled, rng)
    cut1, cut2 = spec.train, spec.train + spec.val
    for name, ids in (("train", chosen[:cut1]), ("val", chosen[cut1:cut2]), ("test", chosen[cut2:])):
        writer.save_array(f"split/{name}", np.sort(ids))
    labelled = np.sort(chosen)
    del chosen
    all_labelled = labelled.size == n
    with writer.append_array("y", (n,), np.int16) as app:
        for c0, c1 in iter_chunks(n, 1 << 22):
            cls = st.classes(np.arange(c0, c1, dtype=np.int64)).astype(np.int16)
            if not all_labelled:
                y = np.full(c1 - c0, -1, dtype=np.int16)
                ids = labelled[np.searchsorted(labelled, c0):np.searchsorted(labelled, c1)] - c0
                y[ids] = cls[ids]
                cls = y
            app.write(cls)


def _write_features(writer: StoreWriter, st: _Stream, spec: ShapeSpec, seed: int) -> None:
    """``x`` = class mean times ``signal`` plus noise, in node chunks of about 64 MiB (float32)."""
    n = spec.num_nodes
    mu = np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, 0x3E45]).standard_normal(
        (spec.num_classes, spec.num_features))
    mu /= np.linalg.norm(mu, axis=1, keepdims=True)
    mu = mu.astype(np.float64)
    f_rows = max(1, (64 << 20) // (4 * spec.num_features))
    block = np.empty((min(f_rows, n), spec.num_features), dtype=np.float32)
    with writer.append_array("x", (n, spec.num_features), spec.feature_dtype) as app:
        for c0, c1 in iter_chunks(n, f_rows):
            out = block[:c1 - c0]
            _features(np.uint64(st.feature_key), np.int64(c0), np.int64(n), np.int64(st.c),
                      np.int64(st.a_inv), np.int64(st.b), mu, float(spec.signal), out)
            app.write(out)


def _generator_meta(b: _Builder, seed: int, mem_budget: int, thresh: int, k_stop: int, degree: Dict[str, Any],
                    timings: Dict[str, float], t0: float) -> Dict[str, Any]:
    """``meta["generator"]``: parameters, seed, id bijection, edge statistics and build record."""
    spec, st, e, loops = b.spec, b.st, b.spec.num_edges, b.loops
    candidates = thresh + 1
    return {
        "module": __name__,
        "model": "power-law class blocks (Chung-Lu), affine id bijection, Gaussian class-mean features",
        "seed": int(seed),
        "spec": asdict(spec),
        "bijection": {"a": st.a, "a_inv": st.a_inv, "b": st.b},
        "edges": {"undirected": e, "csr_entries": 2 * e, "candidates_used": candidates,
                  "candidates_generated": k_stop, "self_loops_removed": loops,
                  "duplicates_removed": candidates - loops - e,
                  "duplicate_fraction": (candidates - loops - e) / candidates,
                  "edge_homophily": b.stats["intra_entries"] / (2 * e),
                  "expected_edge_homophily": spec.homophily + (1 - spec.homophily) / spec.num_classes,
                  "degree": degree},
        "build": {"seconds": round(time.perf_counter() - t0, 2), "phases": {k: round(v, 2) for k, v in
                                                                           timings.items()},
                  "threads": b.nparts, "mem_budget": int(mem_budget), "chunk_size": b.chunk,
                  "buckets": {"pass1": b.stats["pass1_buckets"], "pass2": b.stats["pass2_buckets"]}},
    }


def build_shaped(path: Union[str, Path], spec: ShapeSpec, seed: int = 0, overwrite: bool = False,
                 mem_budget: int = 4 * GiB, chunk_size: int = 1 << 22, num_buckets: Optional[int] = None,
                 oversample: float = 1.03, log: Optional[Callable[[str], None]] = None) -> GraphStore:
    """Generate the graph of ``spec`` and ``seed`` into a new store at ``path`` (see the module docstring).

    Args:
        path: the store directory (must not exist unless ``overwrite``).
        spec: the shape and generator parameters (:func:`products_spec`, :func:`papers_spec`).
        seed: the generator seed; the arrays are a function of ``(spec, seed)`` only.
        overwrite: replace an existing store.
        mem_budget: bytes of the bucket buffer (8 bytes per edge candidate of a bucket); more means
            fewer buckets, so fewer regenerations of the candidate stream.  Peak RSS is about
            ``mem_budget + 8 N`` bytes plus small buffers.
        chunk_size: candidates generated per chunk (two int32 arrays of this length).
        num_buckets: use at least this many buckets per pass (default: as few as ``mem_budget`` allows).
        oversample: candidates generated initially, as a multiple of ``num_edges`` (more are added
            when self loops and duplicates leave fewer than ``num_edges`` distinct pairs).
        log: called with progress lines (e.g. ``print``).

    Returns:
        The opened :class:`GraphStore`; ``meta["generator"]`` records the parameters, the seed, the
        build time, the edge statistics (candidates used, self loops and duplicates removed, degree
        quantiles, edge homophily) and the id bijection.
    """
    path = _check_build_args(path, spec, seed, overwrite, mem_budget, chunk_size, oversample)
    say = log or (lambda msg: None)
    t0 = time.perf_counter()
    b = _Builder(spec, seed, mem_budget, min(int(chunk_size), 1 << 26), num_buckets, oversample, say)
    n, e = spec.num_nodes, spec.num_edges
    timings: Dict[str, float] = {}
    deg, thresh, k_stop = _count_and_threshold(b, oversample, timings)

    writer = StoreWriter(path, name=spec.name, num_nodes=n, overwrite=overwrite)
    try:
        degree = _write_csr(writer, b, deg, thresh, timings)
        del deg

        t = time.perf_counter()
        _write_labels(writer, b.st, spec, seed)
        timings["labels"] = time.perf_counter() - t

        t = time.perf_counter()
        _write_features(writer, b.st, spec, seed)
        timings["features"] = time.perf_counter() - t

        writer.meta["task"] = {"kind": "multiclass", "num_outputs": spec.num_classes, "metric": "accuracy",
                               "ogb_name": None}
        writer.meta["generator"] = _generator_meta(b, seed, mem_budget, thresh, k_stop, degree, timings, t0)
        store = writer.commit()
    except BaseException:
        writer.abort()
        raise
    say(f"[{spec.name}] done in {time.perf_counter() - t0:.1f}s: {n:,} nodes, {e:,} edges, max degree "
        f"{degree['max']:,}, edge homophily {writer.meta['generator']['edges']['edge_homophily']:.3f}")
    return store


def build_products_shaped(path: Union[str, Path], seed: int = 0, scale: float = 1.0, overwrite: bool = False,
                          alpha: Optional[float] = None, homophily: Optional[float] = None,
                          signal: Optional[float] = None, **options: Any) -> GraphStore:
    """Build the ogbn-products-shaped store (:func:`products_spec` at ``scale``) at ``path``.

    ``options`` go to :func:`build_shaped` (``mem_budget``, ``chunk_size``, ``num_buckets``, ``log``).
    At ``scale=1``: 2,449,029 nodes, 61,859,140 undirected edges, 100 float32 features, 47 classes,
    splits 196,615 / 39,323 / 2,213,091; about 1.5 GB on disk."""
    spec = products_spec(scale, alpha=alpha, homophily=homophily, signal=signal)
    return build_shaped(path, spec, seed=seed, overwrite=overwrite, **options)


def build_papers_shaped(path: Union[str, Path], seed: int = 0, fraction: float = 1.0, overwrite: bool = False,
                        alpha: Optional[float] = None, homophily: Optional[float] = None,
                        signal: Optional[float] = None, **options: Any) -> GraphStore:
    """Build the ogbn-papers100M-shaped store (:func:`papers_spec` at ``fraction``) at ``path``.

    ``options`` go to :func:`build_shaped`.  At ``fraction=1``: 111,059,956 nodes, 1,615,685,872
    undirected edges, 128 float16 features, 172 classes, 1,546,782 labelled nodes; about 42 GB on
    disk."""
    spec = papers_spec(fraction, alpha=alpha, homophily=homophily, signal=signal)
    return build_shaped(path, spec, seed=seed, overwrite=overwrite, **options)


PRESETS: Dict[str, Tuple[Callable[..., ShapeSpec], Callable[..., GraphStore]]] = {
    "products": (products_spec, build_products_shaped),
    "papers": (papers_spec, build_papers_shaped),
}
