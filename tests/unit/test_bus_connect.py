"""Which socket root's launcher talks to (bus.connect with prefer_bus), against
stand-in servers on Unix sockets: they speak SASL and answer Hello as a broker
would, or say nothing, or are not there."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import pytest
from jeepney import HeaderFields, new_error, new_method_return

from slotmgr.errors import BusTimeout
from slotmgr.systemd import bus, messages

if TYPE_CHECKING:

    class Serve(Protocol):
        """The `sockets` fixture: a stand-in for the bus or PID 1's socket."""

        def __call__(self, name: str, *, answers: bool, gives_up: bool = False) -> StandIn: ...


class StandIn:
    """A server on `path`: `answers` = it authenticates and replies to Hello;
    otherwise it accepts the connection and then says nothing."""

    def __init__(self, path: Path, *, answers: bool, gives_up: bool = False) -> None:
        self.path, self.answers, self.gives_up = path, answers, gives_up
        self.accepted = 0
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(4)
        self.clients: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            self.clients.append(client)
            if self.answers:
                threading.Thread(target=self._answer, args=(client,), daemon=True).start()

    def _answer(self, client: socket.socket) -> None:
        try:
            self._converse(client)
        except OSError:
            return  # the test closed it

    def _converse(self, client: socket.socket) -> None:
        data = b""
        while b"BEGIN\r\n" not in data:
            data += client.recv(4096)
        client.sendall(b"OK 0123456789abcdef0123456789abcdef\r\nAGREE_UNIX_FD\r\n")
        parser = bus._MessageStream()
        while True:
            chunk = client.recv(65536)
            if not chunk:
                return
            parser.add_data(chunk)
            msg = parser.next_message(lambda _h: True)
            if msg is None:
                continue
            if msg.header.fields.get(HeaderFields.member) == "Hello":
                client.sendall(new_method_return(msg, "s", (":1.42",)).serialise(serial=1))
            elif self.gives_up:  # as a broker whose wait for systemd ran out
                client.sendall(
                    new_error(
                        msg, "org.freedesktop.DBus.Error.NoReply", "s", ("no reply",)
                    ).serialise(serial=2)
                )
            else:  # systemd's answer, stamped by the broker with systemd's unique name
                reply = new_method_return(msg, "v", (("s", "257.13"),))
                reply.header.fields[HeaderFields.sender] = ":1.7"
                client.sendall(reply.serialise(serial=3))

    def close(self) -> None:
        self.sock.close()
        for client in self.clients:
            client.close()


@pytest.fixture
def sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Serve]:
    monkeypatch.setattr(bus, "systemd_is_running", lambda: True)
    monkeypatch.setattr(os, "geteuid", lambda: 0)  # root's choice, whoever runs the test
    monkeypatch.setattr(bus, "SYSTEM_BUS_SOCKET", str(tmp_path / "system_bus_socket"))
    monkeypatch.setattr(bus, "SYSTEMD_PRIVATE_SOCKET", str(tmp_path / "private"))
    monkeypatch.setattr(bus, "_BUS_HELLO_S", 0.5)
    servers: list[StandIn] = []

    def serve(name: str, *, answers: bool, gives_up: bool = False) -> StandIn:
        server = StandIn(tmp_path / name, answers=answers, gives_up=gives_up)
        servers.append(server)
        return server

    yield serve
    for server in servers:
        server.close()


def test_the_launcher_takes_the_bus_when_it_answers(sockets: Serve) -> None:
    sockets("system_bus_socket", answers=True)
    private = sockets("private", answers=True)
    conn = bus.connect(prefer_bus=True, timeout=7)
    assert (conn.path, conn.is_direct, conn.timeout) == (bus.SYSTEM_BUS_SOCKET, False, 7)
    assert private.accepted == 0
    conn.close()


def test_without_a_bus_the_launcher_takes_pid1s_own_socket(sockets: Serve) -> None:
    sockets("private", answers=True)
    conn = bus.connect(prefer_bus=True)
    assert (conn.path, conn.is_direct) == (bus.SYSTEMD_PRIVATE_SOCKET, True)
    conn.close()


def test_a_hung_broker_is_passed_by_for_pid1s_own_socket(sockets: Serve) -> None:
    hung = sockets("system_bus_socket", answers=False)
    sockets("private", answers=True)
    conn = bus.connect(prefer_bus=True)
    assert (conn.path, hung.accepted) == (bus.SYSTEMD_PRIVATE_SOCKET, 1)
    conn.close()


def test_other_commands_keep_pid1s_own_socket(sockets: Serve) -> None:
    sockets("system_bus_socket", answers=True)
    sockets("private", answers=True)
    conn = bus.connect()
    assert conn.path == bus.SYSTEMD_PRIVATE_SOCKET
    conn.close()


def test_root_ignores_a_bus_address_from_the_environment(
    sockets: Serve, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = sockets("elsewhere", answers=True)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'elsewhere'}")
    sockets("system_bus_socket", answers=True)
    conn = bus.connect(want_bus=True)
    assert conn.path == bus.SYSTEM_BUS_SOCKET and elsewhere.accepted == 0
    conn.close()


def test_a_broker_that_gave_up_waiting_is_no_answer_not_a_refusal(sockets: Serve) -> None:
    sockets("system_bus_socket", answers=True, gives_up=True)
    conn = bus.connect(prefer_bus=True)
    with pytest.raises(BusTimeout, match="did not answer StartTransientUnit in time"):
        conn.call(messages.start_transient_unit("slotmgr-ab12.service", []))
    conn.close()


def test_on_the_bus_systemds_unique_name_is_learnt_from_its_answer(sockets: Serve) -> None:
    sockets("system_bus_socket", answers=True)
    conn = bus.connect(prefer_bus=True)
    assert conn.systemd_sender is None  # no signal is believed before systemd answered
    assert conn.call(messages.get_version()) == (("s", "257.13"),)
    assert conn.systemd_sender == ":1.7"
    conn.close()
