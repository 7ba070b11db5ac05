"""Unknown and freed tiles, forged sizes, malformed and truncated requests; owners keep serving.

Works at any job size; the wire-level checks need a peer and are skipped at size 1.
Emits ``@malformed`` with how many bad requests this rank sent, then ``@done``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
from _mp import SPECS, check_tile, emit, expect, expected, make_tile, raises

import gpupart
from gpupart.comm.tags import Kind, make_tag
from gpupart.tiles import wire

rt = gpupart.init()
rank, size = rt.rank, rt.size
right = (rank + 1) % size
tiles = [make_tile(rank, i) for i in range(len(SPECS))]
doomed = np.arange(10, dtype=np.int64) + rank
table = rt.allgather(([rt.put(a) for a in tiles], rt.put(doomed)))
handles = {owner: hs for owner, (hs, _) in enumerate(table)}
doomed_of = {owner: d for owner, (_, d) in enumerate(table)}


def check_serving(owner: int, index: int) -> None:
    check_tile(
        f"tile {index} of rank {owner}",
        rt.get(handles[owner][index], timeout=60),
        expected(owner, index),
        handles[owner][index].order,
    )


# -- an id the owner never issued -------------------------------------------------------------
forged = dataclasses.replace(handles[right][5], tile_id=10**12 + rank)
err = raises(gpupart.TileNotFoundError, lambda: rt.get(forged, timeout=60), f"rank {right}")
expect(err.owner == right and err.tile_id == forged.tile_id, "TileNotFoundError names the tile")
expect(isinstance(err, gpupart.FetchError) and isinstance(err, LookupError), "error hierarchy")
check_serving(right, 5)  # the owner keeps serving

# In one batch with good tiles: only the forged item fails.
batch = [handles[right][4], forged, handles[right][13]]
futures = rt.fetch(batch)
futures.wait(timeout=60)
expect(all(f.done() for f in futures), "mixed batch finished")
check_tile("good item before the forged one", futures[0].result(), expected(right, 4))
expect(isinstance(futures[1].exception(), gpupart.TileNotFoundError), "forged item fails")
check_tile(
    "good item after the forged one",
    futures[2].result(),
    expected(right, 13),
    handles[right][13].order,
)
raises(gpupart.TileNotFoundError, lambda: rt.get(batch, timeout=60))  # get raises the first error

# A handle whose size disagrees with the owner's tile (stale or forged) is refused by the
# owner, not over-read (an own tile is looked up by id only, so this needs a peer).
if size > 1:
    h = handles[right][5]
    grown = dataclasses.replace(h, shape=(h.shape[0] + 8,), nbytes=h.nbytes + 8)
    raises(gpupart.FetchError, lambda: rt.get(grown, timeout=60), "not the size")
    check_serving(right, 5)

# -- freed tiles ---------------------------------------------------------------------------
rt.barrier()
rt.free(doomed_of[rank])
raises(gpupart.TileNotFoundError, lambda: rt.free(doomed_of[rank]))  # freed twice
raises(gpupart.TileNotFoundError, lambda: rt.get(doomed_of[rank]))  # own freed tile
if size > 1:
    raises(ValueError, lambda: rt.free(doomed_of[right]), "owned by rank")
rt.barrier()  # every doomed tile is freed now
err = raises(gpupart.TileNotFoundError, lambda: rt.get(doomed_of[right], timeout=60))
expect(err.owner == right, "freed tile error names the owner")
check_serving(right, 6)

# -- malformed requests on the wire --------------------------------------------------------
sent = 0
if size > 1:
    engine = rt._engine

    def send_raw(payload: bytes, seq: int) -> None:
        """Send ``payload`` as a request, sealed like any member's (its MAC is right)."""
        tag = make_tag(Kind.REQUEST, rank, seq)
        request = engine.send_control(right, tag, payload, "a malformed request")
        deadline = time.monotonic() + 30
        while not request.completed:  # the progress thread drives the send
            expect(time.monotonic() < deadline, "a raw send did not complete within 30 s")
            time.sleep(0.001)
        rt._transport.check(request)

    items = np.zeros(1, dtype=wire.ITEM)
    items["tile_id"], items["nbytes"], items["pack"] = handles[right][5].tile_id, 1000, -1
    valid = wire.encode_request(items, np.zeros(0, np.int64), 1, 2)
    bad_payloads = [
        b"garbage!" * 5,  # wrong magic
        b"GPRQ",  # shorter than a header
        valid[:-5],  # truncated item
        valid + b"\0" * 8,  # padded
        valid[:4] + b"\x09\x00" + valid[6:],  # unknown version
    ]
    for k, payload in enumerate(bad_payloads):
        send_raw(payload, (1 << 35) + 1000 * rank + k)  # far from the runtime's own sequences
        sent += 1
    check_serving(right, 5)

    # A truncated request through the real fetch path: the owner rejects it, the consumer
    # fails that batch quickly with the owner's reason, and the next fetch works.
    real_encode = wire.encode_request

    def truncated(*args, **kwargs):
        return real_encode(*args, **kwargs)[:-3]

    wire.encode_request = truncated
    try:
        started = time.monotonic()
        raises(
            gpupart.FetchError,
            lambda: rt.get(handles[right][12], timeout=60),
            f"rank {right} rejected",
            "truncated",
        )
        expect(time.monotonic() - started < 30, "a rejected request failed only by timeout")
        sent += 1
    finally:
        wire.encode_request = real_encode
emit("malformed", rank=rank, sent=sent)

# The owners still serve every tile to everyone.
rt.barrier()
everything = [h for owner in range(size) for h in handles[owner]]
where = [(owner, i) for owner in range(size) for i in range(len(SPECS))]
for (owner, i), arr, h in zip(where, rt.get(everything, timeout=120), everything, strict=True):
    check_tile(f"final tile {i} of rank {owner}", arr, expected(owner, i), h.order)

rt.barrier()
emit("done", rank=rank, size=size)
rt.close()
