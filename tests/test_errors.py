"""The error hierarchy: base classes, messages, and pickling across processes."""

from __future__ import annotations

import pickle

import pytest

import gpupart
from gpupart import errors
from gpupart.errors import (
    AuthenticationError,
    BootstrapError,
    CommTimeoutError,
    FetchError,
    GpupartError,
    LaunchError,
    NotInitializedError,
    PartitionedError,
    PartitionedTypeError,
    PeerLostError,
    ProtocolViolationError,
    TileNotFoundError,
    TransportError,
    UCXLibraryError,
)
from gpupart.protocol import validate

SAMPLES = [
    PartitionedError("partitions[(1, 0)]['shape']", "a tuple of length 2", "length 3"),
    PartitionedTypeError("get", "a callable", "1 of type int"),
    NotInitializedError("call gpupart.init() first"),
    BootstrapError("GPUPART_RANK is not set"),
    AuthenticationError("bad token"),
    LaunchError("rank 1 exited with 3"),
    TransportError("ucx said no"),
    PeerLostError(3, "its process exited with -9"),
    CommTimeoutError("barrier", 2.5),
    FetchError("owner refused"),
    TileNotFoundError(1, 42, "freed"),
    ProtocolViolationError("truncated header"),
    UCXLibraryError("UCX 1.20.1 in /opt/mpich", "UCX 1.21.0 in /libucx/lib", "use one"),
]


@pytest.mark.parametrize("err", SAMPLES, ids=lambda e: type(e).__name__)
def test_every_error_pickles_with_its_fields(err):
    restored = pickle.loads(pickle.dumps(err))
    assert type(restored) is type(err)
    assert str(restored) == str(err)
    assert restored.args == err.args
    assert vars(restored) == vars(err)
    assert isinstance(restored, GpupartError)


def test_every_exported_error_round_trips_through_pickle():
    sampled = {type(e) for e in SAMPLES}
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, GpupartError)
        if cls in sampled:
            continue
        # An error without a sample above must take a single message (else add a sample).
        err = cls("something went wrong")
        restored = pickle.loads(pickle.dumps(err))
        assert type(restored) is cls
        assert str(restored) == "something went wrong"


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (PartitionedError, (GpupartError, ValueError)),
        (PartitionedTypeError, (PartitionedError, TypeError, ValueError)),
        (NotInitializedError, (GpupartError, RuntimeError)),
        (BootstrapError, (GpupartError, RuntimeError)),
        (AuthenticationError, (BootstrapError,)),
        (LaunchError, (GpupartError, RuntimeError)),
        (TransportError, (GpupartError, ConnectionError)),
        (PeerLostError, (TransportError,)),
        (UCXLibraryError, (TransportError,)),
        (CommTimeoutError, (GpupartError, TimeoutError)),
        (TileNotFoundError, (FetchError, LookupError)),
        (ProtocolViolationError, (GpupartError, ValueError)),
    ],
)
def test_hierarchy(cls, bases):
    for base in bases:
        assert issubclass(cls, base)


def test_partitioned_value_error_is_not_a_type_error():
    assert not issubclass(PartitionedError, TypeError)


def test_partitioned_error_message_and_fields():
    err = PartitionedError("locals[2]", "a grid position inside (4, 1)", "(5, 0)")
    assert str(err) == "locals[2]: expected a grid position inside (4, 1), found (5, 0)"
    assert (err.path, err.expected, err.found) == (
        "locals[2]",
        "a grid position inside (4, 1)",
        "(5, 0)",
    )


def test_structured_fields_of_runtime_errors():
    assert PeerLostError(2).rank == 2
    assert "rank 2 was lost" in str(PeerLostError(2))
    timeout = CommTimeoutError("fetch of tile 3", 1.5)
    assert (timeout.what, timeout.timeout) == ("fetch of tile 3", 1.5)
    assert str(timeout) == "fetch of tile 3: no answer within 1.5 s"
    missing = TileNotFoundError(0, 7)
    assert (missing.owner, missing.tile_id) == (0, 7)


def test_an_error_raised_by_validate_pickles_and_keeps_its_path():
    with pytest.raises(PartitionedTypeError) as info:
        validate({"shape": (4,), "partition_tiling": (1,), "partitions": {}, "get": 3})
    restored = pickle.loads(pickle.dumps(info.value))
    assert type(restored) is PartitionedTypeError
    assert restored.path == "get"
    assert str(restored) == str(info.value)
    assert isinstance(restored, TypeError)


def test_errors_are_exported_from_the_package():
    for name in errors.__all__:
        assert getattr(gpupart, name) is getattr(errors, name)
        assert name in gpupart.__all__
