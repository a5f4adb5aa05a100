"""Several server processes on one port (SENTIMENT_PROCESSES): separate event loops and GILs, each with its own
model copy, torch workers and queue.

`python -m app` binds the port and, with more than one process, becomes a supervisor that serves nothing itself:
it binds one socket per child on the same address (SO_REUSEPORT) and starts `python -m app` children that each
inherit theirs. The kernel spreads new connections over the sockets that listen, by a hash of each connection's
addresses. With one socket shared by all, the process that woke first took whatever had arrived: wrk's 16
connections, opened at once, left one process with nearly all of them, and keep-alive kept them there
(docs/benchmarks.md). Without SO_REUSEPORT (not Linux) the children share one socket. The first child starts
alone, so a bad artifact or device stops startup with that child's one-line error and not N copies of it; the
others start once it is warm, and a socket gets connections only once its child listens, after its warm-up. Then
the supervisor closes its own copies of the sockets: a child that drains answers what is left in its socket's
backlog and closes it, and new connections go to the sockets still listening.

What one process promises holds for all of them:
- readiness: a child answers `/health/ready` 200 only while every child is warm (a marker file each, in a run
  folder the supervisor owns);
- metrics: counters and histograms are summed over the children, gauges summed or, for readiness, the minimum
  (prometheus-client's multiprocess mode, in the same folder), whichever child serves `/metrics`;
- SIGTERM/SIGINT: forwarded to every child (each in a process group of its own, so a signal to the supervisor's
  group reaches it once), each drains as a single server does (a second signal stops at once);
  the supervisor exits 0 once all have, and a child that dies unasked stops the others and exits non-zero, so an
  orchestrator restarts the whole replica;
- a child whose supervisor dies gets SIGTERM from the kernel (no orphans holding the port);
- explain admission: each child's explain lane publishes the work it has admitted (`SharedCounts`, a file in the
  same folder mapped into every child), and weighs what the others have admitted too: their explanations share
  the same cores.
"""

from __future__ import annotations

import ctypes
import logging
import mmap
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from prometheus_client import multiprocess

log = logging.getLogger("app.processes")

EXIT_FATAL = 1  # the server failed while running
EXIT_BAD_CONFIG = 2  # it could not start; the process printed why, in one line
READY = "ready"
METRICS = "metrics"
METRICS_ENV = "PROMETHEUS_MULTIPROC_DIR"
POLL_S = 0.05
# One listening socket per child, balanced by the kernel: Linux's SO_REUSEPORT (elsewhere the option exists with
# other semantics, or not at all).
REUSE_PORT = sys.platform == "linux" and hasattr(socket, "SO_REUSEPORT")


@dataclass(frozen=True)
class Siblings:
    """A child's place among the server's processes."""

    run_dir: Path
    index: int
    count: int

    @property
    def _marker(self) -> Path:
        return self.run_dir / READY / str(self.index)

    def mark_ready(self, ready: bool) -> None:
        if ready:
            self._marker.touch()
        else:
            self._marker.unlink(missing_ok=True)

    def is_ready(self) -> bool:
        """This process is warm."""
        return self._marker.exists()

    def all_ready(self) -> bool:
        try:
            return len(os.listdir(self.run_dir / READY)) >= self.count
        except OSError:  # the supervisor is gone and took the folder with it
            return False

    def counts(self, name: str) -> SharedCounts:
        """A count per process, shared by all of them under `name`."""
        return SharedCounts(self.run_dir / name, self.index, self.count)


class SharedCounts:
    """One integer per process in a file of the run folder, mapped into every process: each writes only its own,
    any reads all. One writer per slot needs no lock; an aligned 8-byte store is not seen half-written on the
    platforms this runs on, and a value read a moment stale is as good as one read a moment earlier."""

    SLOT = struct.calcsize("q")

    def __init__(self, path: Path, index: int, count: int):
        self.index, self.count = index, count
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < count * self.SLOT:  # whichever process comes first sizes it (zeros)
                os.ftruncate(fd, count * self.SLOT)
            self._map = mmap.mmap(fd, count * self.SLOT)
        finally:
            os.close(fd)

    def publish(self, value: int) -> None:
        struct.pack_into("q", self._map, self.index * self.SLOT, value)

    def others(self) -> int:
        """The sum of every other process's count."""
        values = struct.unpack_from(f"{self.count}q", self._map)
        return max(0, sum(values) - values[self.index])

    def others_max(self) -> int:
        """The largest of every other process's count (0 without others)."""
        values = struct.unpack_from(f"{self.count}q", self._map)
        return max((v for i, v in enumerate(values) if i != self.index), default=0)


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM when the supervisor dies (Linux's PR_SET_PDEATHSIG; elsewhere a no-op)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


class Supervisor:
    def __init__(self, socks: list[socket.socket], host: str, port: int):
        """`socks[i]` is child i's listening socket (the same one for all where there is no SO_REUSEPORT)."""
        self.socks = socks
        self.count = count = len(socks)
        self.host, self.port = host, port
        self.run_dir = Path(tempfile.mkdtemp(prefix="sentiment-"))
        (self.run_dir / READY).mkdir()
        (self.run_dir / METRICS).mkdir()
        self.places = [Siblings(self.run_dir, index, count) for index in range(count)]
        self.children: dict[int, subprocess.Popen] = {}
        self.exits: dict[int, int] = {}
        self.stopping = False
        self.failed = False

    def run(self) -> int:
        """Start the children, wait for them all to end; the exit code of the whole server."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._forward)
        try:
            self._start(0)
            while not self.stopping and not self._reap() and not self.places[0].is_ready():
                time.sleep(POLL_S)
            if not self.stopping:
                for index in range(1, self.count):
                    self._start(index)
                log.info("started %d server processes on %s:%d", self.count, self.host, self.port)
            for sock in self.socks:
                sock.close()
            while len(self.exits) < len(self.children):
                self._reap()
                time.sleep(POLL_S)
        finally:
            for child in self.children.values():
                if child.poll() is None:
                    child.kill()
            shutil.rmtree(self.run_dir, ignore_errors=True)
        # A child stopped by a forwarded signal before it could install its own handlers ends "killed" (< 0):
        # that is the stop that was asked for.
        codes = [self.exits[i] for i in sorted(self.exits)]
        return next((c for c in codes if c > 0), EXIT_FATAL if self.failed else 0)

    def _start(self, index: int) -> None:
        env = {**os.environ, METRICS_ENV: str(self.run_dir / METRICS)}
        fd = self.socks[index].fileno()
        command = [sys.executable, "-m", "app", "--host", self.host, "--port", str(self.port),
                   "--listen-fd", str(fd), "--process", str(index), "--processes", str(self.count),
                   "--run-dir", str(self.run_dir)]
        # A process group of its own: a signal sent to the supervisor's group (Ctrl+C in a terminal, `kill -- -PGID`)
        # reaches the child once, forwarded, rather than twice, which would stop it without a drain.
        self.children[index] = subprocess.Popen(command, env=env, pass_fds=(fd,), process_group=0,
                                                preexec_fn=_die_with_parent)  # noqa: PLW1509 - no threads here yet

    def _forward(self, sig: int, frame) -> None:
        self.stopping = True
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(sig)

    def _reap(self) -> bool:
        """Collect children that ended; True if one did."""
        ended = False
        for index, child in self.children.items():
            code = child.poll()
            if code is None or index in self.exits:
                continue
            ended = True
            self.exits[index] = code
            self.places[index].mark_ready(False)
            multiprocess.mark_process_dead(child.pid, str(self.run_dir / METRICS))
            if not self.stopping:
                self.failed = True
                if code != EXIT_BAD_CONFIG:  # (a startup error: the child has said why, in one line)
                    log.error("server process %d (pid %d) ended with exit code %d; stopping the others",
                              index, child.pid, code)
                self._forward(signal.SIGTERM, None)
        return ended
