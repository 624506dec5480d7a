"""Neural collaborative filtering (NeuMF, He et al. 2017) at inference: numpy only, so serving never needs torch.

NeuMF fuses two views of a (user, item) pair: generalized matrix factorization (the element-wise product of a
user and an item embedding) and an MLP over the concatenation of two other embeddings; one linear layer over
both gives the logit. Training is PyTorch (`ncf_torch.py`, the optional `ncf` extra); what it learns is
exported here as arrays, saved in the bundle and scored with numpy (a test checks it equals the torch module).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

INSTALL_HINT = "pip install -e '.[ncf]' (the CPU build of PyTorch, pinned in pyproject.toml)"
CHUNK = 4_000_000  # floats of one hidden-layer activation block while scoring (≈16 MB)


@dataclass
class NCFParams:
    """NeuMF's shape and training schedule (`TrainConfig.ncf`; the eval baseline uses the same)."""

    gmf_dim: int = 16                 # GMF embedding size
    mlp_dim: int = 32                 # MLP embedding size, per side (the MLP's input is twice this)
    layers: list[int] = field(default_factory=lambda: [64, 32, 16])  # MLP hidden sizes, ReLU after each
    dropout: float = 0.2              # after each hidden layer, while training
    negatives: int = 4                # unobserved items sampled per positive, every epoch (He et al.: 4)
    batch_size: int = 1024
    lr: float = 0.003                 # Adam
    weight_decay: float = 0.0
    max_epochs: int = 40
    patience: int = 3                 # epochs without a better validation nDCG@10 before stopping
    valid_fraction: float = 0.1       # share of each user's training items held out for early stopping
    valid_users: int = 1000           # at most this many users measured per epoch
    refit: bool = True                # retrain on all training data for the best epoch count
    propose: bool = True              # candidate source: propose items (False: score columns only, cheap)
    # torch intra-op threads (0: torch's default). One: the matrices are small, and on 2 busy cores a batch took
    # 7 ms on one thread against 84-306 ms on two (OpenMP threads spin waiting for descheduled siblings).
    threads: int = 1

    def __post_init__(self) -> None:
        if min(self.gmf_dim, self.mlp_dim, self.negatives, self.batch_size, self.max_epochs) < 1 or not self.layers:
            raise ValueError("ncf: gmf_dim, mlp_dim, negatives, batch_size, max_epochs must be >= 1, layers non-empty")
        if not (0.0 <= self.dropout < 1.0 and 0.0 < self.valid_fraction < 1.0):
            raise ValueError("ncf: dropout must be in [0, 1) and valid_fraction in (0, 1)")


def torch_available() -> bool:
    """Whether the optional PyTorch extra is installed (checked without importing it)."""
    import importlib.util

    return importlib.util.find_spec("torch") is not None


class TorchMissing(RuntimeError):
    """NCF training was asked for without PyTorch installed."""

    def __init__(self, what: str = "NCF training"):
        super().__init__(f"{what} needs PyTorch, which is not installed: {INSTALL_HINT}")


@dataclass
class NCFWeights:
    """A trained NeuMF as arrays (float32). Row r of the user tables is `user_ids[r]`; items are catalog rows."""

    user_ids: np.ndarray               # str [U]
    user_gmf: np.ndarray               # [U, g]
    item_gmf: np.ndarray               # [I, g]
    user_mlp: np.ndarray               # [U, m]
    item_mlp: np.ndarray               # [I, m]
    weights: list[np.ndarray]          # MLP layer j: [out_j, in_j] (torch's Linear layout)
    biases: list[np.ndarray]           # [out_j]
    out_w: np.ndarray                  # [g + out_last]: GMF part first, then the MLP's
    out_b: float
    epochs: int = 0                    # epochs trained (the early-stopping choice)
    valid_ndcg: float = float("nan")   # best validation nDCG@10 while training
    train_seconds: float = 0.0
    _item_first: np.ndarray | None = field(default=None, repr=False)

    @property
    def n_items(self) -> int:
        return len(self.item_gmf)

    def item_first_layer(self) -> np.ndarray:
        """The items' half of the first MLP layer, [I, h1], computed once: per request only the user's half
        and the deeper layers remain."""
        if self._item_first is None:
            m = self.user_mlp.shape[1]
            self._item_first = (self.item_mlp @ self.weights[0][:, m:].T + self.biases[0]).astype(np.float32)
        return self._item_first

    def score(self, users: np.ndarray, items: np.ndarray | None = None) -> np.ndarray:
        """Logits [len(users), len(items)] for user rows × item rows (all items when None)."""
        users = np.asarray(users, dtype=np.int64)
        items = np.arange(self.n_items) if items is None else np.asarray(items, dtype=np.int64)
        out = np.empty((len(users), len(items)), dtype=np.float32)
        g, m = self.user_gmf.shape[1], self.user_mlp.shape[1]
        first = self.item_first_layer()[items]
        gmf_items = self.item_gmf[items]
        step = max(1, CHUNK // max(1, len(items) * max(w.shape[0] for w in self.weights)))
        for lo in range(0, len(users), step):
            u = users[lo : lo + step]
            gmf = (self.user_gmf[u] * self.out_w[:g]) @ gmf_items.T                   # [b, n]
            h = np.maximum(first[None, :, :] + (self.user_mlp[u] @ self.weights[0][:, :m].T)[:, None, :], 0.0)
            for w, b in zip(self.weights[1:], self.biases[1:], strict=True):
                h = np.maximum(h @ w.T + b, 0.0)
            out[lo : lo + step] = gmf + h @ self.out_w[g:] + self.out_b
        return out

    def save(self, path: Path) -> dict:
        """Arrays into one .npz; returns the small facts retrieval.json records."""
        arrays = {"user_ids": self.user_ids.astype(str), "user_gmf": self.user_gmf, "item_gmf": self.item_gmf,
                  "user_mlp": self.user_mlp, "item_mlp": self.item_mlp, "out_w": self.out_w,
                  "out_b": np.array([self.out_b], np.float32)}
        arrays |= {f"w{j}": w for j, w in enumerate(self.weights)} | {f"b{j}": b for j, b in enumerate(self.biases)}
        np.savez(path, **arrays)
        return {"layers": len(self.weights), "epochs": self.epochs, "train_seconds": self.train_seconds,
                "valid_ndcg@10": None if np.isnan(self.valid_ndcg) else round(float(self.valid_ndcg), 6)}

    @classmethod
    def load(cls, path: Path, info: dict) -> NCFWeights:
        with np.load(path, allow_pickle=False) as z:
            n = int(info["layers"])
            return cls(user_ids=z["user_ids"], user_gmf=z["user_gmf"], item_gmf=z["item_gmf"],
                       user_mlp=z["user_mlp"], item_mlp=z["item_mlp"],
                       weights=[z[f"w{j}"] for j in range(n)], biases=[z[f"b{j}"] for j in range(n)],
                       out_w=z["out_w"], out_b=float(z["out_b"][0]), epochs=int(info.get("epochs", 0)),
                       valid_ndcg=float(info.get("valid_ndcg@10") or "nan"),
                       train_seconds=float(info.get("train_seconds", 0.0)))


def ndcg_at_10(weights: NCFWeights, rows: np.ndarray, seen: list[np.ndarray], held: list[np.ndarray]) -> float:
    """Mean nDCG@10 of the users `rows` over all items they have not `seen`, `held` items relevant: the
    early-stopping criterion (the same top-10-over-unseen protocol `recsys eval` uses)."""
    if not len(rows):
        return float("nan")
    scores = weights.score(rows)
    disc = 1.0 / np.log2(np.arange(2, 12))
    out = []
    for r in range(len(rows)):
        s = scores[r]
        s[seen[r]] = -np.inf
        top = np.argpartition(-s, min(10, len(s) - 1))[:10]
        top = top[np.argsort(-s[top], kind="stable")]
        gains = np.isin(top, held[r]).astype(np.float64)
        ideal = disc[: min(10, len(held[r]))].sum()
        out.append(float(gains @ disc[: len(top)]) / ideal if ideal > 0 else 0.0)
    return float(np.mean(out))
