"""Pillow's bicubic resize, bit for bit, as tensor operations on the model's device.

SAM 2's loader resizes each frame with PIL (``Image.resize((S, S))``, bicubic), and the
bit-identity of our frames with SAM 2's is tested. On a CPU the prefetch workers call PIL
itself (:func:`~ml_backend.video.frames.resize_for_sam`). On a GPU that resize is what limits
how fast the cores feed the model (about 24 ms of one core per 1080p frame at 1024 px, where
the model tracks a frame in a few ms), so :class:`ExactResize` does the same arithmetic on the
GPU: the prefetch workers only decode, and the model's device resizes.

Same arithmetic as Pillow's ``Resample.c`` (8 bits per channel):

- per output column (row), the taps ``[xmin, xmin + n)`` of the input and their weights
  ``bicubic((x + xmin - center + 0.5) / filterscale)``, normalised by their sum, in float64
  (Python floats are C doubles, same operations in the same order);
- weights as fixed point: ``int(w * 2**22 ± 0.5)`` (rounded away from zero, then truncated);
- each pass sums ``2**21 + Σ pixel × weight`` in integers and keeps ``clip(sum >> 22, 0, 255)``,
  into uint8; then the other pass. A pass whose size does not change is skipped, as Pillow skips it.

Pillow's sums fit in int32 (|Σ| < 2**31), so int32 here gives exactly its results. Which pass
comes first is Pillow's choice, and it has changed between releases (the releases we checked run
the horizontal pass first for 1080p → 1024², but the vertical one first for some portrait
frames), so :func:`exact_resize` asks the installed Pillow: it resizes one random frame of the
video's size both ways and keeps the order that gives PIL's bytes; if neither does, it says so
(``None``) and the caller keeps PIL.
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from PIL import Image

#: Pillow's fixed-point precision for 8-bit images (``PRECISION_BITS``).
PRECISION_BITS = 32 - 8 - 2
#: Pillow's bicubic filter support (``BICUBIC.support``).
SUPPORT = 2.0


def bicubic(x: float) -> float:
    """Pillow's ``bicubic_filter`` (a = -0.5)."""
    a = -0.5
    if x < 0.0:
        x = -x
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1
    if x < 2.0:
        return (((x - 5) * x + 8) * x - 4) * a
    return 0.0


def coefficients(in_size: int, out_size: int) -> tuple[list[int], list[list[int]]]:
    """Pillow's ``precompute_coeffs`` + ``normalize_coeffs_8bpc`` for the box ``(0, in_size)``.

    Returns ``(starts, weights)``: output index ``i`` (0-based) reads inputs
    ``starts[i] … starts[i] + len(weights[i]) - 1`` with the fixed-point ``weights[i]``.
    """
    scale = float(in_size) / out_size
    filterscale = max(scale, 1.0)
    support = SUPPORT * filterscale
    ss = 1.0 / filterscale
    starts: list[int] = []
    weights: list[list[int]] = []
    for xx in range(out_size):
        center = (xx + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), in_size) - xmin
        w = [bicubic((x + xmin - center + 0.5) * ss) for x in range(xmax)]
        total = 0.0
        for v in w:
            total += v
        if total != 0.0:
            w = [v / total for v in w]
        starts.append(xmin)
        weights.append([int(v * (1 << PRECISION_BITS) + (-0.5 if v < 0 else 0.5)) for v in w])
    return starts, weights


class _Pass:
    """One direction of the resize as ``taps`` gathers: index ``taps×out`` and weight ``taps×out``
    int32 tensors (a tap past an output's own count reads its first input with weight 0)."""

    def __init__(self, in_size: int, out_size: int, device: Any) -> None:
        import torch

        starts, weights = coefficients(in_size, out_size)
        taps = max(len(w) for w in weights)
        index = [[s + min(t, len(w) - 1) for s, w in zip(starts, weights, strict=True)] for t in range(taps)]
        weight = [[w[t] if t < len(w) else 0 for w in weights] for t in range(taps)]
        self.first = starts[0]
        self.last = max(s + len(w) for s, w in zip(starts, weights, strict=True))  # one past the last input read
        self.index = torch.tensor(index, dtype=torch.long, device=device) - self.first
        self.weight = torch.tensor(weight, dtype=torch.int32, device=device)

    def __call__(self, x: Any, dim: int) -> Any:
        """``x`` (uint8, inputs ``first … last - 1`` along ``dim``) → uint8 with ``out`` along ``dim``."""
        import torch

        shape = [1] * x.dim()
        shape[dim] = -1
        acc = None
        for t in range(self.index.shape[0]):
            term = torch.index_select(x, dim, self.index[t]).to(torch.int32) * self.weight[t].view(shape)
            acc = term if acc is None else acc.add_(term)
        acc.add_(1 << (PRECISION_BITS - 1))
        return acc.bitwise_right_shift_(PRECISION_BITS).clamp_(0, 255).to(torch.uint8)


class ExactResize:
    """``H×W×3`` uint8 frames → ``S×S×3`` uint8, with Pillow's bicubic arithmetic.

    Built once per video size (the coefficients live on ``device``); call it with a tensor on
    that device. ``height``/``width``: the input frame's size in pixels; ``rows_first``: the
    vertical pass first (see the module's docstring; :func:`exact_resize` finds it).
    """

    def __init__(self, height: int, width: int, size: int, device: Any = "cpu", rows_first: bool = False) -> None:
        self.height, self.width, self.size = height, width, size
        self.rows_first = rows_first
        self._rows = _Pass(height, size, device) if height != size else None
        self._cols = _Pass(width, size, device) if width != size else None

    def __call__(self, frame: Any) -> Any:
        if tuple(frame.shape) != (self.height, self.width, 3):
            raise ValueError(f"frame is {tuple(frame.shape)}, this resize takes {(self.height, self.width, 3)}")
        x = frame
        if self._rows is not None:  # Pillow reads only the rows the vertical pass needs
            x = x[self._rows.first : self._rows.last]
        passes = [(self._rows, 0), (self._cols, 1)]
        for step, dim in passes if self.rows_first else passes[::-1]:
            if step is not None:
                x = step(x, dim)
        return x if x is not frame else frame.clone()


_ORDERS: dict[tuple[int, int, int], bool | None] = {}
_ORDERS_LOCK = threading.Lock()


def pillow_order(height: int, width: int, size: int) -> bool | None:
    """Whether the installed Pillow resizes an ``height×width`` RGB frame to ``size²`` with the
    vertical pass first (``True``), the horizontal one (``False``), or neither in a way this module
    reproduces (``None``). Found once per size, on the CPU, from one random frame."""
    key = (height, width, size)
    with _ORDERS_LOCK:
        if key not in _ORDERS:
            _ORDERS[key] = _probe(height, width, size)
        return _ORDERS[key]


def _probe(height: int, width: int, size: int) -> bool | None:
    import torch

    frame = np.random.default_rng(height * 7919 + width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    expected = np.asarray(Image.fromarray(frame).resize((size, size)))
    tensor = torch.from_numpy(frame)
    for rows_first in (False, True):
        if np.array_equal(ExactResize(height, width, size, rows_first=rows_first)(tensor).numpy(), expected):
            return rows_first
    return None


def exact_resize(height: int, width: int, size: int, device: Any) -> ExactResize | None:
    """An :class:`ExactResize` on ``device`` that gives the installed Pillow's bytes for frames of
    this size, or ``None`` where it cannot (resize with PIL then)."""
    rows_first = pillow_order(height, width, size)
    return None if rows_first is None else ExactResize(height, width, size, device, rows_first)
