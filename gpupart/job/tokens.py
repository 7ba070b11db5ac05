"""Slurm token files: the job step's secret, written by rank 0 and read by the other ranks.

Under Slurm no launcher hands the ranks a shared secret, so rank 0 writes one to a user-only
file in ``GPUPART_TOKEN_DIR`` (default ``~/.gpupart/tokens``, on a file system every node
sees) and the other ranks wait for it; see :func:`read_or_create_slurm_token`.
"""

from __future__ import annotations

import os
import pwd
import re
import secrets
import stat
import time
from pathlib import Path

from gpupart.errors import BootstrapError
from gpupart.job.spec import _DEFAULT_TIMEOUT, _MIN_TOKEN_BYTES, _TOKEN_BYTES, _Env

__all__ = ["read_or_create_slurm_token", "slurm_token_file"]


def slurm_token_file(
    token_dir: str | os.PathLike[str], job_id: str, step_id: str, restart: int = 0
) -> Path:
    """Return the path of a Slurm job step's token file (see :func:`read_or_create_slurm_token`).

    ``restart`` is ``SLURM_RESTART_COUNT``: a requeued job keeps its id, not its token.
    """
    name = f"{job_id}.{step_id}" + (f".r{restart}" if restart else "")
    return Path(token_dir) / (re.sub(r"[^A-Za-z0-9._-]", "_", name) + ".token")


def read_or_create_slurm_token(
    path: str | os.PathLike[str], *, create: bool, timeout: float = _DEFAULT_TIMEOUT
) -> bytes:
    """Create (rank 0, ``create=True``) or wait for and read the job step's token file.

    The file holds the secret in hex, is readable only by its owner (mode 0600) and lives in
    a directory only its owner may enter (0700). Rank 0 creates both; the file is created
    with ``O_CREAT | O_EXCL``, so a file left by another run is an error, not a reuse. The
    other ranks poll for it (listing the directory, which revalidates NFS caches) until
    ``timeout`` seconds; a file owned by someone else or readable by others is refused.
    """
    path = Path(path)
    return _create_token(path) if create else _wait_for_token(path, timeout)


def _create_token(path: Path) -> bytes:
    directory = path.parent
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.stat(directory)
    except OSError as exc:
        raise BootstrapError(
            f"GPUPART_TOKEN_DIR: could not create the token directory {directory}: {exc}"
        ) from exc
    if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
        raise BootstrapError(
            f"GPUPART_TOKEN_DIR: expected a directory owned by you (uid {os.getuid()}) with"
            f" mode 0700, found {directory} owned by uid {info.st_uid} with mode"
            f" {stat.S_IMODE(info.st_mode):04o}; run 'chmod 700 {directory}' or point"
            " GPUPART_TOKEN_DIR elsewhere"
        )
    token = secrets.token_bytes(_TOKEN_BYTES)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError as exc:
        raise BootstrapError(
            f"token file {path} already exists (left by an earlier run of this job step?);"
            " remove it and start the step again"
        ) from exc
    except OSError as exc:
        raise BootstrapError(f"could not create the token file {path}: {exc}") from exc
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, token.hex().encode() + b"\n")
        os.fsync(fd)
    except OSError as exc:
        raise BootstrapError(f"could not write the token file {path}: {exc}") from exc
    finally:
        os.close(fd)
    return token


def _wait_for_token(path: Path, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    pause = 0.01
    while True:
        token = _try_read_token(path)
        if token is not None:
            return token
        if time.monotonic() >= deadline:
            raise BootstrapError(
                f"token file {path} did not appear within {timeout:g} s"
                " (GPUPART_BOOTSTRAP_TIMEOUT); rank 0 writes it, so GPUPART_TOKEN_DIR must be"
                " a directory every node of the job sees, or set GPUPART_JOB_TOKEN"
            )
        time.sleep(min(pause, max(0.0, deadline - time.monotonic())))
        pause = min(pause * 2, 0.25)


def _try_read_token(path: Path) -> bytes | None:
    """Return the token, ``None`` while the file is missing or still being written."""
    try:
        if path.name not in os.listdir(path.parent):
            return None
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise BootstrapError(f"could not read the token file {path}: {exc}") from exc
    try:
        info = os.fstat(fd)
        if info.st_uid != os.getuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise BootstrapError(
                f"token file {path}: expected a file owned by you (uid {os.getuid()}) with mode"
                f" 0600, found one owned by uid {info.st_uid} with mode"
                f" {stat.S_IMODE(info.st_mode):04o}; refusing to trust it"
            )
        data = os.read(fd, 4096)
    finally:
        os.close(fd)
    if not data.endswith(b"\n"):
        return None  # rank 0 is still writing it
    try:
        token = bytes.fromhex(data.decode("ascii").strip())
    except (UnicodeDecodeError, ValueError):
        token = b""
    if len(token) < _MIN_TOKEN_BYTES:
        raise BootstrapError(
            f"token file {path}: expected a line of at least {2 * _MIN_TOKEN_BYTES} hex digits,"
            f" found {len(data)} bytes that are not one"
        )
    return token


def _token_dir(env: _Env) -> Path:
    if env.has("GPUPART_TOKEN_DIR"):
        text = env.environ["GPUPART_TOKEN_DIR"].strip()
        if not text:
            raise BootstrapError("GPUPART_TOKEN_DIR: expected a directory, found ''")
        return Path(text).expanduser()
    home = env.environ.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir
    return Path(home) / ".gpupart" / "tokens"
