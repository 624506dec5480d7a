"""The gRPC service config every client of this system uses: a retry policy and a retry budget.

Only UNAVAILABLE is retried (the server could not take the call: restarting, draining, a dependency or
the event stream down); every call the services answer is safe to repeat (Recommend reads; Feedback/Send
is idempotent by event id; the internal calls read). INVALID_ARGUMENT, RESOURCE_EXHAUSTED (shed: retrying
at once would add to the overload), DEADLINE_EXCEEDED and the rest are never retried.

The budget is gRPC's retry throttling: each failed attempt costs a token, each success earns back
`token_ratio`, and retries stop while fewer than half of `max_tokens` remain. In an outage the client
makes at most max_tokens / 2 retries before it sends one attempt per call, so it never multiplies the
load on a failing service; in steady state retries stay under about token_ratio per successful call.
Retries happen within each call's own deadline (the backoff is jittered by gRPC).

Calls are spread over every address of the target (round_robin: a headless Service's pods, or
`ipv4:host:port,host:port`) and each address's grpc.health.v1 status is watched (client-side health
checking): a server that reports NOT_SERVING, such as one draining after SIGTERM, gets no new calls from
the moment it says so, which is how a rolling restart loses no call (docs/operations.md).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

RETRYABLE = ("UNAVAILABLE",)
PUBLIC_SERVICES = ("recsys.v1.Recommender", "recsys.v1.Feedback")
INTERNAL_SERVICES = ("recsys.v1.FeatureStore", "recsys.v1.CandidateRetriever", "recsys.v1.ModelVersions")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 3              # the first attempt and at most two retries
    initial_backoff_s: float = 0.02
    max_backoff_s: float = 0.2
    backoff_multiplier: float = 2.0
    max_tokens: int = 10               # the retry budget (retryThrottling)
    token_ratio: float = 0.1


DEFAULT_POLICY = RetryPolicy()


def service_config(services: Sequence[str], policy: RetryPolicy = DEFAULT_POLICY) -> str:
    """The JSON service config (https://github.com/grpc/grpc/blob/master/doc/service_config.md)."""
    return json.dumps({
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
        "methodConfig": [{
            "name": [{"service": s} for s in services],
            "retryPolicy": {
                "maxAttempts": policy.max_attempts,
                "initialBackoff": f"{policy.initial_backoff_s}s",
                "maxBackoff": f"{policy.max_backoff_s}s",
                "backoffMultiplier": policy.backoff_multiplier,
                "retryableStatusCodes": list(RETRYABLE),
            },
        }],
        "retryThrottling": {"maxTokens": policy.max_tokens, "tokenRatio": policy.token_ratio},
    })


def retry_options(services: Sequence[str], policy: RetryPolicy = DEFAULT_POLICY) -> list[tuple[str, object]]:
    """Channel options that turn the policy on (a DNS TXT service config cannot replace it)."""
    return [("grpc.enable_retries", 1), ("grpc.service_config", service_config(services, policy)),
            ("grpc.service_config_disable_resolution", 1)]
