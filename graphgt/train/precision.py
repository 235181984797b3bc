"""Mixed precision and compilation options of the trainer: ``trainer.bf16`` and ``trainer.compile``.

:func:`resolve_bf16` turns ``trainer.bf16: auto | true | false`` into whether the trainer runs its
forward passes under ``torch.autocast(device, dtype=torch.bfloat16)``; :func:`maybe_compile`
applies ``trainer.compile: false | true | <mode>``. Both are plain functions of their arguments
(the trainer passes the config values); errors are :class:`~graphgt.errors.ConfigError` naming the
key.
"""
from __future__ import annotations

from typing import Union

import torch
from torch import nn

from graphgt.errors import ConfigError

#: ``auto`` chooses bf16 on CUDA when the model's matmul width is at least this (see resolve_bf16)
AUTO_BF16_MIN_WIDTH = 128

#: the ``mode`` strings ``torch.compile`` accepts
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def matmul_width(model: nn.Module) -> int:
    """The largest ``min(in_features, out_features)`` over the model's ``nn.Linear`` layers (and
    ``embed_dim`` of its ``nn.MultiheadAttention``, whose input projection is a bare parameter);
    0 for a model without any.

    ``min`` because a projection's cost per byte moved grows with its narrower side: a
    ``Linear(64, 128)`` (GPS's FFN at hidden 64) is no more matmul-bound than a ``Linear(64, 64)``.
    """
    width = 0
    for m in model.modules():
        if isinstance(m, nn.Linear):
            width = max(width, min(m.in_features, m.out_features))
        elif isinstance(m, nn.MultiheadAttention):
            width = max(width, m.embed_dim)
    return width


def resolve_bf16(setting: Union[bool, str], device: torch.device, model: nn.Module) -> bool:
    """Whether to autocast to bfloat16 for ``trainer.bf16=setting`` on ``device``.

    - ``false``: never.
    - ``true``: always, on CPU too (CPU bf16 autocast runs every graphgt module, see
      ``tests/nn/test_autocast.py``; it is fast only on CPUs with native bf16 matmuls, e.g. AMX,
      so it is meant for testing mixed precision on a CPU-only machine). ``ConfigError`` on a
      device type without autocast support.
    - ``auto``: bf16 only on CUDA, and only when the model is wide enough that its matmuls
      dominate the step: :func:`matmul_width` ``>= AUTO_BF16_MIN_WIDTH`` (128). Never on CPU.

    Why the width rule: bf16 autocast speeds up the matmuls (tensor cores, half the bytes) but
    adds a cast of every weight and activation that enters one, and the elementwise, scatter,
    normalisation and softmax work (which graphgt keeps in float32 for accuracy) gains nothing.
    Narrow models are dominated by that work. Measured on an H200 (issue report): ``molbace-gps``
    (GPS, hidden 64, molecules) 10 epochs took 1.02 s/epoch with bf16 against 0.75 s/epoch in
    float32, so bf16 was 36% slower; its widest projection has ``min(in, out) = 64``. A
    ``Linear(d, d)`` does ``2 d`` flops per 4-byte float32 element it moves per row, so it is
    memory-bound below ``d ~ 64`` on an H200 (about 67 TFLOP/s of float32 FMA against 4.8 TB/s)
    and compute-bound, where bf16 tensor cores pay, from about twice that; hence 128. LargeGT
    (hidden 256, sequences of 1024 x 100 tokens: matmul-bound) gets bf16, GPS/MPNN at hidden 64
    stay float32. The rule was not measured at widths between 64 and 256: set ``true`` or
    ``false`` to override it.

    Args:
        setting: ``True``, ``False`` or ``"auto"`` (``trainer.bf16``).
        device: the device the model trains on.
        model: the model (only its layer widths are read).
    """
    if isinstance(setting, bool):
        if setting and not torch.amp.is_autocast_available(device.type):
            raise ConfigError(f"trainer.bf16=true, but torch has no autocast for device '{device}'; "
                              "set trainer.bf16=false or auto")
        return setting
    if isinstance(setting, str) and setting == "auto":
        return device.type == "cuda" and matmul_width(model) >= AUTO_BF16_MIN_WIDTH
    raise ConfigError(f"trainer.bf16={setting!r} must be one of true, false, 'auto'")


def check_compile(mode: Union[bool, str]) -> Union[bool, str]:
    """``mode`` if it is a valid ``trainer.compile`` value, else a ConfigError naming the key."""
    if isinstance(mode, bool) or (isinstance(mode, str) and mode in COMPILE_MODES):
        return mode
    raise ConfigError(f"trainer.compile={mode!r} must be false, true or one of "
                      f"{', '.join(repr(m) for m in COMPILE_MODES)}")


def maybe_compile(model: nn.Module, mode: Union[bool, str]) -> nn.Module:
    """Apply ``trainer.compile``: ``false`` returns ``model`` unchanged; ``true`` compiles it with
    ``torch.compile``'s default mode, a string with that mode (one of :data:`COMPILE_MODES`).

    Compiled in place (``nn.Module.compile``): the same module object is returned, so its
    ``state_dict`` keys, checkpoints, ``repr`` and DDP wrapping are unchanged; only its forward
    runs through TorchDynamo/Inductor. ``dynamic=True``: sampled mini-batches (and graph batches)
    have a different number of nodes and edges every step, so shapes are traced symbolically
    instead of recompiling for each new size. The first steps pay the compilation (seconds to
    minutes); it pays back on long runs whose step is dominated by many small kernels (GPU, small
    widths), not on short CPU runs. ``reduce-overhead`` uses CUDA graphs, which are recorded per
    distinct shape: it suits fixed-size batches only.
    """
    mode = check_compile(mode)
    if mode is False:
        return model
    if mode is True:
        model.compile(dynamic=True)
    else:
        model.compile(mode=mode, dynamic=True)
    return model


__all__ = ["AUTO_BF16_MIN_WIDTH", "COMPILE_MODES", "check_compile", "matmul_width", "maybe_compile", "resolve_bf16"]
