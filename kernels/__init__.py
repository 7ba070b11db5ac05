"""numba-cuda kernels, importable as ``gpupart.kernels``.

Kernels are compiled on first use (never at import), and every one runs in numba's CUDA
simulator (``NUMBA_ENABLE_CUDASIM=1``) so CPU CI tests it for real.
"""
