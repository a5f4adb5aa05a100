"""The layout `auto` picks (app/cores.py): cores counted from the affinity and the cgroup's CPU quota, never the
host's count, and processes x torch workers from them, resolved once in the settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from app.config import Settings
from app.cores import MAX_AUTO_PROCESSES, auto_layout, cgroup_quota, usable_cores


def test_a_cgroup_v2_quota_caps_the_cores_and_rounds_up(tmp_path: Path):
    (tmp_path / "cpu.max").write_text("150000 100000\n")  # docker run --cpus 1.5
    assert cgroup_quota(tmp_path) == 1.5
    assert usable_cores(tmp_path) == min(2, len(os.sched_getaffinity(0)))


def test_a_cgroup_v1_quota_is_read_too(tmp_path: Path):
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert usable_cores(tmp_path) == 1


@pytest.mark.parametrize("files", [{"cpu.max": "max 100000\n"}, {"cpu.max": "garbage"}, {}])
def test_no_quota_leaves_the_affinity(tmp_path: Path, files: dict[str, str]):
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    assert cgroup_quota(tmp_path) is None
    assert usable_cores(tmp_path) == len(os.sched_getaffinity(0))


@pytest.mark.parametrize("on_gpu, cores, processes, expected", [
    (False, 1, None, (1, 1)),
    (False, 2, None, (2, 1)),  # one process per core, one forward pass each
    (False, 64, None, (MAX_AUTO_PROCESSES, 64 // MAX_AUTO_PROCESSES)),  # a model copy each: capped
    (False, 4, 1, (1, 4)),  # processes set by hand: the cores go to its workers
    (False, 4, 3, (3, 1)),
    (True, 16, None, (1, 1)),  # one device: one process, one forward pass at a time on it
    (True, 16, 2, (2, 1)),
])
def test_auto_layout(on_gpu, cores, processes, expected):
    assert auto_layout(on_gpu, cores, processes) == expected


def test_the_settings_resolve_auto_once_into_numbers():
    cores = usable_cores()
    s = Settings(device="cpu")
    assert (s.processes, s.torch_workers) == auto_layout(False, cores)
    assert Settings(device="cpu", processes=1).torch_workers == cores
    assert (Settings(device="cpu", processes=2, torch_workers=3).processes,
            Settings(device="cpu", processes=2, torch_workers=3).torch_workers) == (2, 3)
    assert (Settings(device="cuda").processes, Settings(device="cuda").torch_workers) == (1, 1)
    assert Settings(device="cpu", processes="AUTO", torch_workers=2).torch_workers == 2
