"""Silence the chatter of third-party converters (prints, progress bars, TF/absl C++ logs).

litert-torch and ai-edge-quantizer write to the process's stdout/stderr file descriptors directly, so
redirecting `sys.stdout` is not enough: the descriptors themselves are pointed at a temporary file.
If the wrapped call fails, the tail of what it wrote is attached to the exception.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def quiet():
    if os.environ.get("EDGEDISTILL_VERBOSE"):
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stdout(open(os.devnull, "w")), contextlib.redirect_stderr(open(os.devnull, "w")):
                yield
        except BaseException as exc:
            sink.seek(0)
            tail = sink.read().decode(errors="replace").strip().splitlines()[-5:]
            if tail and hasattr(exc, "add_note"):
                exc.add_note("converter output: " + " | ".join(tail))
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
