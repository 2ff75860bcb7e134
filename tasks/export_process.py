"""An `ExportWriter` in a child process, so a large batch's exports cost its process no GIL time.

Building the table rows and writing the workbook row by row is pure Python: about 0.9 ms per
document here, 9 s of a 10,000-document batch. In the batch process that time is taken from
the extraction threads, which wait for the GIL each time a document's call returns (measured:
the extraction phase of 10,000 documents 2.3 s over the ideal with the exports streamed in
process, against 1.0 s without them). In a child it runs on the other core, and the batch
process only serialises each result once (pydantic's JSON, about 15 µs).

The protocol is text over the child's stdin: one JSON line with the paths to write, then one
line per result (its `model_dump_json()`), then `FINISH <report JSON without results>`. The
child answers with one JSON line on stdout, `{"ok": true}` or `{"error": "..."}`. A closed
stdin without FINISH (the batch failed or its process died) makes the child stop at once and
leave the temporaries to the caller. The child imports pandas and the models, never Prefect.

multiprocessing is not used: its spawn start method re-imports the parent's `__main__` (a CLI,
a Prefect worker's entrypoint, a benchmark script) in the child, and its forkserver is the one
the parsing workers share, with their address-space limit in mind.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import IO, Any

from blocks.isolation import kill_on_parent_death
from blocks.models import DocumentResult

F_SETPIPE_SZ = 1031  # Linux: a 1 MiB pipe holds about 2,000 results while the child imports pandas
PIPE_BYTES = 1 << 20
FINISH = b"FINISH "


class ExportProcessFailed(RuntimeError):
    """The child writer died or reported an error; the caller writes the exports itself."""


class ExportProcess:
    """The parent's handle on a child `ExportWriter`: same `add` / `finish` / `close` calls."""

    def __init__(self, paths: dict[str, Path], declared_fields: list[str] | None = None) -> None:
        root = str(Path(__file__).resolve().parent.parent)  # where `tasks` and `blocks` import from
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH", "")) if p)
        self._stderr: IO[bytes] = tempfile.TemporaryFile()
        self.failed: str | None = None
        self.answered = False
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tasks.export_process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, env=env,
        )
        assert self.process.stdin is not None
        try:
            fcntl.fcntl(self.process.stdin.fileno(), F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:
            pass  # a smaller pipe only means the parent may wait while the child starts
        config = {"paths": {name: str(path) for name, path in paths.items()}, "declared_fields": declared_fields or []}
        self._send(json.dumps(config).encode() + b"\n")

    def _send(self, data: bytes) -> None:
        if self.failed:
            return
        try:
            self.process.stdin.write(data)  # type: ignore[union-attr]
            self.process.stdin.flush()  # type: ignore[union-attr]
        except (BrokenPipeError, ValueError, OSError) as exc:
            self.failed = f"the export writer process stopped reading ({exc})"

    def add(self, results: list[DocumentResult], texts: list[str]) -> None:
        """Hand results to the child; blocks only while the pipe is full (the child is behind)."""
        if texts:
            self._send("".join(text + "\n" for text in texts).encode())

    def finish(self, report_head: str) -> None:
        """Ask the child to write the rest and report.json; raise `ExportProcessFailed` if it could not."""
        self._send(FINISH + report_head.encode() + b"\n")
        try:
            self.process.stdin.close()  # type: ignore[union-attr]
        except OSError:
            pass
        # One line, not EOF: the child's answer comes before its exit.
        answer = self.process.stdout.readline() if self.process.stdout else b""  # type: ignore[union-attr]
        if self.failed is None:
            try:
                reply = json.loads(answer)
            except ValueError:
                code = self.process.wait()
                reply = {"error": f"exit code {code}: {self._stderr_tail() or 'no answer'}"}
            if reply.get("ok"):
                self.answered = True
            else:
                self.failed = str(reply.get("error") or "no answer")
        if self.failed is not None:
            raise ExportProcessFailed(self.failed)

    def _stderr_tail(self) -> str:
        self._stderr.seek(0)
        lines = self._stderr.read().decode(errors="replace").strip().splitlines()
        return lines[-1] if lines else ""

    def close(self) -> None:
        """Stop the child unless it answered; its files are the caller's to publish or discard."""
        if self.answered:
            # It is in os._exit: reap it on the side instead of waiting (about 30 ms under load).
            threading.Thread(target=self.process.wait, name="docbatch-export-reaper", daemon=True).start()
        elif self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        for stream in (self.process.stdin, self.process.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        self._stderr.close()


def main() -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the batch process, which stops us
    kill_on_parent_death()  # stdin's EOF covers the rest
    fd, stdout = sys.stdin.fileno(), sys.stdout
    pending = b""
    while b"\n" not in pending:
        chunk = os.read(fd, PIPE_BYTES)
        if not chunk:
            return 1
        pending += chunk
    line, pending = pending.split(b"\n", 1)
    config: dict[str, Any] = json.loads(line)
    from tasks.export_files import ExportWriter, warm_up

    warm_up(config["paths"])
    writer = ExportWriter({name: Path(path) for name, path in config["paths"].items()}, config["declared_fields"])
    try:
        while True:
            # Whatever has arrived is one chunk of rows: the writer stays level with the batch,
            # so FINISH finds next to nothing left to add.
            *lines, pending = pending.split(b"\n")
            finish = next((n for n, text in enumerate(lines) if text.startswith(FINISH)), None)
            texts = [text.decode() for text in (lines if finish is None else lines[:finish])]
            if texts:
                writer.add([DocumentResult.model_validate_json(text) for text in texts], texts)
            if finish is not None:
                writer.finish(lines[finish][len(FINISH):].decode())
                stdout.write(json.dumps({"ok": True, "documents": writer.count}) + "\n")
                stdout.flush()
                # Every file is closed and on disk: skip the interpreter's teardown of pandas and
                # pyarrow (0.1-0.2 s here), which the batch would otherwise wait for.
                os._exit(0)
            chunk = os.read(fd, PIPE_BYTES)
            if not chunk:
                return 1  # stdin closed without FINISH: the batch is not going to publish these files
            pending += chunk
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which writes the exports itself
        import traceback

        traceback.print_exc()
        stdout.write(json.dumps({"error": f"{type(exc).__name__}: {exc}"}) + "\n")
        stdout.flush()
        return 1
    finally:
        writer.close()


if __name__ == "__main__":
    sys.exit(main())
