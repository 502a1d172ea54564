"""One request/response channel to a handler in another process or a Ray actor.

`open_channel(...)` returns a channel whose `submit(method, *args)` returns at once with a ticket
and whose `result(ticket)` waits for the answer. Requests are answered in submission order. A
death of the other end (process exit, Ray actor death) raises `ServiceDied` with the reason, and so
does a request left unanswered for `timeout_s` (the other end is killed first): a caller never
hangs. An exception inside a request raises `ServiceError` with the remote traceback.

The process channel moves messages through background threads in both directions of a loopback
connection (authenticated with a per-channel key), so a trainer pushing weights never blocks
behind a worker that is busy sampling. Messages are plain
pickles (tensors are copied), not torch's shared-memory reductions: a few hundred adapter tensors
would otherwise cost a file descriptor each.
"""

from __future__ import annotations

import os
import pickle
import queue
import tempfile
import threading
import time

from arena.errors import ArenaError
from arena.services.host import INIT, ActorHost


class ServiceDied(RuntimeError):
    """The other end died or went silent (restartable)."""


class ServiceError(RuntimeError):
    """A request raised inside the service (not restartable: it would raise again)."""


class ProcessChannel:
    """A service in a child `python -m arena.services.host` process, connected back over loopback.

    A fresh interpreter, not multiprocessing's spawn: spawn re-runs the caller's main script in
    the child, which breaks every user script without an `if __name__ == "__main__"` guard.
    """

    def __init__(self, path: str, init: dict, *, threads: int = 0, cpus=None, timeout_s: float = 600.0,
                 name: str = "arena-service"):
        import secrets
        import subprocess
        import sys
        from multiprocessing.connection import Listener

        self.name, self.timeout_s = name, timeout_s
        key = secrets.token_bytes(16)
        self._listener = Listener(("127.0.0.1", 0), authkey=key)
        host, port = self._listener.address
        env = {**os.environ, "ARENA_SERVICE_KEY": key.hex()}
        self.proc = subprocess.Popen([sys.executable, "-m", "arena.services.host", f"{host}:{port}"],
                                     stdin=subprocess.PIPE, env=env)
        self.proc.stdin.write(pickle.dumps((path, init, threads, cpus), protocol=5))
        self.proc.stdin.close()
        self._conn = None
        self._connected = threading.Event()
        self._next, self._replies, self._eof = INIT, {}, False
        self._cond = threading.Condition()
        self._outbox: queue.Queue = queue.Queue()
        threading.Thread(target=self._accept, daemon=True).start()
        threading.Thread(target=self._send_loop, daemon=True).start()
        threading.Thread(target=self._recv_loop, daemon=True).start()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _accept(self) -> None:
        try:
            self._conn = self._listener.accept()
        except OSError:  # closed: the child died before connecting, or the channel was closed
            self._eof = True
        finally:
            self._connected.set()

    def _send_loop(self) -> None:
        self._connected.wait()
        while (msg := self._outbox.get()) is not None:
            try:
                self._conn.send_bytes(msg)
            except (OSError, ValueError, AttributeError):  # the other end is gone; result() reports it
                return

    def _recv_loop(self) -> None:
        self._connected.wait()
        while True:
            try:
                ticket, status, value = pickle.loads(self._conn.recv_bytes())
            except (EOFError, OSError, AttributeError):
                with self._cond:
                    self._eof = True
                    self._cond.notify_all()
                return
            with self._cond:
                self._replies[ticket] = (status, value)
                self._cond.notify_all()

    def submit(self, method: str, *args) -> int:
        self._next += 1
        self._outbox.put(pickle.dumps((self._next, method, args), protocol=5))
        return self._next

    def result(self, ticket: int):
        deadline = time.monotonic() + self.timeout_s
        with self._cond:
            while ticket not in self._replies:
                if self._eof or self.proc.poll() is not None:
                    self._cond.wait(0.2)  # a last reply may still be in the pipe
                    if ticket in self._replies:
                        break
                    self.kill()
                    code = self.proc.returncode
                    raise ServiceDied(f"{self.name} (pid {self.proc.pid}) died"
                                      + (f" with exit code {code}" if code is not None else ""))
                if time.monotonic() > deadline:
                    self.kill()
                    raise ServiceDied(f"{self.name} (pid {self.proc.pid}) gave no answer within "
                                      f"services.timeout_s = {self.timeout_s:g} s; killed")
                self._cond.wait(0.5)
            status, value = self._replies.pop(ticket)
        if status == "err":
            raise ServiceError(f"{self.name}: {value.strip().splitlines()[-1]}\n--- remote traceback ---\n{value}")
        return value

    def ready(self) -> int:
        return self.result(INIT)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self._listener.close()

    def close(self) -> None:
        if self.proc.poll() is None and self._conn is not None:
            self._outbox.put(pickle.dumps((0, "__close__", ()), protocol=5))
            try:
                self.proc.wait(5)
            except Exception:  # subprocess.TimeoutExpired: killed below
                pass
        self._outbox.put(None)
        self.kill()
        if self._conn is not None:
            self._conn.close()


def ensure_ray(address: str | None):
    """(ray, started_here, temp dir): connect to `address` ("auto"/host:port), or start a local
    Ray (address None or "local") unless this process is already connected."""
    try:
        import ray
    except ImportError:
        raise ArenaError("Ray is not installed: pip install 'arena[ray]'") from None
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # else ray writes an auth token under ~
    if ray.is_initialized():
        return ray, False, None
    if address in (None, "local"):
        tmp = tempfile.mkdtemp(prefix="arena-ray-")  # short: ray's unix socket paths are length-limited
        ray.init(num_cpus=os.cpu_count() or 1, include_dashboard=False, _temp_dir=tmp, log_to_driver=False)
        return ray, True, tmp
    ray.init(address=address, log_to_driver=False)
    return ray, True, None


class RayChannel:
    def __init__(self, path: str, init: dict, *, threads: int = 0, timeout_s: float = 600.0,
                 name: str = "arena-service", address: str | None = None):
        self.ray, _, _ = ensure_ray(address or os.environ.get("RAY_ADDRESS"))
        self.name, self.timeout_s = name, timeout_s
        actor_cls = self.ray.remote(num_cpus=max(1, threads), max_restarts=0)(ActorHost)
        self.actor = actor_cls.remote(path, init, threads)
        self._next, self._refs = INIT, {INIT: self.actor.pid.remote()}

    @property
    def pid(self) -> int | None:
        return getattr(self, "_pid", None)

    def submit(self, method: str, *args) -> int:
        self._next += 1
        self._refs[self._next] = self.actor.call.remote(method, args)
        return self._next

    def result(self, ticket: int):
        from ray import exceptions as rx

        ref = self._refs.pop(ticket)
        try:
            value = self.ray.get(ref, timeout=self.timeout_s)
        except rx.GetTimeoutError:
            self.kill()
            raise ServiceDied(f"{self.name} (Ray actor) gave no answer within services.timeout_s = {self.timeout_s:g} s; killed") from None
        except (rx.RayActorError, getattr(rx, "ActorDiedError", rx.RayActorError)) as e:
            raise ServiceDied(f"{self.name} (Ray actor) died: {str(e).splitlines()[0]}") from None
        except rx.RayTaskError as e:
            cause = str(e).strip().splitlines()
            raise ServiceError(f"{self.name}: {cause[-1] if cause else e}\n--- remote traceback ---\n{e}") from None
        if ticket == INIT:
            self._pid = value
        return value

    def ready(self) -> int:
        return self.result(INIT)

    def kill(self) -> None:
        try:
            self.ray.kill(self.actor, no_restart=True)
        except Exception:  # already dead
            pass

    def close(self) -> None:
        self.kill()


def open_channel(mode: str, path: str, init: dict, *, threads: int, cpus, timeout_s: float, name: str,
                 ray_address: str | None = None):
    if mode == "process":
        return ProcessChannel(path, init, threads=threads, cpus=cpus, timeout_s=timeout_s, name=name)
    if mode == "ray":
        return RayChannel(path, init, threads=threads, timeout_s=timeout_s, name=name, address=ray_address)
    raise ValueError(f"no channel for mode {mode!r}")
