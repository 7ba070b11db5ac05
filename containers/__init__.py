"""Distributed containers built on the runtime's tiles (imported as ``gpupart.containers``).

The distributed array and dataframe arrive with their issues; this package is their home.
"""
