"""numba kernels, importable as ``gpupart.kernels``.

Host kernels are ``numba.njit`` loops (``pack``: the owner's gather of small tiles into one
message); device kernels are numba-cuda. Kernels are compiled on first use (never at
import) and cached by numba; every CUDA kernel also runs in numba's CUDA simulator
(``NUMBA_ENABLE_CUDASIM=1``) so CPU CI tests it for real.
"""
