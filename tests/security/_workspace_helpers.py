"""Shared pieces of the workspace security tests: host targets an attacker aims links at."""

from __future__ import annotations

import os
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

ORIGINAL = b"original host content\n"


@dataclass
class Targets:
    """Host files a planted link may point at: some exist (must stay unchanged), some do not
    (must not be created). Removed again by `cleanup()`, whatever the code under test did."""

    existing: dict[str, Path] = field(default_factory=dict)
    absent: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def make(cls, host_dir: Path) -> "Targets":
        tag = secrets.token_hex(4)
        host_dir.mkdir(parents=True, exist_ok=True)
        t = cls()
        t.existing["host file"] = host_dir / "existing.txt"
        t.existing["/etc file"] = Path(f"/etc/glm-agent-test-{tag}")
        t.absent["new file in a host dir"] = host_dir / "created-by-attacker"
        t.absent["new file in /etc"] = Path(f"/etc/glm-agent-test-new-{tag}")
        t.absent["new file in the home folder"] = Path.home() / f".glm-agent-test-{tag}"
        for path in t.existing.values():
            path.write_bytes(ORIGINAL)
        return t

    def all(self) -> list[tuple[str, Path]]:
        return list(self.existing.items()) + list(self.absent.items())

    def check_untouched(self) -> list[str]:
        """What went wrong, in words (empty when every target is as it was)."""
        problems = []
        for name, path in self.existing.items():
            if path.read_bytes() != ORIGINAL:
                problems.append(f"{name} {path} was overwritten")
        for name, path in self.absent.items():
            if os.path.lexists(path):
                problems.append(f"{name} {path} was created")
        return problems

    def cleanup(self) -> None:
        for _, path in self.all():
            try:
                path.unlink()
            except OSError:
                pass


def png_bytes(color: tuple[int, int, int] = (200, 30, 30), size: tuple[int, int] = (8, 8)) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def finishes_within(fn: Callable[[], object], seconds: float, unblock: Callable[[], None]) -> tuple[bool, object]:
    """Run `fn` in a thread; (finished in time, its result or exception). A blocked call is
    released with `unblock` (e.g. opening the fifo it waits on) so no thread is left behind."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            box["value"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    finished = not thread.is_alive()
    if not finished:
        unblock()
        thread.join(5)
    return finished, box.get("value")


def open_fifo_writer(path: Path) -> Callable[[], None]:
    """A function that opens `path` for writing and closes it: a reader blocked in open() returns."""

    def unblock() -> None:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
            os.close(fd)
        except OSError:
            pass

    return unblock
