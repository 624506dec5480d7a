# syntax=docker/dockerfile:1.7
#
# One image, three services: the container command picks the service
#   python -m ranker_svc | python -m candidate_svc | python -m feature_svc
# and the same image runs the `recsys` CLI (train, models promote/rollback/list).
# Model bundles are NEVER baked in: they are mounted (PVC) or synced (object store) at /models.
#
# Targets:
#   serve (default, last stage)  the serving image: the three services + CLI, no Ray
#   train                        serve + the `tune` extra (Ray Tune) for the retraining CronJob/RayJob
#
#   docker build -t recsys:0.1.0 .
#   docker build --target train -t recsys-train:0.1.0 .
#
# The base image is pinned by tag AND digest (the digest wins); bump both together (Renovate/Dependabot).
ARG PYTHON_IMAGE=python:3.11.13-slim-bookworm@sha256:86adf8dbadc3d6e82ee5dd2c74bec2e1c2467cdad47886280501df722372d2e1

# ---------------------------------------------------------------------------------------------------
# build: generate the gRPC stubs, build the project wheel, install it with its pinned dependencies
# into a self-contained virtualenv (/opt/venv). Every dependency is installed from a binary wheel
# (--only-binary=:all:), so no compiler is needed even here, and none reaches the final image.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# Dependencies first (cached layer as long as pyproject.toml does not change).
COPY pyproject.toml README.md ./
RUN python - <<'EOF' > /tmp/requirements.txt
import tomllib
print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]))
EOF
RUN pip install --only-binary=:all: -r /tmp/requirements.txt
# Then the sources. Stubs are generated here (recsys/v1/ is git-ignored), before the wheel is built,
# so recsys.v1 is part of the installed package.
COPY protos/ protos/
COPY recsys/ recsys/
COPY feature_svc/ feature_svc/
COPY candidate_svc/ candidate_svc/
COPY ranker_svc/ ranker_svc/
RUN python -m grpc_tools.protoc -Iprotos --python_out=. --pyi_out=. --grpc_python_out=. protos/recsys/v1/*.proto \
 && touch recsys/v1/__init__.py \
 && pip wheel --no-deps --wheel-dir /wheels . \
 && pip install --only-binary=:all: --no-deps /wheels/*.whl \
 && python -c "import recsys.v1.recommender_pb2_grpc, ranker_svc, candidate_svc, feature_svc" \
 && pip check

# build-train: the same virtualenv plus the `tune` extra (Ray Tune), for the retraining job only.
FROM build AS build-train
RUN pip install --only-binary=:all: "$(ls /wheels/*.whl)[tune]" \
 && python -c "import ray.tune" \
 && pip check

# ---------------------------------------------------------------------------------------------------
# runtime: the base image + the OpenMP runtime LightGBM/implicit/FAISS load (libgomp1) + a non-root
# user. No compiler, no build headers, no pip cache, no sources, no model.
# ---------------------------------------------------------------------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ARG UID=10001
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid ${UID} recsys \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /nonexistent --no-create-home \
            --shell /usr/sbin/nologin recsys \
 && mkdir -p /models /etc/recsys \
 && chown ${UID}:${UID} /models
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONFAULTHANDLER=1 \
    HOME=/tmp
LABEL org.opencontainers.image.title="recsys" \
      org.opencontainers.image.description="recsys serving stack: ranker_svc, candidate_svc, feature_svc and the recsys CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
# gRPC (TLS unless RECSYS_PLAINTEXT=true): ranker 50051, candidate 50052, feature 50053; the plaintext
# health-only ports of the Kubernetes probes: 50061, 50062, 50063; Prometheus /metrics: 9101, 9102, 9103.
EXPOSE 50051 50052 50053 50061 50062 50063 9101 9102 9103
WORKDIR /tmp

FROM runtime AS train
COPY --from=build-train /opt/venv /opt/venv
USER 10001:10001
CMD ["recsys", "--help"]

# The default target (last stage): the serving image.
FROM runtime AS serve
COPY --from=build /opt/venv /opt/venv
USER 10001:10001
# Kubernetes sets the command per service; this default only prints the CLI help.
CMD ["recsys", "--help"]
