"""A small progress bar on stderr: redrawn in place on a terminal, one line per step otherwise."""
from __future__ import annotations

import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO, width: int = 28):
        self.total = max(total, 1)
        self.done = 0
        self.stream = stream
        self.width = width
        self.start = time.perf_counter()
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()

    def step(self, label: str) -> None:
        """Marks the start of the next step, named `label`."""
        filled = self.width * self.done // self.total
        bar = "#" * filled + "." * (self.width - filled)
        line = f"[{bar}] {self.done:>3}/{self.total} {time.perf_counter() - self.start:6.1f}s  {label}"
        if self.tty:
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
        self.done += 1

    def close(self) -> None:
        if self.tty:
            self.stream.write("\r\033[K")
            self.stream.flush()
