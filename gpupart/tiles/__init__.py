"""Tiles: arrays a rank owns, handles that name them anywhere, and moving them between ranks.

``handles`` and ``store`` describe and keep tiles; ``fetch`` moves tiles a consumer asks
for from their owners; ``exchange`` is the all-to-all that shuffles and repartitioning use.
"""
