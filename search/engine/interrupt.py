"""Ctrl-C and SIGTERM during a search: stop asking, let running trials finish briefly, keep the record.

The first signal asks the search to stop: no new trials, the running ones get `GRACE_S`
seconds to finish (a finished trial is recorded; one cut short is not, so a resume runs
it again), then `SearchInterrupted` carries the signal and the run directory to the CLI,
which prints the front and the resume hint and exits 128 + the signal number (130 for
SIGINT, 143 for SIGTERM). Outside that phase (data, backbones, baselines), and at the
second signal, `SearchInterrupted` is raised at once.
"""
from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from search.runstore.store import RunStore

SIGNALS = (signal.SIGINT, signal.SIGTERM)
GRACE_S = 5.0  # how long running trials may take to finish after the first signal


class SearchInterrupted(KeyboardInterrupt):
    """A search ended by a signal; `exit_code` is the shell's 128 + signal number."""

    def __init__(self, signum: int, forced: bool = False, run_dir: Path | None = None) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum, self.forced = signum, forced  # forced: a second signal, no time for the report
        self.exit_code = 128 + signum
        self.run_dir = run_dir  # the run directory, once it exists (`Interrupts.run_dir`)


class Interrupts:
    """The search's SIGINT/SIGTERM handler (install it with `installed()`, from the main thread)."""

    def __init__(self, grace_s: float = GRACE_S) -> None:
        self.grace_s = grace_s
        self.signum: int | None = None
        self.since: float | None = None
        self.signalled = threading.Event()  # set at the first signal, for threads that watch for it
        self.received: int | None = None  # that signal: known as it arrives (see `installed`), also
        # while the main thread is held in Ray's native code, where the handler cannot run yet
        self.run_dir: Path | None = None  # set by `search.api` once the run directory exists: every
        # SearchInterrupted raised from then on carries it, wherever the signal lands (a second
        # Ctrl-C during Ray's shutdown or while the run's lock is released, too)
        self._soft = False
        self._installed = False

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def overdue(self) -> bool:
        """True once the running trials have had their grace period."""
        return self.since is not None and time.monotonic() - self.since > self.grace_s

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self._note(signum)
        if self.signum is not None or not self._soft:
            forced, self.signum = self.signum is not None, self.signum or signum
            raise SearchInterrupted(self.signum, forced, self.run_dir)
        self.signum, self.since = signum, time.monotonic()

    def _note(self, signum: int) -> None:
        if self.received is None:
            self.received = signum
        self.signalled.set()

    def _listen(self, fd: int) -> None:
        """Read the signal numbers Python's C-level handler writes to the wakeup fd the moment a
        signal arrives (the Python-level handler runs only once the main thread runs Python)."""
        while data := os.read(fd, 64):
            for signum in data:
                if signum in SIGNALS:
                    self._note(signum)
        os.close(fd)

    @contextlib.contextmanager
    def installed(self) -> Iterator[Interrupts]:
        """Handle SIGINT and SIGTERM here while the block runs; the old handlers afterwards.
        `signalled` and `received` are set as a signal arrives: a SIGTERM to the whole process
        group ends the embedded Ray too, and Ray's core may end this process within milliseconds,
        before the main thread runs the handler (`search.engine.ray_cluster.watch_head`)."""
        old = {s: signal.signal(s, self._handle) for s in SIGNALS}
        read, write = os.pipe()
        os.set_blocking(write, False)
        old_fd = signal.set_wakeup_fd(write, warn_on_full_buffer=False)
        threading.Thread(target=self._listen, args=(read,), name="fusion-nas-signals", daemon=True).start()
        self._installed = True
        try:
            yield self
        finally:
            self._installed = False
            signal.set_wakeup_fd(old_fd)
            os.close(write)  # the listener reads the end of the pipe and ends
            for s, handler in old.items():
                signal.signal(s, handler)

    @contextlib.contextmanager
    def soft(self) -> Iterator[None]:
        """While trials run: the first signal only asks to stop. Installs the handler again,
        since `ray.init` replaces Python's signal handlers, and keeps it afterwards while
        `installed()` holds (a second Ctrl-C during Ray's shutdown must still reach it);
        `SearchInterrupted` at the end if a signal came."""
        old = {s: signal.signal(s, self._handle) for s in SIGNALS}
        self._soft = True
        try:
            yield
        finally:
            self._soft = False
            for s, handler in old.items():
                signal.signal(s, self._handle if self._installed else handler)
        if self.signum is not None:
            raise SearchInterrupted(self.signum, run_dir=self.run_dir)


def resume_hint(store: RunStore) -> str:
    """The last line of an interrupted search: how far it got and how to go on."""
    from search.baselines import counts_to_budget

    done = sum(counts_to_budget(t) for t in store.trials())
    num_samples = store.config().get("search", {}).get("num_samples")
    return f"interrupted: {done} of {num_samples} trials; resume with fusion-nas search --resume {store.run_dir}"
