"""Start the three services as separate processes on loopback and wait until all report SERVING.

Used by `recsys up`, `recsys demo`, `recsys bench` and the integration tests, so each of them runs the
real services exactly as a deployment would (one process per service, talking gRPC).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from recsys.child_process import child_env
from recsys.rpc.tls import TLSFiles


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(address: str, timeout: float, proc: subprocess.Popen | None = None, name: str = "",
                 tls: TLSFiles | None = None) -> None:
    """Poll grpc.health.v1 until SERVING (over mutual TLS with `tls`); fail fast if the process exits."""
    deadline = time.monotonic() + timeout
    with (grpc.insecure_channel(address) if tls is None else grpc.secure_channel(address, tls_credentials(tls))) \
            as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if proc is not None and proc.poll() is not None:
                raise RuntimeError(f"{name or address} exited with code {proc.returncode} during start-up")
            try:
                resp = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if resp.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"{name or address} not healthy after {timeout:.0f}s")
            time.sleep(0.2)


def _spawn(cmd: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:  # a restarted service appends to its log
        # no preexec_fn: the child arranges to die with us itself (recsys/child_process.py)
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=child_env(env),
                                start_new_session=True)


SERVICES = ("feature_svc", "candidate_svc", "ranker_svc")  # in start-up order
_MAX_BACKOFF_S = 30.0
_STABLE_S = 60.0  # a service that ran this long before dying restarts at once again


@dataclass
class Service:
    name: str  # "ranker_svc" (the first replica) or "ranker_svc-1"
    port: int
    metrics_port: int
    proc: subprocess.Popen
    log_path: Path
    cmd: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    restarts: int = 0
    kind: str = ""  # the service's module ("ranker_svc"); set from the name when empty
    started: float = field(default_factory=time.monotonic)
    _backoff: float = 0.0
    _due: float | None = None  # when a dead service is restarted

    def __post_init__(self) -> None:
        self.kind = self.kind or self.name

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def respawn(self, now: float) -> None:
        """Start the service's process again, same command and environment, appending to its log."""
        self.proc = _spawn(self.cmd, self.env, self.log_path)
        self.restarts += 1
        self.started, self._due = now, None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class Cluster:
    """The running services. `stop()` terminates them (SIGTERM, then SIGKILL after a grace period)."""

    services: dict[str, Service] = field(default_factory=dict)
    log_dir: Path | None = None
    tls: dict[str, TLSFiles] = field(default_factory=dict)  # each service's certificate; empty: plaintext
    stream: str = ""  # the event stream URL the services share

    def replicas(self, kind: str) -> list[Service]:
        return [svc for svc in self.services.values() if svc.kind == kind]

    def address_of(self, kind: str) -> str:
        """The gRPC target of every replica of `kind`: `127.0.0.1:P`, or `ipv4:127.0.0.1:P,127.0.0.1:Q`
        (the client spreads calls over them and leaves any that reports NOT_SERVING; recsys/rpc/retry.py)."""
        return _target([svc.port for svc in self.replicas(kind)])

    @property
    def target(self) -> str:
        return self.address_of("ranker_svc")

    def stop(self, grace: float = 10.0) -> None:
        for svc in self.services.values():
            if svc.proc.poll() is None:
                svc.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace
        for svc in self.services.values():
            try:
                svc.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                svc.proc.kill()
                svc.proc.wait()

    def restart(self, name: str, timeout: float = 120.0) -> float:
        """SIGTERM one replica, wait for its drain and exit (code 0 expected), start it again and wait until it
        reports SERVING. Returns the seconds it took; raises if it did not exit cleanly or come back."""
        svc = self.services[name]
        t0 = time.monotonic()
        svc.proc.send_signal(signal.SIGTERM)
        try:
            code = svc.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            svc.proc.kill()
            svc.proc.wait()
            raise RuntimeError(f"{name} did not exit within {timeout:.0f} s of SIGTERM") from None
        if code != 0:
            raise RuntimeError(f"{name} exited with code {code} after SIGTERM\n{svc.log_tail()}")
        svc.respawn(time.monotonic())
        wait_healthy(svc.address, timeout, svc.proc, name, self.tls.get(svc.kind))
        return time.monotonic() - t0

    def rolling_restart(self, settle_s: float = 2.0, on_event: Callable[[str], None] | None = None,
                        kinds: tuple[str, ...] = SERVICES) -> dict[str, float]:
        """Restart every replica of each service in turn, each back SERVING and given `settle_s` (as a
        Deployment's minReadySeconds: its callers reconnect within about a second) before the next goes.
        With two or more replicas of each, callers always find a serving one. Seconds per replica."""
        took = {}
        for kind in kinds:
            for svc in self.replicas(kind):
                if on_event is not None:
                    on_event(f"{svc.name}: SIGTERM (drain) and restart")
                took[svc.name] = round(self.restart(svc.name), 2)
                if on_event is not None:
                    on_event(f"{svc.name}: serving again after {took[svc.name]:.1f} s (pid {svc.proc.pid})")
                time.sleep(settle_s)
        return took

    def supervise(self, now: float | None = None) -> list[str]:
        """Restart services that died, with exponential backoff (0.5 s doubling to 30 s; reset once a
        service has run a minute), the others serving on. Returns what it did, one line per event."""
        now = time.monotonic() if now is None else now
        events = []
        for svc in self.services.values():
            if svc.proc.poll() is None or not svc.cmd:
                continue
            if svc._due is None:
                svc._backoff = 0.5 if now - svc.started > _STABLE_S else min(_MAX_BACKOFF_S, max(0.5, svc._backoff * 2))
                svc._due = now + svc._backoff
                events.append(f"{svc.name} exited with code {svc.proc.returncode}; restarting in {svc._backoff:.1f} s")
            elif now >= svc._due:
                svc.respawn(now)
                events.append(f"{svc.name} restarted (pid {svc.proc.pid}, restart {svc.restarts})")
        return events

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _target(ports: list[int]) -> str:
    if len(ports) == 1:
        return f"127.0.0.1:{ports[0]}"
    return "ipv4:" + ",".join(f"127.0.0.1:{p}" for p in ports)


def _per_service(tls: TLSFiles | dict[str, TLSFiles] | None) -> dict[str, TLSFiles]:
    if tls is None:
        return {}
    return dict(tls) if isinstance(tls, dict) else {name: tls for name in SERVICES}


def _security_flags(tls: TLSFiles | None) -> list[str]:
    return ["--plaintext"] if tls is None else ["--tls-cert", tls.cert, "--tls-key", tls.key, "--tls-ca", tls.ca]


def tls_credentials(tls: TLSFiles) -> grpc.ChannelCredentials:
    """Client credentials presenting `tls`'s certificate and trusting its CA."""
    cert, key, ca = tls.read()
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def start_cluster(bundle: Path | list[Path] | None, port: int = 50051, *, registry: Path | None = None,
                  reload_interval: float = 30.0, feature_port: int = 0, candidate_port: int = 0,
                  metrics: bool = True, storage: str = "embedded://", index: str = "exact",
                  extra: dict[str, list[str]] | None = None, timeout: float = 120.0,
                  log_dir: Path | None = None, stream: str | None = None,
                  env: dict[str, str] | None = None, tls: TLSFiles | dict[str, TLSFiles] | None = None,
                  replicas: int = 1) -> Cluster:
    """Start feature_svc, candidate_svc and ranker_svc (Recommend on `port`; 0 = any free port), serving
    `bundle` (one or several versions), or the champion of `registry` with hot swaps on promotion.
    All three share the event stream `stream` (default: a fresh embedded log in the log directory).
    `env` adds environment variables for the three (e.g. the OTEL_* variables of tracing).
    `tls`: the certificate of every service, or one per service (mutual TLS, recsys/rpc/tls.py); without
    it the services run with the explicit `--plaintext`, as a local run must.
    `replicas`: processes per service (each on its own port, `RECSYS_REPLICA` set, so each follows the
    stream as its own replica); the ranker spreads its calls over the others' replicas, and
    `Cluster.target` names all ranker replicas.

    The services are stopped by Linux when the *thread* that started them exits, so call this from a
    thread that outlives the cluster (normally the main thread)."""
    if (bundle is None) == (registry is None):
        raise ValueError("give a bundle or a registry")
    bundles = [] if bundle is None else [Path(b).resolve() for b in (bundle if isinstance(bundle, list) else [bundle])]
    log_dir = Path(log_dir or tempfile.mkdtemp(prefix="recsys-cluster-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    extra = extra or {}
    stream = stream or f"file://{(log_dir / 'events').resolve()}"
    cluster = Cluster(log_dir=log_dir, tls=_per_service(tls), stream=stream)
    first = {"feature_svc": feature_port or free_port(), "candidate_svc": candidate_port or free_port(),
             "ranker_svc": port or free_port()}
    ports = {name: [first[name], *(free_port() for _ in range(replicas - 1))] for name in SERVICES}
    if registry is not None:
        source = ["--registry", str(Path(registry).resolve()), "--reload-interval-s", str(reload_interval)]
        ranker_source = source
    else:
        # every service holds every version: a request pinned to one is answered by it end to end
        source = ranker_source = [x for b in bundles for x in ("--bundle", str(b))]
    args = {
        "feature_svc": [*source, "--storage", storage, "--stream", stream],
        "candidate_svc": [*source, "--index", index, "--stream", stream],
        "ranker_svc": [*ranker_source, "--feature-addr", _target(ports["feature_svc"]),
                       "--candidate-addr", _target(ports["candidate_svc"]), "--stream", stream],
    }
    env = dict(os.environ, PYTHONUNBUFFERED="1", OPENBLAS_NUM_THREADS=os.environ.get("OPENBLAS_NUM_THREADS", "1"),
               OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1")) | (env or {})
    try:
        for name in SERVICES:
            for r, rport in enumerate(ports[name]):
                key = name if r == 0 else f"{name}-{r}"
                mport = free_port() if metrics else 0
                log_path = log_dir / f"{key}.log"
                cmd = [sys.executable, "-m", name, "--host", "127.0.0.1", "--port", str(rport),
                       "--metrics-port", str(mport), *args[name], *_security_flags(cluster.tls.get(name)),
                       *extra.get(name, [])]
                log_path.write_bytes(b"")
                # each replica its own consumer groups where its state is its own (recsys/events/consumers.py)
                renv = env | {"RECSYS_REPLICA": f"{key}@{socket.gethostname()}"} if replicas > 1 else env
                cluster.services[key] = Service(key, rport, mport, _spawn(cmd, renv, log_path), log_path, cmd, renv,
                                                kind=name)
        for svc in cluster.services.values():
            try:
                wait_healthy(svc.address, timeout, svc.proc, svc.name, cluster.tls.get(svc.kind))
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"{exc}\n--- {svc.name} log ---\n{svc.log_tail()}") from exc
    except BaseException:
        with contextlib.suppress(Exception):
            cluster.stop(grace=3)
        raise
    return cluster
