"""Running the app with uvicorn: the `glm-agent serve` command, and a server on a thread for tests.

Shutdown stops the generations first. Uvicorn waits for in-flight requests before it shuts the
app down (and cancels them, with a traceback, when they outlast the grace period); a request
in the middle of a long generation would always outlast it. So on Ctrl-C every generation ends
at once, each open request gets its answer (503 `server_shutting_down`, or that error as the
last event of a stream), and uvicorn finds nothing left to wait for.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Collection, Iterator

from glm_agent.core.contracts import ChatModel
from glm_agent.serve.access import LOOPBACK_HOSTS, is_loopback
from glm_agent.serve.app import create_app

__all__ = ["run_server", "serve_in_thread"]


def _server(app: Any, **config: Any):
    import uvicorn

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            worker = getattr(getattr(app, "state", None), "worker", None)
            if worker is not None:
                await worker.stop()
            await super().shutdown(sockets)

    return Server(uvicorn.Config(app, **config))


def run_server(
    model: ChatModel,
    model_name: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "info",
    api_key: str | None = None,
    aliases: Collection[str] = (),
) -> None:
    """Serve until interrupted (the `glm-agent serve` command).

    Bound to loopback, only loopback Host names are answered (see `access`); `api_key`
    requires `Authorization: Bearer KEY` on every request. `aliases`: other model names
    requests may use (see `create_app`).
    """
    allowed = LOOPBACK_HOSTS if is_loopback(host) else None
    app = create_app(model, model_name, close_model=True, api_key=api_key, allowed_hosts=allowed, aliases=aliases)
    server = _server(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=5)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
        server.run()


@contextlib.contextmanager
def serve_in_thread(app: Any, host: str = "127.0.0.1", port: int = 0) -> Iterator[str]:
    """Run `app` with uvicorn on a background thread; yield its base URL (`http://host:port/v1`).

    Port 0 picks a free port. The server stops (generations, then lifespan shutdown) when the
    block exits. Logging is left to the caller's configuration (uvicorn's records propagate).
    """
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    port = sock.getsockname()[1]
    server = _server(app, log_level="warning", log_config=None, timeout_graceful_shutdown=2)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="glm-agent-serve", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"the server on {host}:{port} did not start")
        time.sleep(0.01)
    try:
        yield f"http://{host}:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(20)
        sock.close()
