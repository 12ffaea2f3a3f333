"""The one place where slotmgr talks to systemd over a socket.

Messages are built by `slotmgr.systemd.messages` (pure); this module connects,
authenticates, sends them, and turns replies into Python values or typed
errors. It uses jeepney's sans-I/O pieces (Header, Message) and does its
own socket work (the SASL exchange included, see `_authenticate`), because
jeepney's blocking connection always says Hello, which systemd's private
socket (a direct peer, no bus daemon) does not answer.

Which socket:
- root, system manager: /run/systemd/private, as runc does: it works even
  when dbus-daemon is down or busy. `want_bus=True` (needed for AddRef and
  for process credentials of a caller) picks the system bus instead.
- --user: the user's manager at $XDG_RUNTIME_DIR/systemd/private.
- otherwise: the system bus, where polkit decides.
"""

from __future__ import annotations

import array
import contextlib
import errno
import os
import select
import socket
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Callable

from jeepney import HeaderFields, Message, MessageType
from jeepney.low_level import Header, calc_msg_size

from slotmgr.deadline import Deadline
from slotmgr.errors import BusTimeout, BusUnavailable, Interrupted, RemoteError
from slotmgr.systemd import messages
from slotmgr.systemd.messages import SYSTEMD_BUS_NAME, SignalMatch

SYSTEMD_PRIVATE_SOCKET = "/run/systemd/private"
SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
# Seconds; sd-bus (and systemctl) wait 25. A node that starts many jobs at once
# keeps PID 1 busy for longer, and a batch system would rather have its job
# start late than fail: so systemd's own DefaultTimeoutStartSec=.
DEFAULT_TIMEOUT = 90.0
_MAX_FDS = 16
_BUS_HELLO_S = 5.0  # a broker slower than this to say hello is passed by (bus.connect)
_NO_ANSWER_ERRORS = ("org.freedesktop.DBus.Error.NoReply", "org.freedesktop.DBus.Error.Timeout")

TESTBED_HINT = (
    "slotmgr needs a host whose PID 1 is systemd; developers on other machines: "
    "python3 -m tests.testbed run --guest 257 -- python3 -m slotmgr ..."
)


@dataclass(frozen=True)
class Signal:
    """A D-Bus signal received from systemd."""

    path: str
    interface: str
    member: str
    body: tuple[Any, ...]


def systemd_is_running() -> bool:
    """sd_booted(): systemd creates this directory only when it is PID 1."""
    return os.path.isdir("/run/systemd/system")


def _pid1_name() -> str:
    try:
        with open("/proc/1/comm") as f:
            return f.read().strip()
    except OSError:
        return "unknown"


class Connection:
    """An authenticated connection to systemd (directly or through a bus)."""

    def __init__(self, path: str, *, say_hello: bool, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.path = path
        self.timeout = timeout
        self.is_direct = not say_hello
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        self._stream = _MessageStream()
        self._kept: list[SignalMatch] = []  # the signals asked for (Manager.subscribe)
        # On a bus: the unique name of the connection that answers for systemd.
        # Only its signals are believed; anyone on the bus may send a signal
        # to anyone, so a job's user could otherwise tell a launcher its job
        # had ended. (On the private socket only PID 1 is at the other end.)
        self.systemd_sender: str | None = None
        self._serial = 0
        self._pending_signals: deque[Signal] = deque()
        # Read end of a signal.set_wakeup_fd() pipe: a waiting call returns
        # with Interrupted instead of a handler raising mid-parse.
        self.interrupt_fd: int | None = None
        try:
            self._sock.settimeout(timeout)
            self._sock.connect(path)
            self._authenticate()
            self._sock.settimeout(None)
        except socket.timeout as exc:
            self._sock.close()
            raise BusTimeout(f"no answer from {path} within {timeout:g}s") from exc
        except OSError as exc:
            self._sock.close()
            raise BusUnavailable(
                f"cannot connect to systemd at {path}: {exc.strerror or exc}"
            ) from exc
        if say_hello:
            try:
                self.call(messages.hello())
            except BaseException:
                self._sock.close()
                raise

    def _authenticate(self) -> None:
        """SASL EXTERNAL with fd passing, the whole conversation sent at once as
        sd-bus clients send it.

        Not line by line: systemd's own server (seen with 252 under load) does
        not look again at bytes that came in the same read as BEGIN, so a method
        call written right after a separate BEGIN could wait for ever. Sent
        with the other lines, BEGIN is handled before the AGREE_UNIX_FD we wait
        for, so the first message always arrives in a read of its own.
        """
        uid = str(os.geteuid()).encode().hex().encode()
        self._sock.sendall(b"\0AUTH EXTERNAL " + uid + b"\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\n")
        buffer = b""
        for expected in (b"OK ", b"AGREE_UNIX_FD"):
            while b"\r\n" not in buffer:
                data = self._sock.recv(1024)
                if not data:
                    raise BusUnavailable(f"{self.path} closed the connection while authenticating")
                buffer += data
            line, buffer = buffer.split(b"\r\n", 1)
            if not line.startswith(expected):
                text = line.decode(errors="replace")
                raise BusUnavailable(f"{self.path} refused authentication: {text}")
        if buffer:
            self._stream.add_data(buffer)

    def keep_signals(self, matches: Iterable[SignalMatch]) -> None:
        """Keep the signals these match from now on; any other is dropped."""
        self._kept.extend(matches)

    def _wanted(self, header: Header) -> bool:
        sender = None if self.is_direct else (self.systemd_sender or "")
        return is_wanted(header, self._kept, systemd_sender=sender)

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        return self._sock.fileno()

    # -- sending and receiving ---------------------------------------------

    def send(self, msg: Message) -> int:
        self._serial += 1
        fds: array.array[int] = array.array("i")
        data = msg.serialise(serial=self._serial, fds=fds)
        if fds:
            sent = self._sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)])
            if sent < len(data):
                self._sock.sendall(data[sent:])
        else:
            self._sock.sendall(data)
        return self._serial

    def _receive(self, deadline: Deadline) -> Message:
        while True:
            msg = self._stream.next_message(self._wanted)
            if msg is not None:
                return msg
            remaining = deadline.remaining()
            if remaining is not None and remaining <= 0:
                raise TimeoutError
            watched = [self._sock.fileno()]
            if self.interrupt_fd is not None:
                watched.append(self.interrupt_fd)
            ready, _, _ = select.select(watched, [], [], remaining)
            if not ready:
                raise TimeoutError
            if self.interrupt_fd is not None and self.interrupt_fd in ready:
                signums = os.read(self.interrupt_fd, 64)
                if signums:
                    raise Interrupted(signums[-1])
            if self._sock.fileno() not in ready:
                continue
            try:
                data, ancdata, _flags, _addr = self._sock.recvmsg(
                    65536, socket.CMSG_SPACE(_MAX_FDS * 4)
                )
            except InterruptedError:
                continue
            if not data:
                raise BusUnavailable(f"systemd closed the connection on {self.path}")
            fds = _fds_from_ancdata(ancdata)
            self._stream.add_data(data, fds)

    @contextlib.contextmanager
    def answers_within(self, seconds: float) -> Iterator[None]:
        """Calls inside wait at most `seconds` for their answer: for a moment
        when no answer means systemd is stuck and the caller must act
        (slotmgr.job.delivery), not wait the default out."""
        saved = self.timeout
        self.timeout = min(saved, seconds)
        try:
            yield
        finally:
            self.timeout = saved

    def call(self, msg: Message, *, timeout: float | None = None) -> tuple[Any, ...]:
        """Send a method call and return the reply's body; signals that
        arrive meanwhile are kept for `wait_for_signal`."""
        method = str(msg.header.fields.get(HeaderFields.member, "?"))
        serial = self.send(msg)
        deadline = Deadline.after(self.timeout if timeout is None else timeout)
        while True:
            try:
                reply = self._receive(deadline)
            except TimeoutError as exc:
                raise BusTimeout(f"systemd did not answer {method} in time") from exc
            if reply.header.message_type == MessageType.signal:
                self._pending_signals.append(_to_signal(reply))
                continue
            if reply.header.fields.get(HeaderFields.reply_serial) != serial:
                continue
            if (
                not self.is_direct
                and msg.header.fields.get(HeaderFields.destination) == SYSTEMD_BUS_NAME
            ):
                # The broker lets through only the callee's reply: whoever
                # answered a call to systemd's name is systemd (after a
                # re-exec, under a new unique name).
                self.systemd_sender = str(reply.header.fields.get(HeaderFields.sender, ""))
            if reply.header.message_type == MessageType.error:
                name = str(reply.header.fields.get(HeaderFields.error_name, "unknown"))
                if name in _NO_ANSWER_ERRORS:  # the broker gave up waiting for systemd
                    raise BusTimeout(f"systemd did not answer {method} in time")
                text = str(reply.body[0]) if reply.body else name
                raise RemoteError(name, text, method=method)
            return tuple(reply.body)

    def wait_for_signal(
        self, accept: Callable[[Signal], bool], *, timeout: float | None
    ) -> Signal | None:
        """Return the first signal `accept` takes, or None at the timeout.

        Signals that `accept` refuses are dropped: callers ask for what they
        need after subscribing, and re-check state by a call where a signal
        could have been missed.
        """
        deadline = Deadline.after(timeout)
        while True:
            while self._pending_signals:
                sig = self._pending_signals.popleft()
                if accept(sig):
                    return sig
            try:
                msg = self._receive(deadline)
            except TimeoutError:
                return None
            if msg.header.message_type == MessageType.signal:
                self._pending_signals.append(_to_signal(msg))


def is_wanted(
    header: Header, kept: Iterable[SignalMatch], *, systemd_sender: str | None = None
) -> bool:
    """Pure: a reply or error always; a signal when one of `kept` accepts it
    and, on a bus (`systemd_sender` not None), systemd sent it."""
    if header.message_type != MessageType.signal:
        return True
    fields = header.fields
    if systemd_sender is not None and (
        not systemd_sender or fields.get(HeaderFields.sender) != systemd_sender
    ):
        return False
    interface = str(fields.get(HeaderFields.interface, ""))
    member = str(fields.get(HeaderFields.member, ""))
    path = str(fields.get(HeaderFields.path, ""))
    return any(match.accepts(interface, member, path) for match in kept)


class _MessageStream:
    """Whole messages out of the bytes read from the socket (as jeepney's
    Parser, whose pieces it uses). A message that `wanted` refuses on its
    header alone is dropped before its body is parsed: systemd's private
    socket sends every client every unit's PropertiesChanged, so each of N
    launchers would otherwise parse the bodies of N units' signals."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._fds: list[int] = []

    def add_data(self, data: bytes, fds: Iterable[int] = ()) -> None:
        self._buffer += data
        self._fds.extend(fds)

    def next_message(self, wanted: Callable[[Header], bool]) -> Message | None:
        while len(self._buffer) >= 16:  # the first 16 bytes give the message's size
            size = calc_msg_size(bytes(self._buffer[:16]))
            if len(self._buffer) < size:
                return None
            raw = bytes(self._buffer[:size])
            del self._buffer[:size]
            header, _ = Header.from_buffer(raw)
            n_fds = int(header.fields.get(HeaderFields.unix_fds, 0))
            fds, self._fds = self._fds[:n_fds], self._fds[n_fds:]
            if wanted(header):
                return Message.from_buffer(raw, fds=fds)
        return None


def _to_signal(msg: Message) -> Signal:
    f = msg.header.fields
    return Signal(
        path=str(f.get(HeaderFields.path, "")),
        interface=str(f.get(HeaderFields.interface, "")),
        member=str(f.get(HeaderFields.member, "")),
        body=tuple(msg.body),
    )


def _fds_from_ancdata(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    # systemd sends us no descriptors; close any we get so none leaks.
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds = array.array("i")
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
            for fd in fds:
                os.close(fd)
    return []


def connect(
    *,
    user: bool = False,
    want_bus: bool = False,
    prefer_bus: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
) -> Connection:
    """Open the connection the caller's identity and mode call for.

    `prefer_bus`: root's system manager through the system bus when it is up,
    else its private socket. The launcher asks for it: on the private socket
    systemd writes every unit's every signal to every client, so with many
    jobs starting at once PID 1 spends its time on signals nobody reads; on
    the bus systemd sends each once and the broker passes on only what each
    client's match rules name."""
    if not systemd_is_running():
        raise BusUnavailable(
            f"systemd is not running on this host (PID 1 is {_pid1_name()!r})",
            hint=TESTBED_HINT,
        )
    if user:
        runtime_dir = os.environ.get("XDG_RUNTIME_DIR") or f"/run/user/{os.getuid()}"
        private = os.path.join(runtime_dir, "systemd", "private")
        bus_path = os.path.join(runtime_dir, "bus")
        if not want_bus and os.path.exists(private):
            return Connection(private, say_hello=False, timeout=timeout)
        if os.path.exists(bus_path):
            return Connection(bus_path, say_hello=True, timeout=timeout)
        raise BusUnavailable(
            f"no systemd user manager for uid {os.getuid()} (nothing at {private})",
            hint="log in with a session, or enable lingering: loginctl enable-linger",
        )
    if os.geteuid() == 0:
        # Root talks only to the well-known sockets: never to a bus an
        # environment variable names (a job's user may have set it).
        if prefer_bus and not want_bus:
            # A broker that is down or hung is no reason to fail: PID 1's own
            # socket serves as well, for one job.
            try:
                conn = Connection(SYSTEM_BUS_SOCKET, say_hello=True, timeout=_BUS_HELLO_S)
            except BusTimeout:
                pass
            except BusUnavailable as exc:
                if not _is_absent(exc):
                    raise
            else:
                conn.timeout = timeout
                return conn
        if not want_bus:
            try:
                return Connection(SYSTEMD_PRIVATE_SOCKET, say_hello=False, timeout=timeout)
            except BusUnavailable as exc:
                if not _is_absent(exc):
                    raise
        return Connection(SYSTEM_BUS_SOCKET, say_hello=True, timeout=timeout)
    address = os.environ.get("DBUS_SYSTEM_BUS_ADDRESS", "")
    path = address[len("unix:path=") :] if address.startswith("unix:path=") else SYSTEM_BUS_SOCKET
    return Connection(path, say_hello=True, timeout=timeout)


def _is_absent(exc: BusUnavailable) -> bool:
    """Nothing listens there (no socket, or no server behind it)."""
    cause = exc.__cause__
    return isinstance(cause, OSError) and cause.errno in (errno.ENOENT, errno.ECONNREFUSED)
