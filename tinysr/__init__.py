"""tinysr: SRCNN super-resolution on NumPy (CPU) and CuPy (GPU), no deep-learning framework.

The Python API (:mod:`tinysr.api`), imported on first use, so ``import tinysr`` alone loads
neither NumPy nor numba:

- ``tinysr.upscale(image, scale=3, *, weights=None, backend="numpy", tile=None, progress=False, denoise="auto")``:
  a PIL image, a path or a uint8/uint16 array, enlarged as ``tinysr upscale`` does; the same kind
  comes back (``progress=True``: a tile bar, also in a notebook; or a callable ``(done, total)``).
- ``tinysr.upscale_video(src, dst, scale=2, ...)``: a video file enlarged into another, its sound
  and subtitles copied (the ``[video]`` extra).
- ``tinysr.load_model(scale_or_path)``: an :class:`SRCNN` with bundled (2, 3, 4) or given weights.
- ``tinysr.evaluate_folder(folder, scale, *, weights=None, bicubic=False)``: PSNR/SSIM per image
  and their means under the authors' protocol.
- ``tinysr.SRCNN``: the network.

Modules, by role (each subpackage is one role; ``tinysr.X.Y`` below is written ``X.Y``):

- ``api``       the Python API above.
- ``atomic``    atomic file writes (a temporary beside the file, then a rename), shared by all roles.
- ``errors``    exception types shared by all roles (``NoSuchFile``).
- ``progress``  progress of long work: a bar on a terminal, plain lines elsewhere, nothing when quiet.
- ``weights``   (package) the bundled ``x2``/``x3``/``x4`` weights and loading any weight file.

``tinysr.cli``: the command line
- ``cli.command``  the ``tinysr`` command (``python -m tinysr``): subcommands run the tools below.
- ``cli.common``   pieces the tools share: one-line argument errors, --backend/--tile, PNG writing.
- ``cli.entry``    starting a program: SIGINT/SIGTERM end it in one line, status 130, even during imports.
- ``cli.failure``  one way a command fails: one line, exit status 1 / 2 / 130 from one table.
- ``cli.progress`` the command-line name of ``tinysr.progress``: a bar on a terminal, plain lines elsewhere.
- ``cli.upscale``  ``tinysr upscale``: enlarge image files (colour, grayscale, alpha, 16-bit).
- ``cli.evaluate`` ``tinysr evaluate``: PSNR/SSIM of a folder, or the paper's table.
- ``cli.train``    ``tinysr train``: training on T91 patches with Set5 evaluation, checkpoints.
- ``cli.rundir``   a training run's folder: choosing and claiming it (``RunLock``), what holds a run, its log.
- ``cli.prepare``  ``tinysr prepare``: the training patches into their HDF5 cache.
- ``cli.bundle``   ``tinysr bundle``: the bundled ``weights/xS.npz`` from training runs.
- ``cli.figures``  ``tinysr figures``: training curves, first-layer filters, comparison crops.
- ``cli.export_onnx`` ``tinysr export``: the network as an ONNX graph (``--rgb``: the whole enlargement).
- ``cli.dask``     ``python -m tinysr.distributed.dask``: a Zarr image enlarged chunk by chunk.
- ``cli.serve``    ``tinysr serve``: the local web page (:mod:`tinysr.serve`).

``tinysr.serve``: the local web page
- ``serve.server`` the HTTP server, its routes and its queue (one enlargement at a time, ``image.jobs``).
- ``serve/static`` the page, its script and styles (package data).

``tinysr.image``: running the network on images
- ``image.io``        reading image files and PIL images into integer pixels and a kind; size limits.
- ``image.png16``     16-bit PNG pixels (colour, gray + alpha) read and written, which Pillow narrows to 8 bits.
- ``image.enlarge``   the whole upscaling pipeline, tile by tile, into the integer output image.
- ``image.jobs``      one image file to its output files: naming, overwrite policy, comparison image.
- ``image.video``     a video file to an enlarged one: each frame's Y through ``image.enlarge``, streams copied.
- ``image.inference`` running the network on a Y plane, in tiles when it is large.
- ``image.jpeg_quality`` a JPEG's IJG quality from its quantisation tables; the --denoise model it needs.

``tinysr.nn``: the network, its training math, its files
- ``nn.model``     the SRCNN network, its parameters (views into one flat buffer).
- ``nn.layers``    Conv2d (ReLU fusable) and MSELoss with explicit forward/backward.
- ``nn.conv``      the conv's algorithms (im2col, output side, direct): forward/backward pairs with a cache.
- ``nn.optim``     MomentumSGD (the paper's optimiser) and Adam.
- ``nn.training``  the training math and loop: one step, one epoch, ``fit``, optimiser, schedule, augmentation.
- ``nn.run``       one training run from settled settings (``TrainingRun``): data, model, restore, ``fit`` with callbacks.
- ``nn.serialization`` models and checkpoints as ``.npz`` (no pickle).
- ``nn.recipe``    the training recipe's schema: each setting's type, default per recipe, class; settling a run.
- ``nn.parallel``  the training loop's data-parallel contract: one process (``SOLO``), each rank's share of a batch.

``tinysr.ops``: devices, primitives and execution
- ``ops.backend``   NumPy/CuPy choice, the device registry, explicit host/device transfers.
- ``ops.primitives`` the device contract: the primitives every device's module offers.
- ``ops.engine``    how the network runs: CPU threads, kept arrays, the fast inference paths.
- ``ops.workspace`` arrays a training loop reuses from step to step.
- ``ops.primitives_cpu`` the layers' primitives on the CPU (im2col, col2im, bias + ReLU, tap sums, ...).
- ``ops.primitives_gpu`` the same contract on the GPU, over the CUDA kernels.
- ``ops.padding``   padding and its adjoint for any array module.
- ``ops.shapes``    convolution shape and padding arithmetic shared by CPU and GPU.
- ``ops.fused_predict`` the cache-blocked, multi-threaded CPU inference of 9-1-5 networks.
- ``ops.blas_threads`` CPU worker threads, BLAS held to one thread inside them.
- ``ops.cuda_kernels`` the raw CUDA kernels (sources in ``kernels/*.cu``, shipped as the package
  ``tinysr.kernels``) the GPU path calls.

``tinysr.protocol``: the paper's protocol and its data
- ``protocol.evaluation`` the authors' evaluation protocol (Y, modcrop, bicubic down and up, shave).
- ``protocol.imresize``  Matlab-exact bicubic ``imresize``.
- ``protocol.color``     Matlab BT.601 ``rgb2ycbcr`` / ``ycbcr2rgb``.
- ``protocol.metrics``   PSNR, SSIM, ``modcrop``, ``shave``, Matlab uint8 rounding.
- ``protocol.data``      the authors' training patches, cached in HDF5.
- ``protocol.degrade``   JPEG-compressed low-resolution inputs, for training (--degrade) and evaluation (--jpeg).
- ``protocol.matlab_weights`` the authors' released Matlab ``.mat`` weights.
- ``protocol.paths``     where the shared data and reference weights live.

``tinysr.distributed``: across processes and machines
- ``distributed.mpi``  data-parallel training over MPI.
- ``distributed.dask`` inference on Dask: images larger than memory, many images over a cluster.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "upscale", "upscale_video", "load_model", "evaluate_folder", "SRCNN"]

# name -> module holding it, imported on first access (PEP 562)
_LAZY = {"upscale": "api", "upscale_video": "api", "load_model": "api", "evaluate_folder": "api", "SRCNN": "nn.model"}


def __getattr__(name: str):
    if name in _LAZY:
        from importlib import import_module  # noqa: PLC0415

        value = getattr(import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
