"""`genlab serve RUNS_DIR`: every run directory under RUNS_DIR behind an HTTP API and a web page.

    genlab serve runs/ --port 8000        # then open http://127.0.0.1:8000/ (API docs: /docs)

Needs the `serve` extra (pip install 'genlab[serve]'): FastAPI and uvicorn.
"""

import contextlib
import ipaddress
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from genlab.errors import ConfigError


def serve(runs_dir: str | Path, host: str = "127.0.0.1", port: int = 8000, token_file: str | Path | None = None,
          max_models: int = 4, workers: int = 2, queue: int = 64, device: str = "auto",
          log_level: str = "info") -> None:
    """Run the server until interrupted."""
    try:
        import uvicorn

        from genlab.server.app import create_app
        from genlab.server.schemas import Limits
    except ImportError as e:
        raise ConfigError(f"`genlab serve` needs the serve extra ({e.name} is missing): "
                          "pip install 'genlab[serve]'") from None
    token = read_token(token_file) if token_file is not None else None
    if not is_loopback(host) and token is None:
        print(f"genlab: warning: serving on {host} without --token-file: anyone who reaches this address can use "
              "the models", file=sys.stderr)
    import torch

    # Each worker thread runs its own inference: split the cores between them rather than oversubscribe.
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // max(1, workers)))
    app = create_app(runs_dir, token=token, limits=Limits(workers=workers, queue=queue), max_models=max_models,
                     device=device)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)


def read_token(path: str | Path) -> str:
    try:
        token = Path(path).read_text(encoding="utf-8").strip()
    except OSError as e:
        raise ConfigError(f"cannot read the token file {path}: {e.strerror}") from None
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ConfigError(f"the token in {path} must be one line of at least 16 characters without spaces "
                          "(e.g. from `python -c 'import secrets; print(secrets.token_urlsafe())'`)")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@contextlib.contextmanager
def running(app: Any, host: str = "127.0.0.1") -> Iterator[str]:
    """Serve an ASGI app (e.g. `create_app(runs_dir)`) for real on a free port, in a background thread, for the
    length of a `with` block; yields its base URL. What tests, the demo and notebooks use."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://{host}:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
