"""Maps fitted by gradient descent (torch): the papers' GD map, the up/down pair, a small MLP.

- `GDMap`: the papers' gradient descent (Adam on the MSE), with per-step callbacks. A seeded tenth
  of the training rows is held out by default and the parameters of the step with the lowest
  held-out loss are kept (`best_step_`): run to its end on n ≈ d rows, GD fits noise (on the
  finetuned MiniLM the app's fit reached held-out R² 0.45 near step 50 and ended at -0.125).
- `UpDownMap`: an up map source -> target and a down map target -> source fitted together, with
  the round-trip loss tying them (LRT, Bello et al. 2025; model stitching, Chen et al. 2025).
- `MLPMap`: a small non-linear map with early stopping (no `A_`: directions cannot be carried).
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import numpy as np
from sklearn.base import BaseEstimator

from repmap_core.analysis.affine import AffineMap, check_pair, held_out_rows, r2_score, solve_affine
from repmap_core.analysis.probes import feature_scale
from repmap_core.errors import RepmapError

StepCallback = Callable[[int, float], None]  # (step, training loss) -> None; may raise to stop
# (step, training loss, W (d_x, d_t), c (d_t,), best step so far) with the current parameters in the
# original units; the best step is the one whose parameters the fit will report
ParamsMonitor = Callable[[int, float, np.ndarray, np.ndarray, int], None]


class GDMap(AffineMap):
    """Affine map fitted by gradient descent (Adam on the mean squared error), as in Gao et al.

    Inputs are standardised inside (and the result folded back into `A_`, `b_`), which makes
    the optimisation well conditioned on activations with outlier dimensions. `callback(step,
    loss)` is called every `callback_every` steps; fitting stops at `max_steps`, when the full
    training loss reaches `target_loss`, or when the watched loss stops improving by `tol` for
    `patience` checks. `monitor(step, loss, W, c, best_step)` sees the current parameters (for live
    held-out metrics) and the step whose parameters would be reported now. With `val_frac > 0`
    (default 0.1), that seeded share of rows is held out, stopping watches its loss, and the
    parameters of the step with the lowest held-out loss are kept: `best_step_` says which step,
    `n_steps_` how many ran. `val_frac=0` is the paper's setting (the end state is reported).
    """

    def __init__(self, lr: float = 1e-2, max_steps: int = 2000, batch_size: int = 512, target_loss: float | None = None,
                 tol: float = 1e-5, patience: int = 20, callback: StepCallback | None = None,
                 callback_every: int = 10, seed: int = 0, monitor: ParamsMonitor | None = None, val_frac: float = 0.1):
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
        W, c, self.history_, self.best_step_ = _gd_affine(S, T, self)
        self._set(W, c, time.perf_counter() - t0)
        self.n_steps_ = self.history_[-1][0] if self.history_ else 0
        return self


UNCONVERGED_CHECKS = 5  # a best held-out step among the last 5 checks of a run that hit its limit: still improving


def still_improving(best_step: int, n_steps: int, max_steps: int, check_every: int = 10) -> bool:
    """Whether gradient descent stopped at its step limit while still improving: it ran all `max_steps` and its
    best held-out step is among its last checks (the within fit's ended at step 1990 of 2000 with R² 0.888
    where the closed form reached 0.984). Its result then understates the map, and says so."""
    return n_steps >= max_steps and best_step > n_steps - UNCONVERGED_CHECKS * check_every


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


def _gd_affine(X: np.ndarray, T: np.ndarray, p: GDMap) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float]], int]:
    """Adam on mean((X W + c - T)²) with standardised X; returns W (d_x, d_t), c (d_t,),
    [(step, training loss)] and the step whose parameters W, c are (the best held-out one, or the last)."""
    with _torch_threads_for(min(p.batch_size, len(X)) * X.shape[1] * T.shape[1]):
        return _gd_affine_loop(X, T, p)


def _gd_affine_loop(X: np.ndarray, T: np.ndarray, p: GDMap) -> tuple[np.ndarray, np.ndarray, list[tuple[int, float]], int]:
    import torch

    g = torch.Generator().manual_seed(p.seed)
    torch.manual_seed(p.seed)
    val = None
    if p.val_frac > 0 and len(X) >= 5:
        val, keep = held_out_rows(len(X), p.val_frac, p.seed)
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
    best, stale, best_step = float("inf"), 0, 0
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
                watched = full if val is None else float(((Xvs @ Wt + ct - Tvc) ** 2).mean())
            history.append((step, full))
            improved = watched < best * (1 - p.tol)  # (best starts at inf: inf - tol * inf would be nan)
            if improved:
                best, stale, best_step = watched, 0, step
                if val is not None:
                    kept = (Wt.detach().clone(), ct.detach().clone())
            else:
                stale += 1
            if p.callback is not None:
                p.callback(step, full)
            if p.monitor is not None:
                W_now = Wt.detach().numpy() / sx[:, None]
                p.monitor(step, full, W_now, ct.detach().numpy() + mt - mx @ W_now, best_step if val is not None else step)
            if p.target_loss is not None and full <= p.target_loss:
                break
            sched.step(watched)
            if stale >= p.patience:
                break
    final_W, final_c = kept if val is not None else (Wt.detach(), ct.detach())
    W = final_W.numpy() / sx[:, None]  # fold the standardisation back in
    c = final_c.numpy() + mt - mx @ W
    reported = best_step if val is not None else (history[-1][0] if history else 0)
    return W.astype(np.float32), c.astype(np.float32), history, reported


class UpDownMap(AffineMap):
    """An up map `t ≈ A s + b` and a down map `s ≈ D t + d` fitted together (LRT, stitching).

    Minimises, on centred rows each scaled by its side's overall standard deviation,
    `mse(up(S), T) + mse(down(T), S) + round_trip · mse(down(up(S)), S)`: the round-trip term
    makes down undo up, which two separately fitted least-squares maps do not (each shrinks
    towards the mean, so their composition does too). Starts from the two ridge solutions and
    runs full-batch Adam. `A_`, `b_` are the up map; `down_` is the down map (an `AffineMap`, usable
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
        self.down_ = AffineMap()
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

