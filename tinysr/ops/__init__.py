"""Devices, primitives and execution: the NumPy/CuPy backend, the engine that runs the network (CPU
threads, kept arrays, the fast inference paths), the CPU and GPU primitives with the same names,
the raw CUDA kernels, padding and shape arithmetic, and the BLAS-aware worker threads.
"""
