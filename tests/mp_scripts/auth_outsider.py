"""An outsider without the job token attacks rank 0's UCX worker (no environment but PYTHONPATH).

argv: the file holding rank 0's worker address, a tile id of rank 0, and a marker path that
a successful code injection would create. It connects its own UCX worker to rank 0 and sends:
pickles and well-formed collective messages claiming to come from rank 1 (no MAC, a random
MAC), a fetch request for the tile, a message of a collective kind just over the 64 MiB a
control message may have, and tile bytes (``DATA`` messages, which carry no MAC) claiming to
come from rank 1 for the first ``DATA_SEQS`` sequence numbers: where a fetcher's batches would
be numbered without a random start. It then waits two seconds for tile bytes and prints
``@outsider {json}``.
"""

from __future__ import annotations

import json
import os
import pickle
import sys
import time
from pathlib import Path

import numpy as np

from gpupart.comm import codec
from gpupart.comm.tags import Kind, make_tag
from gpupart.comm.ucx import UCXTransport
from gpupart.tiles import wire

address_file, tile_id, marker = sys.argv[1], int(sys.argv[2]), sys.argv[3]
DATA_SEQS = 4096
assert not any(k.startswith("GPUPART_") for k in os.environ), "the outsider has no token"


class Evil:
    def __reduce__(self):
        return (os.mkdir, (marker,))


me = UCXTransport()
me.connect(0, Path(address_file).read_bytes())
sends, keep = [], []


def send(tag: int, payload: bytes) -> None:
    buf = np.frombuffer(payload, np.uint8).copy()
    keep.append(buf)
    sends.append(me.send(0, tag, buf))


evil = pickle.dumps(Evil())
# First (only the first drops are logged): over the 64 MiB limit even with a MAC.
send(make_tag(Kind.COLLECTIVE, 1, 3), bytes((64 << 20) + 17))
for seq in range(12):  # whatever collective rank 0 is in, as if from rank 1
    tag = make_tag(Kind.COLLECTIVE, 1, seq)
    send(tag, evil)
    send(tag, codec.encode((("barrier",), "ok", None)))
    send(tag, codec.encode((("barrier",), "ok", None)) + os.urandom(16))
    send(make_tag(Kind.ABORT, 1, seq), codec.encode((int(Kind.COLLECTIVE), "outsider abort")))
items = np.zeros(1, dtype=wire.ITEM)
items["tile_id"], items["nbytes"], items["pack"] = tile_id, 4096, -1
request = wire.encode_request(items, [], 7, 8)
send(make_tag(Kind.REQUEST, 1, 6), request)
send(make_tag(Kind.REQUEST, 1, 6), request + os.urandom(16))
junk = np.full(4096, 0xEE, np.uint8)  # one tile of rank 1 (512 float64) in bytes
for seq in range(DATA_SEQS):
    sends.append(me.send(0, make_tag(Kind.DATA, 1, seq), junk))
got = np.zeros(4096, np.uint8)
receive = me.recv(make_tag(Kind.DATA, 0, 7), got)
deadline = time.monotonic() + 10
while not all(s.completed for s in sends) and time.monotonic() < deadline:
    me.progress()
time.sleep(0.01)
end = time.monotonic() + 2.0
while time.monotonic() < end and not receive.completed:
    me.progress()
print(
    "@outsider " + json.dumps({"sent": len(sends), "tile_bytes_received": receive.completed}),
    flush=True,
)
os._exit(0)  # a receive is still posted: do not wait on the worker's teardown
