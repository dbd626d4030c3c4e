"""Maps between activation spaces, the within-model fit, and carrying directions across.

Convention (the papers'): a map sends a source row `s` (d_s,) to `t ≈ A s + b`, so `A_` is
`(d_t, d_s)` and `b_` is `(d_t,)`; on row-stacked data `T ≈ S @ A_.T + b_`.

Estimators follow scikit-learn: `__init__` stores parameters, `fit(S, T)` returns self, learned
arrays end in `_`, `transform(S)` maps, `score(S, T)` is R².
- `LeastSquaresMap`: closed form via centred normal equations + Cholesky (10x faster than
  `np.linalg.lstsq` at 10k x 768 -> 1600, same answer to 1e-4), min-norm fallback when n <= d.
- `RidgeMap`: the same with an L2 penalty, alpha chosen by held-out error from one eigendecomposition.
- `GDMap`: the papers' gradient descent (Adam on the MSE), with per-step callbacks.
- `ProcrustesMap`: orthogonal (plus one scale) after centring; a PCA to the smaller width when
  the widths differ.
- `LowRankMap`: reduced-rank regression (rank r).
- `MLPMap`: a small non-linear map with early stopping (no `A_`: directions cannot be carried).
- `UpDownMap`: an up map source -> target and a down map target -> source fitted together, with
  the round-trip loss tying them (LRT, Bello et al. 2025; model stitching, Chen et al. 2025).
- `WithinModelFit`: `min ‖A λ + b + y δ − λ̃‖²` as one least-squares solve on `[λ, y, 1]` (or GD).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
from sklearn.base import BaseEstimator

from repmap_core.errors import RepmapError
from repmap_core.probes import feature_scale

StepCallback = Callable[[int, float], None]  # (step, training loss) -> None; may raise to stop
# (step, training loss, W (d_x, d_t), c (d_t,)) with the current parameters in the original units
ParamsMonitor = Callable[[int, float, np.ndarray, np.ndarray], None]


# ---------------------------------------------------------------------------------------------
# checks and metrics


def check_pair(S: np.ndarray, T: np.ndarray, names: tuple[str, str] = ("source", "target")) -> tuple[np.ndarray, np.ndarray]:
    """Both 2-D, the same rows, finite; returns float32 views/copies."""
    S, T = np.asarray(S), np.asarray(T)
    for arr, name in ((S, names[0]), (T, names[1])):
        if arr.ndim != 2:
            raise RepmapError(f"The {name} activations must be a 2-D array (rows x width), not shape {arr.shape}.")
        bad = ~np.isfinite(arr).all(1)
        if bad.any():
            raise RepmapError(
                f"The {name} activations have {int(bad.sum())} row(s) with NaN or inf (first at row {int(np.flatnonzero(bad)[0])}); "
                "recompute them in float32 or drop those rows."
            )
    if len(S) != len(T):
        raise RepmapError(
            f"The {names[0]} and {names[1]} activations have {len(S)} and {len(T)} rows; a map needs the same rows (texts) in both."
        )
    if len(S) < 3:
        raise RepmapError(f"A map needs at least 3 rows, and there are {len(S)}.")
    return S.astype(np.float32, copy=False), T.astype(np.float32, copy=False)


def r2_score(T: np.ndarray, T_hat: np.ndarray) -> float:
    """Variance-weighted R²: 1 - SSE / SST with SST around each column's mean."""
    T = np.asarray(T, dtype=np.float64)
    sse = float(((T - T_hat) ** 2).sum())
    sst = float(((T - T.mean(0)) ** 2).sum())
    return 1.0 - sse / sst if sst > 0 else float("nan")


@dataclass(frozen=True)
class MapMetrics:
    """How well mapped rows match the true ones."""

    r2: float
    mean_cosine: float  # cosine of mapped vs true rows, both centred on the true mean
    retrieval_top1: float  # share of mapped rows whose nearest true row (cosine) is their own
    per_dim_mse: np.ndarray  # (d_t,) squared error per target dimension


def map_metrics(T: np.ndarray, T_hat: np.ndarray, max_retrieval_rows: int = 2000, seed: int = 0) -> MapMetrics:
    """R², centred mean cosine, retrieval top-1 (on a seeded sample of at most `max_retrieval_rows`)."""
    T = np.asarray(T, dtype=np.float64)
    T_hat = np.asarray(T_hat, dtype=np.float64)
    mu = T.mean(0)
    a, b = T - mu, T_hat - mu
    cos = (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-30)
    rows = np.arange(len(T))
    if len(rows) > max_retrieval_rows:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_retrieval_rows, replace=False))
    an = a[rows] / np.maximum(np.linalg.norm(a[rows], axis=1, keepdims=True), 1e-30)
    bn = b[rows] / np.maximum(np.linalg.norm(b[rows], axis=1, keepdims=True), 1e-30)
    top1 = float((np.argmax(bn @ an.T, axis=1) == np.arange(len(rows))).mean())
    return MapMetrics(r2=r2_score(T, T_hat), mean_cosine=float(cos.mean()), retrieval_top1=top1,
                      per_dim_mse=((T - T_hat) ** 2).mean(0))


# ---------------------------------------------------------------------------------------------
# the shared solver


def solve_affine(X: np.ndarray, T: np.ndarray, alpha: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Least squares `T ≈ X W + c` (optionally ridge on W): returns W (d_x, d_t), c (d_t,).

    Centred normal equations (X_cᵀX_c + αI) W = X_cᵀT_c solved by Cholesky, Gram products in
    float32 BLAS and the solve in float64. When X_cᵀX_c is singular (n <= d, or collinear
    columns) and α = 0, falls back to the minimum-norm solution.
    """
    from scipy.linalg import LinAlgError, cho_factor, cho_solve, lstsq

    X = np.asarray(X, dtype=np.float32)
    T = np.asarray(T, dtype=np.float32)
    mx, mt = X.mean(0, dtype=np.float64), T.mean(0, dtype=np.float64)
    Xc = X - mx.astype(np.float32)  # (n, d_x)
    Tc = T - mt.astype(np.float32)  # (n, d_t)
    G = (Xc.T @ Xc).astype(np.float64)  # (d_x, d_x)
    C = (Xc.T @ Tc).astype(np.float64)  # (d_x, d_t)
    if alpha > 0:
        G[np.diag_indices_from(G)] += alpha
    W = None
    if len(X) > X.shape[1] or alpha > 0:
        try:
            factor = cho_factor(G, lower=False, check_finite=False)
            # a numerically singular factorisation (tiny pivots) gives a garbage solution
            piv = np.abs(np.diag(factor[0]))
            if piv.min() > 1e-7 * piv.max():
                W = cho_solve(factor, C, check_finite=False)
        except LinAlgError:
            W = None
    if W is None:
        # singular values below 1e-6 of the largest are float32 noise (e.g. the direction centring
        # removed), not signal: cut them, or they blow the minimum-norm solution up
        W = lstsq(Xc.astype(np.float64), Tc.astype(np.float64), cond=1e-6, lapack_driver="gelsd", check_finite=False)[0]
    c = mt - mx @ W
    return W.astype(np.float32), c.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# maps


class _AffineMap(BaseEstimator):
    """Shared behaviour of maps with `A_` (d_t, d_s) and `b_` (d_t,)."""

    def transform(self, S: np.ndarray) -> np.ndarray:
        return np.asarray(S, dtype=np.float32) @ self.A_.T + self.b_

    predict = transform

    def score(self, S: np.ndarray, T: np.ndarray) -> float:
        return r2_score(T, self.transform(S))

    def _set(self, W: np.ndarray, c: np.ndarray, seconds: float) -> None:
        self.A_ = np.ascontiguousarray(W.T)  # (d_t, d_s)
        self.b_ = c
        self.seconds_ = seconds


class LeastSquaresMap(_AffineMap):
    """Closed-form affine least squares `T ≈ S Aᵀ + b`."""

    def fit(self, S: np.ndarray, T: np.ndarray) -> LeastSquaresMap:
        S, T = check_pair(S, T)
        t0 = time.perf_counter()
        W, c = solve_affine(S, T)
        self._set(W, c, time.perf_counter() - t0)
        return self


class RidgeMap(_AffineMap):
    """Affine ridge regression; with `alpha=None`, alpha is chosen from `alphas` (relative to the
    mean eigenvalue of the centred Gram matrix) by error on a seeded held-out `val_frac` of rows."""

    def __init__(self, alpha: float | None = None, alphas: tuple[float, ...] = tuple(10.0 ** np.arange(-4, 2.5, 0.5)),
                 val_frac: float = 0.2, seed: int = 0):
        self.alpha = alpha
        self.alphas = alphas
        self.val_frac = val_frac
        self.seed = seed

    def fit(self, S: np.ndarray, T: np.ndarray) -> RidgeMap:
        S, T = check_pair(S, T)
        t0 = time.perf_counter()
        if self.alpha is None:
            self.alpha_, self.val_errors_ = self._choose_alpha(S, T)
        else:
            self.alpha_, self.val_errors_ = float(self.alpha), {}
        W, c = solve_affine(S, T, alpha=self.alpha_)
        self._set(W, c, time.perf_counter() - t0)
        return self

    def _choose_alpha(self, S: np.ndarray, T: np.ndarray) -> tuple[float, dict[float, float]]:
        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(S))
        n_val = max(1, int(round(self.val_frac * len(S))))
        val, tr = order[:n_val], order[n_val:]
        mx, mt = S[tr].mean(0), T[tr].mean(0)
        Xc, Tc = (S[tr] - mx).astype(np.float64), (T[tr] - mt).astype(np.float64)
        evals, V = np.linalg.eigh(Xc.T @ Xc)  # one decomposition serves every alpha
        evals = np.clip(evals, 0, None)
        VtC = V.T @ (Xc.T @ Tc)  # (d_s, d_t)
        Xv = (S[val] - mx).astype(np.float64) @ V  # (n_val, d_s)
        Tv = T[val] - mt
        scale = max(float(evals.mean()), 1e-12)
        errors = {}
        for a in self.alphas:
            pred = Xv @ (VtC / (evals + a * scale)[:, None])
            errors[float(a * scale)] = float(((pred - Tv) ** 2).mean())
        best = min(errors, key=errors.get)
        return best, errors


class GDMap(_AffineMap):
    """Affine map fitted by gradient descent (Adam on the mean squared error), as in Gao et al.

    Inputs are standardised inside (and the result folded back into `A_`, `b_`), which makes
    the optimisation well conditioned on activations with outlier dimensions. `callback(step,
    loss)` is called every `callback_every` steps; fitting stops at `max_steps`, when the full
    training loss reaches `target_loss`, or when it stops improving by `tol` for `patience` checks.
    `monitor(step, loss, W, c)` sees the current parameters (for live held-out metrics). With
    `val_frac > 0`, that share of rows is held out, stopping watches its loss, and the parameters
    with the lowest held-out loss are kept (with more dimensions than rows GD overfits otherwise;
    the paper's setting is `val_frac=0`).
    """

    def __init__(self, lr: float = 1e-2, max_steps: int = 2000, batch_size: int = 512, target_loss: float | None = None,
                 tol: float = 1e-5, patience: int = 20, callback: StepCallback | None = None,
                 callback_every: int = 10, seed: int = 0, monitor: ParamsMonitor | None = None, val_frac: float = 0.0):
        self.lr = lr
        self.max_steps = max_steps
        self.batch_size = batch_size
        self.target_loss = target_loss
        self.tol = tol
        self.patience = patience
        self.callback = callback
        self.callback_every = callback_every
        self.seed = seed
        self.monitor = monitor
        self.val_frac = val_frac

    def fit(self, S: np.ndarray, T: np.ndarray) -> GDMap:
        S, T = check_pair(S, T)
        t0 = time.perf_counter()
        W, c, self.history_ = _gd_affine(S, T, self)
        self._set(W, c, time.perf_counter() - t0)
        self.n_steps_ = self.history_[-1][0] if self.history_ else 0
        return self


@contextmanager
def _torch_threads_for(macs_per_step: float) -> Iterator[None]:
    """One torch thread for small steps: there, intra-op threads only wait on each other, and on a
    busy 2-core machine that made a 16-wide GD fit 77x slower (53 s vs 0.7 s)."""
    import torch

    before = torch.get_num_threads()
    if macs_per_step < 5e7:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _gd_affine(X: np.ndarray, T: np.ndarray, p: GDMap) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float]]]:
    """Adam on mean((X W + c - T)²) with standardised X; returns W (d_x, d_t), c, [(step, loss)]."""
    with _torch_threads_for(min(p.batch_size, len(X)) * X.shape[1] * T.shape[1]):
        return _gd_affine_loop(X, T, p)


def _gd_affine_loop(X: np.ndarray, T: np.ndarray, p: GDMap) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float]]]:
    import torch

    g = torch.Generator().manual_seed(p.seed)
    torch.manual_seed(p.seed)
    val = None
    val_frac = getattr(p, "val_frac", 0.0)
    if val_frac > 0:
        order = np.random.default_rng(p.seed).permutation(len(X))
        n_val = max(1, int(round(val_frac * len(X))))
        val, keep = order[:n_val], order[n_val:]
        Xv, Tv = X[val], T[val]
        X, T = X[keep], T[keep]
    mx, sx = X.mean(0), feature_scale(X).astype(np.float32)  # noise-level features: inf, so no weight
    mt = T.mean(0)
    Xs = torch.as_tensor((X - mx) / sx)  # (n, d_x)
    Tc = torch.as_tensor(T - mt)  # (n, d_t)
    Wt = torch.zeros(X.shape[1], T.shape[1], requires_grad=True)
    ct = torch.zeros(T.shape[1], requires_grad=True)
    opt = torch.optim.Adam([Wt, ct], lr=p.lr)
    # minibatch noise keeps a constant-lr Adam a few % above the optimum: halve lr on plateaus
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=2, threshold=p.tol)
    n = len(Xs)
    history: list[tuple[int, float]] = []
    best, stale = float("inf"), 0
    if val is not None:
        Xvs, Tvc = torch.as_tensor((Xv - mx) / sx), torch.as_tensor(Tv - mt)
        kept = (Wt.detach().clone(), ct.detach().clone())
    batch = min(p.batch_size, n)
    for step in range(1, p.max_steps + 1):
        idx = torch.randint(0, n, (batch,), generator=g)
        loss = ((Xs[idx] @ Wt + ct - Tc[idx]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % p.callback_every == 0 or step == p.max_steps:
            with torch.no_grad():
                full = float(((Xs @ Wt + ct - Tc) ** 2).mean())
            history.append((step, full))
            if p.callback is not None:
                p.callback(step, full)
            if p.monitor is not None:
                W_now = Wt.detach().numpy() / sx[:, None]
                p.monitor(step, full, W_now, ct.detach().numpy() + mt - mx @ W_now)
            if p.target_loss is not None and full <= p.target_loss:
                break
            watched = full
            if val is not None:
                with torch.no_grad():
                    watched = float(((Xvs @ Wt + ct - Tvc) ** 2).mean())
            sched.step(watched)
            if watched < best * (1 - p.tol):  # (best starts at inf: inf - tol * inf would be nan)
                best, stale = watched, 0
                if val is not None:
                    kept = (Wt.detach().clone(), ct.detach().clone())
            else:
                stale += 1
                if stale >= p.patience:
                    break
    final_W, final_c = kept if val is not None else (Wt.detach(), ct.detach())
    W = final_W.numpy() / sx[:, None]  # fold the standardisation back in
    c = final_c.numpy() + mt - mx @ W
    return W.astype(np.float32), c.astype(np.float32), history


def _pca_basis(X: np.ndarray, k: int) -> np.ndarray:
    """Top-k principal axes (d, k) of X (centred inside)."""
    Xc = (X - X.mean(0)).astype(np.float64)
    _, _, Vt = np.linalg.svd(Xc, full_matrices=False)
    return Vt[:k].T


class ProcrustesMap(_AffineMap):
    """Orthogonal map (times one scale, if `scale`) between the centred spaces.

    With different widths, the wider side is first reduced by PCA to the narrower width, so the
    map is `t ≈ μ_t + s · P_t R P_sᵀ (x − μ_s)` with at most one side's P the identity.
    """

    def __init__(self, scale: bool = True):
        self.scale = scale

    def fit(self, S: np.ndarray, T: np.ndarray) -> ProcrustesMap:
        S, T = check_pair(S, T)
        t0 = time.perf_counter()
        ds, dt = S.shape[1], T.shape[1]
        k = min(ds, dt)
        if k > len(S) - 1:
            raise RepmapError(
                f"Procrustes needs more rows than the narrower width ({k}), and there are {len(S)}; use least squares or ridge."
            )
        ms, mt = S.mean(0, dtype=np.float64), T.mean(0, dtype=np.float64)
        Sc, Tc = S - ms, T - mt
        Ps = _pca_basis(S, k) if ds > k else np.eye(ds)  # (d_s, k)
        Pt = _pca_basis(T, k) if dt > k else np.eye(dt)  # (d_t, k)
        Sr, Tr = Sc @ Ps, Tc @ Pt  # (n, k) each
        U, sig, Vt = np.linalg.svd(Sr.T @ Tr)
        R = U @ Vt  # (k, k) orthogonal, Sr R ≈ Tr
        s = float(sig.sum() / max((Sr ** 2).sum(), 1e-30)) if self.scale else 1.0
        W = s * (Ps @ R @ Pt.T)  # (d_s, d_t)
        c = mt - ms @ W
        self.rotation_, self.scale_ = R, s
        self._set(W.astype(np.float32), c.astype(np.float32), time.perf_counter() - t0)
        return self


class LowRankMap(_AffineMap):
    """Reduced-rank regression: the least-squares map restricted to rank `rank`."""

    def __init__(self, rank: int = 32):
        self.rank = rank

    def fit(self, S: np.ndarray, T: np.ndarray) -> LowRankMap:
        S, T = check_pair(S, T)
        if not 1 <= self.rank <= min(S.shape[1], T.shape[1]):
            raise RepmapError(f"The rank must be between 1 and {min(S.shape[1], T.shape[1])} (the smaller width), not {self.rank}.")
        t0 = time.perf_counter()
        W, c = solve_affine(S, T)
        fitted = (S - S.mean(0)) @ W  # (n, d_t)
        _, _, Vt = np.linalg.svd(fitted.astype(np.float64), full_matrices=False)
        Vr = Vt[: self.rank].T  # (d_t, r): the fitted values' main directions
        W = (W @ Vr) @ Vr.T
        c = T.mean(0) - S.mean(0) @ W
        self._set(W.astype(np.float32), c.astype(np.float32), time.perf_counter() - t0)
        return self


class UpDownMap(_AffineMap):
    """An up map `t ≈ A s + b` and a down map `s ≈ D t + d` fitted together (LRT, stitching).

    Minimises, on centred rows each scaled by its side's overall standard deviation,
    `mse(up(S), T) + mse(down(T), S) + round_trip · mse(down(up(S)), S)`: the round-trip term
    makes down undo up, which two separately fitted least-squares maps do not (each shrinks
    towards the mean, so their composition does too). Starts from the two ridge solutions and
    runs full-batch Adam. `A_`, `b_` are the up map; `down_` is the down map (an `_AffineMap`, usable
    as the `reverse` of `transfer_direction`); `round_trip_error_` is the relative round-trip error
    `‖down(up(S)) − S‖² / ‖S − mean‖²` on the training rows, and `round_trip_error(S)` on others.
    """

    def __init__(self, round_trip: float = 1.0, alpha: float = 1e-3, lr: float = 1e-3, max_steps: int = 500,
                 tol: float = 1e-5, patience: int = 20, callback: StepCallback | None = None, callback_every: int = 10,
                 seed: int = 0):
        self.round_trip = round_trip
        self.alpha = alpha
        self.lr = lr
        self.max_steps = max_steps
        self.tol = tol
        self.patience = patience
        self.callback = callback
        self.callback_every = callback_every
        self.seed = seed

    def fit(self, S: np.ndarray, T: np.ndarray) -> UpDownMap:
        S, T = check_pair(S, T)
        if self.round_trip < 0:
            raise RepmapError(f"The round-trip weight must be 0 or more, not {self.round_trip}.")
        t0 = time.perf_counter()
        with _torch_threads_for(len(S) * S.shape[1] * T.shape[1]):
            W_up, c_up, W_down, c_down, self.history_ = self._fit(S, T)
        self._set(W_up, c_up, time.perf_counter() - t0)
        self.down_ = _AffineMap()
        self.down_._set(W_down, c_down, 0.0)
        self.n_steps_ = self.history_[-1][0] if self.history_ else 0
        self.round_trip_error_ = self.round_trip_error(S)
        return self

    def _fit(self, S: np.ndarray, T: np.ndarray):
        import torch

        torch.manual_seed(self.seed)
        ms, mt = S.mean(0), T.mean(0)
        ss = float(np.sqrt(((S - ms) ** 2).mean())) or 1.0  # one scale per side keeps the three terms comparable
        st = float(np.sqrt(((T - mt) ** 2).mean())) or 1.0
        Xs = (S - ms) / ss
        Ts = (T - mt) / st
        # ridge starts (alpha relative to the mean eigenvalue of each side's Gram matrix)
        up0, _ = solve_affine(Xs, Ts, alpha=self.alpha * len(Xs))
        down0, _ = solve_affine(Ts, Xs, alpha=self.alpha * len(Ts))
        X, Y = torch.as_tensor(Xs, dtype=torch.float32), torch.as_tensor(Ts, dtype=torch.float32)
        U = torch.tensor(up0, dtype=torch.float32, requires_grad=True)  # (d_s, d_t)
        D = torch.tensor(down0, dtype=torch.float32, requires_grad=True)  # (d_t, d_s)
        opt = torch.optim.Adam([U, D], lr=self.lr)

        def loss_fn() -> torch.Tensor:
            up = X @ U
            return (((up - Y) ** 2).mean() + ((Y @ D - X) ** 2).mean()
                    + self.round_trip * ((up @ D - X) ** 2).mean())

        history: list[tuple[int, float]] = []
        best, stale = float("inf"), 0
        for step in range(1, self.max_steps + 1):
            loss = loss_fn()
            opt.zero_grad()
            loss.backward()
            opt.step()
            value = float(loss.detach())
            if step % self.callback_every == 0 or step == self.max_steps:
                history.append((step, value))
                if self.callback is not None:
                    self.callback(step, value)
            if value < best * (1 - self.tol):
                best, stale = value, 0
            else:
                stale += 1
                if stale >= self.patience:
                    history.append((step, value))
                    break
        W_up = U.detach().numpy().astype(np.float64) * (st / ss)  # back to the original units
        W_down = D.detach().numpy().astype(np.float64) * (ss / st)
        c_up = mt - ms @ W_up
        c_down = ms - mt @ W_down
        return (W_up.astype(np.float32), c_up.astype(np.float32), W_down.astype(np.float32),
                c_down.astype(np.float32), history)

    def inverse_transform(self, T: np.ndarray) -> np.ndarray:
        """Target rows mapped down to the source space."""
        return self.down_.transform(T)

    def round_trip_error(self, S: np.ndarray) -> float:
        """`‖down(up(S)) − S‖² / ‖S − mean(S)‖²`: 0 when down undoes up exactly, 1 when it returns the mean."""
        S = np.asarray(S, dtype=np.float32)
        back = self.down_.transform(self.transform(S))
        return float(((back - S) ** 2).sum() / max(((S - S.mean(0)) ** 2).sum(), 1e-30))


class MLPMap(BaseEstimator):
    """A small non-linear map (one hidden GELU layer) with early stopping on held-out rows."""

    def __init__(self, hidden: int = 512, lr: float = 3e-3, weight_decay: float = 1e-4, max_epochs: int = 200,
                 batch_size: int = 256, patience: int = 10, val_frac: float = 0.1, seed: int = 0,
                 callback: StepCallback | None = None):
        self.hidden = hidden
        self.lr = lr
        self.weight_decay = weight_decay
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.patience = patience
        self.val_frac = val_frac
        self.seed = seed
        self.callback = callback

    def fit(self, S: np.ndarray, T: np.ndarray) -> MLPMap:
        S, T = check_pair(S, T)
        t0 = time.perf_counter()
        with _torch_threads_for(self.batch_size * (S.shape[1] + T.shape[1]) * self.hidden):
            self._fit(S, T)
        self.seconds_ = time.perf_counter() - t0
        return self

    def _fit(self, S: np.ndarray, T: np.ndarray) -> None:
        import torch

        torch.manual_seed(self.seed)
        rng = np.random.default_rng(self.seed)
        self.mx_, self.sx_ = S.mean(0), feature_scale(S).astype(np.float32)
        self.mt_, self.st_ = T.mean(0), np.where(T.std(0) < 1e-12, 1.0, T.std(0)).astype(np.float32)
        X = torch.as_tensor((S - self.mx_) / self.sx_)
        Y = torch.as_tensor((T - self.mt_) / self.st_)
        order = rng.permutation(len(S))
        n_val = max(1, int(round(self.val_frac * len(S))))
        val, tr = torch.as_tensor(order[:n_val]), torch.as_tensor(order[n_val:])
        net = torch.nn.Sequential(torch.nn.Linear(S.shape[1], self.hidden), torch.nn.GELU(),
                                  torch.nn.Linear(self.hidden, T.shape[1]))
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        best, best_state, stale = float("inf"), None, 0
        self.history_ = []
        for epoch in range(1, self.max_epochs + 1):
            net.train()
            for batch in tr[torch.randperm(len(tr))].split(self.batch_size):
                loss = ((net(X[batch]) - Y[batch]) ** 2).mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            net.eval()
            with torch.no_grad():
                v = float(((net(X[val]) - Y[val]) ** 2).mean())
            self.history_.append((epoch, v))
            if self.callback is not None:
                self.callback(epoch, v)
            if v < best - 1e-6:
                best, stale = v, 0
                best_state = {k: t.clone() for k, t in net.state_dict().items()}
            else:
                stale += 1
                if stale >= self.patience:
                    break
        net.load_state_dict(best_state)
        self.net_ = net.eval()

    def transform(self, S: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            out = self.net_(torch.as_tensor((np.asarray(S, np.float32) - self.mx_) / self.sx_)).numpy()
        return out * self.st_ + self.mt_

    predict = transform

    def score(self, S: np.ndarray, T: np.ndarray) -> float:
        return r2_score(T, self.transform(S))


MAP_METHODS = {"lstsq": LeastSquaresMap, "ridge": RidgeMap, "gd": GDMap, "procrustes": ProcrustesMap,
               "lowrank": LowRankMap, "updown": UpDownMap, "mlp": MLPMap}


def make_map(method: str, **params) -> BaseEstimator:
    """A map estimator by name (lstsq, ridge, gd, procrustes, lowrank, updown, mlp)."""
    if method not in MAP_METHODS:
        raise RepmapError(f"Map method '{method}' is not one of {', '.join(MAP_METHODS)}.")
    return MAP_METHODS[method](**params)


# ---------------------------------------------------------------------------------------------
# the within-model fit


def signed_labels(y: np.ndarray) -> np.ndarray:
    """Labels as ±1 floats (accepts 0/1 or -1/+1)."""
    y = np.asarray(y)
    values = set(np.unique(y).tolist())
    if values <= {0, 1}:
        return (2.0 * y - 1.0).astype(np.float32)
    if values <= {-1, 1}:
        return y.astype(np.float32)
    raise RepmapError(f"Labels must be 0/1 or -1/+1, and these have values {sorted(values)[:5]}.")


class WithinModelFit(BaseEstimator):
    """`λ̃ ≈ A λ + b + y δ` (Gao, Sun, Jiao §3): how finetuning moved the representation space.

    `fit(λ (n, d), λ̃ (n, d'), y (n,))` with y in 0/1 or ±1 solves one least-squares problem on
    `[λ, y±, 1]` (`method="lstsq"`, optionally with ridge `alpha` on A and δ) or runs the paper's
    gradient descent (`method="gd"`, per-step `callback`). Learned: `A_` (d', d), `b_` (d',),
    `delta_` (d',): the rank-one task direction.
    """

    def __init__(self, method: str = "lstsq", alpha: float = 0.0, lr: float = 1e-2, max_steps: int = 2000,
                 target_loss: float | None = None, callback: StepCallback | None = None, callback_every: int = 10,
                 seed: int = 0, monitor: ParamsMonitor | None = None):
        self.method = method
        self.alpha = alpha
        self.lr = lr
        self.max_steps = max_steps
        self.target_loss = target_loss
        self.callback = callback
        self.callback_every = callback_every
        self.seed = seed
        self.monitor = monitor

    def fit(self, before: np.ndarray, after: np.ndarray, y: np.ndarray) -> WithinModelFit:
        before, after = check_pair(before, after, ("base", "finetuned"))
        y = signed_labels(y)
        if len(y) != len(before):
            raise RepmapError(f"There are {len(y)} labels for {len(before)} rows; labels must align with the activations.")
        X = np.concatenate([before, y[:, None]], axis=1)  # (n, d + 1): the label is one more feature
        t0 = time.perf_counter()
        if self.method == "lstsq":
            W, c = solve_affine(X, after, alpha=self.alpha)
            self.history_ = []
        elif self.method == "gd":
            p = GDMap(lr=self.lr, max_steps=self.max_steps, target_loss=self.target_loss, callback=self.callback,
                      callback_every=self.callback_every, seed=self.seed, monitor=self.monitor)
            W, c, self.history_ = _gd_affine(X, after, p)
        else:
            raise RepmapError(f"Fit method '{self.method}' is not one of lstsq, gd.")
        self.seconds_ = time.perf_counter() - t0
        self.A_ = np.ascontiguousarray(W[:-1].T)  # (d', d)
        self.delta_ = W[-1].copy()  # (d',)
        self.b_ = c
        return self

    def transform(self, before: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Modelled finetuned activations `λ̂ = A λ + b + y δ` (n, d')."""
        return self.transform_without_label(before) + signed_labels(y)[:, None] * self.delta_

    def transform_without_label(self, before: np.ndarray) -> np.ndarray:
        """`A λ + b`: the modelled activations with the label term removed (what a model could
        produce without being told the answer)."""
        return np.asarray(before, dtype=np.float32) @ self.A_.T + self.b_

    def loss(self, before: np.ndarray, after: np.ndarray, y: np.ndarray) -> float:
        """Mean squared error per element (the GD objective)."""
        return float(((self.transform(before, y) - np.asarray(after, np.float32)) ** 2).mean())

    def score(self, before: np.ndarray, after: np.ndarray, y: np.ndarray) -> float:
        return r2_score(after, self.transform(before, y))


# ---------------------------------------------------------------------------------------------
# carrying a direction across a map


TRANSFER_MODES = ("vector", "functional", "functional_reverse")


def transfer_direction(w: np.ndarray, fitted, mode: str = "functional", reverse=None) -> np.ndarray:
    """Carry a source direction `w` (d_s,) to the target space (d_t,).

    - `vector`: `A w`, the direction's image (Gao et al.). Right for a steering vector (a
      displacement), not for a probe: a probe is a linear functional.
    - `functional`: `pinv(A)ᵀ w`, the direction that scores target rows as `w` scores their
      source rows (if t ≈ A s + b then wᵀs ≈ (pinv(A)ᵀw)ᵀ(t − b)).
    - `functional_reverse`: `Bᵀ w` with `reverse` a map fitted target -> source.
    """
    w = np.asarray(w, dtype=np.float64)
    if mode == "vector":
        return fitted.A_.astype(np.float64) @ w
    if mode == "functional":
        # singular values below 1e-6 of the largest are noise; inverting them would blow the direction up
        return np.linalg.pinv(fitted.A_.astype(np.float64), rcond=1e-6).T @ w
    if mode == "functional_reverse":
        if reverse is None:
            raise RepmapError("Transfer 'functional_reverse' needs a map fitted from target to source.")
        return reverse.A_.T.astype(np.float64) @ w
    raise RepmapError(f"Transfer mode '{mode}' is not one of {', '.join(TRANSFER_MODES)}.")


def transfer_intercept(w: np.ndarray, intercept: float, w_target: np.ndarray, fitted=None, mode: str = "functional",
                       reverse=None) -> float:
    """The intercept that goes with a carried functional: `c − w_tᵀ b` for t ≈ A s + b (and for the
    reverse map s ≈ B t + b_r: `c + wᵀ b_r`). Vectors carry no intercept (0)."""
    if mode == "functional":
        return float(intercept - w_target @ fitted.b_)
    if mode == "functional_reverse":
        return float(intercept + np.asarray(w) @ reverse.b_)
    return 0.0
