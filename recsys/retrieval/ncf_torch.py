"""NeuMF training in PyTorch (the optional `ncf` extra; imported only when NCF is trained).

As in He et al. (2017): implicit feedback, every observed (user, item) a positive, `negatives` unobserved
items sampled per positive afresh each epoch, binary cross-entropy on the fused GMF + MLP logit, Adam,
dropout in the MLP. Early stopping watches nDCG@10 on a validation split carved from the training matrix
(a share of each user's items), the metric the product is judged by rather than the loss; with `refit`, the
model is then retrained on all of the training matrix for the chosen number of epochs.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from recsys.retrieval.ncf import NCFParams, NCFWeights, TorchMissing, ndcg_at_10

if TYPE_CHECKING:
    from rich.progress import Progress


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise TorchMissing() from None
    return torch


def neumf_module(n_users: int, n_items: int, p: NCFParams) -> Any:
    """The NeuMF network as a torch module: forward(users, items) -> logits."""
    torch = _torch()
    nn = torch.nn

    class NeuMF(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.user_gmf, self.item_gmf = nn.Embedding(n_users, p.gmf_dim), nn.Embedding(n_items, p.gmf_dim)
            self.user_mlp, self.item_mlp = nn.Embedding(n_users, p.mlp_dim), nn.Embedding(n_items, p.mlp_dim)
            sizes = [2 * p.mlp_dim, *p.layers]
            self.hidden = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes, sizes[1:], strict=False))
            self.drop = nn.Dropout(p.dropout)
            self.out = nn.Linear(p.gmf_dim + p.layers[-1], 1)
            for emb in (self.user_gmf, self.item_gmf, self.user_mlp, self.item_mlp):
                nn.init.normal_(emb.weight, std=0.01)

        def forward(self, u: Any, i: Any) -> Any:
            gmf = self.user_gmf(u) * self.item_gmf(i)
            h = torch.cat([self.user_mlp(u), self.item_mlp(i)], dim=1)
            for layer in self.hidden:
                h = self.drop(torch.relu(layer(h)))
            return self.out(torch.cat([gmf, h], dim=1)).squeeze(1)

    return NeuMF()


def export(model: Any, user_ids: np.ndarray) -> NCFWeights:
    """The module's parameters as numpy arrays (what the bundle stores and serving scores with)."""

    def a(t: Any) -> np.ndarray:
        return t.detach().cpu().numpy().astype(np.float32).copy()

    return NCFWeights(user_ids=np.asarray(user_ids, dtype=str), user_gmf=a(model.user_gmf.weight),
                      item_gmf=a(model.item_gmf.weight), user_mlp=a(model.user_mlp.weight),
                      item_mlp=a(model.item_mlp.weight), weights=[a(x.weight) for x in model.hidden],
                      biases=[a(x.bias) for x in model.hidden], out_w=a(model.out.weight)[0],
                      out_b=float(model.out.bias.detach()[0]))


def _holdout(x: sp.csr_matrix, fraction: float, rng: np.random.Generator) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """(train, valid): about `fraction` of each user's items moved to valid; users with one item keep it."""
    x = x.tocsr()
    r, c = x.nonzero()
    key = rng.random(len(r))
    n = np.diff(x.indptr)[r]
    rank = np.empty(len(r), dtype=np.int64)
    order = np.lexsort((key, r))
    starts = np.repeat(x.indptr[:-1], np.diff(x.indptr))
    rank[order] = np.arange(len(r)) - starts
    held = (rank < np.floor(n * fraction)) & (n >= 2)
    shape = x.shape

    def mat(mask: np.ndarray) -> sp.csr_matrix:
        return sp.csr_matrix((np.ones(int(mask.sum()), np.float32), (r[mask], c[mask])), shape=shape)

    return mat(~held), mat(held)


def _negatives(users: np.ndarray, x: sp.csr_matrix, k: int, rng: np.random.Generator) -> np.ndarray:
    """k unobserved items per entry of `users`, uniform over the catalog (a few redraws for collisions)."""
    n_items = x.shape[1]
    coo = x.tocoo()
    pos_keys = np.sort(coo.row.astype(np.int64) * n_items + coo.col)
    u = np.repeat(users, k)
    items = rng.integers(0, n_items, len(u))
    for _ in range(10):
        keys = u * n_items + items
        at = np.searchsorted(pos_keys, keys).clip(0, max(len(pos_keys) - 1, 0))
        bad = np.flatnonzero(pos_keys[at] == keys) if len(pos_keys) else np.zeros(0, np.int64)
        if not len(bad):
            break
        items[bad] = rng.integers(0, n_items, len(bad))
    return items


def _fit(torch: Any, x: sp.csr_matrix, p: NCFParams, seed: int, epochs: int, user_ids: np.ndarray,
         check: Any = None) -> tuple[NCFWeights, int, float]:
    """Train a fresh NeuMF on x for up to `epochs`; `check(weights) -> nDCG` (early stopping) picks the best."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = neumf_module(x.shape[0], x.shape[1], p)
    opt = torch.optim.Adam(model.parameters(), lr=p.lr, weight_decay=p.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    pu, pi = (a.astype(np.int64) for a in x.nonzero())
    best, best_epoch, best_score, stale = None, 0, -np.inf, 0
    for epoch in range(1, epochs + 1):
        model.train()
        ni = _negatives(pu, x, p.negatives, rng)
        u = np.concatenate([pu, np.repeat(pu, p.negatives)])
        i = np.concatenate([pi, ni])
        y = np.concatenate([np.ones(len(pu), np.float32), np.zeros(len(ni), np.float32)])
        perm = rng.permutation(len(u))
        tu, ti, ty = torch.from_numpy(u[perm]), torch.from_numpy(i[perm]), torch.from_numpy(y[perm])
        for lo in range(0, len(u), p.batch_size):
            sl = slice(lo, lo + p.batch_size)
            opt.zero_grad()
            loss = loss_fn(model(tu[sl], ti[sl]), ty[sl])
            loss.backward()
            opt.step()
        model.eval()
        if check is None:
            continue
        weights = export(model, user_ids)
        score = check(weights, epoch)
        if score > best_score:
            best, best_epoch, best_score, stale = weights, epoch, score, 0
        else:
            stale += 1
            if stale >= p.patience:
                break
    if check is None:
        return export(model, user_ids), epochs, float("nan")
    return best if best is not None else export(model, user_ids), best_epoch, best_score


def train_ncf(x: sp.csr_matrix, user_ids: np.ndarray, p: NCFParams, seed: int = 42,
              progress: Progress | None = None) -> NCFWeights:
    """NeuMF on a binary users × items matrix (row r is user_ids[r]), early-stopped on nDCG@10 of a
    validation split carved from x; exported as numpy arrays. Raises TorchMissing without PyTorch."""
    torch = _torch()
    x = sp.csr_matrix(x, dtype=np.float32)
    x.sum_duplicates()
    x.data[:] = 1.0
    rng = np.random.default_rng(seed)
    fit, valid = _holdout(x, p.valid_fraction, rng)
    rows = np.flatnonzero(np.diff(valid.indptr))
    if len(rows) > p.valid_users:
        rows = np.sort(rng.choice(rows, p.valid_users, replace=False))
    seen = [fit.indices[fit.indptr[r] : fit.indptr[r + 1]] for r in rows]
    held = [valid.indices[valid.indptr[r] : valid.indptr[r + 1]] for r in rows]
    task = progress.add_task("NCF epochs", total=p.max_epochs) if progress is not None else None

    def check(w: NCFWeights, epoch: int) -> float:
        score = ndcg_at_10(w, rows, seen, held)
        if progress is not None:
            progress.update(task, completed=epoch, description=f"NCF epochs (valid nDCG@10 {score:.4f})")
        return score

    t0 = time.time()
    threads = torch.get_num_threads()
    if p.threads > 0:
        torch.set_num_threads(p.threads)
    try:
        with torch.random.fork_rng(devices=[]):  # leave the caller's torch RNG as it was
            best, epochs, score = _fit(torch, fit, p, seed, p.max_epochs, user_ids, check)
            if p.refit and epochs > 0:
                if progress is not None:
                    progress.update(task, total=p.max_epochs + epochs, description=f"NCF refit ({epochs} epochs)")
                best, _, _ = _fit(torch, x, p, seed + 1, max(1, epochs), user_ids)
    finally:
        torch.set_num_threads(threads)
    if progress is not None:
        progress.remove_task(task)
    best.epochs, best.valid_ndcg, best.train_seconds = epochs, score, round(time.time() - t0, 2)
    return best
