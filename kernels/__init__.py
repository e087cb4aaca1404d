"""CUDA C sources for tinysr's raw GPU kernels (read as text and compiled by tinysr.ops.cuda_kernels)."""
