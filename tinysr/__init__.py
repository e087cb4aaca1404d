"""tinysr: SRCNN super-resolution on NumPy (CPU) and CuPy (GPU), no deep-learning framework.

Modules, by what they hold:

- ``backend``   NumPy/CuPy choice, explicit host/device transfers.
- ``shapes``    convolution shape and padding arithmetic shared by CPU and GPU.
- ``im2col``    im2col / col2im and padding (and its adjoint) for any array module.
- ``cpu_kernels`` numba loops for the CPU (col2im accumulation, the fused inference's steps).
- ``cuda_kernels`` the raw CUDA kernels (sources in ``kernels/*.cu``) the GPU path calls.
- ``layers``    Conv2d (ReLU fusable), ReLU, MSELoss with explicit forward/backward.
- ``model``     the SRCNN network, its parameters (views into one flat buffer).
- ``optim``     MomentumSGD (the paper's optimiser) and Adam.
- ``imresize``  Matlab-exact bicubic ``imresize``.
- ``color``     Matlab BT.601 ``rgb2ycbcr`` / ``ycbcr2rgb``.
- ``metrics``   PSNR, SSIM, ``modcrop``, ``shave``, Matlab uint8 rounding.
- ``paths``     where the shared data and reference weights live.
"""

__version__ = "0.1.0"
