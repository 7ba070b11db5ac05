"""``python -m gpupart``: the ``gpupart`` command line (see :mod:`gpupart.cli`)."""

from gpupart.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
