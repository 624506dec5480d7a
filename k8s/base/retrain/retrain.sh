#!/bin/sh
# Scheduled retraining: tune (optional) or train a new candidate bundle into the registry, then run
# the promotion gate. Any failure exits non-zero -- including a candidate the gate rejects -- so the
# Job fails and the RecsysRetrainFailed alert fires.
#
# Environment:
#   RECSYS_DATASET            dataset SPEC (required), e.g. /data/current or synthetic:users=2000
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

echo "retrain: training a candidate on $RECSYS_DATASET into $registry"
recsys train --dataset "$RECSYS_DATASET" --registry "$registry" "$@"

echo "retrain: promotion gate (tolerance $tolerance)"
recsys models promote --registry "$registry" --tolerance "$tolerance"
recsys models list --registry "$registry"
