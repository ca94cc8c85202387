"""A one-line progress bar on stderr: redrawn in place on a terminal, a line per quarter when
stderr is a file (so logs stay short)."""

from __future__ import annotations

import sys
import time

WIDTH = 24
REDRAW_S = 0.2


class Progress:
    def __init__(self, label: str, total: int, stream=None) -> None:
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.is_tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.num_sent = self.num_done = self.num_rejected = self.num_failed = 0
        self.started = time.monotonic()
        self._last_draw = 0.0
        self._last_quarter = -1

    def sent(self) -> None:
        self.num_sent += 1
        self._draw()

    def done(self, status: str) -> None:
        self.num_done += 1
        self.num_rejected += status == "rejected"
        self.num_failed += status in ("failed", "timeout")
        self._draw()

    def line(self) -> str:
        filled = WIDTH * self.num_done // max(1, self.total)
        bar = "#" * filled + "-" * (WIDTH - filled)
        return (
            f"[bench.serve] {self.label} |{bar}| {self.num_done}/{self.total} done, "
            f"{self.num_sent} sent, {self.num_rejected} rejected, {self.num_failed} failed, "
            f"{time.monotonic() - self.started:.0f} s"
        )

    def close(self) -> None:
        self._draw(force=True)
        if self.is_tty:
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if self.is_tty:
            if force or now - self._last_draw >= REDRAW_S:
                self.stream.write("\r" + self.line())
                self.stream.flush()
                self._last_draw = now
            return
        quarter = 4 * self.num_done // max(1, self.total)
        if quarter > self._last_quarter or (force and self._last_quarter < 4):
            self._last_quarter = max(quarter, 4 if force else quarter)
            print(self.line(), file=self.stream, flush=True)
