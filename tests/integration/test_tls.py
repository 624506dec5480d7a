"""Transport security on the real server (recsys/rpc/server.py with recsys/rpc/tls.py), in-process on
loopback with certificates made here (recsys/rpc/devcerts.py): the mutual-TLS handshake refuses a client
without a certificate, with one from another CA, or in plaintext; rotated certificates are picked up by
new connections without a restart, a broken rotation is refused; the ranker's channels follow rotated
client certificates; the health-only plaintext port."""

from __future__ import annotations

import asyncio
import shutil
import socket
import ssl
import time
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from grpc import aio
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.metrics import SECURITY_RELOADS
from recsys.rpc.devcerts import LocalCA
from recsys.rpc.host import VersionsServicer
from recsys.rpc.remote import Channels
from recsys.rpc.security import Security
from recsys.rpc.server import Server
from recsys.rpc.tls import ChannelCertificates, TLSFiles
from recsys.rpc.versions import LiveVersions
from recsys.v1 import versions_pb2_grpc

pytestmark = pytest.mark.integration


def creds(files: TLSFiles | None, ca: str | None = None) -> grpc.ChannelCredentials:
    """Client credentials: `files`' certificate (None: no client certificate), trusting `ca` (default: theirs)."""
    root = Path(ca or files.ca).read_bytes()
    if files is None:
        return grpc.ssl_channel_credentials(root_certificates=root)
    return grpc.ssl_channel_credentials(root, Path(files.key).read_bytes(), Path(files.cert).read_bytes())


async def health(port: int, credentials: grpc.ChannelCredentials | None) -> str:
    """SERVING, or the status code of the failed call (a refused handshake is UNAVAILABLE)."""
    target = f"localhost:{port}"
    channel = aio.insecure_channel(target) if credentials is None else aio.secure_channel(target, credentials)
    async with channel:
        try:
            resp = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.aio.AioRpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(resp.status)


def served_certificate(port: int, client: TLSFiles) -> x509.Certificate:
    """The certificate a new connection is served (a raw TLS handshake: gRPC's client does not expose it)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(client.ca)
    ctx.load_cert_chain(client.cert, client.key)
    ctx.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock, \
            ctx.wrap_socket(sock, server_hostname="localhost") as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


async def started(files: TLSFiles, port: int = 0, **kw) -> Server:
    server = Server("127.0.0.1", port, security=Security(tls=files, **kw))
    await server.start()
    return server


def _reloads(what: str, result: str) -> float:
    return SECURITY_RELOADS.labels(what, result)._value.get()


def test_the_mutual_tls_handshake_refuses_strangers(tmp_path):
    ca, other = LocalCA(tmp_path / "ca"), LocalCA(tmp_path / "other", name="other-ca")
    server_files, client = ca.issue("server"), ca.issue("client")
    stranger = other.issue("stranger")

    async def main():
        server = await started(server_files)
        try:
            assert await health(server.port, creds(client)) == "SERVING"
            assert await health(server.port, creds(None, ca=client.ca)) == "UNAVAILABLE"  # no client certificate
            assert await health(server.port, creds(stranger, ca=client.ca)) == "UNAVAILABLE"  # another CA's
            assert await health(server.port, None) == "UNAVAILABLE"  # plaintext to a TLS port
            assert await health(server.port, creds(stranger)) == "UNAVAILABLE"  # not trusting the server's CA
        finally:
            await server.server.stop(0)

        # Server TLS only (a ranker whose callers use bearer tokens): no client certificate is asked for, so
        # none can be presented, and no certificate name ever reaches the caller checks.
        token_only = await started(server_files, client_auth="none")
        try:
            assert await health(token_only.port, creds(None, ca=client.ca)) == "SERVING"
            assert await health(token_only.port, None) == "UNAVAILABLE"  # still no plaintext
        finally:
            await token_only.server.stop(0)

    asyncio.run(main())


def test_rotated_certificates_are_picked_up_live(tmp_path):
    ca = LocalCA(tmp_path / "ca")
    trust = tmp_path / "trust.crt"  # the server's CA bundle: rotated to a new CA below
    shutil.copy(ca.ca_path, trust)
    server_files = ca.issue("server", ca_path=trust)
    client = ca.issue("client")

    async def main():
        server = await started(server_files)
        try:
            first = await asyncio.to_thread(served_certificate, server.port, client)
            kept = aio.secure_channel(f"localhost:{server.port}", creds(client))  # opened before the rotation
            stub = health_pb2_grpc.HealthStub(kept)
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)

            ok_before = _reloads("server_tls", "ok")
            ca.issue("server", ca_path=trust)  # renewal: same name, new key and serial
            second = await asyncio.to_thread(served_certificate, server.port, client)
            assert second.serial_number != first.serial_number
            assert second.public_key().public_numbers() != first.public_key().public_numbers()
            assert _reloads("server_tls", "ok") == ok_before + 1
            await stub.Check(health_pb2.HealthCheckRequest(), timeout=3)  # the open connection is untouched

            # A broken rotation (another certificate's key) is refused; the last good set keeps serving.
            rejected = _reloads("server_tls", "rejected")
            good_key = Path(server_files.key).read_bytes()
            shutil.copy(ca.issue("unrelated").key, server_files.key)
            assert (await asyncio.to_thread(served_certificate, server.port, client)).serial_number \
                == second.serial_number
            assert _reloads("server_tls", "rejected") == rejected + 1
            Path(server_files.key).write_bytes(good_key)

            # A new CA: the server's certificate and the CA its clients must chain to, both rotated.
            new_ca = LocalCA(tmp_path / "new", name="new-ca")
            new_ca.issue("server", ca_path=trust, stem=str(Path(server_files.cert).with_suffix("")))
            shutil.copy(new_ca.ca_path, trust)
            assert await health(server.port, creds(new_ca.issue("client"))) == "SERVING"
            assert await health(server.port, creds(client, ca=str(new_ca.ca_path))) == "UNAVAILABLE"
            await kept.close()
        finally:
            await server.server.stop(0)

    asyncio.run(main())


def test_the_rankers_channels_follow_rotated_client_certificates(tmp_path):
    """Dependencies restarted on a new CA refuse the ranker's old certificate until its files rotate too;
    then its channels are rebuilt on them (within tls_reload_s) and calls succeed again, no restart."""
    ca, new_ca = LocalCA(tmp_path / "ca"), LocalCA(tmp_path / "new", name="new-ca")
    client_dir = tmp_path / "ranker"
    client_dir.mkdir()
    client = TLSFiles(str(client_dir / "tls.crt"), str(client_dir / "tls.key"), str(client_dir / "ca.crt"))

    def install(files: TLSFiles) -> None:  # as a Secret volume update: every file replaced
        for src, dst in ((files.cert, client.cert), (files.key, client.key), (files.ca, client.ca)):
            shutil.copy(src, dst + ".new")
            Path(dst + ".new").replace(dst)

    install(ca.issue("ranker"))
    versions: LiveVersions[object] = LiveVersions("test")
    versions.add("v1", object())

    async def dependency(files: TLSFiles, port: int = 0) -> Server:
        server = Server("127.0.0.1", port, security=Security(tls=files))
        server.add(versions_pb2_grpc.add_ModelVersionsServicer_to_server, VersionsServicer("dep", versions),
                   "recsys.v1.ModelVersions")
        await server.start()
        return server

    async def eventually(channels: Channels, want: bool, within: float = 10.0) -> None:
        deadline = time.monotonic() + within
        while await channels.hold("v1") != want:
            assert time.monotonic() < deadline, f"hold() did not become {want} within {within} s"
            await asyncio.sleep(0.1)

    async def main():
        deps = [await dependency(ca.issue(f"dep{i}")) for i in range(2)]
        channels = Channels(f"localhost:{deps[0].port}", f"localhost:{deps[1].port}",
                            ChannelCertificates(client, reload_s=0.1))
        try:
            assert await channels.hold("v1")
            ports = [d.port for d in deps]
            for d in deps:
                await d.server.stop(0)
            deps = [await dependency(new_ca.issue(f"dep{i}"), port) for i, port in enumerate(ports)]
            await eventually(channels, False)  # the old CA's certificate and trust no longer work
            install(new_ca.issue("ranker"))
            await eventually(channels, True)
        finally:
            await channels.close()
            for d in deps:
                await d.server.stop(0)

    asyncio.run(main())


def test_the_health_port_is_plaintext_and_serves_health_only(tmp_path):
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    ca = LocalCA(tmp_path)
    server_files = ca.issue("server")
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    health_port = sock.getsockname()[1]
    sock.close()

    async def main():
        server = await started(server_files, health_port=health_port)
        try:
            await server.set_serving(False)
            assert await health(health_port, None) == "NOT_SERVING"  # the same statuses as the TLS port
            await server.set_serving(True)
            assert await health(health_port, None) == "SERVING"
            async with aio.insecure_channel(f"127.0.0.1:{health_port}") as ch:
                stub = reflection_pb2_grpc.ServerReflectionStub(ch)
                with pytest.raises(grpc.aio.AioRpcError) as err:
                    async for _ in stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(
                            list_services="")]), timeout=3):
                        pass
                assert err.value.code() == grpc.StatusCode.UNIMPLEMENTED
        finally:
            await server.server.stop(0)
            await server._health_server.stop(0)

    asyncio.run(main())
