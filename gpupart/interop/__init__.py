"""Adapters between gpupart and the systems people already run.

Dask, Ray, MPI, Heat, Modin, scikit-learn-intelex, XGBoost and cuML: each system has its own
module, imported on its own (``import gpupart.interop.dask``), so that none of these
libraries is loaded unless asked for; they come with the ``interop`` extra.
``docs/interop.md`` lists, per system and direction, what is zero-copy and how it is tested.
"""
