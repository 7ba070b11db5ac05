"""Observability: NVTX ranges (gpupart.trace), rank-prefixed logs, the transfer summary.

The job tests start real ranks (``mp_scripts/observability.py``): the summary's bytes per
peer must equal what the ranks moved, their log records carry ``[rank N]``, close leaves
no filter, handler or level behind, and every range a rank enters is left again. The
one-rank test runs every container operation that has a range under a fake ``nvtx``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SCRIPTS, records, run_job
from inprocess_job import InProcessJob, ManualEvent

from gpupart import CommTimeoutError, TileNotFoundError, trace
from gpupart.logs import RankLogging
from gpupart.options import RuntimeOptions
from gpupart.tiles import traffic as traffic_module
from gpupart.tiles.traffic import Traffic
from gpupart.transfer_summary import NOT_KNOWN, TransferLog, format_summary

_spec = importlib.util.spec_from_file_location("_fake_nvtx", SCRIPTS / "_fake_nvtx.py")
fake_nvtx = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(fake_nvtx)

#: Ranges every rank of the job script enters (fetch.serve: each rank serves the others).
JOB_RANGES = {
    "fetch.get",
    "fetch.start",
    "fetch.serve",
    "exchange",
    "collective.allgather",
    "collective.alltoall",
    "collective.barrier",
}


@pytest.fixture
def fresh_trace(monkeypatch):
    """Let gpupart.trace look for nvtx again (it decides once per process), before and after."""
    trace.annotate.cache_clear()
    trace.nvtx_domain.cache_clear()
    yield monkeypatch
    trace.annotate.cache_clear()
    trace.nvtx_domain.cache_clear()


# -- gpupart.trace ------------------------------------------------------------------------


def test_ranges_are_one_shared_no_op_without_nvtx(fresh_trace):
    fresh_trace.setitem(sys.modules, "nvtx", None)  # import nvtx raises ImportError
    assert trace.nvtx_domain() is None
    assert trace.annotate("fetch.get") is trace.annotate("exchange")
    with pytest.raises(ValueError, match="inside"), trace.annotate("fetch.get"):
        raise ValueError("inside")  # not swallowed

    @trace.ranged("compute.test")
    def double(x: int) -> int:
        """Twice x."""
        return 2 * x

    assert double(21) == 42
    assert double.__name__ == "double" and double.__doc__ == "Twice x."


def test_nvtx_without_a_profiler_is_a_no_op(fresh_trace):
    nvtx = pytest.importorskip("nvtx")
    fresh_trace.delenv("NVTX_INJECTION64_PATH", raising=False)
    assert not isinstance(nvtx.get_domain(trace.DOMAIN), nvtx.Domain)  # its dummy domain
    assert trace.nvtx_domain() is None
    assert trace.annotate("fetch.get") is trace.annotate("exchange")


def test_a_dummy_domain_gives_no_ranges(fresh_trace):
    fake, domain = fake_nvtx.module()
    fake.get_domain = lambda name=None: object()  # what nvtx hands out without a profiler
    fresh_trace.setitem(sys.modules, "nvtx", fake)
    with trace.annotate("fetch.get"):
        pass
    assert domain.events == []


def test_ranges_push_and_pop_with_nvtx(fresh_trace):
    fake, domain = fake_nvtx.module()
    fresh_trace.setitem(sys.modules, "nvtx", fake)
    with trace.annotate("fetch.get"), trace.annotate("fetch.start"):
        pass
    with pytest.raises(KeyError), trace.annotate("exchange"):
        raise KeyError("x")
    names = [name for _, name in domain.events]
    assert names == ["fetch.get", "fetch.start", None, None, "exchange", None]
    assert domain.unbalanced() == []


def test_every_container_range_in_a_one_rank_job(fresh_trace, one_rank, tmp_path):
    fake, domain = fake_nvtx.module()
    fresh_trace.setitem(sys.modules, "nvtx", fake)
    import gpupart

    xp = gpupart.array_api

    rt = one_rank
    h = rt.put(np.arange(10.0))
    assert rt.get(h)[3] == 3.0
    assert rt.fetch([h]).result(10)[0][4] == 4.0
    assert rt.exchange([np.arange(3)])[0].tolist() == [0, 1, 2]
    rt.barrier()
    assert rt.allreduce(np.ones(2)).tolist() == [1.0, 1.0]
    x = gpupart.asarray(np.arange(12.0).reshape(4, 3))
    assert float(xp.sum(xp.add(x, 1.0))) == 78.0
    a = np.arange(12.0).reshape(4, 3)
    assert (x.T @ x).to_numpy().tolist() == (a.T @ a).tolist()
    assert xp.sort(xp.asarray(np.array([3.0, 1.0, 2.0]))).to_numpy().tolist() == [1.0, 2.0, 3.0]
    pdf = pd.DataFrame({"k": [1, 2, 1, 2], "v": [4.0, 3.0, 2.0, 1.0]})
    df = gpupart.from_pandas(pdf)
    assert df.groupby("k").sum().to_pandas().sort_values("k")["v"].tolist() == [6.0, 4.0]
    assert len(df.merge(df, on="k").to_pandas()) == 8
    assert df.sort_values("v").to_pandas()["v"].tolist() == [1.0, 2.0, 3.0, 4.0]
    df.to_parquet(str(tmp_path / "frame"))
    assert len(gpupart.read_parquet(str(tmp_path / "frame")).to_pandas()) == 4
    expected = {
        "fetch.get",
        "fetch.start",
        "exchange",
        "collective.barrier",
        "collective.allreduce",
        "collective.alltoall",
        "compute.elementwise",
        "compute.reduce",
        "compute.matmul",
        "compute.sort",
        "compute.groupby",
        "compute.merge",
        "compute.sort_values",
        "io.to_parquet",
        "io.read_parquet",
    }
    assert expected <= set(domain.names()), expected - set(domain.names())
    assert domain.unbalanced() == []


# -- options and logging --------------------------------------------------------------------


def test_options_for_logs_and_the_summary():
    env = {"GPUPART_LOG_LEVEL": "info", "GPUPART_TRANSFER_SUMMARY": "1"}
    opts = RuntimeOptions.resolve({}, env)
    assert (opts.log_level, opts.transfer_summary) == ("INFO", True)
    opts = RuntimeOptions.resolve({}, {"GPUPART_TRANSFER_SUMMARY": "out/s.json"})
    assert (opts.log_level, opts.transfer_summary) == (None, "out/s.json")
    assert RuntimeOptions.resolve({"transfer_summary": "off"}, {}).transfer_summary is False
    with pytest.raises(ValueError, match=r"GPUPART_LOG_LEVEL.*'LOUD'"):
        RuntimeOptions.resolve({}, {"GPUPART_LOG_LEVEL": "LOUD"})
    with pytest.raises(TypeError, match="transfer_summary: expected a bool or a file path"):
        RuntimeOptions.resolve({"transfer_summary": 3}, {})


def test_rank_logging_prefixes_and_leaves_nothing_behind(caplog):
    before = logging.getLogger("gpupart").level
    logging.getLogger("gpupart.test_observability")  # a gpupart logger made before the runtime
    ranks = RankLogging(3, "DEBUG")
    with caplog.at_level(logging.DEBUG, logger="gpupart"):
        logging.getLogger("gpupart.test_observability").debug("value %d", 7)
    assert [r.getMessage() for r in caplog.records] == ["[rank 3] value 7"]
    assert caplog.records[0].rank == 3
    ranks.close()
    ranks.close()
    assert logging.getLogger("gpupart").level == before
    assert not logging.getLogger("gpupart").handlers  # pytest's handler sits on the root
    touched = [
        lg
        for name, lg in logging.Logger.manager.loggerDict.items()
        if name.startswith("gpupart") and isinstance(lg, logging.Logger) and lg.filters
    ]
    assert touched == []


def test_binding_records_carry_the_rank_and_a_failed_start_leaves_no_filter(monkeypatch, caplog):
    from gpupart import core
    from gpupart.errors import BootstrapError
    from gpupart.job import bootstrap

    def failing_bind(local_rank, topo, options):
        logging.getLogger("gpupart.binding").info("binding local rank %d", local_rank)
        raise BootstrapError("no GPU for this rank")

    monkeypatch.setattr(core, "bind_process", failing_bind)
    spec = bootstrap.detect({})  # a world of one
    with caplog.at_level(logging.INFO, logger="gpupart"), pytest.raises(BootstrapError):
        core.Runtime(spec, RuntimeOptions.resolve({"log_level": "INFO"}, {}))
    assert [r.getMessage() for r in caplog.records] == ["[rank 0] binding local rank 0"]
    touched = [
        name
        for name, lg in logging.Logger.manager.loggerDict.items()
        if name.startswith("gpupart") and isinstance(lg, logging.Logger) and lg.filters
    ]
    assert touched == []


# -- the counters and the summary -----------------------------------------------------------


def test_busy_time_counts_overlapping_requests_once(monkeypatch):
    clock = iter([0.0, 4.0, 10.0, 12.0, 13.0])  # read when a peer turns busy or idle
    monkeypatch.setattr(traffic_module.time, "perf_counter", lambda: next(clock))
    traffic = Traffic(3)
    traffic.begin(1, 100)  # t=0
    traffic.begin(1, 50)  # overlaps: no clock
    traffic.end(1)
    traffic.end(1)  # t=4: busy 0..4
    traffic.begin(2, 7)  # t=10
    traffic.count(0, 5)  # untimed
    assert traffic.snapshot() == [(0, 5, 1, 0.0), (1, 150, 2, 4.0), (2, 7, 1, 2.0)]  # t=12
    traffic.end(2)  # t=13
    assert traffic.busy == [0.0, 4.0, 3.0]


def test_every_request_ends_in_the_count_delivered_or_failed():
    with InProcessJob(2) as job:
        received, sent = Traffic(2), Traffic(2)
        job.ranks[0].fetcher._traffic = received
        job.ranks[1].server.traffic = sent
        owner = job.ranks[1]
        handles = [owner.put(np.arange(n, dtype=np.uint8)) for n in (100, 200_000)]
        missing = dataclasses.replace(handles[0], tile_id=10**9)
        never = owner.put(np.arange(300, dtype=np.uint8), ManualEvent())  # never ready

        def consume(rank):
            if rank.rank != 0:
                return None
            assert [a.nbytes for a in rank.get(handles)] == [100, 200_000]
            failed = rank.fetch([missing])
            with pytest.raises(TileNotFoundError, match="has no tile"):
                failed.result(30)
            with pytest.raises(CommTimeoutError):
                rank.get([never], timeout=0.5)  # given up: its receive is failed
            return None

        job.run(consume)
        first = received.snapshot()
        time.sleep(0.05)
        assert received.snapshot() == first  # nothing still in flight
        assert [(p, b, n) for p, b, n, _ in first] == [(1, 200_100 + 100 + 300, 3)]
        # the missing tile's request is served too (an error reply, no bytes)
        assert [(p, b, n) for p, b, n, _ in sent.snapshot()] == [(0, 200_100, 2)]


class _Transport:
    def __init__(self, lanes):
        self._lanes = lanes

    def lanes(self):
        if isinstance(self._lanes, Exception):
            raise self._lanes
        return self._lanes

    def settings(self):
        return {"TLS": "tcp"}


@pytest.mark.parametrize("lanes", [None, OSError("no libucp")])
def test_a_rank_alone_prints_and_writes_its_own_report(tmp_path, capsys, lanes):
    target = tmp_path / "summary.json"
    log = TransferLog(rank=1, size=2, job_id="j", host="h", target=str(target))
    log.received.begin(0, 1000)
    log.received.end(0)
    log.sent.count(0, 500)
    log.publish(_Transport(lanes), gather=None, timeout=1.0)
    written = json.loads((tmp_path / "summary.rank1.json").read_text())
    assert not target.exists()
    (report,) = written["ranks"]
    (peer,) = report["peers"]
    assert peer["lanes"] is None and peer["received"]["bytes"] == 1000
    assert peer["sent"] == {"bytes": 500, "requests": 1, "seconds": 0.0, "gb_per_s": None}
    assert [g["lanes"] for g in report["transports"]] == [NOT_KNOWN]
    assert written["transport"] == {"TLS": "tcp"}
    assert capsys.readouterr().err == format_summary(written)


# -- a real job ------------------------------------------------------------------------------


@pytest.mark.multiprocess
@pytest.mark.parametrize("n", [2, 3])
def test_summary_logs_and_ranges_in_a_job(tmp_path, n):
    path = tmp_path / "summary.json"
    env = {"GPUPART_TRANSFER_SUMMARY": str(path), "GPUPART_LOG_LEVEL": "INFO"}
    rc, out, err = run_job(n, "observability.py", env=env)
    assert rc == 0, err[-6000:]
    moved = {r["rank"]: r["received"] for r in records(out, "moved")}
    assert sorted(moved) == list(range(n))
    summary = json.loads(Path(path).read_text())
    assert summary["size"] == n and summary["transport"]["TLS"]
    reports = {r["rank"]: r for r in summary["ranks"]}
    assert sorted(reports) == list(range(n))
    for rank, report in reports.items():
        peers = {e["peer"]: e for e in report["peers"]}
        assert {str(p): e["received"]["bytes"] for p, e in peers.items()} == moved[rank]
        for peer, entry in peers.items():
            theirs = {e["peer"]: e for e in reports[peer]["peers"]}[rank]
            assert entry["sent"]["bytes"] == theirs["received"]["bytes"]
            for direction in ("received", "sent"):
                rate = entry[direction]
                assert rate["requests"] >= 1 and rate["seconds"] > 0 and rate["gb_per_s"] > 0
            assert entry["lanes"] and all("/" in lane for lane in entry["lanes"])
        (group,) = report["transports"]  # one machine: every peer over the same lanes
        assert group["received"]["bytes"] == sum(e["received"]["bytes"] for e in peers.values())
        assert group["lanes"] == ", ".join(peers[min(peers)]["lanes"])
    assert f"[0] gpupart transfer summary: job {summary['job_id']}, {n} rank(s)" in err
    for rank in range(n):
        assert f"[{rank}] INFO gpupart.fetch: [rank {rank}] probe from rank {rank}" in err
        assert f"[{rank}] WARNING gpupart.runtime: [rank {rank}] gpupart.init: a runtime" in err
        assert f"[{rank}] gpupart transfer summary" not in err or rank == 0
    for closed in records(out, "closed"):
        assert (closed["filters"], closed["handlers"], closed["level"]) == ([], 0, 0)
    ranges = records(out, "ranges")
    assert len(ranges) == n
    for r in ranges:
        assert set(r["names"]) >= JOB_RANGES, JOB_RANGES - set(r["names"])
        assert r["unbalanced"] == []
