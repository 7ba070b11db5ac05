"""Job start-up: where this process sits in the job, and how the job's processes meet.

``bootstrap`` reads what a launcher left in the environment (``gpupart run``, Slurm, MPI) into
a ``spec.JobSpec``, with ``slurm``, ``tokens`` (Slurm's job secret) and ``mpi`` doing each
launcher's part; ``coordinator`` is the job's authenticated rendezvous and liveness service;
``launcher`` starts and supervises the ranks of ``gpupart run``; ``binding`` binds a rank to
its GPU and CPUs. Nothing here imports UCX or the runtime.
"""
