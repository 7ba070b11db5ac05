"""Bulk batches (hundreds of tiles per owner, the vectorised path on both sides) with faults.

Every rank owns 400 tiles of odd sizes (1 B to 80 KiB, so packs carry padding and some
tiles travel alone) in six dtypes and both memory orders. Each rank then fetches, in one
call, 300 tiles of every rank (its own included) shuffled together, with a freed tile, an
unknown id, a forged size and duplicates mixed in; a subset goes into ``out=`` buffers.
``get`` must raise the first error; ``fetch`` must fail exactly the bad futures and deliver
every other tile intact, and the owners' tiles must be unchanged afterwards.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from _mp import check_tile, emit, expect, raises, values

import gpupart

N_TILES, N_PICK = 400, 300
DTYPES = ("uint8", "int16", "float32", "float64", "complex64", "bool")

rt = gpupart.init()
rank, size = rt.rank, rt.size


def spec(owner: int, i: int) -> tuple[str, tuple[int, ...], str]:
    dtype = DTYPES[(i + owner) % len(DTYPES)]
    itemsize = np.dtype(dtype).itemsize
    if i % 97 == 5:  # larger than the 64 KiB pack threshold: sent alone
        count = (80 << 10) // itemsize + i % 3
    else:
        count = 1 + (i * 7919 + owner * 31) % (3000 // itemsize)
    if i % 4 == 1 and count % 3 == 0:  # some 2-d tiles, half of them in F order
        return dtype, (3, count // 3), "F" if i % 8 == 1 else "C"
    return dtype, (count,), "C"


def want(owner: int, i: int) -> np.ndarray:
    dtype, shape, _ = spec(owner, i)
    return values(owner, 7000 + i, dtype, shape)


def tile(owner: int, i: int) -> np.ndarray:
    arr = want(owner, i)
    return np.asfortranarray(arr) if spec(owner, i)[2] == "F" else arr


mine = [tile(rank, i) for i in range(N_TILES)]
table = rt.allgather([rt.put(a) for a in mine])
rt.barrier()
freed_index = 17
rt.free(table[rank][freed_index])  # every rank frees its tile 17 (the others still hold handles)
rt.barrier()

rng = np.random.default_rng(rank)
picks = [
    (owner, int(i))
    for owner in range(size)
    for i in rng.choice(N_TILES, N_PICK, replace=False)
    if i != freed_index
]
picks += picks[:25]  # duplicates: the same tile twice in one call
order = rng.permutation(len(picks))
picks = [picks[k] for k in order]
handles = [table[o][i] for o, i in picks]

# 1. A clean bulk get, fresh buffers: contents, shapes, orders.
got = rt.get(handles, timeout=120)
for (owner, i), arr, h in zip(picks, got, handles, strict=True):
    check_tile(f"tile {i} of rank {owner}", arr, want(owner, i), h.order)
    if owner == rank:
        expect(arr is mine[i], "an own tile is returned without a copy")

# 2. The same with out= buffers for every third tile (others fresh).
outs = [
    (np.empty(h.shape, h.dtype, order=h.order) if k % 3 == 0 else None)
    for k, h in enumerate(handles)
]
got = rt.get(handles, out=outs, timeout=120)
for k, ((owner, i), arr) in enumerate(zip(picks, got, strict=True)):
    check_tile(f"tile {i} of rank {owner} (out=)", arr, want(owner, i), handles[k].order)
    if outs[k] is not None:
        expect(arr is outs[k], "an out= tile is delivered in its out buffer")

# 3. Faults mixed in: a freed tile, an unknown id and a forged size, on every owner.
bad_at = {}
faulty = list(handles)
for owner in range(size):
    victim = table[owner][(3 * owner + 11) % N_TILES]
    forged = dataclasses.replace(victim, nbytes=victim.nbytes + 1, shape=(victim.nbytes + 1,))
    forged = dataclasses.replace(forged, dtype="|u1")
    unknown = dataclasses.replace(victim, tile_id=10**12 + owner)
    for name, bad in (("freed", table[owner][freed_index]), ("unknown", unknown)):
        at = int(rng.integers(0, len(faulty)))
        faulty.insert(at, bad)
        bad_at = {k + (k >= at): v for k, v in bad_at.items()}
        bad_at[at] = (name, owner, gpupart.TileNotFoundError)
    at = int(rng.integers(0, len(faulty)))
    faulty.insert(at, forged)
    bad_at = {k + (k >= at): v for k, v in bad_at.items()}
    bad_at[at] = ("forged", owner, gpupart.FetchError)
first = min(bad_at)
first_name, first_owner, first_type = bad_at[first]
err = raises(first_type, lambda: rt.get(faulty, timeout=120))
if first_type is gpupart.TileNotFoundError:
    expect(err.owner == first_owner, f"get raised the first error (rank {first_owner})")
else:
    expect("not the size its handle says" in str(err), f"forged size reported: {err}")

futures = rt.fetch(faulty)
futures.wait(timeout=120)
pending = [f for f in futures if not f.done()]
expect(not pending, f"{len(pending)} tiles still pending")
good = iter(zip(picks, handles, strict=True))
for k, fut in enumerate(futures):
    if k in bad_at:
        name, owner, kind = bad_at[k]  # local bad handles fail the same way as remote ones
        expect(isinstance(fut.exception(), kind), f"{name} handle of rank {owner}: {fut}")
        continue
    (owner, i), h = next(good)
    check_tile(f"tile {i} of rank {owner} (faulty batch)", fut.result(), want(owner, i), h.order)

# 3b. Tiles of one size in several dtypes, shapes and orders: each comes back as itself
# (the consumer decides per request whether one strided view of a pack fits them all).
KINDS = (
    ("float64", (512,), "C"),
    ("int32", (32, 32), "C"),
    ("uint8", (4096,), "C"),
    ("float64", (64, 8), "F"),
    ("float64", (8, 64), "C"),
)
same_size = [values(rank, 500 + i, *KINDS[i % 5][:2]) for i in range(200)]
same_size = [np.asfortranarray(a) if KINDS[i % 5][2] == "F" else a for i, a in enumerate(same_size)]
alike_f = [np.asfortranarray(values(rank, 900 + i, "int16", (16, 128))) for i in range(100)]
kinds_table = rt.allgather(([rt.put(a) for a in same_size], [rt.put(a) for a in alike_f]))
right = (rank + 1) % size
mixed_kinds, all_f = kinds_table[right]
for label, hs, first, kind_of in (
    ("mixed kinds", mixed_kinds, 500, lambda i: KINDS[i % 5]),
    ("alike, F order", all_f, 900, lambda i: ("int16", (16, 128), "F")),
):
    for got in (rt.get(hs, timeout=120), [f.result(120) for f in rt.fetch(hs)]):
        for i, arr in enumerate(got):
            dtype, shape, order = kind_of(i)
            check_tile(
                f"{label} tile {i} of rank {right}",
                arr,
                values(right, first + i, dtype, shape),
                order,
            )

# 3c. A bulk request whose tiles all travel alone (just above the pack threshold; 100 of
# them fit one request's bytes): no packs at all.
alone_tiles = [values(rank, 3000 + i, "uint8", (70_000,)) for i in range(100)]
alone_table = rt.allgather([rt.put(a) for a in alone_tiles])
got = rt.get(alone_table[right], timeout=120)
futures = rt.fetch(alone_table[right])
for i, (arr, fut) in enumerate(zip(got, futures, strict=True)):
    want_alone = values(right, 3000 + i, "uint8", (70_000,))
    check_tile(f"alone tile {i} of rank {right}", arr, want_alone)
    check_tile(f"alone tile {i} of rank {right} (fetch)", fut.result(120), want_alone)
# Their receives are posted straight into the out= buffers: running, too late to cancel.
alone_outs = [np.empty(70_000, np.uint8) for _ in range(100)]
futures = rt.fetch(alone_table[right], out=alone_outs)
expect(not any(f.cancel() for f in futures), "a tile whose receive is posted is running")
futures.wait(timeout=120)
expect(all(f.done() for f in futures), "every tile completes")
for i, fut in enumerate(futures):
    expect(fut.result() is alone_outs[i], f"alone tile {i} delivered in its out= buffer")
    check_tile(f"alone tile {i} (out=)", alone_outs[i], values(right, 3000 + i, "uint8", (70_000,)))

# 4. More tiles than one request carries (4,096): the call is cut into several requests.
many = [np.full(3, rank * 100_000 + i, dtype=np.int32) for i in range(5000)]
many_table = rt.allgather([rt.put(a) for a in many])
right = (rank + 1) % size
got = rt.get(many_table[right] + many_table[rank][:10], timeout=120)
for i, arr in enumerate(got[:5000]):
    expect(arr.tolist() == [right * 100_000 + i] * 3, f"chunked tile {i} of rank {right}")
expect(all(a is b for a, b in zip(got[5000:], many[:10], strict=True)), "own tiles, no copy")
futures = rt.fetch(many_table[right])
futures.wait(timeout=120)
expect(all(f.result()[0] == right * 100_000 + i for i, f in enumerate(futures)), "chunked fetch")

# 5. Tiles cut from one array (back to back in the owner's memory): asked for in order, a
# pack is that memory sent as it is; in reverse order, or with a freed tile among them, the
# owner gathers. Every way must deliver the same bytes.
block = values(rank, 99, "float64", (3000, 64))  # 3,000 rows of 512 B
rows = [rt.put(block[i]) for i in range(3000)]
rows_table = rt.allgather(rows)
rt.barrier()
rt.free(rows_table[rank][1500])
rt.barrier()
want_rows = values(right, 99, "float64", (3000, 64))
got = rt.get(rows_table[right][:1500], timeout=120)  # back to back: sent without a copy
for k, arr in enumerate(got):
    expect(np.array_equal(arr, want_rows[k]), f"row {k} of rank {right} (one range)")
in_order = [h for k, h in enumerate(rows_table[right]) if k != 1500]  # a gap: gathered
got = rt.get(in_order, timeout=120)  # 1.5 MB: a pack in pooled memory
kept_rows = [k for k in range(3000) if k != 1500]
for k, arr in zip(kept_rows, got, strict=True):
    expect(np.array_equal(arr, want_rows[k]), f"row {k} of rank {right} (in order)")
held = got[::7]  # some tiles of that pack stay with the caller; the others are dropped
got = rt.get(in_order[::-1], timeout=120)
for k, arr in zip([k for k in range(3000) if k != 1500][::-1], got, strict=True):
    expect(np.array_equal(arr, want_rows[k]), f"row {k} of rank {right} (reversed)")
# Into out= buffers, the freed row among them: get raises, the freed row's buffer keeps what
# the caller put there, every other buffer holds its row.
row_outs = list(np.full((3000, 64), -1.0))
err = raises(gpupart.TileNotFoundError, lambda: rt.get(rows_table[right], out=row_outs))
expect(err.owner == right, f"the freed row's owner is named: {err}")
expect((row_outs[1500] == -1.0).all(), "a failed tile's out= buffer is left alone")
for k in kept_rows:
    expect(np.array_equal(row_outs[k], want_rows[k]), f"row {k} of rank {right} (out=)")
# The same with futures, some cancelled at once: cancelled ones leave their buffers alone.
row_outs = list(np.full((3000, 64), -1.0))
futures = rt.fetch(rows_table[right], out=row_outs)
cancelled = {k for k in range(0, 3000, 11) if futures[k].cancel()}
futures.wait(timeout=120)
for k, fut in enumerate(futures):
    if k in cancelled or k == 1500:
        expect((row_outs[k] == -1.0).all(), f"row {k}: a cancelled or failed tile's buffer")
    else:
        expect(fut.result() is row_outs[k], f"row {k} delivered in its out= buffer")
        expect(np.array_equal(row_outs[k], want_rows[k]), f"row {k} of rank {right} (fetch)")
futures = rt.fetch(rows_table[right])
futures.wait(timeout=120)
expect(isinstance(futures[1500].exception(), gpupart.TileNotFoundError), "freed row fails")
for k, fut in enumerate(futures):
    if k != 1500:
        expect(np.array_equal(fut.result(), want_rows[k]), f"row {k} (freed one among them)")
expect(np.array_equal(block, values(rank, 99, "float64", (3000, 64))), "own rows intact")
# Packs' memory is reused by later calls only once no tile of the pack is held: the tiles
# kept from the first call above are intact after all the calls since.
for k, arr in zip(kept_rows[::7], held, strict=True):
    expect(np.array_equal(arr, want_rows[k]), f"held row {k} of rank {right} after reuse")

# 6. The owners' tiles are intact after being served many times.
for i, arr in enumerate(mine):
    expect(np.array_equal(arr, want(rank, i)), f"own tile {i} changed")
rt.barrier()
emit("done", rank=rank, size=size, tiles=len(handles), faults=len(bad_at))
rt.close()
