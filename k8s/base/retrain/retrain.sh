#!/bin/sh
# Scheduled retraining: export the interactions recorded on the event stream, tune (optional) or train
# a new candidate bundle on the dataset plus those events into the registry, then run the promotion
# gate. Any failure exits non-zero -- including a failed export and a candidate the gate rejects -- so
# the Job fails and the RecsysRetrainFailed alert fires.
#
# Environment:
#   RECSYS_DATASET            dataset SPEC (required), e.g. /data/current or synthetic:users=2000
#   RECSYS_STREAM             event stream URL (redis://...; Secret recsys-stream in Kubernetes). When set,
#                             `recsys events export` writes its interactions to a dataset directory and
#                             `recsys train --events` trains on them; when unset or empty the export is
#                             skipped (with a message) and training uses RECSYS_DATASET alone
#   RECSYS_REGISTRY           model registry directory (default /models)
#   RECSYS_TUNE_TRIALS        Ray Tune trials before training (default 0 = train with the config below)
#   RAY_ADDRESS               Ray cluster to tune on (e.g. ray://recsys-ray-head-svc.ray:10001); empty = local
#   RECSYS_TRAIN_CONFIG       training config file used when not tuning (optional)
#   RECSYS_PROMOTE_TOLERANCE  how much worse than the champion a candidate may be (default 0.005)
set -eu

: "${RECSYS_DATASET:?RECSYS_DATASET must name the dataset to train on}"
registry="${RECSYS_REGISTRY:-/models}"
trials="${RECSYS_TUNE_TRIALS:-0}"
tolerance="${RECSYS_PROMOTE_TOLERANCE:-0.005}"
workdir="$(mktemp -d)"
trap 'rm -rf "$workdir"' EXIT

case "$trials" in
  ''|*[!0-9]*) echo "RECSYS_TUNE_TRIALS must be a whole number, got '$trials'" >&2; exit 2 ;;
esac

# Export first: a stream that cannot be read fails the run before any tuning or training.
# (Never print RECSYS_STREAM: the URL may hold a password.)
events=""
if [ -n "${RECSYS_STREAM:-}" ]; then
  echo "retrain: exporting the events recorded on the stream"
  recsys events export --stream "$RECSYS_STREAM" --out "$workdir/events"
  events="$workdir/events"
else
  echo "retrain: RECSYS_STREAM is not set: no event export, training on $RECSYS_DATASET alone"
fi

set --
if [ "$trials" -gt 0 ]; then
  echo "retrain: tuning with $trials trials on ${RAY_ADDRESS:-a local Ray instance}"
  if [ -n "${RAY_ADDRESS:-}" ]; then
    recsys tune --dataset "$RECSYS_DATASET" --trials "$trials" --address "$RAY_ADDRESS" --out "$workdir/config.yaml"
  else
    recsys tune --dataset "$RECSYS_DATASET" --trials "$trials" --out "$workdir/config.yaml"
  fi
  set -- --config "$workdir/config.yaml"
elif [ -n "${RECSYS_TRAIN_CONFIG:-}" ]; then
  set -- --config "$RECSYS_TRAIN_CONFIG"
fi

if [ -n "$events" ]; then
  set -- --events "$events" "$@"
  echo "retrain: training a candidate on $RECSYS_DATASET plus the exported events into $registry"
else
  echo "retrain: training a candidate on $RECSYS_DATASET into $registry"
fi
recsys train --dataset "$RECSYS_DATASET" --registry "$registry" "$@"

echo "retrain: promotion gate (tolerance $tolerance)"
recsys models promote --registry "$registry" --tolerance "$tolerance"
recsys models list --registry "$registry"
