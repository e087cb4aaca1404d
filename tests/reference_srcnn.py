"""A deliberately plain, slow port of the authors' ``SRCNN.m`` inference (test helper only).

``SRCNN.m`` runs every layer with Matlab's ``imfilter(x, h, 'same', 'replicate')``: a
correlation (no kernel flip), output the size of the input, borders padded by repeating the
edge pixel. Layers 1 and 2 add the bias and apply ReLU; layer 3 adds the bias and stops (no
ReLU, no clipping).

Everything here is explicit loops over channels and kernel taps -- no im2col, no
``scipy.ndimage`` -- so it can serve as an independent check of tinysr's fast model. It takes
the parameters in the layout of :func:`tinysr.protocol.matlab_weights.load_mat_params`
(``weight[out, in, row, col]``). Keep images small: the cost is
``H * W * (n1*f1^2 + n2*n1*f2^2 + n2*f3^2)`` multiply-adds done a whole image plane at a time.
"""

from __future__ import annotations

import numpy as np


def matlab_imfilter_same_replicate(img2d: np.ndarray, kernel2d: np.ndarray) -> np.ndarray:
    """Matlab ``imfilter(img2d, kernel2d, 'same', 'replicate')`` for odd-sized kernels.

    ``out[r, c] = sum_{dy, dx} kernel2d[dy, dx] * img2d[clip(r + dy - py), clip(c + dx - px)]``
    with ``py = (kh - 1) // 2``, ``px = (kw - 1) // 2`` (the kernel centre) and indices clipped
    to the image (replicate padding).

    img2d: (H, W); kernel2d: (kh, kw), both odd. Returns (H, W) float64.
    """
    img = np.asarray(img2d, dtype=np.float64)
    kernel = np.asarray(kernel2d, dtype=np.float64)
    if img.ndim != 2 or kernel.ndim != 2:
        raise ValueError(f"expected 2-D image and kernel, got {img.shape} and {kernel.shape}")
    kh, kw = kernel.shape
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f"only odd kernel sizes are supported, got {kernel.shape}")
    h, w = img.shape
    py, px = (kh - 1) // 2, (kw - 1) // 2
    padded = np.pad(img, ((py, py), (px, px)), mode="edge")  # 'edge' == Matlab 'replicate'

    out = np.zeros((h, w), dtype=np.float64)
    for dy in range(kh):
        for dx in range(kw):
            out += kernel[dy, dx] * padded[dy : dy + h, dx : dx + w]
    return out


def srcnn_matlab_reference(y: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """SRCNN forward pass exactly as ``SRCNN.m`` computes it.

    y: (H, W) float64, the bicubic-upscaled luminance in [0, 1].
    params: ``conv1.weight`` (n1, 1, f1, f1), ``conv1.bias`` (n1,), ``conv2.weight``
    (n2, n1, f2, f2), ``conv2.bias`` (n2,), ``conv3.weight`` (1, n2, f3, f3), ``conv3.bias`` (1,).
    Returns (H, W) float64, unclipped.
    """
    y = np.asarray(y, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"expected a 2-D (H, W) image, got shape {y.shape}")
    w1, b1 = params["conv1.weight"], params["conv1.bias"]
    w2, b2 = params["conv2.weight"], params["conv2.bias"]
    w3, b3 = params["conv3.weight"], params["conv3.bias"]
    n1, n2 = w1.shape[0], w2.shape[0]
    h, w = y.shape

    # Layer 1: one filter per output channel on the single input channel, + bias, ReLU.
    conv1 = np.zeros((n1, h, w), dtype=np.float64)
    for i in range(n1):
        conv1[i] = matlab_imfilter_same_replicate(y, w1[i, 0])
        conv1[i] = np.maximum(conv1[i] + b1[i], 0.0)

    # Layer 2: output channel i sums the filtered input channels j, + bias, ReLU.
    conv2 = np.zeros((n2, h, w), dtype=np.float64)
    for i in range(n2):
        for j in range(n1):
            conv2[i] += matlab_imfilter_same_replicate(conv1[j], w2[i, j])
        conv2[i] = np.maximum(conv2[i] + b2[i], 0.0)

    # Layer 3: one output channel summing all inputs, + bias, no ReLU, no clipping.
    out = np.zeros((h, w), dtype=np.float64)
    for i in range(n2):
        out += matlab_imfilter_same_replicate(conv2[i], w3[0, i])
    return out + b3[0]
