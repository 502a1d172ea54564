"""The far end of a service channel: build the handler, then answer requests in order.

A handler is any class named "module:Class"; its public methods are the requests. Run in a child
process (`python -m arena.services.host HOST:PORT`: it reads its handler spec from stdin, connects
back to the parent on loopback with the key in ARENA_SERVICE_KEY, and `serve`s pickled messages) or as a Ray actor (`make_actor`). An exception
in a request is answered with its traceback (the caller raises it, no restart: it would recur);
only a death or a silence counts as a failure worth a restart.
"""

from __future__ import annotations

import importlib
import os
import pickle
import traceback

INIT = 0  # the ticket of the handler's construction


def build_handler(path: str, init: dict, threads: int, cpus: list[int] | None):
    if cpus:
        os.sched_setaffinity(0, cpus)
    if threads:
        import torch

        torch.set_num_threads(threads)
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)(**init)


def _error() -> str:
    return traceback.format_exc()[-3000:]


def serve(conn, path: str, init: dict, threads: int, cpus: list[int] | None) -> None:
    """Process entry point: reply (ticket, 'ok' | 'err', value) to each (ticket, method, args)."""
    handler, failure = None, None
    try:
        handler = build_handler(path, init, threads, cpus)
        conn.send_bytes(pickle.dumps((INIT, "ok", os.getpid()), protocol=5))
    except Exception:
        failure = _error()
        conn.send_bytes(pickle.dumps((INIT, "err", failure), protocol=5))
    while True:
        try:
            ticket, method, args = pickle.loads(conn.recv_bytes())
        except (EOFError, OSError):  # the trainer closed the pipe or died: nothing left to serve
            return
        if method == "__close__":
            return
        try:
            if failure is not None:
                raise RuntimeError(f"the service failed to start:\n{failure}")
            reply = (ticket, "ok", getattr(handler, method)(*args))
        except Exception:
            reply = (ticket, "err", _error())
        conn.send_bytes(pickle.dumps(reply, protocol=5))


class ActorHost:
    """The Ray actor: the same handler behind one `call` method (Ray runs one caller's calls in order)."""

    def __init__(self, path: str, init: dict, threads: int):
        self.handler = build_handler(path, init, threads, None)

    def pid(self) -> int:
        return os.getpid()

    def call(self, method: str, args: tuple):
        return getattr(self.handler, method)(*args)


def main(argv: list[str] | None = None) -> None:
    import sys
    from multiprocessing.connection import Client

    host, port = (argv or sys.argv[1:])[0].rsplit(":", 1)
    path, init, threads, cpus = pickle.loads(sys.stdin.buffer.read())
    conn = Client((host, int(port)), authkey=bytes.fromhex(os.environ["ARENA_SERVICE_KEY"]))
    sys.stdout = sys.stderr  # nothing of the handler's may write into a pipe nobody reads
    serve(conn, path, init, threads, cpus)


if __name__ == "__main__":
    main()
