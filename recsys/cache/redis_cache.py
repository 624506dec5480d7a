"""The list cache in Redis, shared by every ranker_svc replica; one round trip (a Lua script) per call.

Key layout (`p` = prefix; `{u}` = the user id as a hash tag, so a Redis Cluster keeps a user on one slot):

    p:{u}:g        the user's generation (INCR per new interaction)
    p:{u}:n        ZSET item -> generation of its latest note (the most recent max_new*4 kept)
    p:{u}:e        ZSET event id -> generation (the most recent ones kept, for idempotency)
    p:{u}:l:<fp>   one list: "<generation> <expires_ms> <stored_at> <len(items json)>\\n" items json, payload

Expiry is checked against the server's clock (TIME) so replicas with skewed clocks agree; the list key
outlives its TTL by a grace period so a late read can still say "expired". The state keys expire
2 x (TTL + grace) after the last note or put, and a new state starts at the server time in ms: a
generation read from a state that expired since is then far behind, so its list is never stored.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis

from recsys.cache.base import (
    DEFAULT_MAX_NEW,
    DEFAULT_TTL_S,
    NOTED_ITEMS_FACTOR,
    CachedList,
    CacheHit,
    CacheUnavailable,
    ListCache,
    MissReason,
    check_settings,
    check_user,
)
from recsys.redis_conn import close, ping, redact
from recsys.redis_conn import connect as connect_redis

DEFAULT_PREFIX = "recsys:cache"
DEFAULT_TIMEOUT_S = 0.2
_EVENTS_PER_SCRIPT = 500  # bounds how long one note script blocks the server
# URL query parameters this backend reads (removed before redis-py parses the URL).
_OWN_PARAMS = ("prefix", "timeout", "connect_timeout", "max_events_per_user")

# Shared by the scripts: the user's generation, created at the server time in ms when missing.
_LUA_GENERATION = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function generation(key, state_ttl)
  local g = redis.call('GET', key)
  if g then return tonumber(g) end
  g = now_ms()
  redis.call('SET', key, string.format('%d', g), 'PX', state_ttl)
  return g
end
"""

# KEYS: list, gen, noted. ARGV: max_new.
# Returns {0} miss, {1} expired, {2} invalidated, {3, value, items noted since}.
_GET_LUA = _LUA_GENERATION + """
local v = redis.call('GET', KEYS[1])
if not v then return {0} end
local gs, exps = string.match(v, '^(%d+) (%d+) ')
if now_ms() >= tonumber(exps) then redis.call('DEL', KEYS[1]); return {1} end
local cur = tonumber(redis.call('GET', KEYS[2]) or '-1')
local g = tonumber(gs)
if cur < g or cur - g >= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]); return {2} end
return {3, v, redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. gs, '+inf'), redis.call('ZRANGE', KEYS[3], 0, -1)}
"""

# KEYS: gen. ARGV: state ttl ms.
_GENERATION_LUA = _LUA_GENERATION + """
return string.format('%d', generation(KEYS[1], ARGV[1]))
"""

# KEYS: list, gen, noted, events. ARGV: generation, max_new, ttl ms, grace ms, state ttl ms, body.
_PUT_LUA = _LUA_GENERATION + """
local cur = redis.call('GET', KEYS[2])
if not cur then return 0 end
local g = tonumber(ARGV[1])
cur = tonumber(cur)
if cur < g or cur - g >= tonumber(ARGV[2]) then return 0 end
local ttl = tonumber(ARGV[3])
local head = ARGV[1] .. ' ' .. string.format('%d', now_ms() + ttl) .. ' '
redis.call('SET', KEYS[1], head .. ARGV[6], 'PX', ttl + tonumber(ARGV[4]))
for k = 2, 4 do redis.call('PEXPIRE', KEYS[k], ARGV[5]) end
return 1
"""

# KEYS: gen, noted, events. ARGV: keep items, keep events, state ttl ms, then event id, item id pairs.
_NOTE_LUA = _LUA_GENERATION + """
local g = generation(KEYS[1], ARGV[3])
local n = 0
for k = 4, #ARGV, 2 do
  local eid, item = ARGV[k], ARGV[k + 1]
  if eid == '' or redis.call('ZADD', KEYS[3], 'NX', g + 1, eid) == 1 then
    g = redis.call('INCR', KEYS[1])
    redis.call('ZADD', KEYS[2], g, item)
    n = n + 1
  end
end
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -tonumber(ARGV[1]) - 1)
redis.call('ZREMRANGEBYRANK', KEYS[3], 0, -tonumber(ARGV[2]) - 1)
for k = 1, 3 do redis.call('PEXPIRE', KEYS[k], ARGV[3]) end
return n
"""

# KEYS: gen. ARGV: max_new, state ttl ms. Jumping by max_new invalidates every list and computation.
_INVALIDATE_LUA = _LUA_GENERATION + """
generation(KEYS[1], ARGV[2])
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""


# KEYS: gen, noted, events. Without the generation key no put of a computation started earlier stores.
_FORGET_LUA = """
return redis.call('DEL', KEYS[1], KEYS[2], KEYS[3])
"""


class RedisListCache(ListCache):
    """redis://host:port/db?prefix=recsys:cache&timeout=0.2&connect_timeout=0.2 (also rediss://, unix://).

    Thread-safe (redis-py's pool). Every failure raises CacheUnavailable naming the URL (password
    redacted). Timeouts are short because the cache is optional: a slow cache must not slow Recommend.
    Only connection errors are retried, once, without backoff (a pooled connection may be stale after
    a restart); all scripts are safe to repeat (notes are idempotent per event id).
    """

    def __init__(self, url: str, ttl_s: float = DEFAULT_TTL_S, max_new: int = DEFAULT_MAX_NEW, *,
                 prefix: str | None = None, timeout_s: float | None = None,
                 connect_timeout_s: float | None = None, max_events_per_user: int | None = None) -> None:
        self.ttl_s, self.max_new = check_settings(ttl_s, max_new)
        redis_url, params = _split_url(url)
        self.prefix = prefix if prefix is not None else params.get("prefix", DEFAULT_PREFIX)
        if "{" in self.prefix or "}" in self.prefix:
            raise ValueError(f"cache prefix must not contain braces (they delimit the hash tag): {self.prefix!r}")
        timeout = timeout_s if timeout_s is not None else _float(params, "timeout", DEFAULT_TIMEOUT_S)
        connect = connect_timeout_s if connect_timeout_s is not None else _float(params, "connect_timeout", timeout)
        self.max_events_per_user = int(max_events_per_user if max_events_per_user is not None
                                       else params.get("max_events_per_user", max(64, 8 * self.max_new)))
        self._ttl_ms = max(1, round(self.ttl_s * 1000))
        self._grace_ms = max(1000, self._ttl_ms // 10)
        self._state_ttl_ms = 2 * (self._ttl_ms + self._grace_ms)
        self._keep_noted = NOTED_ITEMS_FACTOR * self.max_new
        self._safe_url = redact(url, keep_query=False)
        self._client = connect_redis(redis_url, connect, timeout)
        self._get = self._client.register_script(_GET_LUA)
        self._generation = self._client.register_script(_GENERATION_LUA)
        self._put = self._client.register_script(_PUT_LUA)
        self._note = self._client.register_script(_NOTE_LUA)
        self._invalidate = self._client.register_script(_INVALIDATE_LUA)
        self._forget = self._client.register_script(_FORGET_LUA)

    def __repr__(self) -> str:
        return f"RedisListCache({self._safe_url!r}, prefix={self.prefix!r}, ttl_s={self.ttl_s}, max_new={self.max_new})"

    def get(self, user_id: str, fingerprint: str) -> CacheHit | MissReason:
        u = self._user(user_id)
        with self._errors("get"):
            reply = self._get(keys=[f"{u}l:{fingerprint}", f"{u}g", f"{u}n"], args=[self.max_new])
        status = int(reply[0])
        if status != 3:
            return ("miss", "expired", "invalidated")[status]
        entry = _decode(reply[1], self._safe_url)
        return CacheHit(entry, frozenset(item.decode() for item in reply[2]),
                        frozenset(item.decode() for item in reply[3]))

    def generation(self, user_id: str) -> int:
        u = self._user(user_id)
        with self._errors("generation"):
            return int(self._generation(keys=[f"{u}g"], args=[self._state_ttl_ms]))

    def noted(self, user_id: str) -> frozenset[str]:
        u = self._user(user_id)
        with self._errors("noted"):
            return frozenset(item.decode() for item in self._client.zrange(f"{u}n", 0, -1))

    def put(self, user_id: str, fingerprint: str, entry: CachedList) -> None:
        u = self._user(user_id)
        items = json.dumps(list(entry.item_ids), ensure_ascii=False, separators=(",", ":")).encode()
        head = f"{float(entry.stored_at or time.time())!r} {len(items)}\n".encode()
        body = head + items + bytes(entry.payload)
        with self._errors("put"):
            self._put(keys=[f"{u}l:{fingerprint}", f"{u}g", f"{u}n", f"{u}e"],
                      args=[int(entry.generation), self.max_new, self._ttl_ms, self._grace_ms,
                            self._state_ttl_ms, body])

    def note_interactions(self, user_id: str, events: Sequence[tuple[str, str]]) -> int:
        u = self._user(user_id)
        pairs = [(event_id, item_id) for event_id, item_id in events if item_id]
        n_new = 0
        with self._errors("note_interactions"):
            for start in range(0, len(pairs), _EVENTS_PER_SCRIPT):
                args: list[object] = [self._keep_noted, self.max_events_per_user, self._state_ttl_ms]
                for event_id, item_id in pairs[start:start + _EVENTS_PER_SCRIPT]:
                    args += (event_id, item_id)
                n_new += int(self._note(keys=[f"{u}g", f"{u}n", f"{u}e"], args=args))
        return n_new

    def invalidate(self, user_id: str) -> None:
        u = self._user(user_id)
        with self._errors("invalidate"):
            self._invalidate(keys=[f"{u}g"], args=[self.max_new, self._state_ttl_ms])

    def forget(self, user_id: str) -> int:
        u = self._user(user_id)
        with self._errors("forget"):
            self._forget(keys=[f"{u}g", f"{u}n", f"{u}e"])  # first: in-flight puts now fail
            lists = list(self._client.scan_iter(match=_glob_escape(u) + "l:*", count=1000))
            return int(self._client.unlink(*lists)) if lists else 0

    def ping(self) -> bool:
        return ping(self._client)

    def close(self) -> None:
        close(self._client)

    def _user(self, user_id: str) -> str:
        """The key prefix of one user's keys, with the user id as the Cluster hash tag."""
        return f"{self.prefix}:{{{check_user(user_id)}}}:"

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except redis.exceptions.RedisError as e:
            raise CacheUnavailable(f"Redis cache at {self._safe_url} failed during {what}: "
                                   f"{type(e).__name__}: {e}") from e


def _decode(value: bytes, where: str) -> CachedList:
    """Parse "<generation> <expires_ms> <stored_at> <n>\\n" + n bytes of items json + payload."""
    try:
        head, rest = value.split(b"\n", 1)
        generation, _expires, stored_at, n = head.split(b" ")
        n_items = int(n)
        return CachedList(json.loads(rest[:n_items]), rest[n_items:], int(generation), float(stored_at))
    except (ValueError, UnicodeDecodeError) as e:  # not written by this version
        raise CacheUnavailable(f"Redis cache at {where}: unreadable entry: {e}") from e


def _glob_escape(text: str) -> str:
    """`text` matched literally by SCAN MATCH (user ids may hold *, ?, [ or \\)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def _split_url(url: str) -> tuple[str, dict[str, str]]:
    """The URL for redis-py (our parameters removed) and our parameters."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {k: v for k, v in query if k in _OWN_PARAMS}
    rest = urlencode([(k, v) for k, v in query if k not in _OWN_PARAMS])
    return urlunsplit(parts._replace(query=rest)), own


def _float(params: dict[str, str], name: str, default: float) -> float:
    if name not in params:
        return default
    try:
        value = float(params[name])
    except ValueError:
        raise ValueError(f"cache URL parameter {name}={params[name]!r} is not a number") from None
    if not value > 0:
        raise ValueError(f"cache URL parameter {name} must be > 0, got {value}")
    return value

