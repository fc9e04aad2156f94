"""A real `unetlite serve` in a subprocess on a free loopback port, for the serve tests."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field

STARTUP_S = 180


@dataclass
class Server:
    proc: subprocess.Popen
    url: str
    log: list[str] = field(default_factory=list)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def text(self) -> str:
        return "".join(self.log)


def start_server(*args: str, env: dict[str, str] | None = None, prelude: str | None = None) -> Server:
    """`unetlite serve --port 0 --providers cpu ...`; the port comes from its startup line.
    ``prelude``: Python run first in the server process (e.g. hiding an optional package)."""
    entry = (["-m", "unetlite.infer.cli"] if prelude is None else
             ["-c", f"import sys; {prelude}; from unetlite.infer.cli import main; sys.exit(main(sys.argv[1:]))"])
    proc = subprocess.Popen([sys.executable, *entry, "serve", "--port", "0", "--providers", "cpu", *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    log: list[str] = []
    found: dict[str, str] = {}
    ready = threading.Event()

    def pump() -> None:  # keep reading stderr so the pipe never fills
        for line in proc.stderr:
            log.append(line)
            match = re.search(r"listening on (http://\S+?:\d+)", line)
            if match and not ready.is_set():
                found["url"] = match.group(1)
                ready.set()
        ready.set()

    threading.Thread(target=pump, daemon=True).start()
    if not ready.wait(STARTUP_S) or "url" not in found:
        proc.kill()
        raise AssertionError("server did not start:\n" + "".join(log))
    return Server(proc, found["url"], log)


def released_together(call, count: int) -> list:
    """``call(i)`` for i in range(count), from as many threads released at once by a barrier: their results."""
    barrier, results = threading.Barrier(count), [None] * count

    def one(i: int) -> None:
        barrier.wait()
        results[i] = call(i)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results
