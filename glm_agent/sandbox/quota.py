"""Workspace quota: how much a workspace holds, and a watcher that stops code that fills it.

Usage is measured by a walk over directory file descriptors that never follows a link and
opens nothing but directories (O_NOFOLLOW): bytes are allocated blocks, as `du` counts them
(a sparse file costs what it takes on disk), files are all entries (each takes an inode),
and a hard-linked file counts once. The walk counts every level, however deep, with a
bounded number of descriptors: below `HELD_LEVELS` it climbs back through "..", checked to
be the folder it came from (a folder moved meanwhile makes it count again).

No mechanism can make the quota strict without privileges or system setup (project quotas,
a loop-mounted image and FUSE all need root or admin setup), so it is enforced by polling:
`QuotaWatcher` samples usage every ~50 ms while code runs, at once (with the sandbox
stopped) when the file system's free space drops faster than the room left, and calls back
when the limit is passed; RLIMIT_FSIZE (`SandboxConfig.file_size_limit_mb`) bounds any
single file. docs/sandbox.md gives the overshoot measured.
"""

from __future__ import annotations

import os
import signal
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from glm_agent.sandbox.procs import kill_pids, read_status

__all__ = [
    "Quota",
    "Usage",
    "measure",
    "QuotaWatcher",
    "SessionQuota",
    "quota_exceeded_message",
    "describe_usage",
    "format_bytes",
    "HELD_LEVELS",
]

HELD_LEVELS = 32  # folder levels whose descriptors the walk keeps open; deeper ones are reached again via ".."
_MB = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Usage:
    """What a workspace holds. `complete` is False when the walk stopped early: past the
    limit it was given, or `disturbed` (folders it was in were moved away while it counted);
    the numbers are then lower bounds."""

    bytes: int = 0
    files: int = 0
    complete: bool = True
    disturbed: bool = False


@dataclass(frozen=True)
class Quota:
    """Most bytes and entries a workspace may hold (None: no limit of that kind)."""

    max_bytes: int | None = None
    max_files: int | None = None

    @classmethod
    def from_config(cls, config: Any) -> "Quota | None":
        """The quota of a SandboxConfig, or None when it sets none."""
        mb = getattr(config, "workspace_quota_mb", None)
        files = getattr(config, "workspace_max_files", None)
        if mb is None and files is None:
            return None
        return cls(mb * _MB if mb is not None else None, files)

    def exceeded_by(self, usage: Usage) -> bool:
        return ((self.max_bytes is not None and usage.bytes > self.max_bytes)
                or (self.max_files is not None and usage.files > self.max_files))

    def raised_to(self, usage: Usage) -> "Quota":
        """This quota, raised where `usage` already exceeds it: a workspace that is over its
        quota may shrink, or be rewritten within what it holds, but not grow."""
        return Quota(
            None if self.max_bytes is None else max(self.max_bytes, usage.bytes),
            None if self.max_files is None else max(self.max_files, usage.files),
        )


def format_bytes(n: int) -> str:
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= size:
            value = n / size
            return f"{value:.1f} {unit}" if value < 100 else f"{value:,.0f} {unit}"
    return f"{n} bytes"


def describe_usage(usage: Usage, quota: Quota) -> str:
    """"20.3 MiB (limit 20.0 MiB) in 1,204 files (limit 100,000)"; "at least" when the walk stopped early."""
    least = "" if usage.complete else "at least "
    text = f"{least}{format_bytes(usage.bytes)}"
    if quota.max_bytes is not None:
        text += f" (limit {format_bytes(quota.max_bytes)})"
    text += f" in {least}{usage.files:,} files"
    if quota.max_files is not None:
        text += f" (limit {quota.max_files:,})"
    return text


def quota_exceeded_message(usage: Usage, quota: Quota, *, where: str = "the workspace", happened: str = "") -> str:
    """Plain words for the model: what is used, the limit, what happened, what to do."""
    text = f"The workspace quota is exceeded: {where} holds {describe_usage(usage, quota)}."
    if happened:
        text += f" {happened}"
    return text + " Delete files you do not need (e.g. `rm`, `os.remove`, `shutil.rmtree`) before writing more."


def measure(root: str | os.PathLike[str], stop: Quota | None = None, *, attempts: int = 3) -> Usage:
    """Usage of the tree under `root`, at any depth; stops early once `stop` is exceeded.

    Each folder's own entries are counted before its subfolders are entered, so data
    written at the top of a large tree is seen early. A walk disturbed by folders moving
    under it is done again, up to `attempts` walks in all; then its lower bound is returned.
    """
    usage = _walk(root, stop)
    for _ in range(attempts - 1):
        if not usage.disturbed:
            break
        usage = _walk(root, stop)
    return usage


@dataclass
class _Level:
    """A folder the walk is in: its descriptor (None while the walk is deeper than
    HELD_LEVELS below it), identity, and the subfolders it has still to enter."""

    fd: int | None
    key: tuple[int, int]
    subdirs: list[str]


def _walk(root: str | os.PathLike[str], stop: Quota | None) -> Usage:
    max_bytes = stop.max_bytes if stop else None
    max_files = stop.max_files if stop else None
    files = 0
    linked: set[tuple[int, int]] = set()  # inodes with several names, counted once
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    levels: list[_Level] = []
    try:
        root_st = os.fstat(fd)
        root_dev = root_st.st_dev
        levels.append(_Level(fd, (root_dev, root_st.st_ino), []))
        inside = {levels[0].key}  # the folders the walk is in: met again below, a loop (bind mount)
        total = root_st.st_blocks * 512  # the folder itself, as `du -s` counts it
        scan = True
        while levels:
            level = levels[-1]
            assert level.fd is not None
            if scan:
                with os.scandir(level.fd) as entries:
                    for entry in entries:
                        try:
                            st = entry.stat(follow_symlinks=False)
                        except OSError:
                            continue  # deleted meanwhile
                        files += 1
                        if stat.S_ISDIR(st.st_mode):
                            if st.st_dev == root_dev:  # a mount point is not the workspace's
                                level.subdirs.append(entry.name)
                        elif st.st_nlink > 1:
                            key = (st.st_dev, st.st_ino)
                            if key in linked:
                                continue
                            linked.add(key)
                        total += st.st_blocks * 512
                        if (max_bytes is not None and total > max_bytes) or (
                                max_files is not None and files > max_files):
                            return Usage(total, files, complete=False)
            scan = False
            if level.subdirs:
                try:
                    child = os.open(level.subdirs.pop(), _DIR_FLAGS, dir_fd=level.fd)
                except OSError:
                    continue  # replaced by a link or removed meanwhile: nothing to follow
                st = os.fstat(child)
                key = (st.st_dev, st.st_ino)
                if st.st_dev != root_dev or key in inside:  # swapped for a mount meanwhile, or a loop
                    os.close(child)
                    continue
                if len(levels) > HELD_LEVELS:  # deep: keep no descriptor per level
                    os.close(level.fd)
                    level.fd = None
                levels.append(_Level(child, key, []))
                inside.add(key)
                scan = True
                continue
            levels.pop()  # done here: back up to the parent
            inside.discard(level.key)
            try:
                if levels and levels[-1].fd is None and not _climb(level.fd, levels[-1]):
                    return Usage(total, files, complete=False, disturbed=True)
            finally:
                os.close(level.fd)
        return Usage(total, files)
    finally:
        for level in levels:
            if level.fd is not None:
                os.close(level.fd)


def _climb(fd: int, parent: _Level) -> bool:
    """Reopen `parent` as ".." of the folder `fd`. False when ".." is no longer that folder
    (this one was moved or deleted meanwhile): the walk never lands anywhere else."""
    try:
        up = os.open("..", _DIR_FLAGS, dir_fd=fd)
    except OSError:
        return False
    st = os.fstat(up)
    if (st.st_dev, st.st_ino) != parent.key:
        os.close(up)
        return False
    parent.fd = up
    return True


class QuotaWatcher:
    """A thread that samples a workspace's usage and calls `on_exceeded(usage)` once when it
    passes `limit`.

    It samples every `interval` when the workspace could reach the limit soon at the rate it
    grows, else pauses up to twice as long as a walk took (a huge tree then costs at most a
    third of a core). While it pauses it watches the file system's free blocks and inodes
    (statvfs, every few ms): when they drop by more than the room left under the limit, a
    fast writer (or `fallocate`) may be at work, and it samples at once, with the sandbox's
    processes (`pids()`) stopped (SIGSTOP) during that walk, so that nothing is added while
    it counts; they continue (SIGCONT) right after, or are killed by `on_exceeded`.
    """

    def __init__(self, root: str | os.PathLike[str], limit: Quota,
                 on_exceeded: Callable[[Usage], None], *, interval: float = 0.05,
                 pids: Callable[[], list[int]] | None = None):
        self.root = Path(root)
        self.limit = limit
        self.interval = interval
        self.on_exceeded = on_exceeded
        self.pids = pids
        self.usage: Usage | None = None
        self.tripped = threading.Event()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: tuple[float, Usage] | None = None
        self._free_at: tuple[int, int] | None = None  # free bytes and inodes when the last sample began

    def over(self, usage: Usage) -> bool:
        """Whether `usage` is past the limit."""
        return self.limit.exceeded_by(usage)

    def start(self) -> "QuotaWatcher":
        self._thread = threading.Thread(target=self._run, name="glm-quota", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def sample(self, freeze: bool = False) -> Usage | None:
        """Measure now (from any thread); trips the watcher when over the limit. `freeze`
        stops the sandbox's processes while it measures; a walk that folders kept moving
        under is done again that way, so that it can finish."""
        can_freeze = self.pids is not None
        if freeze and can_freeze:
            return self._sample(True, attempts=3)
        usage = self._sample(False, attempts=1 if can_freeze else 3)
        if usage is not None and usage.disturbed and can_freeze:
            usage = self._sample(True, attempts=3)
        return usage

    def _sample(self, freeze: bool, attempts: int) -> Usage | None:
        stopped = self._freeze() if freeze else []
        try:
            free = _free(self.root)  # before the walk: what is written during it shows as a drop
            try:
                usage = measure(self.root, self.limit, attempts=attempts)
            except OSError:
                return None  # the workspace is gone: nothing to protect
            self.usage, self._free_at = usage, free
            if self.over(usage) and not self.tripped.is_set():
                self.tripped.set()
                try:
                    self.on_exceeded(usage)
                except Exception:  # noqa: BLE001 - the watcher must keep running
                    pass
            return usage
        finally:
            kill_pids(stopped, signal.SIGCONT)

    def _freeze(self) -> list[int]:
        """SIGSTOP every process of the sandbox (again for those forked meanwhile)."""
        assert self.pids is not None
        stopped: list[int] = []
        for _ in range(5):
            new = [pid for pid in self.pids() if pid not in stopped]
            if not new:
                break
            kill_pids(new, signal.SIGSTOP)
            stopped += new
        return stopped

    def pause(self, took: float) -> float:
        """Seconds to wait before the next sample, given that the last walk took `took`."""
        now, usage = time.monotonic(), self.usage
        last, self._last = self._last, (now, usage) if usage is not None and usage.complete else None
        slow = max(self.interval, 2 * took)
        if usage is None:
            return slow
        if not usage.complete or last is None:
            return self.interval  # over the limit, or no rate known yet
        elapsed = max(now - last[0], 1e-3)
        soon = slow
        for used, before, limit in ((usage.bytes, last[1].bytes, self.limit.max_bytes),
                                    (usage.files, last[1].files, self.limit.max_files)):
            rate = (used - before) / elapsed
            if limit is not None and rate > 0:
                soon = min(soon, (limit - used) / rate / 2)  # half the time it needs to get there
        return max(self.interval, soon)

    def wait(self, seconds: float, took: float = 0.0, patient: bool = False) -> bool:
        """Sleep up to `seconds`, or until woken, or until the disk fills faster than the room
        left allows; `patient` (the last such alarm was false: others write on this disk)
        waits at least as long as the last walk took first, so alarms cost at most half a
        core. True when it woke for the disk filling."""
        now = time.monotonic()
        end, earliest = now + seconds, now + (min(seconds, took) if patient else 0.0)
        filling = False
        while not self._stop.is_set():
            left = end - time.monotonic()
            if left <= 0 or self._wake.wait(min(left, _POLL)):
                break
            if time.monotonic() >= earliest and self._filling():
                filling = True
                break
        self._wake.clear()
        return filling

    def _filling(self) -> bool:
        base, usage, limit = self._free_at, self.usage, self.limit
        now = _free(self.root)
        if base is None or usage is None or now is None:
            return False
        if limit.max_bytes is not None and base[0] - now[0] > max(limit.max_bytes - usage.bytes, _MB):
            return True
        return limit.max_files is not None and base[1] - now[1] > max(limit.max_files - usage.files, 16)

    def _run(self) -> None:
        filling = False
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample(freeze=filling)
            took = time.monotonic() - started
            filling = self.wait(self.pause(took), took, patient=filling and not self.tripped.is_set())


class SessionQuota:
    """Quota enforcement for a long-lived kernel (one per KernelSession).

    During a cell the workspace is sampled every `interval`: over the limit, every process
    of the sandbox but the kernel is killed and the kernel is interrupted; the cell's result
    says so. A cell that starts over quota still runs (it is the only way to delete files
    with this tool) but is stopped as soon as the workspace grows.

    Between cells a background thread or process may keep writing, so sampling goes on
    every `idle_interval`. Over the limit, the processes of the sandbox that wrote since the
    last sample (per /proc/<pid>/io) are killed, the kernel included, whose state is then
    lost; the next cell reports it. Writes by other tools (a shell command) kill nothing here.
    """

    def __init__(self, root: str | os.PathLike[str], quota: Quota, *, pids: Callable[[], list[int]],
                 kernel_pid: Callable[[], int | None], interrupt: Callable[[], None], alive: Callable[[], bool],
                 where: str = "the workspace", interval: float = 0.05, idle_interval: float = 0.2):
        self.root = Path(root)
        self.quota = quota
        self.where = where
        self.interval, self.idle_interval = interval, idle_interval
        self._pids, self._kernel_pid, self._interrupt, self._alive = pids, kernel_pid, interrupt, alive
        self._in_cell = False
        self._started_over = False
        self._happened: str | None = None  # what was done between cells, for the next cell's notice
        self.killed_kernel = False
        self._at_trip: Usage | None = None  # exact usage just after a cell was stopped
        self._kernel_at_trip = 0  # what the kernel's own threads had written then
        self._written: dict[int, int] = {}
        self._lock = threading.RLock()
        self.watcher = QuotaWatcher(root, quota, self._exceeded, interval=idle_interval, pids=pids)
        self._thread: threading.Thread | None = None

    @property
    def tripped(self) -> bool:
        """True once the running cell was stopped for going over quota."""
        return self._in_cell and self.watcher.tripped.is_set()

    def _run(self) -> None:
        w = self.watcher
        filling = False
        while not w._stop.is_set() and self._alive():
            started = time.monotonic()
            w.sample(freeze=filling)
            if not self._in_cell:
                self._written = {pid: _written(pid) for pid in self._pids()}
            elif w.tripped.is_set():
                self._still_writing()
                w._wake.wait(0.02)  # stopped: check again soon that it stays stopped
                w._wake.clear()
                continue
            took = time.monotonic() - started
            filling = w.wait(w.pause(took), took, patient=filling and not w.tripped.is_set())

    def _exceeded(self, usage: Usage) -> None:
        with self._lock:
            if self._in_cell:
                kernel = self._kernel_pid()
                self._kernel_at_trip = _own_written(kernel) if kernel else 0
                self._at_trip = None
                self.kill_others()
                self._interrupt()
                return
            # Between cells: kill whatever of ours is writing; others' writes are not ours to stop.
            kernel = self._kernel_pid()
            launchers = set(self._pids()[:1]) | self._ancestors(kernel)  # they reap orphans: not writers
            writers = [pid for pid in self._pids() if pid not in launchers
                       and _written(pid) - self._written.get(pid, 0) >= _WRITING]
            if kernel is not None and kernel in writers:
                kill_pids(self._pids())
                self.killed_kernel = True
                self._happened = ("Between calls, the Python kernel kept writing (a background thread?), so it "
                                  "was killed.")
            elif writers:
                kill_pids(writers)
                self._happened = "Between calls, processes left running by earlier code kept writing; they were killed."
            # From here on the workspace may not grow: re-arm on what it holds now.
            try:
                self.watcher.limit = self.quota.raised_to(measure(self.root))
            except OSError:
                pass
            self.watcher.tripped.clear()

    def _still_writing(self) -> None:
        """After a stop in a cell: if the workspace keeps growing (threads of the kernel, or
        children it keeps starting), kill the kernel; the cell's result then says so."""
        with self._lock:
            if self.killed_kernel or not self._in_cell:
                return
            slack = max(_SLACK_BYTES, (self.quota.max_bytes or 0) // 100)
            kernel = self._kernel_pid()
            threads_write = kernel is not None and _own_written(kernel) - self._kernel_at_trip > slack
            try:
                now = measure(self.root)
            except OSError:
                return
            base = self._at_trip
            if base is None:  # the first look after the stop: what later growth is measured from
                self._at_trip = base = now
            if threads_write or now.bytes - base.bytes > slack or now.files - base.files > _SLACK_FILES:
                kill_pids(self._pids())
                self.killed_kernel = True
            else:
                self.kill_others(wait=0.0)  # children started since the stop

    def _ancestors(self, kernel: int | None) -> set[int]:
        """The launchers between the sandbox's first process and the kernel."""
        pids = self._pids()
        out: set[int] = set()
        pid = kernel
        while pid and pids and pid != pids[0] and len(out) < 16:
            pid = _parent(pid)
            out.add(pid)
        return out

    def others(self) -> list[int]:
        """Processes of the sandbox other than the kernel and the launchers above it."""
        pids = self._pids()
        kernel = self._kernel_pid()
        if not pids or kernel is None:
            return []
        keep = {kernel} | self._ancestors(kernel)
        return [p for p in pids if p not in keep]

    def kill_others(self, wait: float = 1.0) -> None:
        """Kill every process of the sandbox but the kernel (again while they still fork)."""
        deadline = time.monotonic() + wait
        while True:
            others = self.others()
            if not others:
                return
            kill_pids(others)
            if time.monotonic() > deadline:
                return
            time.sleep(0.01)

    def begin_cell(self) -> str | None:
        """Before a cell: start watching fast. Returns a notice when the workspace is over quota
        already, or when something was stopped between cells."""
        try:
            usage = measure(self.root)
        except OSError:
            usage = Usage()
        w = self.watcher
        with self._lock:
            self._in_cell = True
            self._started_over = self.quota.exceeded_by(usage)
            w.limit = self.quota.raised_to(usage)
            w.tripped.clear()
            w.interval = self.interval
            happened, self._happened, self.killed_kernel = self._happened, None, False
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="glm-quota", daemon=True)
            self._thread.start()
        w._wake.set()
        if not self._started_over:
            return happened
        parts = [happened] if happened else []
        parts.append("This code still runs, so that you can free space, but it is stopped as soon as it adds data.")
        return quota_exceeded_message(usage, self.quota, where=self.where, happened=" ".join(parts))

    def end_cell(self) -> str | None:
        """After a cell: back to slow sampling. Returns what the model should also know: that
        the cell's last writes went over (what it left running is then killed), or that the
        workspace is within its quota again."""
        try:
            usage = measure(self.root)
        except OSError:
            usage = Usage()
        w = self.watcher
        with self._lock:
            tripped = self.tripped
            went_over = not tripped and w.over(usage)
            self._in_cell = False
            w.usage = usage
            w.limit = self.quota.raised_to(usage)
            w.tripped.clear()
            w.interval = self.idle_interval
            self._written = {pid: _written(pid) for pid in self._pids()}
        if went_over:
            self.kill_others()
            return quota_exceeded_message(usage, self.quota, where=self.where, happened=(
                "The code's last writes went over the limit; processes it left running were killed."))
        if self._started_over and not tripped and not self.quota.exceeded_by(usage):
            return f"The workspace is within its quota again: {self.where} holds {describe_usage(usage, self.quota)}."
        return None

    def message(self, happened: str = "") -> str:
        """The over-quota message with what the workspace holds now."""
        try:
            usage = measure(self.root)
        except OSError:
            usage = self.watcher.usage or Usage()
        return quota_exceeded_message(usage, self.quota, where=self.where, happened=happened)

    def close(self) -> None:
        self.watcher.stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)


# Growth after a cell was stopped that is more than writes in flight: something keeps writing.
_SLACK_BYTES = 8 * _MB
_SLACK_FILES = 100
_WRITING = 64 * 1024  # bytes written between two idle samples that count as writing (idle kernels write ~16 B/s)


def _written(pid: int) -> int:
    """Bytes a process and its reaped children wrote so far (write() to anything); 0 if unknown.

    Reaped children count, so a shell loop of short `dd` runs shows up as the writer.
    """
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                if line.startswith("wchar:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


_POLL = 0.005  # seconds between statvfs looks while the watcher pauses


def _free(root: Path) -> tuple[int, int] | None:
    """Free bytes and inodes of the file system holding `root` (one cheap system call)."""
    try:
        st = os.statvfs(root)
    except OSError:
        return None
    return st.f_bfree * st.f_frsize, st.f_ffree


def _own_written(pid: int) -> int:
    """Bytes the live threads of a process wrote themselves (reaped children not included)."""
    total = 0
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return 0
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/io") as f:
                for line in f:
                    if line.startswith("wchar:"):
                        total += int(line.split()[1])
                        break
        except (OSError, ValueError):
            continue
    return total


def _parent(pid: int) -> int:
    ppid = read_status(pid).get("PPid", "0")
    return int(ppid) if ppid.isdigit() else 0
