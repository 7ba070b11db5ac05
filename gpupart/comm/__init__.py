"""Communication between the ranks of a job: tags, transports, progress and collectives.

``transport`` is the small interface (tagged sends and receives into given buffers,
progress, peers, close) with a UCX implementation (``ucx``) and an in-process one
(``inprocess``) for contract tests; ``engine`` progresses a transport from a background
thread and polls operations in flight; ``collectives`` builds barrier, broadcast, allgather,
allreduce and alltoall on top.
"""
