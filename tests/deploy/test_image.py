"""The container image recipe. No Docker engine runs here, so the Dockerfile is checked statically and
its build stage is replayed: the build context .dockerignore lets through, stub generation with the
Dockerfile's own protoc command, and the project wheel, which must contain recsys.v1 and the services."""

from __future__ import annotations

import fnmatch
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from deploy_helpers import ROOT  # noqa: E402

DOCKERFILE = (ROOT / "Dockerfile").read_text()
BUILD_TOOLS = ("gcc", "g++", "clang", "build-essential", "make", "cmake", "gfortran", "-dev ", "cargo", "rustc")


def _stages() -> dict[str, str]:
    parts = re.split(r"^FROM\s+", DOCKERFILE, flags=re.M)[1:]
    stages = {}
    for part in parts:
        header = part.splitlines()[0]
        m = re.search(r"\bAS\s+(\S+)", header, re.I)
        stages[m.group(1) if m else header.split()[0]] = part
    return stages


def test_base_image_pinned_by_tag_and_digest():
    m = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", DOCKERFILE, re.M)
    assert m, "the base image is a single ARG"
    image = m.group(1)
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm@sha256:[0-9a-f]{64}", image), image
    for header in re.findall(r"^FROM\s+(\S+)", DOCKERFILE, re.M):
        assert header == "${PYTHON_IMAGE}" or header in _stages(), f"unpinned FROM {header}"


def test_final_stage_is_the_non_root_serving_image_without_build_tools():
    stages = _stages()
    assert list(stages)[-1] == "serve", "the default target (last stage) must be the serving image"
    for name in ("runtime", "serve", "train"):
        body = stages[name]
        installs = " ".join(re.findall(r"apt-get install[^&\n]*", body)) + " "
        assert not [t for t in BUILD_TOOLS if t in installs], f"{name}: build tools installed: {installs}"
        assert "pip install" not in body, f"{name}: installs packages in the runtime image"
    for name in ("serve", "train"):
        users = re.findall(r"^USER\s+(\S+)", stages[name], re.M)
        assert users and users[-1].split(":")[0] not in ("0", "root"), f"{name}: runs as root"
        assert re.search(r"COPY --from=build(-train)? /opt/venv /opt/venv", stages[name]), name
    assert "USER 10001:10001" in stages["serve"], "UID must match runAsUser of the manifests"


def test_no_model_or_data_is_baked_in():
    for line in re.findall(r"^(?:COPY|ADD)\s+(.*)$", DOCKERFILE, re.M):
        assert not re.search(r"bundles|models|\.parquet|\.npz|data/", line), line
    patterns = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln and not ln.startswith("#")]
    assert patterns[0] == "*", ".dockerignore must be an allow-list (exclude everything first)"


def _context_files() -> list[Path]:
    """Files a `docker build .` would send, per .dockerignore (supports the patterns it uses)."""
    rules = []
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    files = []
    candidates = []
    for dirpath, dirnames, filenames in os.walk(ROOT):
        dirnames[:] = [d for d in dirnames if d not in (".git", ".venv", "node_modules")]
        candidates.extend(Path(dirpath) / f for f in filenames)
    for path in candidates:
        rel = path.relative_to(ROOT).as_posix()
        included = True
        for negate, pattern in rules:
            if pattern.startswith("**/"):  # at any depth
                pat = pattern.removeprefix("**/")
                parts = rel.split("/")
                hit = any(fnmatch.fnmatch(part, pat) for part in parts)
            else:  # anchored at the context root, a directory pattern covers everything below it
                hit = fnmatch.fnmatch(rel, pattern) or rel.startswith(pattern + "/")
            if pattern == "*" or hit:
                included = negate
        if included:
            files.append(path)
    return files


def test_build_context_is_small_and_complete():
    rels = {p.relative_to(ROOT).as_posix() for p in _context_files()}
    assert {"pyproject.toml", "README.md", "ranker_svc/__main__.py", "feature_svc/__main__.py",
            "candidate_svc/__main__.py", "recsys/cli.py", "protos/recsys/v1/recommender.proto"} <= rels
    leaked = [r for r in rels if r.startswith(("tests/", "bundles/", "recsys/v1/", "k8s/", ".git", "docs/"))
              or "__pycache__" in r or r.endswith(".pyc")]
    assert not leaked, f"the build context carries {leaked[:10]}"


def test_build_stage_produces_a_wheel_with_stubs_and_services(tmp_path):
    """Replay the build stage: copy the context, run the Dockerfile's protoc command, build the wheel."""
    ctx = tmp_path / "ctx"
    for path in _context_files():
        dest = ctx / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    m = re.search(r"RUN (python -m grpc_tools\.protoc [^\\\n]+)", DOCKERFILE)
    assert m, "the build stage generates the gRPC stubs with grpc_tools.protoc"
    argv = shlex.split(m.group(1))
    protos = sorted(str(p.relative_to(ctx)) for p in (ctx / "protos" / "recsys" / "v1").glob("*.proto"))
    argv = [sys.executable] + argv[1:-1] + protos  # the shell glob, expanded
    subprocess.run(argv, cwd=ctx, check=True, capture_output=True, timeout=120)
    assert "touch recsys/v1/__init__.py" in DOCKERFILE
    (ctx / "recsys" / "v1" / "__init__.py").touch()
    assert DOCKERFILE.index("grpc_tools.protoc") < DOCKERFILE.index("pip wheel --no-deps --wheel-dir /wheels .")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                           "--wheel-dir", str(tmp_path / "wheels"), "."],
                          cwd=ctx, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("recsys/v1/__init__.py", "recsys/v1/recommender_pb2.py", "recsys/v1/recommender_pb2_grpc.py",
                   "recsys/v1/features_pb2_grpc.py", "recsys/v1/candidates_pb2_grpc.py",
                   "ranker_svc/__main__.py", "candidate_svc/__main__.py", "feature_svc/__main__.py"):
        assert module in names, f"{module} missing from the wheel"
    assert not [n for n in names if n.startswith(("tests/", "bundles/"))]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "recsys = recsys.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
