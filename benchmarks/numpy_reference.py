"""Hand-written numpy NAU -> NMU training step: the reference floor for framework overhead.

One training step of the two-layer model of Madsen & Johansen (2020) on the static
multiplication task (see /work/shared/docs/literature.md), written the way a careful
engineer would write it by hand in numpy:

* task: x in R^100 ~ U[1, 2] (float32, np.random.Generator), a = sum(x[a0:a1]),
  b = sum(x[b0:b1]), y = a * b; subsets ((50, 75), (63, 88)) by default;
* NAU 100 -> 2: h = x W1, W1 clipped to [-1, 1], init U[-r, r],
  r = min(0.5, sqrt(3) * sqrt(2 / (fan_in + fan_out)));
* NMU 2 -> 1: y_hat = prod_i (W2_i h_i + 1 - W2_i), W2 clipped to [0, 1], init U[0.25, 0.75];
* loss: MSE + lambda(step) * (mean(min(|W1|, 1 - |W1|)) + mean(min(|W2|, 1 - |W2|))),
  lambda ramping linearly from 0 at s0 to lambda_hat at s1 (same schedule for both layers);
* Adam exactly in the Keras form (beta1 0.9, beta2 0.999, eps 1e-7,
  lr_t = lr * sqrt(1 - beta2^t) / (1 - beta1^t), p -= lr_t * m / (sqrt(v) + eps)), then clipping.

Implementation notes (what makes it fast without changing the maths):

* all parameters live in one flat float32 buffer (W1 stored transposed as (2, 100), then
  the two NMU weights); gradients, Adam moments and clip bounds share that layout, so the
  Adam update and the clipping are a dozen in-place ufunc calls on a 202-element vector;
* activations are kept as (hidden, batch) rows, so every per-unit row is contiguous and both
  matmuls (W1^T x^T forward, dh x backward) go straight to BLAS with no copies;
* every intermediate is preallocated and written with `out=`; no Python loop over the batch;
* the regulariser is only evaluated once lambda > 0 (before s0 it contributes exactly zero to
  both the loss and the gradient).

Gradients (B = batch size, r = y_hat - y, d = 2 r / B, f_i = 1 + W2_i (h_i - 1)):
  dL/dW2_i = sum_b d_b f_{other}(b) (h_i(b) - 1)
  dL/dh_i  = d f_{other} W2_i                  (two-input NMU: "product of others" is just the other factor,
                                                computed directly, so zero factors need no special care)
  dL/dW1   = x^T dL/dh
  d/dW mean(min(|W|, 1 - |W|)) = sign(W) * (+1 if |W| <= 1/2 else -1) / size(W)
  (|W| <= 1 - |W| picks the |W| branch on a tie, as tf.minimum's gradient does.)
"""

from __future__ import annotations

import math
import os
import sys
import time

if __name__ == "__main__":  # tiny matrices: BLAS threads only add overhead (and the machine is shared)
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, "1")

import numpy as np

DEFAULT_SUBSETS = ((50, 75), (63, 88))
ADAM_BETA_1, ADAM_BETA_2, ADAM_EPSILON = 0.9, 0.999, 1e-7


class TaskSampler:
    """Draws fresh (x, y) batches of the multiplication task into preallocated float32 buffers.

    method="random" (default): `Generator.random(out=x, dtype=np.float32)`, then scale and shift,
    the plain way to draw float32 uniforms with numpy.
    method="bits": the same Generator's bit stream (`bit_generator.random_raw`), turned into floats
    in [1, 2) by putting 23 random bits in the mantissa under exponent 0 (a standard conversion:
    exactly uniform on the 2^-23 grid of [1, 2)); about 15 us per batch faster, because numpy's
    float32 path pays a function-pointer call per element. Offered as an option, not the default.

    The two slice sums are one small matmul with a 0/1 selection matrix ((2, n) @ x^T).
    """

    METHODS = ("random", "bits")

    def __init__(self, rng: np.random.Generator, batch_size: int = 128, input_size: int = 100,
                 subsets=DEFAULT_SUBSETS, low: float = 1.0, high: float = 2.0, method: str = "random"):
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        self.rng, self.method = rng, method
        self.batch_size, self.input_size = batch_size, input_size
        self.low, self.width = float(low), float(high - low)
        self.selector = np.zeros((2, input_size), dtype=np.float32)
        for row, (start, stop) in enumerate(subsets):
            self.selector[row, start:stop] = 1.0
        self.x = np.empty((batch_size, input_size), dtype=np.float32)
        self.y = np.empty(batch_size, dtype=np.float32)
        self._ab = np.empty((2, batch_size), dtype=np.float32)
        self._a, self._b = self._ab[0], self._ab[1]
        self._n = batch_size * input_size
        self._raw_words = (self._n + 1) // 2

    def _uniform_random(self) -> np.ndarray:
        x = self.x
        self.rng.random(out=x, dtype=np.float32)  # U[0, 1)
        if self.width != 1.0:
            x *= np.float32(self.width)
        x += np.float32(self.low)
        return x

    def _uniform_bits(self) -> np.ndarray:
        bits = self.rng.bit_generator.random_raw(self._raw_words).view(np.uint32)[: self._n]
        np.right_shift(bits, 9, out=bits)
        np.bitwise_or(bits, 0x3F800000, out=bits)  # float32 in [1, 2)
        x = bits.view(np.float32).reshape(self.batch_size, self.input_size)
        if self.low != 1.0 or self.width != 1.0:
            x -= np.float32(1.0)
            x *= np.float32(self.width)
            x += np.float32(self.low)
        return x

    def sample(self):
        """Return a fresh (x, y); the arrays may be reused by the next call, copy them to keep a batch."""
        x = self._uniform_random() if self.method == "random" else self._uniform_bits()
        np.dot(self.selector, x.T, out=self._ab)   # a, b = slice sums
        np.multiply(self._a, self._b, out=self.y)
        return x, self.y


class NumpyNauNmu:
    """NAU(input_size -> 2) -> NMU(2 -> 1) with hand-derived gradients, Adam and clipping."""

    HIDDEN = 2

    def __init__(self, input_size: int = 100, batch_size: int = 128, rng: np.random.Generator | None = None,
                 learning_rate: float = 1e-3, lambda_hat: float = 0.01, s0: int = 5000, s1: int = 50000,
                 beta_1: float = ADAM_BETA_1, beta_2: float = ADAM_BETA_2, epsilon: float = ADAM_EPSILON,
                 dtype=np.float32):
        rng = np.random.default_rng(0) if rng is None else rng
        H, n = self.HIDDEN, input_size
        self.input_size, self.dtype = input_size, np.dtype(dtype)
        self.n1 = n * H  # number of NAU weights
        size = self.n1 + H
        self.lr, self.lambda_hat, self.s0, self.s1 = float(learning_rate), float(lambda_hat), int(s0), int(s1)
        self.beta_1, self.beta_2, self.epsilon = float(beta_1), float(beta_2), float(epsilon)
        self.one_minus_b1 = self.dtype.type(1.0 - self.beta_1)
        self.one_minus_b2 = self.dtype.type(1.0 - self.beta_2)
        self.eps = self.dtype.type(self.epsilon)

        # Flat buffers: [W1^T (H, n) row-major | W2 (H,)].
        self.params = np.empty(size, dtype=self.dtype)
        self.grad = np.zeros(size, dtype=self.dtype)
        self.m = np.zeros(size, dtype=self.dtype)
        self.v = np.zeros(size, dtype=self.dtype)
        self._tmp = np.empty(size, dtype=self.dtype)
        self._tmp2 = np.empty(size, dtype=self.dtype)
        self._mask = np.empty(size, dtype=bool)
        self.W1T = self.params[: self.n1].reshape(H, n)
        self.w2 = self.params[self.n1:]
        self._w2col = self.w2.reshape(H, 1)
        self.gW1T = self.grad[: self.n1].reshape(H, n)
        self.gw2 = self.grad[self.n1:]
        self.lower = np.concatenate([np.full(self.n1, -1.0), np.zeros(H)]).astype(self.dtype)
        self.upper = np.ones(size, dtype=self.dtype)
        # d/dW of mean(...) over each layer: 1 / (number of weights in that layer).
        self._reg_scale = np.concatenate([np.full(self.n1, 1.0 / self.n1), np.full(H, 1.0 / H)]).astype(self.dtype)

        # Initialisation (Madsen & Johansen): NAU U[-r, r], NMU U[0.25, 0.75].
        r = min(0.5, math.sqrt(3.0) * math.sqrt(2.0 / (n + H)))
        self.W1T[...] = rng.uniform(-r, r, size=(n, H)).T
        self.w2[...] = rng.uniform(0.25, 0.75, size=H)

        self.step_count = 0  # completed steps; lambda uses it, Adam uses t = step_count + 1
        self._b1_pow = 1.0
        self._b2_pow = 1.0
        self._batch = None
        self._alloc(batch_size)

    # -- views in the usual (fan_in, fan_out) layout ---------------------------------------------
    @property
    def W1(self) -> np.ndarray:
        return self.W1T.T

    @property
    def W2(self) -> np.ndarray:
        return self.w2.reshape(self.HIDDEN, 1)

    def _alloc(self, batch: int):
        H, dt = self.HIDDEN, self.dtype
        self._batch = batch
        self._two_over_b = dt.type(2.0 / batch)
        self._h = np.empty((H, batch), dtype=dt)    # h^T, then h^T - 1
        self._f = np.empty((H, batch), dtype=dt)    # NMU factors f_i = 1 + W2_i (h_i - 1)
        self._do = np.empty((H, batch), dtype=dt)   # d * f_other, then dL/dh^T
        self._r = np.empty(batch, dtype=dt)         # residual, then dL/dy_hat
        self._f0, self._f1 = self._f[0], self._f[1]
        self._do0, self._do1 = self._do[0], self._do[1]
        self._h0, self._h1 = self._h[0], self._h[1]

    def regularizer_lambda(self, step: int) -> float:
        if self.lambda_hat == 0.0 or step <= self.s0:
            return 0.0
        if step >= self.s1:
            return self.lambda_hat
        return self.lambda_hat * (step - self.s0) / max(self.s1 - self.s0, 1)

    def loss_and_grad(self, x: np.ndarray, y: np.ndarray, lam: float) -> float:
        """Forward and analytic backward; fills self.grad, returns the loss (MSE + regulariser)."""
        if x.shape[0] != self._batch:
            self._alloc(x.shape[0])
        h, f, do, r = self._h, self._f, self._do, self._r
        # forward
        np.dot(self.W1T, x.T, out=h)              # h^T = W1^T x^T, (H, B)
        h -= 1                                     # h - 1
        np.multiply(h, self._w2col, out=f)
        f += 1                                     # f_i = W2_i h_i + 1 - W2_i
        np.multiply(self._f0, self._f1, out=r)     # y_hat
        r -= y                                     # residual
        loss = float(np.dot(r, r)) / self._batch
        # backward
        r *= self._two_over_b                      # dL/dy_hat
        np.multiply(self._f1, r, out=self._do0)    # dL/df_0 = d * f_1
        np.multiply(self._f0, r, out=self._do1)    # dL/df_1 = d * f_0
        gw2 = self.gw2
        gw2[0] = np.dot(self._do0, self._h0)       # sum_b dL/df_0 (h_0 - 1)
        gw2[1] = np.dot(self._do1, self._h1)
        do *= self._w2col                          # dL/dh^T = dL/df * W2
        np.dot(do, x, out=self.gW1T)               # dL/dW1^T = dL/dh^T x
        if lam != 0.0:
            p, a, s, mask = self.params, self._tmp, self._tmp2, self._mask
            np.abs(p, out=a)
            np.greater(a, 0.5, out=mask)                   # branch 1 - |W| is the smaller one
            np.sign(p, out=s)
            np.negative(s, out=s, where=mask)
            np.multiply(s, self._reg_scale, out=s)
            s *= self.dtype.type(lam)
            self.grad += s
            np.subtract(1, a, out=s)
            np.minimum(a, s, out=a)                        # min(|W|, 1 - |W|)
            loss += lam * float(np.dot(a, self._reg_scale))
        return loss

    def step(self, x: np.ndarray, y: np.ndarray) -> float:
        """One training step on the batch (x: (B, n) float32 C-contiguous, y: (B,)); returns the loss."""
        loss = self.loss_and_grad(x, y, self.regularizer_lambda(self.step_count))
        # Adam, Keras form.
        self.step_count += 1
        self._b1_pow *= self.beta_1
        self._b2_pow *= self.beta_2
        lr_t = self.dtype.type(self.lr * math.sqrt(1.0 - self._b2_pow) / (1.0 - self._b1_pow))
        g, m, v, t, p = self.grad, self.m, self.v, self._tmp, self.params
        np.subtract(g, m, out=t)
        t *= self.one_minus_b1
        m += t                                     # m += (g - m)(1 - b1)
        np.multiply(g, g, out=t)
        t -= v
        t *= self.one_minus_b2
        v += t                                     # v += (g^2 - v)(1 - b2)
        np.sqrt(v, out=t)
        t += self.eps
        np.divide(m, t, out=t)
        t *= lr_t
        p -= t
        # Clipping: W1 to [-1, 1], W2 to [0, 1].
        np.maximum(p, self.lower, out=p)
        np.minimum(p, self.upper, out=p)
        return loss


def run(steps: int, seed: int = 0, batch_size: int = 128, subsets=DEFAULT_SUBSETS, sampler: str = "random",
        **model_kwargs) -> dict:
    """Train for `steps` steps; data generation is inside the timed loop (as in the TF trainer)."""
    rng = np.random.default_rng(seed)
    model = NumpyNauNmu(input_size=100, batch_size=batch_size, rng=rng, **model_kwargs)
    sample = TaskSampler(rng, batch_size=batch_size, input_size=100, subsets=subsets, method=sampler).sample
    step = model.step
    loss = float("nan")
    start = time.perf_counter()
    for _ in range(steps):
        x, y = sample()
        loss = step(x, y)
    seconds = time.perf_counter() - start
    return {
        "steps": steps,
        "seconds": seconds,
        "steps_per_second": steps / seconds if seconds > 0 else float("inf"),
        "final_loss": loss,
        "sampler": sampler,
    }


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--sampler", choices=TaskSampler.METHODS, default="random",
                        help="how x is drawn: Generator.random float32 (default) or the bit-stream mantissa trick")
    args = parser.parse_args(argv)
    result = run(args.steps, seed=args.seed, batch_size=args.batch_size, sampler=args.sampler)
    print(f"numpy NAU->NMU reference (sampler={args.sampler}): {result['steps']} steps in {result['seconds']:.3f} s "
          f"= {result['steps_per_second']:.0f} steps/s (final loss {result['final_loss']:.4g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
