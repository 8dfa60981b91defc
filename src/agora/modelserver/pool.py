"""Worker processes that run a model's methods.

Each worker is a process of its own (spawned, as DEEPaaS does, so that CUDA and TensorFlow
work) that loads the model, calls its ``warm()`` once, then answers jobs over a pipe. The
:class:`Pool` owns the failures: a request that waits while the queue is full gets
:class:`Overloaded`; one that runs past the timeout gets :class:`PredictionTimeout` and its
worker is killed and replaced; a worker that dies mid-request gets :class:`WorkerCrashed` and
is replaced too. A training runs in a :class:`Worker` of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import multiprocessing
import os
import pickle
import signal
import socket
import struct
import time
from multiprocessing.connection import Connection
from multiprocessing.reduction import ForkingPickler
from typing import Any

from agora.modelserver.arguments import JSON
from agora.modelserver.errors import (
    InvalidArguments,
    ModelFailed,
    ModelRefused,
    ModelServerError,
    NotImplementedByModel,
    Overloaded,
    PredictionTimeout,
    WorkerCrashed,
)
from agora.modelserver.loader import ModelRef
from agora.modelserver.model import encode, response_schema

logger = logging.getLogger("agora.modelserver")

_SPAWN = multiprocessing.get_context("spawn")


Job = tuple[str, dict[str, Any]]  # (method, keyword arguments)


class WorkerDied(Exception):
    pass


def _expire(task: asyncio.Task[Any], expired: list[bool]) -> None:
    expired.append(True)
    task.cancel()


def _call(model: Any, name: str, job: Job, schema: Any) -> tuple[str, Any]:
    method, kwargs = job
    try:
        result = getattr(model, method)(**kwargs)
        if isinstance(result, io.IOBase):  # DEEPaaS lets predict return an open file
            with result:
                result = result.read()
        if method == "predict":
            return "ok", encode(name, result, kwargs.get("accept", JSON), schema)
    except InvalidArguments as exc:
        return "invalid", exc.errors
    except ModelServerError as exc:
        return "problem", exc.detail
    except NotImplementedError:
        return "unimplemented", f"model '{name}' does not implement {method}()"
    except AttributeError as exc:
        if not hasattr(model, method):
            return "unimplemented", f"model '{name}' has no {method}()"
        return "error", f"AttributeError: {exc}"
    except Exception as exc:
        refused = _refusal(exc)
        if refused is not None:
            return "refused", refused
        return "error", f"{type(exc).__name__}: {exc}"
    return "ok", result


def _refusal(exc: Exception) -> tuple[int, str] | None:
    """(status, message) when the model refused its input the DEEPaaS way: an aiohttp 4xx."""
    try:
        from aiohttp import web
    except ImportError:  # pragma: no cover - aiohttp is a dependency of both servers
        return None
    if isinstance(exc, web.HTTPException) and 400 <= exc.status < 500:
        return exc.status, exc.text or exc.reason
    return None


def _warm(model: Any) -> None:
    warm = getattr(model, "warm", None)
    if warm is not None:
        with contextlib.suppress(NotImplementedError):
            warm()


def worker_main(ref: ModelRef, conn: Connection) -> None:
    """A worker's life: load, warm, say ready, then answer ``(method, kwargs)`` jobs."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops its workers itself
    try:
        model = ref.load()
        schema = response_schema(model)
        _warm(model)
    except BaseException as exc:
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):  # the server went away
            return
        answer = _call(model, ref.name, job, schema)
        try:
            conn.send(answer)
        except Exception as exc:  # an answer that does not pickle
            conn.send(("error", f"its result cannot be sent back: {exc}"))


class _Channel(asyncio.Protocol):
    """The server's end of a worker's socket pair, read by the event loop's callbacks: each
    complete frame answers the call waiting for it (one at a time per worker)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiting: asyncio.Future[tuple[str, Any]] | None = None
        self.answers: list[tuple[str, Any]] = []
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is no subclass

    def data_received(self, data: bytes) -> None:
        buffer = self.buffer
        buffer += data
        while len(buffer) >= 4:
            (size,) = struct.unpack_from("!i", buffer)
            start = 4
            if size == -1:  # over 2 GiB: an 8-byte length follows
                if len(buffer) < 12:
                    return
                (size,) = struct.unpack_from("!Q", buffer, 4)
                start = 12
            if len(buffer) < start + size:
                return
            try:  # our own worker wrote it, as multiprocessing.Connection would
                answer = pickle.loads(memoryview(buffer)[start : start + size])  # noqa: S301
            except Exception as exc:  # e.g. a class the server cannot import: the call fails
                answer = ("error", f"its answer cannot be read here: {type(exc).__name__}: {exc}")
            del buffer[: start + size]
            self._answer(answer)

    def _answer(self, answer: tuple[str, Any]) -> None:
        waiting, self.waiting = self.waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_result(answer)
        else:
            self.answers.append(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        waiting, self.waiting = self.waiting, None
        if waiting is not None and not waiting.done():
            waiting.set_exception(WorkerDied("its connection closed"))

    def next_answer(self) -> asyncio.Future[tuple[str, Any]]:
        future: asyncio.Future[tuple[str, Any]] = asyncio.get_running_loop().create_future()
        if self.answers:
            future.set_result(self.answers.pop(0))
        elif self.closed:
            future.set_exception(WorkerDied("its connection closed"))
        else:
            self.waiting = future
        return future


class Worker:
    """One worker process and the server's end of its socket pair.

    The worker speaks ``multiprocessing.Connection``'s framing (a 4-byte big-endian length,
    then a pickle); the server reads it with a protocol on the event loop and writes with the
    transport, never blocking on a large answer or a large job.
    """

    def __init__(self, ref: ModelRef) -> None:
        self.ref = ref
        parent, child = _SPAWN.Pipe()  # duplex: a Unix socket pair
        self.process = _SPAWN.Process(
            target=worker_main, args=(ref, child), name=f"agora-model-{ref.name}"
        )
        self.process.start()
        child.close()
        self.sock = socket.socket(fileno=os.dup(parent.fileno()))
        parent.close()
        self.sock.setblocking(False)
        self.channel = _Channel()

    async def started(self) -> None:
        loop = asyncio.get_running_loop()
        await loop.create_unix_connection(lambda: self.channel, sock=self.sock)
        status, detail = await self._receive()
        if status != "ready":
            self.kill()
            raise RuntimeError(f"model '{self.ref.name}' failed to load or warm: {detail}")

    async def call(self, method: str, kwargs: dict[str, Any]) -> Any:
        data = ForkingPickler.dumps((method, kwargs))
        transport = self.channel.transport
        if transport is None or transport.is_closing():
            raise WorkerDied(await self._exit_code())
        transport.write(struct.pack("!i", len(data)) + data)
        status, value = await self._receive()
        if status == "ok":
            return value
        if status == "invalid":
            raise InvalidArguments(value)
        if status == "unimplemented":
            raise NotImplementedByModel(value)
        if status == "problem":
            raise ModelFailed(value)
        if status == "refused":
            raise ModelRefused(*value)
        raise ModelFailed(f"model '{self.ref.name}' failed: {value}")

    async def _receive(self) -> tuple[str, Any]:
        try:
            return await self.channel.next_answer()
        except WorkerDied:
            raise WorkerDied(await self._exit_code()) from None

    async def _exit_code(self) -> str:
        await asyncio.get_running_loop().run_in_executor(None, self.process.join, 1)
        return f"exit code {self.process.exitcode}"

    def kill(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join(5)
        if self.channel.transport is not None:
            self.channel.transport.abort()
        self.sock.close()


class Pool:
    """``size`` warmed workers for one model; at most ``queue`` requests wait for one."""

    def __init__(self, ref: ModelRef, size: int, queue: int, timeout: float) -> None:
        self.ref = ref
        self.size = size
        self.queue = queue
        self.timeout = timeout
        self._idle: asyncio.Queue[Worker] = asyncio.Queue()
        self._all: set[Worker] = set()
        self._waiting = 0
        self._warm = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self.ready = False
        #: Workers replaced so far (timeouts, crashes, cancelled calls).
        self.restarts = 0

    async def start(self) -> None:
        workers = [Worker(self.ref) for _ in range(self.size)]
        self._all.update(workers)
        try:
            await asyncio.gather(*(w.started() for w in workers))
        except BaseException:
            self.close()
            raise
        for w in workers:
            self._idle.put_nowait(w)
        self._warm = len(workers)
        self.ready = True

    async def run(self, method: str, kwargs: dict[str, Any]) -> Any:
        started = time.monotonic()
        if self._waiting == 0 and not self._idle.empty():  # the usual case: no wait, no task
            worker = self._idle.get_nowait()
        else:
            if self._waiting >= self.queue:
                raise Overloaded(
                    f"model '{self.ref.name}' is busy: {self.size} worker(s) working and "
                    f"{self._waiting} request(s) waiting (--queue); try again shortly",
                )
            self._waiting += 1
            try:  # asyncio.timeout: no task per waiting request, as wait_for would make
                async with asyncio.timeout(self.timeout):
                    worker = await self._idle.get()
            except TimeoutError:
                raise PredictionTimeout(self._late("waited for a free worker")) from None
            finally:
                self._waiting -= 1
        left = self.timeout - (time.monotonic() - started)
        # A plain timer that cancels this task rather than asyncio.timeout (less work, and this
        # runs for every prediction); the cancellation it causes becomes PredictionTimeout.
        task = asyncio.current_task()
        assert task is not None
        expired: list[bool] = []
        timer = asyncio.get_running_loop().call_later(max(left, 0.001), _expire, task, expired)
        try:
            result = await worker.call(method, kwargs)
        except asyncio.CancelledError:  # the timeout, or the client went away
            self._replace(worker)  # either way the worker's state is unknown
            if not expired or task.uncancel() > 0:
                raise
            raise PredictionTimeout(self._late("ran") + "; its worker was restarted") from None
        except WorkerDied as exc:
            self._replace(worker)
            raise WorkerCrashed(
                f"the worker of model '{self.ref.name}' died during {method}() ({exc}); "
                "it was restarted"
            ) from None
        except BaseException:
            self._idle.put_nowait(worker)
            raise
        finally:
            timer.cancel()
        self._idle.put_nowait(worker)
        return result

    @property
    def warm_workers(self) -> int:
        """Workers loaded and warm, busy or not (a replacement counts once it is warm)."""
        return self._warm

    def _late(self, what: str) -> str:
        return f"model '{self.ref.name}' {what} longer than the timeout of {self.timeout:g} s"

    @property
    def waiting(self) -> int:
        """Requests waiting for a free worker."""
        return self._waiting

    def _replace(self, worker: Worker) -> None:
        worker.kill()
        self._all.discard(worker)
        self._warm -= 1
        if not self.ready:  # closed: nothing would stop a new worker
            return
        self.restarts += 1
        task = asyncio.get_running_loop().create_task(self._start_one())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _start_one(self) -> None:
        worker = Worker(self.ref)
        self._all.add(worker)
        try:
            await worker.started()
        except Exception:
            logger.exception("cannot restart a worker of model '%s'", self.ref.name)
            self._all.discard(worker)
            return
        self._warm += 1
        self._idle.put_nowait(worker)

    def close(self) -> None:
        self.ready = False
        for task in self._tasks:
            task.cancel()
        for worker in self._all:
            worker.kill()
        self._all.clear()
