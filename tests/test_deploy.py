"""deploy/ and bench/gpu_check.sh lint clean: ``bash -n`` and shellcheck for the shell scripts and
the Apptainer definition's sections, hadolint for the Dockerfile (each linter skipped, with the
reason, where it is not installed: ``pip install -e .[test]`` brings both)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DEPLOY = REPO / "deploy"
SCRIPTS = [*sorted(DEPLOY.glob("slurm/*.sbatch")), REPO / "bench" / "gpu_check.sh"]


def _tool(name: str) -> str:
    """The linter next to this Python (the test extra installs it there), else on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[test]' provides it)")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def test_the_files_are_there():
    names = {p.relative_to(DEPLOY).as_posix() for p in DEPLOY.rglob("*") if p.is_file()}
    assert {
        "Dockerfile",
        "gpupart.def",
        "README.md",
        "slurm/one-node-8gpu.sbatch",
        "slurm/multi-node.sbatch",
        "slurm/pyxis.sbatch",
    } <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_parse(script):
    proc = _run("bash", "-n", str(script))
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shell_scripts_pass_shellcheck(script):
    proc = _run(_tool("shellcheck"), "--severity=style", str(script))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_shellcheck_finds_what_it_should(tmp_path):
    """The linter is not a no-op here: an unquoted expansion is reported."""
    bad = tmp_path / "bad.sh"
    bad.write_text("#!/bin/bash\nrm -rf $1/tmp\n")
    proc = _run(_tool("shellcheck"), "--severity=style", str(bad))
    assert proc.returncode != 0 and "SC2086" in proc.stdout


@pytest.mark.parametrize("script", SCRIPTS[:-1], ids=lambda p: p.name)
def test_job_files_do_not_isolate_gpus_per_task(script):
    """--gpus-per-task hides each task's peers' GPUs and so disables CUDA IPC (see README)."""
    text = script.read_text()
    assert "--gpus-per-task" not in text.replace("not --gpus-per-task", "")
    assert re.search(r"^#SBATCH --gpus-per-node=8$", text, re.M)
    assert re.search(r"^#SBATCH --output=logs/", text, re.M)


def _sections(definition: str) -> dict[str, list[str]]:
    """The script sections (``%post`` of each stage, ``%environment``, ...) of a .def file."""
    found: dict[str, list[str]] = {}
    name = None
    for line in definition.splitlines():
        m = re.match(r"^%(\w+)", line)
        if m:
            name = m.group(1)
            found.setdefault(name, []).append("")
        elif re.match(r"^(Bootstrap|From|Stage):", line):
            name = None
        elif name is not None:
            found[name][-1] += line + "\n"
    return found


def test_apptainer_definition_sections_pass_shellcheck(tmp_path):
    sections = _sections((DEPLOY / "gpupart.def").read_text())
    assert len(sections["post"]) == 2  # the UCX stage and the final stage
    assert {"environment", "runscript", "test", "files"} <= set(sections)
    shellcheck = _tool("shellcheck")
    for kind in ("post", "environment", "runscript", "test"):
        for i, body in enumerate(sections[kind]):
            script = tmp_path / f"{kind}{i}.sh"
            script.write_text("#!/bin/sh\n" + body)  # Apptainer runs them with /bin/sh
            proc = _run(shellcheck, "--severity=style", str(script))
            assert proc.returncode == 0, f"%{kind} #{i}:\n{proc.stdout}"


def test_dockerfile_passes_hadolint():
    proc = _run(
        _tool("hadolint"),
        "--config",
        str(DEPLOY / ".hadolint.yaml"),
        str(DEPLOY / "Dockerfile"),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ucx_in_the_images_is_built_with_verbs():
    for name in ("Dockerfile", "gpupart.def"):
        text = (DEPLOY / name).read_text()
        assert "--with-verbs" in text and "--with-rdmacm" in text, name
        assert "RAPIDS_LIBUCX_PREFER_SYSTEM_LIBRARY=true" in text, name
        assert "rapidsai/base:" in text, name


# -- bench/gpu_check.sh without a GPU ------------------------------------------------------


def _gpu_check(tmp_path, *args: str, steps: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUPART_", "SLURM_"))}
    env.update(OUT=str(tmp_path), PYTHON=sys.executable)
    if steps is not None:
        env["GPU_CHECK_STEPS"] = steps
    return subprocess.run(
        ["bash", str(REPO / "bench" / "gpu_check.sh"), *args],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env=env,
        cwd=tmp_path,  # the script finds the repository from its own path
    )


def test_gpu_check_refuses_unknown_arguments(tmp_path):
    proc = _gpu_check(tmp_path, "--fast")
    assert proc.returncode == 2 and "usage: bash bench/gpu_check.sh [--dry-run]" in proc.stderr


@pytest.mark.slow
@pytest.mark.multiprocess
def test_gpu_check_dry_run_on_cpu(tmp_path):
    """Every step but the GPU tests, on CPU at small sizes: the flow, the benchmarks' CPU
    paths, gpupart info's JSON and the final table."""
    steps = "wheels install info gpu-fetch arrays gpu-ml"
    proc = _gpu_check(tmp_path, "--dry-run", steps=steps)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    summary = (tmp_path / "summary.txt").read_text()
    for name in steps.split():
        assert f"== {name}\n   rc=0 in" in summary, summary
    assert "== tests-gpu" not in summary  # GPU_CHECK_STEPS leaves it out
    info = json.loads((tmp_path / "info.json").read_text())
    assert info["ucx"]["version"] and "gpus" in info
    table = (tmp_path / "table.md").read_text()
    assert "peer fetch 64 KiB" in table and "peer fetch 1 MiB" in table
    assert "| peer fetch: UCX lanes |" in table
    for op in ("exp(x).sum()", "(2*x + y).sum()", "std(x)", "X.T @ X"):
        assert f"| DistArray {op} |" in table
    assert "LinearRegression.fit" in table and "PCA.fit" in table
    assert "missing or failed" not in table
    assert proc.stdout.rstrip().splitlines()[-1].startswith("failures: 0 in")
