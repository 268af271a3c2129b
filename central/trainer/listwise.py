"""A ranking objective for the MLP ranker: listwise fine-tuning of a fitted network.

The network first learns pointwise (is this candidate the next item?), which gives it
calibrated probabilities and a good starting point. It is then trained further, in
numpy, on what the edge does with it: order the candidates of one prediction. Each
position's candidates are one list, and the loss is the softmax cross-entropy of the
true next item among them (ListNet with a one-hot target), which pushes the positive
above the negatives of its own list rather than every row towards its label. Training
stops once the loss on held-out lists has not improved for ``patience`` epochs, and the
best weights are kept.

The weights are written back into the scikit-learn network, so export, parity and
quantization do not change: the network's logistic output is monotone in the score the
loss shaped, and the order of candidates is all the edge reads from it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import Pipeline

Matrix = npt.NDArray[np.float64]
Index = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class ListwiseConfig:
    epochs: int = 40
    lists_per_batch: int = 128
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 4
    validation_share: float = 0.1


def fine_tune(
    model: Pipeline,
    x: npt.NDArray[np.float32],
    y: npt.NDArray[np.int8],
    groups: npt.NDArray[np.int64],
    config: ListwiseConfig,
    *,
    seed: int,
) -> dict[str, float]:
    """Trains ``model``'s network in place on the lists ``groups`` marks (contiguous runs of
    one id, one positive each); returns the held-out loss before and after."""
    network = model[-1]
    if not isinstance(network, MLPClassifier) or network.activation != "relu":
        raise TypeError("listwise fine-tuning needs a relu MLPClassifier as the last step")
    inputs = np.asarray(model[:-1].transform(x), dtype=np.float64)
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    bounds = np.r_[starts, groups.shape[0]].astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(starts.shape[0])
    n_held = max(1, int(order.shape[0] * config.validation_share))
    held, fitting = order[:n_held], order[n_held:]
    target = y.astype(np.float64)

    weights = [w.astype(np.float64) for w in network.coefs_]
    biases = [b.astype(np.float64) for b in network.intercepts_]
    adam = _Adam(weights + biases, config.learning_rate)
    held_rows, held_bounds = _rows_of(bounds, held)
    best = initial = _loss(weights, biases, inputs[held_rows], target[held_rows], held_bounds)
    best_params = [p.copy() for p in weights + biases]
    stale = 0
    for _ in range(config.epochs):
        rng.shuffle(fitting)
        for first in range(0, fitting.shape[0], config.lists_per_batch):
            rows, batch_bounds = _rows_of(bounds, fitting[first : first + config.lists_per_batch])
            grads = _gradients(weights, biases, inputs[rows], target[rows], batch_bounds)
            for grad, param in zip(grads, weights + biases, strict=True):
                if param.ndim == 2:
                    grad += config.weight_decay * param
            adam.step(grads)
        loss = _loss(weights, biases, inputs[held_rows], target[held_rows], held_bounds)
        if loss < best - 1e-5:
            best, stale = loss, 0
            best_params = [p.copy() for p in weights + biases]
        else:
            stale += 1
            if stale >= config.patience:
                break
    n = len(weights)
    network.coefs_ = [p.astype(network.coefs_[0].dtype) for p in best_params[:n]]
    network.intercepts_ = [p.astype(network.intercepts_[0].dtype) for p in best_params[n:]]
    return {"listwise_loss_before": float(initial), "listwise_loss_after": float(best)}


def _rows_of(bounds: Index, lists: Index) -> tuple[Index, Index]:
    """Rows of the chosen lists, concatenated, and the bounds of each list among them."""
    starts, stops = bounds[lists], bounds[lists + 1]
    lengths = stops - starts
    total = int(lengths.sum())
    shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
    return shift + np.arange(total, dtype=np.int64), np.r_[0, np.cumsum(lengths)].astype(np.int64)


def _forward(weights: list[Matrix], biases: list[Matrix], x: Matrix) -> list[Matrix]:
    activations = [x]
    for layer, (w, b) in enumerate(zip(weights, biases, strict=True)):
        z = activations[-1] @ w + b
        activations.append(z if layer == len(weights) - 1 else np.maximum(z, 0.0))
    return activations


def _softmax_minus_target(scores: Matrix, target: Matrix, bounds: Index) -> tuple[Matrix, float]:
    """Per list: softmax(scores) - one-hot target, and the summed cross-entropy."""
    starts = bounds[:-1]
    lengths = np.diff(bounds)
    top = np.repeat(np.maximum.reduceat(scores, starts), lengths)
    exp = np.exp(scores - top)
    total = np.repeat(np.add.reduceat(exp, starts), lengths)
    log_softmax = scores - top - np.log(total)
    return exp / total - target, float(-(log_softmax * target).sum())


def _loss(
    weights: list[Matrix], biases: list[Matrix], x: Matrix, target: Matrix, bounds: Index
) -> float:
    scores = _forward(weights, biases, x)[-1][:, 0]
    _, loss = _softmax_minus_target(scores, target, bounds)
    return loss / max(1, int(bounds.shape[0]) - 1)


def _gradients(
    weights: list[Matrix], biases: list[Matrix], x: Matrix, target: Matrix, bounds: Index
) -> list[Matrix]:
    activations = _forward(weights, biases, x)
    delta, _ = _softmax_minus_target(activations[-1][:, 0], target, bounds)
    delta = delta[:, None] / max(1, bounds.shape[0] - 1)
    weight_grads: list[Matrix] = []
    bias_grads: list[Matrix] = []
    for layer in range(len(weights) - 1, -1, -1):
        weight_grads.append(activations[layer].T @ delta)
        bias_grads.append(delta.sum(axis=0))
        if layer:
            delta = (delta @ weights[layer].T) * (activations[layer] > 0)
    return weight_grads[::-1] + bias_grads[::-1]


class _Adam:
    def __init__(self, params: list[Matrix], learning_rate: float) -> None:
        self.params = params
        self.learning_rate = learning_rate
        self.first = [np.zeros_like(p) for p in params]
        self.second = [np.zeros_like(p) for p in params]
        self.steps = 0

    def step(self, grads: list[Matrix]) -> None:
        self.steps += 1
        beta1, beta2 = 0.9, 0.999
        correction = np.sqrt(1 - beta2**self.steps) / (1 - beta1**self.steps)
        for param, grad, first, second in zip(
            self.params, grads, self.first, self.second, strict=True
        ):
            first *= beta1
            first += (1 - beta1) * grad
            second *= beta2
            second += (1 - beta2) * grad * grad
            param -= self.learning_rate * correction * first / (np.sqrt(second) + 1e-8)
