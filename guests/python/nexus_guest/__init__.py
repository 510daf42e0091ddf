"""The Python SDK for Nexus agents.

Build an agent with componentize-py against the ``command-agent`` world of
``wit/`` (``nexus build agent.py -o agent.wasm`` does it). Plain ``open``,
``os``, ``json`` and ``sqlite3`` work on the agent's zone (its root ``/``
is the zone root); this package adds what only Nexus has, over the
bindings componentize-py generates from the ``nexus:kernel`` WIT package:
identity, pipes, timers and HTTP requests through the kernel (``fetch``),
with the semantics of the Rust SDK
(``guests/rust``). An agent module defines its entry point with
:func:`main`::

    import nexus_guest as nexus

    @nexus.main
    def run() -> int:
        print("hello from", nexus.whoami().principal)
        return 0
"""

from __future__ import annotations

import json as _json
import sys
import traceback
from dataclasses import dataclass
from enum import Enum
from typing import Callable, NoReturn, Optional, Sequence

from componentize_py_types import Err, Ok
from wit_world import exports
from wit_world.imports import exit as wasi_exit
from wit_world.imports import identity as _identity
from wit_world.imports import monotonic_clock
from wit_world.imports import outgoing_handler as _outgoing
from wit_world.imports import streams as _streams
from wit_world.imports import pipe as _pipe
from wit_world.imports import poll as _poll
from wit_world.imports import timer as _timer
from wit_world.imports import wasi_http_types as _http
from wit_world.imports.wasi_filesystem_types import ErrorCode

__all__ = [
    "HttpError",
    "Identity",
    "Interval",
    "Mode",
    "Pipe",
    "PipeError",
    "PipeStat",
    "Pollable",
    "Response",
    "TimerError",
    "create_pipe",
    "deadline",
    "exit",
    "fetch",
    "main",
    "now",
    "poll",
    "sleep",
    "sleep_pollable",
    "timer_usage",
    "wasi_http_bindings",
    "whoami",
]

#: Something to wait for: a pipe end, a timer, a stream.
Pollable = _poll.Pollable


# ---------------------------------------------------------------- identity


@dataclass(frozen=True)
class Identity:
    """Who this agent is: bound by the kernel when it was spawned."""

    #: The task's process id on its node.
    pid: int
    #: ``agent:NAME`` (or ``user:NAME``, ``node:ID``).
    principal: str
    #: The zone the agent sees as its root.
    zone: str


def whoami() -> Identity:
    """Asks the kernel who this agent is."""
    w = _identity.whoami()
    return Identity(pid=w.pid, principal=w.principal, zone=w.zone)


# ------------------------------------------------------------ exit and main


def exit(code: int) -> NoReturn:
    """Ends the agent with ``code`` (0-255) as its exit status, which
    ``nexus run`` passes on. Buffered ``sys.stdout``/``sys.stderr`` are
    flushed first. (On WASI 0.2 Python's own ``sys.exit`` can only say
    success or failure; this uses ``wasi:cli/exit.exit-with-code``.)"""
    if not 0 <= code <= 255:
        raise ValueError(f"exit status {code} is not in 0..=255")
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed stream has nothing to flush
            pass
    wasi_exit.exit_with_code(code)
    raise AssertionError("exit-with-code returned")


def _status(value: object) -> int:
    """What ``sys.exit(value)`` means as an exit status."""
    if value is None:
        return 0
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return value & 0xFF
    print(value, file=sys.stderr)
    return 1


def main(entry: Callable[[], Optional[int]]) -> Callable[[], Optional[int]]:
    """Makes ``entry`` the agent's entry point (``wasi:cli/run``).

    ``entry`` runs with ``sys.argv`` set; it may return an exit status
    (``None`` is 0) or call ``sys.exit(n)``, and both end the agent with
    exactly that status. An uncaught exception prints its traceback on
    stderr and ends the agent with status 1, as CPython does.
    """

    class Run(exports.Run):
        def run(self) -> None:
            try:
                status = _status(entry())
            except SystemExit as e:
                status = _status(e.code)
            except BaseException:
                traceback.print_exc()
                status = 1
            exit(status)

    # componentize-py looks up the export's class in the app module.
    module = sys.modules.get(entry.__module__)
    if module is not None:
        setattr(module, "Run", Run)
    return entry


# ------------------------------------------------------------------- pipes


class Mode(Enum):
    """Which end of a pipe to attach."""

    READ = _pipe.Mode.READ
    WRITE = _pipe.Mode.WRITE


class PipeError(OSError):
    """A pipe operation failed; ``code`` is the WASI ``error-code``.

    ``would_block`` and ``broken_pipe`` name the two a program handles;
    ``PermissionError`` is raised instead for ``access`` (the gate said
    no), ``FileNotFoundError`` for ``no-entry`` and ``FileExistsError`` for
    ``exist``, so ``except OSError`` catches them all."""

    def __init__(self, code: ErrorCode, what: str) -> None:
        super().__init__(f"{what}: {code.name.lower().replace('_', '-')}")
        self.code = code

    @property
    def would_block(self) -> bool:
        return self.code == ErrorCode.WOULD_BLOCK

    @property
    def broken_pipe(self) -> bool:
        return self.code == ErrorCode.PIPE


def _raise(e: Err, what: str) -> NoReturn:
    code = e.value
    if code == ErrorCode.ACCESS:
        raise PermissionError(f"{what}: access denied") from None
    if code == ErrorCode.NO_ENTRY:
        raise FileNotFoundError(f"{what}: no such pipe") from None
    if code == ErrorCode.EXIST:
        raise FileExistsError(f"{what}: already exists") from None
    raise PipeError(code, what) from None


@dataclass(frozen=True)
class PipeStat:
    """A pipe's counters."""

    capacity: int
    #: Bytes in the ring now.
    occupancy: int
    #: Bytes ever written and read.
    bytes_in: int
    bytes_out: int
    readers: int
    writers: int
    #: Bytes written since the last save.
    unsynced: int


def create_pipe(path: str, capacity: int) -> None:
    """Creates a pipe at ``path`` (from the zone root) holding at most
    ``capacity`` bytes (1 B to 16 MiB). Needs ``write`` on the directory."""
    try:
        _pipe.create(path, capacity)
    except Err as e:
        _raise(e, path)


class Pipe:
    """An attached end of a pipe; closing it (or leaving a ``with`` block)
    detaches. Readers see end-of-file once every writer has detached;
    writers get a broken pipe once every reader has."""

    def __init__(self, end: _pipe.PipeEnd, path: str) -> None:
        self._end: Optional[_pipe.PipeEnd] = end
        self.path = path

    @classmethod
    def open(cls, path: str, mode: Mode) -> "Pipe":
        """Attaches to the pipe at ``path``: ``READ`` needs the ``read``
        permission, ``WRITE`` the ``write`` permission."""
        try:
            return cls(_pipe.PipeEnd.open(path, mode.value), path)
        except Err as e:
            _raise(e, path)

    @classmethod
    def reader(cls, path: str) -> "Pipe":
        return cls.open(path, Mode.READ)

    @classmethod
    def writer(cls, path: str) -> "Pipe":
        return cls.open(path, Mode.WRITE)

    @property
    def _open_end(self) -> _pipe.PipeEnd:
        if self._end is None:
            raise ValueError(f"{self.path}: the pipe end is closed")
        return self._end

    def read(self, size: int = 65536) -> bytes:
        """Up to ``size`` bytes, waiting for some; ``b""`` at end-of-file."""
        try:
            return self._open_end.blocking_read(size)
        except Err as e:
            _raise(e, self.path)

    def try_read(self, size: int = 65536) -> Optional[bytes]:
        """Up to ``size`` bytes without waiting: ``None`` when the pipe is
        empty (a writer may still write), ``b""`` at end-of-file."""
        try:
            return self._open_end.read(size)
        except Err as e:
            if e.value == ErrorCode.WOULD_BLOCK:
                return None
            _raise(e, self.path)

    def write(self, data: bytes) -> None:
        """Writes all of ``data``, waiting for room. A write of at most
        :meth:`atomic_size` bytes is never split or interleaved."""
        try:
            self._open_end.blocking_write(bytes(data))
        except Err as e:
            _raise(e, self.path)

    def try_write(self, data: bytes) -> int:
        """Writes without waiting; returns the bytes taken (0 when full)."""
        try:
            return self._open_end.write(bytes(data))
        except Err as e:
            if e.value == ErrorCode.WOULD_BLOCK:
                return 0
            _raise(e, self.path)

    def subscribe(self) -> Pollable:
        """Ready when a read or write can make progress (or fail)."""
        return self._open_end.subscribe()

    def sync(self) -> None:
        """Makes every byte written so far durable."""
        try:
            self._open_end.sync()
        except Err as e:
            _raise(e, self.path)

    def stat(self) -> PipeStat:
        s = self._open_end.stat()
        return PipeStat(
            capacity=s.capacity,
            occupancy=s.occupancy,
            bytes_in=s.bytes_in,
            bytes_out=s.bytes_out,
            readers=s.readers,
            writers=s.writers,
            unsynced=s.unsynced,
        )

    def atomic_size(self) -> int:
        """The largest write that is never split."""
        return self._open_end.atomic_size()

    def close(self) -> None:
        """Detaches this end (idempotent)."""
        end, self._end = self._end, None
        if end is not None:
            end.__exit__(None, None, None)

    def __enter__(self) -> "Pipe":
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def __iter__(self):
        """The pipe's bytes, as they come, until end-of-file."""
        while True:
            chunk = self.read()
            if not chunk:
                return
            yield chunk


# ------------------------------------------------------------------ timers


class TimerError(Exception):
    """``too-many-timers`` (the task's limit) or ``invalid``."""

    def __init__(self, kind: _timer.TimerError) -> None:
        super().__init__(kind.name.lower().replace("_", "-"))
        self.kind = kind


def _seconds_to_ns(seconds: float) -> int:
    if seconds < 0:
        raise ValueError("a negative duration")
    return int(seconds * 1_000_000_000)


def now() -> int:
    """The monotonic clock, in nanoseconds (the kernel's timer driver)."""
    return monotonic_clock.now()


def sleep_pollable(seconds: float) -> Pollable:
    """A pollable ready ``seconds`` from now."""
    try:
        return _timer.sleep(_seconds_to_ns(seconds))
    except Err as e:
        raise TimerError(e.value) from None


def deadline(at_ns: int) -> Pollable:
    """A pollable ready when :func:`now` reaches ``at_ns``."""
    try:
        return _timer.deadline(at_ns)
    except Err as e:
        raise TimerError(e.value) from None


def sleep(seconds: float) -> None:
    """Sleeps ``seconds`` on a kernel timer (``time.sleep`` works too)."""
    sleep_pollable(seconds).block()


def timer_usage() -> tuple[int, int]:
    """Live timers this task holds, and its limit."""
    return _timer.usage()


class Interval:
    """A periodic tick that never drifts: tick ``n`` is due at start +
    ``n`` × period."""

    def __init__(self, period_seconds: float) -> None:
        try:
            self._interval = _timer.Interval.create(_seconds_to_ns(period_seconds))
        except Err as e:
            raise TimerError(e.value) from None

    def subscribe(self) -> Pollable:
        """Ready at the next tick not yet taken."""
        try:
            return self._interval.subscribe()
        except Err as e:
            raise TimerError(e.value) from None

    def take_ticks(self) -> int:
        """How many ticks have come due since the last call (0 if none)."""
        return self._interval.take_ticks()

    def tick(self) -> int:
        """Waits for the next tick; returns how many came due (more than 1
        if the agent fell behind)."""
        while True:
            n = self.take_ticks()
            if n:
                return n
            self.subscribe().block()

    def close(self) -> None:
        self._interval.__exit__(None, None, None)


def poll(pollables: Sequence[Pollable]) -> list[int]:
    """Waits until at least one of ``pollables`` is ready; returns the
    indexes of those that are."""
    return list(_poll.poll(list(pollables)))


class HttpError(Exception):
    """An HTTP request failed; ``code`` names the ``wasi:http`` error-code
    (``"HttpResponseBodySize"``, ``"DestinationIpProhibited"``, …). A
    request the kernel refused for want of a grant raises
    ``PermissionError`` instead (the agent's stderr names the grant)."""

    def __init__(self, code: str, url: str) -> None:
        super().__init__(f"{url}: {code}")
        self.code = code


@dataclass
class Response:
    """A response, read whole."""

    status: int
    headers: list[tuple[str, bytes]]
    body: bytes

    def header(self, name: str) -> Optional[bytes]:
        """The first header named ``name`` (any case)."""
        for n, v in self.headers:
            if n.lower() == name.lower():
                return v
        return None

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> object:
        return _json.loads(self.body)


_METHODS = {
    "GET": _http.Method_Get,
    "HEAD": _http.Method_Head,
    "POST": _http.Method_Post,
    "PUT": _http.Method_Put,
    "PATCH": _http.Method_Patch,
    "DELETE": _http.Method_Delete,
    "OPTIONS": _http.Method_Options,
}


def _http_failure(code: object, url: str) -> Exception:
    if code is None:
        return HttpError("StreamError", url)
    name = type(code).__name__.removeprefix("ErrorCode_")
    if name == "HttpRequestDenied":
        return PermissionError(f"{url}: refused by the kernel (no fetch grant)")
    detail = getattr(code, "value", None)
    return HttpError(f"{name}({detail})" if detail is not None else name, url)


def fetch(
    url: str,
    method: str = "GET",
    headers: Sequence[tuple[str, str | bytes]] = (),
    body: bytes = b"",
) -> Response:
    """Sends a request through the kernel (``wasi:http``) and reads the
    whole response. It leaves only for a destination this agent was granted
    (``nexus grant --zone Z agent:NAME fetch host:api.example.com``)."""
    if url.startswith("https://"):
        scheme, rest = _http.Scheme_Https(), url[len("https://"):]
    elif url.startswith("http://"):
        scheme, rest = _http.Scheme_Http(), url[len("http://"):]
    else:
        raise ValueError(f"{url!r} is not http:// or https://")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, path = rest[:cut], rest[cut:] or "/"
    fields = _http.Fields.from_list(
        [(n, v.encode() if isinstance(v, str) else v) for n, v in headers]
    )
    request = _http.OutgoingRequest(fields)
    m = _METHODS.get(method.upper())
    request.set_method(m() if m else _http.Method_Other(method))
    request.set_scheme(scheme)
    request.set_authority(authority)
    request.set_path_with_query(path)
    outgoing = request.body()
    with outgoing.write() as stream:
        for i in range(0, len(body), 4096):
            stream.blocking_write_and_flush(body[i : i + 4096])
    try:
        _http.OutgoingBody.finish(outgoing, None)
        future = _outgoing.handle(request, None)
    except Err as e:
        raise _http_failure(e.value, url) from None
    while (answer := future.get()) is None:
        future.subscribe().block()
    if isinstance(answer, Err):
        raise HttpError("ResponseTaken", url)
    if isinstance(answer.value, Err):
        raise _http_failure(answer.value.value, url)
    response = answer.value.value
    status, got = response.status(), response.headers().entries()
    incoming = response.consume()
    data = bytearray()
    with incoming.stream() as stream:
        while True:
            try:
                data += stream.blocking_read(65536)
            except Err as e:
                if isinstance(e.value, _streams.StreamError_Closed):
                    break
                raise _http_failure(_http.http_error_code(e.value.value), url) from None
    _http.IncomingBody.finish(incoming)
    return Response(status, got, bytes(data))


def wasi_http_bindings() -> str:
    """The name of a bindings package laid out as the ``requests-wasi-http``
    adapter (0.1) looks for it (``ROOT.types.Err``, ``ROOT.imports.types``,
    ``ROOT.imports.outgoing_handler``), over this world's own, so
    ``requests`` goes through the kernel's egress::

        adapter = WasiHttpAdapter(nexus_guest.wasi_http_bindings())
    """
    import types as _types

    root = "nexus_guest_wasi_http"
    if root not in sys.modules:
        package = _types.ModuleType(root)
        package.__path__ = []
        world_types = _types.ModuleType(f"{root}.types")
        world_types.Err = Err  # type: ignore[attr-defined]
        world_types.Ok = Ok  # type: ignore[attr-defined]
        imports = _types.ModuleType(f"{root}.imports")
        imports.__path__ = []
        sys.modules.update(
            {
                root: package,
                f"{root}.types": world_types,
                f"{root}.imports": imports,
                f"{root}.imports.types": _http,
                f"{root}.imports.outgoing_handler": _outgoing,
            }
        )
    return root
