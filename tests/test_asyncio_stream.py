"""The model client's sockets on asyncio's transports (chat/backends/asyncio_stream.py),
against real loopback servers: bytes arrive whole and in order, over TLS too; the end,
a broken connection, a refused one and a silent server are httpcore2's own errors; a
reader that falls behind pauses the socket instead of holding everything; and the
model client really uses this backend."""
from __future__ import annotations

import asyncio
import datetime
import ssl

import httpcore2
import pytest

from chat.backends import asyncio_stream
from chat.backends.asyncio_stream import AsyncioBackend


async def _server(handler, ssl_context=None):
    server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=ssl_context)
    return server, server.sockets[0].getsockname()[1]


async def _read_all(stream, max_bytes=65536) -> bytes:
    out = bytearray()
    while chunk := await stream.read(max_bytes, timeout=10):
        out += chunk
    return bytes(out)


async def test_bytes_arrive_whole_and_in_order_then_the_end_reads_empty():
    body = bytes(range(256)) * 4000  # 1 MB, more than the high-water mark

    async def handler(reader, writer):
        assert await reader.readexactly(5) == b"hello"
        for start in range(0, len(body), 7000):
            writer.write(body[start:start + 7000])
            await writer.drain()
        writer.close()

    server, port = await _server(handler)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        await stream.write(b"hello", timeout=5)
        assert await _read_all(stream, max_bytes=1000) == body
        assert await stream.read(100) == b""
        await stream.aclose()


async def test_a_reader_that_falls_behind_pauses_the_socket_and_resumes_it(monkeypatch):
    monkeypatch.setattr(asyncio_stream, "HIGH_WATER", 10_000)
    monkeypatch.setattr(asyncio_stream, "LOW_WATER", 2_000)
    body = b"x" * 32_000_000  # more than the kernel's socket buffers hold
    sent = asyncio.Event()

    async def handler(reader, writer):
        writer.write(body)
        await writer.drain()
        sent.set()
        writer.close()

    server, port = await _server(handler)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        first = await stream.read(10, timeout=5)
        while not (stream._reader.paused or stream._reader.eof):  # data comes until the mark is passed
            await asyncio.sleep(0)
        assert stream._reader.paused, "the socket was read to its end without a pause"
        assert stream._reader.size <= 10_000 + 256 * 1024  # the mark, plus at most one read of asyncio's
        assert not sent.is_set(), "the server could write everything: nothing held it back"
        assert first + await _read_all(stream) == body
        await sent.wait()


async def test_a_silent_server_is_a_read_timeout():
    async def handler(reader, writer):
        await reader.read()  # never answers

    server, port = await _server(handler)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        with pytest.raises(httpcore2.ReadTimeout):
            await stream.read(100, timeout=0.05)
        await stream.aclose()


async def test_a_refused_connection_is_a_connect_error():
    server, port = await _server(lambda r, w: None)
    server.close()
    await server.wait_closed()
    with pytest.raises(httpcore2.ConnectError):
        await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)


async def test_a_connection_reset_mid_body_is_a_read_error():
    async def handler(reader, writer):
        writer.write(b"part of it")
        await writer.drain()
        writer.transport.abort()  # RST, not a clean end

    server, port = await _server(handler)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        await stream.write(b"GET", timeout=5)
        got = b""
        with pytest.raises((httpcore2.ReadError,)):
            while True:
                chunk = await stream.read(100, timeout=5)
                if not chunk:
                    raise AssertionError(f"a reset connection read as a clean end after {got!r}")
                got += chunk


async def test_an_idle_connection_the_server_closed_reads_as_readable():
    """httpcore2 drops a pooled connection that is readable while idle: the server closed it."""
    closed = asyncio.Event()

    async def handler(reader, writer):
        writer.close()
        closed.set()

    server, port = await _server(handler)
    async with server:
        stream = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        await closed.wait()
        while not stream._reader.eof:
            await asyncio.sleep(0)
        assert stream.get_extra_info("is_readable") is True
        assert stream.get_extra_info("server_addr")[1] == port


def _self_signed() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context with a fresh certificate for 127.0.0.1, and a client context that trusts it."""
    import ipaddress
    import tempfile

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    pem = cert.public_bytes(serialization.Encoding.PEM)
    with tempfile.NamedTemporaryFile(suffix=".pem") as cert_file, tempfile.NamedTemporaryFile(suffix=".key") as key_file:
        cert_file.write(pem)
        cert_file.flush()
        key_file.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()))
        key_file.flush()
        server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server.load_cert_chain(cert_file.name, key_file.name)
    client = ssl.create_default_context(cadata=pem.decode())
    return server, client


async def test_tls_carries_the_bytes_and_a_wrong_certificate_is_a_connect_error():
    server_context, client_context = _self_signed()
    body = b"secret tokens " * 10_000

    async def handler(reader, writer):
        await reader.readexactly(4)
        writer.write(body)
        await writer.drain()
        writer.close()

    server, port = await _server(handler, server_context)
    async with server:
        plain = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        stream = await plain.start_tls(client_context, server_hostname="127.0.0.1", timeout=5)
        assert stream.get_extra_info("ssl_object") is not None
        await stream.write(b"ping", timeout=5)
        assert await _read_all(stream) == body

        untrusting = ssl.create_default_context()  # the system's roots: this certificate is not among them
        plain = await AsyncioBackend().connect_tcp("127.0.0.1", port, timeout=5)
        with pytest.raises(httpcore2.ConnectError):
            await plain.start_tls(untrusting, server_hostname="127.0.0.1", timeout=5)


async def test_the_model_client_opens_its_connections_with_this_backend(fake_model):
    """A real request through the app's model client: its connection's stream is ours."""
    from chat.backends.remote import new_connection_pool

    client = new_connection_pool()
    try:
        response = await client.get(f"{fake_model.url.rstrip('/')}/models")
        assert response.status_code < 500
        connections = client._transport._pool.connections
        assert connections, "the connection was not kept in the pool"
        assert isinstance(connections[0]._connection._network_stream, asyncio_stream.AsyncioStream)
    finally:
        await client.aclose()
