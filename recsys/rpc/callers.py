"""The callers file (setting `callers`; the `recsys-callers` Secret in Kubernetes), parsed and validated:
who may call the public API, how each caller proves it, what it may call and do. Every problem is a
ConfigError naming the file, the line and the key. docs/operations.md ("Security") shows the format.

    callers:
      - name: shop-frontend
        token_sha256: 2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae  # of its bearer token
        methods: [Recommend]                     # a method, a service (all its methods), or Service/Method
        rate_limit: {rps: 200, burst: 400}       # optional token bucket
      - name: events-pipeline
        identity: spiffe://cluster.local/ns/data/sa/events   # a SAN (DNS, URI, IP) or the CN of its certificate
        methods: [Feedback]
      - name: qa
        token_sha256: fcde2b2edba56bf408601fb721fe9b5c338d10ee429ea04fae5511b68fbf8fb9
        methods: [Recommend, ModelVersions]
        privileges: [pin_version, force_arms, explain]

Tokens are stored as SHA-256 digests only: a token must be a long random secret (e.g. `openssl rand -hex
32`), which makes a plain digest as strong as a slow password hash and lets a call be checked in
microseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from recsys.experiments.config import ConfigError, _Reader

# Privileged request options, each the request field it unlocks (checked by the ranker's validation).
PRIVILEGES = {"pin_version": "model_version", "force_arms": "force_arms", "explain": "explain"}
# Methods "*" never grants: a caller must name them (erasing users must not come with a wildcard).
EXPLICIT_ONLY = frozenset({"/recsys.v1.Users/Forget"})
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class RateLimit:
    rps: float    # tokens added per second
    burst: float  # bucket size: calls allowed at once after a quiet period


@dataclass(frozen=True)
class Caller:
    name: str
    methods: frozenset[str]  # full method names, "/recsys.v1.Recommender/Recommend"
    privileges: frozenset[str] = frozenset()
    token_sha256: str = ""
    identity: str = ""
    rate_limit: RateLimit | None = None


@dataclass(frozen=True)
class Callers:
    callers: tuple[Caller, ...] = ()
    by_token: dict[str, Caller] = field(default_factory=dict, compare=False)
    by_identity: dict[str, Caller] = field(default_factory=dict, compare=False)

    @staticmethod
    def of(callers: list[Caller]) -> Callers:
        return Callers(tuple(callers), {c.token_sha256: c for c in callers if c.token_sha256},
                       {c.identity: c for c in callers if c.identity})


def short_name(method: str) -> str:
    """"/recsys.v1.Feedback/Send" -> "Feedback/Send"."""
    service, name = method.lstrip("/").split("/", 1)
    return f"{service.rsplit('.', 1)[-1]}/{name}"


def resolve(entry: str, known: list[str]) -> set[str]:
    """The full method names an entry of `methods` names: "*", a full or short Service/Method, a service
    (full or short name: all its methods) or a method name alone; empty when it names nothing."""
    if entry == "*":
        return set(known) - EXPLICIT_ONLY
    out = set()
    for method in known:
        service, name = method.lstrip("/").split("/", 1)
        short = service.rsplit(".", 1)[-1]
        if entry.lstrip("/") in (f"{service}/{name}", f"{short}/{name}") or entry in (service, short, name):
            out.add(method)
    return out


def parse_callers(text: str, file: str, known_methods: list[str]) -> Callers:
    """Parse and validate against the methods this server serves; raises ConfigError on the first problem."""
    r = _Reader(file)
    try:
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ConfigError(file, mark.line + 1 if mark else None, "(file)", f"not valid YAML: {exc}") from None
    if root is None:
        return Callers()
    top = r.mapping(root, "", {"callers"}, set())
    callers: list[Caller] = []
    seen: dict[str, set[str]] = {"name": set(), "token_sha256": set(), "identity": set()}
    for i, node in enumerate(r.sequence(top["callers"], "callers") if "callers" in top else []):
        caller = _caller(r, node, f"callers[{i}]", known_methods)
        for key in seen:
            value = getattr(caller, key)
            if value and value in seen[key]:
                raise r.fail(node, f"callers[{i}].{key}", "the same token is given to another caller"
                             if key == "token_sha256" else f"{value!r} is given to another caller too")
            seen[key].add(value)
        callers.append(caller)
    return Callers.of(callers)


def _caller(r: _Reader, node: yaml.Node, key: str, known: list[str]) -> Caller:
    m = r.mapping(node, key, {"name", "token_sha256", "identity", "methods", "privileges", "rate_limit"},
                  {"name", "methods"})
    name = r.scalar(m["name"], f"{key}.name", str)
    token = r.scalar(m["token_sha256"], f"{key}.token_sha256", str).lower() if "token_sha256" in m else ""
    if token and not _HEX64.match(token):
        raise r.fail(m["token_sha256"], f"{key}.token_sha256",
                     "must be the SHA-256 of the token as 64 hex digits (printf %s \"$TOKEN\" | sha256sum), "
                     "never the token itself")
    identity = r.scalar(m["identity"], f"{key}.identity", str) if "identity" in m else ""
    if not token and not identity:
        raise r.fail(node, key, "needs token_sha256 (a bearer token) or identity (a client certificate name)")
    methods: set[str] = set()
    for j, entry in enumerate(r.strings(m["methods"], f"{key}.methods")):
        named = resolve(entry, known)
        if not named:
            listed = ", ".join(sorted(short_name(k) for k in known))
            raise r.fail(m["methods"].value[j], f"{key}.methods[{j}]",
                         f"{entry!r} is not a method or service of this server (known: {listed}, or *)")
        methods |= named
    privileges = r.strings(m["privileges"], f"{key}.privileges") if "privileges" in m else ()
    for j, p in enumerate(privileges):
        if p not in PRIVILEGES:
            raise r.fail(m["privileges"].value[j], f"{key}.privileges[{j}]",
                         f"unknown privilege {p!r} (known: {', '.join(PRIVILEGES)})")
    limit = None
    if "rate_limit" in m:
        rl = r.mapping(m["rate_limit"], f"{key}.rate_limit", {"rps", "burst"}, {"rps"})
        rps = r.scalar(rl["rps"], f"{key}.rate_limit.rps", float)
        if not 0 < rps <= 1e6:
            raise r.fail(rl["rps"], f"{key}.rate_limit.rps", f"must be in (0, 1000000], got {rps}")
        burst = r.scalar(rl["burst"], f"{key}.rate_limit.burst", float) if "burst" in rl else max(1.0, rps)
        if not 1 <= burst <= 1e7:
            raise r.fail(rl["burst"], f"{key}.rate_limit.burst", f"must be in [1, 10000000], got {burst}")
        limit = RateLimit(rps, burst)
    return Caller(name, frozenset(methods), frozenset(privileges), token, identity, limit)


def load_callers(path: str, known_methods: list[str]) -> Callers:
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, "(file)", f"cannot read: {exc}") from None
    return parse_callers(text, path, known_methods)
