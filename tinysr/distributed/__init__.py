"""Running across processes and machines: data-parallel training over MPI and inference on a Dask
cluster.
"""
