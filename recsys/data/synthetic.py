"""The embedded default dataset: a seeded generator with real collaborative structure.

Model: categories have unit "center" vectors in a latent space; items sit near their primary category's
center (pulled a little toward their secondary categories) and have Zipf-like popularity. Users get
demographic attributes first, and their category preferences are drawn from attribute effects plus personal
noise, so attributes predict tastes (cold start by attributes works). A user's taste vector is the
preference-weighted mix of category centers plus a personal component.

Sampling an interaction (vectorized, never users x items): pick a category (mostly the session's category,
else from the user's preferences, sometimes a random exploration), draw a few candidates within that category
proportionally to popularity**a, then pick one with probability proportional to exp(taste . item / T)
(Gumbel-max). Overall this approximates P(item) ~ popularity**a * exp(taste . item / T).
Stronger affinity makes stronger events (view < click < add_to_cart < purchase), and timestamps come in
per-user sessions over `days` days with a daily rhythm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from recsys.data.schema import INTERACTION_COLUMNS, Dataset


@dataclass(frozen=True)
class World:
    """A generated dataset and the truth behind it: what simulations of users need (recsys/simulation).

    taste[u] . item_vectors[i] is user u's true affinity for item i (ids are f"u{u}" and f"i{i}");
    popularity is each item's relative popularity; temperature the choice model's."""

    dataset: Dataset
    taste: np.ndarray         # [n_users, dim] float32
    item_vectors: np.ndarray  # [n_items, dim] float32, unit length
    popularity: np.ndarray    # [n_items]
    temperature: float

CATEGORY_NAMES = [
    "Books", "Electronics", "Home", "Garden", "Toys", "Sports", "Fashion", "Beauty", "Grocery", "Music",
    "Movies", "Games", "Automotive", "Health", "Pets", "Office", "Jewelry", "Outdoors", "Kitchen", "Baby",
    "Tools", "Art", "Travel", "Software",
]
AGE_BUCKETS = ["18-24", "25-34", "35-44", "45-54", "55-64", "65+"]
AGE_P = [0.18, 0.30, 0.22, 0.15, 0.10, 0.05]
GENDERS = ["F", "M", "X"]
GENDER_P = [0.49, 0.49, 0.02]
COUNTRIES = ["US", "GB", "DE", "FR", "IN", "BR", "JP", "CA"]
COUNTRY_P = [0.35, 0.10, 0.10, 0.08, 0.15, 0.10, 0.07, 0.05]
EVENTS = np.array(["view", "click", "add_to_cart", "purchase"], dtype=object)
# Relative activity by hour of day (UTC): quiet nights, evening peak.
_HOURLY = np.array([2, 1, 1, 1, 1, 2, 3, 5, 6, 6, 6, 7, 7, 6, 6, 6, 7, 8, 10, 11, 11, 9, 6, 3], dtype=float)
_CHUNK = 32_768  # fixed: results must not depend on a tuning knob


def category_names(n: int) -> list[str]:
    """Readable category names, falling back to "Category k" past the built-in list."""
    return [CATEGORY_NAMES[k] if k < len(CATEGORY_NAMES) else f"Category {k}" for k in range(n)]


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _sample_rows(cum: np.ndarray, owners: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per owner from the row-wise CDFs in cum, chunked to bound memory."""
    out = np.empty(len(owners), dtype=np.int32)
    last = cum.shape[1] - 1
    for s in range(0, len(owners), _CHUNK):
        o = owners[s:s + _CHUNK]
        r = rng.random(len(o))
        out[s:s + _CHUNK] = np.minimum((cum[o] < r[:, None]).sum(axis=1), last)
    return out


def _inverse_cdf(cw: np.ndarray, guide: np.ndarray, target: np.ndarray) -> np.ndarray:
    """First index with cw > target (= searchsorted(cw, target, "right")), via a guide table.

    Random binary searches over a 1M-entry array are cache-miss bound; the guide table (first index of each
    of len(guide) equal-mass buckets) jumps next to the answer, and a few vectorized steps finish.
    """
    flat = target.ravel()
    b = (flat * (len(guide) / cw[-1])).astype(np.int64) - 1  # -1 guards against rounding up a bucket
    idx = guide[np.clip(b, 0, len(guide) - 1)]
    last = len(cw) - 1
    act = np.flatnonzero((cw[idx] <= flat) & (idx < last))
    while act.size:
        idx[act] += 1
        act = act[(cw[idx[act]] <= flat[act]) & (idx[act] < last)]
    return idx.reshape(target.shape)


def generate(*args, **kwargs) -> Dataset:
    """Generate a synthetic interaction log with users, items and metadata; deterministic for a seed.
    The arguments are generate_world's."""
    return generate_world(*args, **kwargs).dataset


def generate_world(
    n_users: int = 2000,
    n_items: int = 5000,
    n_interactions: int = 100_000,
    n_categories: int = 20,
    seed: int = 0,
    *,
    dim: int = 16,
    temperature: float = 0.1,
    popularity_skew: float = 0.8,
    popularity_exponent: float = 1.0,
    n_candidates: int = 16,
    explore: float = 0.1,
    session_focus: float = 0.7,
    days: int = 90,
    start: str = "2024-01-01",
) -> World:
    """The generated dataset with its users' true tastes; deterministic for a seed.

    popularity_skew is the Zipf exponent of item popularity by rank; popularity_exponent is `a` in
    P ~ popularity**a * exp(affinity / temperature). explore is the share of interactions from a random
    category (noise); session_focus the share that stays in the session's category.
    """
    if min(n_users, n_items, n_interactions, n_categories, dim, n_candidates, days) < 1:
        raise ValueError("sizes (users, items, interactions, categories, dim, candidates, days) must be >= 1")
    if n_items < n_categories:
        raise ValueError(f"n_items ({n_items}) must be >= n_categories ({n_categories})")
    if temperature <= 0:
        raise ValueError("temperature must be > 0")
    root = np.random.default_rng(seed)
    r_items, r_users, r_act, r_sess, r_cat, r_cand, r_pick, r_event, r_time = root.spawn(9)
    C, d = n_categories, dim

    # Items: primary category (every category non-empty), extra categories, latent vector, popularity.
    centers = _unit(r_items.normal(size=(C, d)))
    cat_w = r_items.dirichlet(np.full(C, 5.0))
    primary = r_items.choice(C, size=n_items, p=cat_w)
    primary[r_items.choice(n_items, size=C, replace=False)] = np.arange(C)
    n_cats = r_items.choice([1, 2, 3], size=n_items, p=[0.55, 0.30, 0.15])
    extra = r_items.integers(0, C, size=(n_items, 2))
    has_extra = np.stack([n_cats >= 2, n_cats >= 3], axis=1) & (extra != primary[:, None])
    has_extra[:, 1] &= extra[:, 1] != extra[:, 0]
    vec = centers[primary] + 0.3 * (centers[extra] * has_extra[:, :, None]).sum(axis=1)
    vec += r_items.normal(scale=0.8 / np.sqrt(d), size=(n_items, d))
    vec = _unit(vec).astype(np.float32)
    pop = (r_items.permutation(n_items) + 1.0) ** -popularity_skew
    price = np.round(np.exp(r_items.uniform(1.5, 5.0, C)[primary] + r_items.normal(0, 0.6, n_items)), 2)
    released = np.floor(r_items.exponential(365.0, n_items))

    # Users: attributes first, then category preferences driven by them, then the taste vector.
    age = r_users.choice(len(AGE_BUCKETS), size=n_users, p=AGE_P)
    gender = r_users.choice(len(GENDERS), size=n_users, p=GENDER_P)
    country = r_users.choice(len(COUNTRIES), size=n_users, p=COUNTRY_P)
    logits = (
        r_users.normal(0, 1.0, (len(AGE_BUCKETS), C))[age]
        + r_users.normal(0, 0.7, (len(GENDERS), C))[gender]
        + r_users.normal(0, 0.6, (len(COUNTRIES), C))[country]
        + r_users.normal(0, 1.0, (n_users, C))
    )
    prefs = _softmax(1.6 * logits)
    personal = r_users.normal(scale=0.8 / np.sqrt(d), size=(n_users, d))
    taste = (_unit(prefs @ centers) + personal).astype(np.float32)

    # Activity: heavy-tailed, at least one interaction per user when there are enough to go round.
    w = r_act.lognormal(0.0, 1.0, n_users)
    if n_interactions >= n_users:
        counts = 1 + r_act.multinomial(n_interactions - n_users, w / w.sum())
    else:
        counts = r_act.multinomial(n_interactions, w / w.sum())
    N = int(counts.sum())
    user = np.repeat(np.arange(n_users), counts)

    # Sessions: contiguous runs of each user's interactions.
    sess_len = 1 + r_sess.poisson(5.0, n_users)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    pos = np.arange(N) - first[user]
    n_sess = -(-counts // sess_len)
    sess_first = np.concatenate(([0], np.cumsum(n_sess)[:-1]))
    sid = sess_first[user] + pos // sess_len[user]
    S = int(n_sess.sum())
    sess_user = np.repeat(np.arange(n_users), n_sess)

    # Category of each interaction: session focus, else the user's preferences, sometimes exploration.
    cum = np.cumsum(prefs, axis=1)
    cum[:, -1] = 1.0
    sess_cat = _sample_rows(cum, sess_user, r_cat)
    fresh = _sample_rows(cum, user, r_cat)
    cat = np.where(r_cat.random(N) < session_focus, sess_cat[sid], fresh)
    explore_mask = r_cat.random(N) < explore
    cat[explore_mask] = r_cat.choice(C, size=int(explore_mask.sum()), p=cat_w)

    # Candidates within the category by popularity**a: one cumsum over items sorted by (category, most popular
    # first), so the binary searches and vector gathers mostly touch the cache-hot heads of the categories.
    order = np.lexsort((-pop, primary))
    cw = np.cumsum(pop[order] ** popularity_exponent)
    vec_sorted = vec[order]
    guide = np.searchsorted(cw, np.arange(n_items) * (cw[-1] / n_items), side="right")
    cat_start = np.searchsorted(primary[order], np.arange(C), side="left")
    cat_end = np.searchsorted(primary[order], np.arange(C), side="right")
    lo = np.where(cat_start > 0, cw[np.maximum(cat_start - 1, 0)], 0.0)
    span = cw[cat_end - 1] - lo
    item = np.empty(N, dtype=np.int64)
    affinity = np.empty(N, dtype=np.float32)
    M = n_candidates
    for s in range(0, N, _CHUNK):
        k = cat[s:s + _CHUNK]
        c = len(k)
        target = lo[k, None] + r_cand.random((c, M)) * span[k, None]
        idx = np.clip(_inverse_cdf(cw, guide, target), cat_start[k, None], cat_end[k, None] - 1)
        scores = np.einsum("cd,cmd->cm", taste[user[s:s + _CHUNK]], vec_sorted[idx])
        j = np.argmax(scores / temperature + r_pick.gumbel(size=(c, M)), axis=1)
        rows = np.arange(c)
        item[s:s + c] = order[idx[rows, j]]
        affinity[s:s + c] = scores[rows, j]

    # Events: each stronger step is likelier with higher affinity.
    z = (affinity - affinity.mean()) / max(float(affinity.std()), 1e-9)
    u3 = r_event.random((3, N))
    click = u3[0] < 1 / (1 + np.exp(-(1.2 * z - 0.6)))
    cart = click & (u3[1] < 1 / (1 + np.exp(-(1.2 * z - 1.3))))
    purchase = cart & (u3[2] < 1 / (1 + np.exp(-(1.2 * z - 1.6))))
    level = click.astype(np.int8) + cart + purchase

    # Timestamps: session start (day + hour-of-day rhythm), then exponential gaps within the session.
    day = r_time.integers(0, days, S)
    hour = r_time.choice(24, size=S, p=_HOURLY / _HOURLY.sum())
    sess_start = day * 86_400 + hour * 3_600 + r_time.integers(0, 3_600, S)
    gaps = np.cumsum(r_time.exponential(45.0, N))
    first_of_sess = np.flatnonzero(np.r_[True, sid[1:] != sid[:-1]])
    offset = gaps - gaps[first_of_sess][sid]
    t0 = int(pd.Timestamp(start, tz="UTC").timestamp())
    ts = t0 + sess_start[sid] + offset.astype(np.int64)

    o = np.argsort(ts, kind="stable")
    user_names = np.array([f"u{i}" for i in range(n_users)], dtype=object)
    item_names = np.array([f"i{i}" for i in range(n_items)], dtype=object)
    interactions = pd.DataFrame({
        "user_id": pd.array(user_names[user[o]], dtype="str"),
        "item_id": pd.array(item_names[item[o]], dtype="str"),
        "timestamp": ts[o].astype(np.int64),
        "event": pd.array(EVENTS[level[o]], dtype="str"),
        "value": np.ones(N),
    })[INTERACTION_COLUMNS]

    names = category_names(C)
    cats = [[names[p]] for p in primary.tolist()]
    for col in (0, 1):
        for i in np.flatnonzero(has_extra[:, col]).tolist():
            cats[i].append(names[extra[i, col]])
    items = pd.DataFrame({
        "item_id": pd.array(item_names, dtype="str"),
        "title": pd.array([f"Item {i} ({names[p]})" for i, p in enumerate(primary.tolist())], dtype="str"),
        "categories": pd.Series(cats, dtype=object).to_numpy(),
        "price": price,
        "days_since_release": released,
    })
    users = pd.DataFrame({
        "user_id": user_names,
        "age_bucket": np.array(AGE_BUCKETS, dtype=object)[age],
        "gender": np.array(GENDERS, dtype=object)[gender],
        "country": np.array(COUNTRIES, dtype=object)[country],
    }).astype("str")
    note = (f"synthetic: users={n_users} items={n_items} interactions={N} categories={C} seed={seed} "
            f"dim={d} temperature={temperature} popularity_skew={popularity_skew}")
    dataset = Dataset(interactions=interactions, items=items, users=users, name="synthetic", notes=[note])
    return World(dataset, taste, vec, pop, temperature)
