"""The README's "nothing is downloaded at test time" holds because conftest refuses every
connection that leaves this machine; these tests check that guard itself."""

import socket

import pytest


@pytest.mark.parametrize("host", ["storage.googleapis.com", "93.184.215.14"])
def test_a_connection_off_this_machine_fails_the_test(host):
    with pytest.raises(AssertionError, match="tests must not download"):
        socket.create_connection((host, 443), timeout=1)


def test_loopback_stays_open_for_the_multi_process_tests():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        socket.create_connection(server.getsockname(), timeout=1).close()
