"""Codebook attention (LargeGT's global module, from GOAT): queries attend to K EMA k-means
centroids."""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import Tensor, nn

from graphgt.nn.attention.base import AttentionContext, GlobalAttention
from graphgt.nn.dropout import byte_dropout_keep


def distributed_active() -> bool:
    """True when a default ``torch.distributed`` process group is initialised."""
    return dist.is_available() and dist.is_initialized()


def nearest_centroid(x: Tensor, centroids: Tensor, chunk_size: int = 65536) -> Tensor:
    r"""Index of the nearest centroid of every row of ``x`` in squared Euclidean distance.

    :math:`\operatorname{argmin}_c \lVert\mathbf{x}_i - \mathbf{c}_c\rVert^2
    = \operatorname{argmin}_c \big(\lVert\mathbf{c}_c\rVert^2
    - 2\,\mathbf{x}_i^\top\mathbf{c}_c\big)`,
    computed for ``chunk_size`` rows at a time (memory :math:`O(\text{chunk} \cdot K)`); ties go to
    the lowest centroid index. Computed in float32 (float64 if either input is), with autocast
    disabled, whatever the input dtype: the EMA update runs inside the trainer's bf16 autocast.

    Shapes:
        x ``[N, d]``, centroids ``[K, d]`` -> ``LongTensor[N]``.
    """
    if chunk_size < 1:
        raise ValueError(f"nearest_centroid: chunk_size={chunk_size} must be >= 1.")
    acc = torch.promote_types(torch.promote_types(x.dtype, centroids.dtype), torch.float32)
    x, centroids = x.to(acc), centroids.to(acc)
    out = torch.empty(x.size(0), dtype=torch.long, device=x.device)
    # autocast off: it would run addmm in bf16, whose distances (8 significant bits) tie and
    # misassign inputs whose nearest centroids differ by less than ~1% of their norm
    with torch.autocast(device_type=x.device.type, enabled=False):
        c_sq = centroids.pow(2).sum(dim=1)                                   # [K]
        for s in range(0, x.size(0), chunk_size):
            xs = x[s:s + chunk_size]
            dist_sq = torch.addmm(c_sq, xs, centroids.T, beta=1.0, alpha=-2.0)  # [n, K] (+ const/row)
            out[s:s + xs.size(0)] = dist_sq.argmin(dim=1)
    return out


class CodebookAttention(GlobalAttention):
    r"""Attention to a codebook of EMA k-means centroids: the global module of LargeGT (Vijay
    Prakash Dwivedi, Yozen Liu, Anh Tuan Luu, Xavier Bresson, Neil Shah, Tong Zhao, "Graph
    Transformers for Large Graphs", arXiv:2312.11109, 2023), taken from GOAT (Kezhi Kong, Jiuhai
    Chen, John Kirchenbauer, Renkun Ni, C. Bayan Bruss, Tom Goldstein, "GOAT: A Global Transformer
    on Large-scale Graphs", ICML 2023). The codebook is maintained as in the EMA VQ-VAE (van den
    Oord, Vinyals, Kavukcuoglu, "Neural Discrete Representation Learning", NeurIPS 2017).

    **Codebook.** ``K`` centroids :math:`\mathbf{c}_1..\mathbf{c}_K` in the space of the module
    input ``x`` (dataset level: they summarise the inputs of all training batches, not of one
    graph). Each training call assigns every input to its nearest centroid and updates, with
    decay :math:`\gamma` and Laplace smoothing :math:`\epsilon`,

    .. math::
        a(i) = \operatorname{argmin}_c \lVert\mathbf{x}_i - \mathbf{c}_c\rVert^2, \qquad
        n_c = |\{i : a(i) = c\}|, \qquad \mathbf{s}_c = \sum_{i:\,a(i)=c} \mathbf{x}_i,

        N_c \leftarrow \gamma N_c + (1-\gamma)\, n_c, \qquad
        \mathbf{S}_c \leftarrow \gamma \mathbf{S}_c + (1-\gamma)\, \mathbf{s}_c,

        \tilde N_c = \frac{N_c + \epsilon}{\sum_{c'} N_{c'} + K\epsilon} \sum_{c'} N_{c'}, \qquad
        \mathbf{c}_c \leftarrow \mathbf{S}_c / \tilde N_c \quad (\text{only where } N_c > 0)

    (buffers ``ema_count`` :math:`= N`, ``ema_sum`` :math:`= \mathbf{S}`, ``centroids``). The
    update uses ``x.detach()`` in float32 and happens *after* the output of the call has been
    computed with the codebook as it was. ``eps=0`` is allowed: then :math:`\tilde N_c = N_c` and,
    with ``decay=0``, one update sets every assigned centroid to the exact mean of its inputs and
    ``ema_count`` to the exact assignment counts. A centroid whose :math:`N_c` is exactly 0 (never
    assigned after :meth:`set_codebook` gave it count 0, or ``decay=0``) keeps its position.
    A training call whose batch is empty (on every rank) leaves the codebook and ``num_updates``
    unchanged.

    **Dead centroids** (``restart=True``): after each update, the centroids with
    :math:`N_c < \text{dead\_threshold} \cdot \bar N`, :math:`\bar N = \sum_{c'} N_{c'} / K`, are
    re-seeded with random inputs of the current batch (drawn without replacement when the batch is
    large enough), with :math:`N_c = \bar N` and :math:`\mathbf{S}_c = \bar N\,\mathbf{c}_c`; the
    buffer ``num_restarts`` counts the re-seeded centroids. The draw uses a ``torch.Generator``
    seeded from ``(seed, num_updates)``, so a run resumed from a checkpoint draws the same rows.

    **Initialisation.** The first forward call, in *any* mode (training or evaluation), initialises
    the codebook from its batch when the buffer ``initialized`` is False: ``K`` rows of
    ``x.detach()`` chosen by a ``torch.Generator`` seeded with ``seed`` (with replacement when
    ``N < K``), each with count 1 (:math:`N_c = 1`, :math:`\mathbf{S}_c = \mathbf{c}_c`).
    :meth:`set_codebook` installs a codebook computed elsewhere instead; :meth:`reset_parameters`
    clears it.

    **Attention.** With :math:`d_h = d/H`, per head :math:`h`,
    :math:`\mathbf{q}_i = \mathbf{W}^Q_h\mathbf{x}_i`, :math:`\mathbf{k}_c = \mathbf{W}^K_h
    \mathbf{c}_c`, :math:`\mathbf{v}_c = \mathbf{W}^V_h\mathbf{c}_c`,

    .. math::
        p_{ic} = \operatorname{softmax}_c\Big(\frac{\mathbf{q}_i^\top\mathbf{k}_c}{\sqrt{d_h}}
        + \log N_c\Big), \qquad
        \mathrm{head}_{h,i} = \sum_c p_{ic}\,\mathbf{v}_c, \qquad
        \mathrm{out}_i = [\mathrm{head}_{1,i} \| \dots \| \mathrm{head}_{H,i}]\,\mathbf{W}^O.

    The :math:`\log N_c` bias makes attending to centroid ``c`` stand for attending to the
    :math:`N_c` inputs of its cluster: if every input equals its centroid, this is exactly softmax
    attention over all inputs (duplicates included). A centroid with :math:`N_c = 0` gets logit
    :math:`-\infty` and is ignored. Gradients flow to the projections, not to the centroids (EMA
    buffers). Unlike :class:`~graphgt.nn.attention.FullAttention`, ``ctx.batch`` is not used: in a
    mini-batch of several graphs every node attends to the same dataset-level codebook. Q/K/V/out
    parameters are laid out as in FullAttention (``in_proj``: ``[3d, d]``; ``out_proj``).

    **Cost.** Time :math:`O(N K d + K d^2 + N d^2)` for the attention and :math:`O(N K d)` for the
    assignment: linear in ``N``. Queries are processed in chunks of ``chunk_size`` rows (one chunk
    when ``N <= chunk_size``), so the scores take :math:`O(\min(N, \text{chunk}) H K)` memory at a
    time (autograd keeps each chunk's attention weights when the math kernel is used), and the
    assignment :math:`O(\min(N, \text{chunk}) K)`; the codebook :math:`O(K d)`.

    **Distributed data parallel.** With ``sync=True`` and an initialised default process group
    (``torch.distributed.is_available() and is_initialized()``), the codebook is identical on every
    rank, bitwise: each training call concatenates the local per-centroid sums and counts into one
    float32 ``[K, d+1]`` tensor and ``all_reduce``\ s it (SUM) before the EMA update, so every rank
    applies the same update to the same state (all-reduce hands the same reduced buffer to every
    rank: gloo and NCCL compute each reduced element once and distribute it, and with two ranks the
    sum of two floats is commutative anyway); the initialisation rows and the restart candidates
    are drawn on rank 0 from its batch and ``broadcast`` from rank 0. The update after the
    reduction is deterministic elementwise arithmetic on identical inputs (identical hardware is
    assumed). Consequently every rank must call the module the same number of times: training
    calls (all-reduce) and the initialising call (broadcast, in any mode: do not evaluate on rank 0
    only before the codebook is initialised), and :meth:`set_codebook` must receive the same tensors
    on every rank. DDP's own ``broadcast_buffers`` is harmless (the buffers already agree). With
    ``sync=False`` each rank keeps its own codebook from its own data.

    Args:
        dim: model width ``d``.
        heads: number of heads ``H`` (must divide ``dim``).
        codebook_size: number of centroids ``K`` (LargeGT: 4096).
        decay: EMA decay :math:`\gamma \in [0, 1)` (LargeGT: 0.99).
        eps: Laplace smoothing :math:`\epsilon \ge 0` of the counts.
        dead_threshold: a centroid whose EMA count is below ``dead_threshold`` times the mean count
            is restarted (in ``[0, 1)``; 0 never restarts).
        restart: re-seed dead centroids with inputs of the current batch.
        dropout: dropout on the attention weights (training only; the drop probability is rounded
            to a multiple of 1/256, see :func:`byte_dropout_keep`).
        sync: keep the codebook identical on all ranks of an initialised process group.
        seed: seed of the generators that draw the initialisation rows and restart candidates.
        chunk_size: queries (and inputs to assign) processed at a time.

    Shapes:
        x ``[N, d]``, ctx (``ctx.batch`` unused) -> ``[N, d]``; buffers ``centroids [K, d]``,
        ``ema_count [K]``, ``ema_sum [K, d]``, ``initialized``, ``num_updates``, ``num_restarts``
        (scalars).
    """

    centroids: Tensor
    ema_count: Tensor
    ema_sum: Tensor
    initialized: Tensor
    num_updates: Tensor
    num_restarts: Tensor

    def __init__(self, dim: int, heads: int = 4, codebook_size: int = 4096, decay: float = 0.99,
                 eps: float = 1e-5, dead_threshold: float = 1e-3, restart: bool = True,
                 dropout: float = 0.0, sync: bool = True, seed: int = 0,
                 chunk_size: int = 65536) -> None:
        super().__init__()
        name = "CodebookAttention"
        if dim < 1:
            raise ValueError(f"{name}: dim={dim} must be >= 1.")
        self._set_heads(dim, heads, dropout)
        if codebook_size < 1:
            raise ValueError(f"{name}: codebook_size={codebook_size} must be >= 1 "
                             "(LargeGT uses 4096).")
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"{name}: decay={decay} must be in [0, 1) (LargeGT uses 0.99).")
        if not eps >= 0.0:
            raise ValueError(f"{name}: eps={eps} must be >= 0 (e.g. 1e-5; 0 disables the Laplace "
                             "smoothing).")
        if not 0.0 <= dead_threshold < 1.0:
            raise ValueError(f"{name}: dead_threshold={dead_threshold} must be in [0, 1) "
                             "(a fraction of the mean count, e.g. 1e-3).")
        if seed < 0:
            raise ValueError(f"{name}: seed={seed} must be >= 0.")
        if chunk_size < 1:
            raise ValueError(f"{name}: chunk_size={chunk_size} must be >= 1 (e.g. 65536).")
        self.codebook_size = codebook_size
        self.decay = float(decay)
        self.eps = float(eps)
        self.dead_threshold = float(dead_threshold)
        self.restart = restart
        self.sync = sync
        self.seed = int(seed)
        self.chunk_size = chunk_size
        self.in_proj = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)
        self.register_buffer("centroids", torch.zeros(codebook_size, dim))
        self.register_buffer("ema_count", torch.zeros(codebook_size))
        self.register_buffer("ema_sum", torch.zeros(codebook_size, dim))
        self.register_buffer("initialized", torch.zeros((), dtype=torch.bool))
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.register_buffer("num_restarts", torch.zeros((), dtype=torch.long))
        self.reset_parameters()

    # ------------------------------------------------------------------ parameters and codebook

    def reset_parameters(self) -> None:
        """Initialise the projections as :class:`torch.nn.MultiheadAttention` does and clear the
        codebook (the next forward call initialises it again)."""
        nn.init.xavier_uniform_(self.in_proj.weight)
        nn.init.zeros_(self.in_proj.bias)
        self.out_proj.reset_parameters()
        nn.init.zeros_(self.out_proj.bias)
        with torch.no_grad():
            for buf in (self.centroids, self.ema_count, self.ema_sum, self.initialized,
                        self.num_updates, self.num_restarts):
                buf.zero_()

    @torch.no_grad()
    def set_codebook(self, centroids: Tensor, counts: Tensor) -> None:
        """Install ``K' <= K`` centroids with their counts; centroids ``K'..K-1`` get count 0 (and
        are ignored by the attention). Sets ``ema_sum = centroid * count`` and marks the codebook
        initialised (``num_updates``/``num_restarts`` are kept). Under DDP with ``sync=True`` pass
        the same tensors on every rank.

        Shapes:
            centroids ``[K', d]``, counts ``[K']`` (non-negative, not all zero).
        """
        K = self.codebook_size
        if centroids.dim() != 2 or centroids.size(1) != self.dim or not 1 <= centroids.size(0) <= K:
            raise ValueError(f"CodebookAttention.set_codebook: centroids of shape "
                             f"{tuple(centroids.shape)}; expected [K', {self.dim}] with "
                             f"1 <= K' <= codebook_size={K}.")
        k = centroids.size(0)
        if counts.shape != (k,):
            raise ValueError(f"CodebookAttention.set_codebook: counts of shape "
                             f"{tuple(counts.shape)}; expected [{k}] (one per centroid).")
        counts = counts.to(self.ema_count.device, self.ema_count.dtype)
        if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()) \
                or not float(counts.sum()) > 0:
            raise ValueError("CodebookAttention.set_codebook: counts must be finite, >= 0 and "
                             f"not all zero; got {counts.tolist() if k <= 16 else counts}.")
        self.centroids.zero_()
        self.centroids[:k] = centroids.to(self.centroids)
        self.ema_count.zero_()
        self.ema_count[:k] = counts
        self.ema_sum.copy_(self.centroids * self.ema_count.unsqueeze(1))
        self.initialized.fill_(True)

    def _synced(self) -> bool:
        return self.sync and distributed_active()

    def _rank0_rows(self, x: Tensor, num: int, seed: int, synced: bool) -> Tensor | None:
        """``num`` random rows of ``x [N, d]`` (float32), drawn on rank 0 from its batch and
        broadcast when ``synced``; without replacement when ``N >= num``. ``None`` if (rank 0's)
        batch is empty."""
        d = self.dim
        buf = torch.zeros(num, d + 1, dtype=torch.float32, device=x.device)  # last column: valid
        if not synced or dist.get_rank() == 0:
            n = x.size(0)
            if n > 0:
                g = torch.Generator().manual_seed(seed)
                idx = (torch.randperm(n, generator=g)[:num] if n >= num
                       else torch.randint(n, (num,), generator=g))
                buf[:, :d] = x[idx.to(x.device)].float()
                buf[:, d] = 1.0
        if synced:
            dist.broadcast(buf, src=0)
        if not bool(buf[0, d] > 0):
            return None
        return buf[:, :d]

    @torch.no_grad()
    def _initialize(self, x: Tensor, synced: bool) -> None:
        rows = self._rank0_rows(x, self.codebook_size, self.seed, synced)
        if rows is None:
            raise ValueError("CodebookAttention: cannot initialise the codebook from an empty batch "
                             "(rank 0's, under DDP); call set_codebook(...) or pass nodes.")
        self.centroids.copy_(rows)
        self.ema_count.fill_(1.0)
        self.ema_sum.copy_(rows)
        self.initialized.fill_(True)

    @torch.no_grad()
    def _update(self, x: Tensor, synced: bool) -> None:
        """One EMA k-means step with the inputs ``x [N, d]`` (all ranks' when ``synced``)."""
        K, d = self.codebook_size, self.dim
        x = x.float()
        old = self.centroids.float()
        assign = nearest_centroid(x, old, self.chunk_size)                    # [N]
        stats = torch.zeros(K, d + 1, dtype=torch.float32, device=x.device)   # [sums | counts]
        stats[:, :d].index_add_(0, assign, x)
        stats[:, d] = torch.bincount(assign, minlength=K).float()
        if synced:
            dist.all_reduce(stats, op=dist.ReduceOp.SUM)
        sums, counts = stats[:, :d], stats[:, d]
        if not bool(counts.sum() > 0):          # empty batch (on every rank): nothing to learn
            return
        count = self.decay * self.ema_count.float() + (1.0 - self.decay) * counts   # [K]
        total = self.decay * self.ema_sum.float() + (1.0 - self.decay) * sums       # [K, d]
        n = count.sum()
        smoothed = (count + self.eps) / (n + K * self.eps) * n
        live = count > 0
        new = torch.where(live.unsqueeze(1),
                          total / torch.where(live, smoothed, 1.0).unsqueeze(1), old)
        self.num_updates += 1
        if self.restart:
            mean = n / K
            dead = count < self.dead_threshold * mean
            num_dead = int(dead.sum())
            if num_dead > 0:
                restart_seed = hash((self.seed, int(self.num_updates))) % (2 ** 63)
                rows = self._rank0_rows(x, num_dead, restart_seed, synced)
                if rows is not None:
                    new[dead] = rows
                    count[dead] = mean
                    total[dead] = rows * mean
                    self.num_restarts += num_dead
        self.centroids.copy_(new)
        self.ema_count.copy_(count)
        self.ema_sum.copy_(total)

    # ------------------------------------------------------------------ attention

    def _attend(self, x: Tensor) -> Tensor:
        N, H, dh, K = x.size(0), self.heads, self.head_dim, self.codebook_size
        w_q, w_kv = self.in_proj.weight.split([self.dim, 2 * self.dim])
        b_q, b_kv = self.in_proj.bias.split([self.dim, 2 * self.dim])
        q = F.linear(x, w_q, b_q).view(N, H, dh).transpose(0, 1).unsqueeze(0)   # [1, H, N, dh]
        # a copy: the update after this call modifies the buffer that autograd would have saved
        cents = self.centroids.to(dtype=x.dtype, copy=True)
        kv = F.linear(cents, w_kv, b_kv).view(K, 2, H, dh)
        k, v = kv.permute(1, 2, 0, 3).unsqueeze(1).unbind(0)                    # [1, H, K, dh]
        log_count = torch.log(self.ema_count.float())                           # [K], -inf at 0
        if N == 0:
            return self.out_proj(x.new_zeros(0, self.dim))
        outs = []
        for s in range(0, N, self.chunk_size):
            qs = q[:, :, s:s + self.chunk_size]                                 # [1, H, n, dh]
            if self.training and self.dropout > 0:
                scores = (qs @ k.transpose(-1, -2)) * dh ** -0.5 + log_count    # [1, H, n, K]
                keep, scale = byte_dropout_keep(scores.shape, self.dropout, scores.device)
                probs = torch.where(keep, scores.softmax(-1) * scale, 0.0)
                outs.append(probs.to(v.dtype) @ v)
            else:
                mask = log_count.to(qs.dtype).view(1, 1, 1, K)
                outs.append(F.scaled_dot_product_attention(qs, k, v, attn_mask=mask))
        out = outs[0] if len(outs) == 1 else torch.cat(outs, dim=2)            # [1, H, N, dh]
        return self.out_proj(out[0].transpose(0, 1).reshape(N, self.dim))

    def forward(self, x: Tensor, ctx: AttentionContext) -> Tensor:
        if x.dim() != 2 or x.size(1) != self.dim:
            raise ValueError(f"CodebookAttention: x of shape {tuple(x.shape)}; expected "
                             f"[N, {self.dim}].")
        synced = self._synced()
        if not bool(self.initialized):
            self._initialize(x.detach(), synced)
        out = self._attend(x)
        if self.training:
            self._update(x.detach(), synced)
        return out

    def __repr__(self) -> str:
        return (f"{self.__class__.__name__}({self.dim}, heads={self.heads}, "
                f"codebook_size={self.codebook_size}, decay={self.decay})")
