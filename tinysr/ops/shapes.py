"""Convolution shape and padding arithmetic, shared by the CPU and GPU paths.

Padding modes (the names used throughout tinysr):

- ``"valid"``: no padding; output ``(H - kh + 1, W - kw + 1)``. Used in training
  (a 33x33 patch gives a 21x21 output through 9-1-5).
- ``"zero"``: ``same`` output size, zero padding.
- ``"replicate"``: ``same`` output size, edge pixels repeated. This is the authors'
  inference (Matlab ``imfilter(..., 'same', 'replicate')``).

For ``same`` padding an odd kernel is centred; an even kernel puts the extra row/column of
padding after (bottom/right), as Matlab's ``imfilter`` does for the centre ``floor((k+1)/2)``.
"""

from __future__ import annotations

PADDINGS = ("valid", "zero", "replicate")


def check_padding(padding: str) -> str:
    """Return ``padding`` or raise ``ValueError`` when it is not a known mode."""
    if padding not in PADDINGS:
        raise ValueError(f"unknown padding {padding!r}: choose one of {', '.join(PADDINGS)}")
    return padding


def pad_amounts(kh: int, kw: int, padding: str) -> tuple[int, int, int, int]:
    """``(top, bottom, left, right)`` rows/columns of padding for a ``kh x kw`` kernel."""
    check_padding(padding)
    if padding == "valid":
        return (0, 0, 0, 0)
    top, left = (kh - 1) // 2, (kw - 1) // 2
    return (top, kh - 1 - top, left, kw - 1 - left)


def conv_output_hw(h: int, w: int, kh: int, kw: int, padding: str) -> tuple[int, int]:
    """Output ``(Ho, Wo)`` of a stride-1 correlation of an ``h x w`` input with a ``kh x kw`` kernel.

    Raises ``ValueError`` when a ``valid`` output would be empty.
    """
    top, bottom, left, right = pad_amounts(kh, kw, padding)
    ho, wo = h + top + bottom - kh + 1, w + left + right - kw + 1
    if ho < 1 or wo < 1:
        raise ValueError(
            f"input {h}x{w} is smaller than the {kh}x{kw} kernel for padding {padding!r}"
        )
    return ho, wo


def shrink(kernel_sizes) -> int:
    """Pixels lost on each side by a stack of ``valid`` convolutions (6 for 9-1-5: 33 -> 21)."""
    return sum((k - 1) // 2 for k in kernel_sizes)
