/* descentlab landscape maths, in the browser: the surfaces, the four update rules behind the six
 * optimizers, the shared gradient-noise stream and the trajectory runner.
 *
 * This is the same maths as Python's descentlab.landscape.run (which drives descentlab.optim's torch
 * classes on a float64 tensor); tests/test_landscape_page.py checks the two agree to 1e-9 over 200
 * steps. Each rule is written in torch's order of operations, each gradient in autograd's, and where
 * torch's CPU kernels fuse a multiply-add (add with alpha, addcmul, lerp: measured, they round once)
 * so does this file, with fma() below; addcdiv, mul, sqrt and div round as written. The two sides then
 * agree bit for bit on most steps, within an ulp where the C library's sin/cos/log/pow and the
 * browser's differ. No DOM here: the page script (landscape_page.js) draws what this returns.
 */
(function (root) {
  "use strict";

  // -- fma(a, b, c) = a·b + c rounded once, as torch's kernels compute it (JavaScript has no fused op):
  // the product exactly as p + e (Dekker's TwoProduct, Veltkamp's split), the sum exactly as s + t
  // (Knuth's TwoSum), then s + (t + e). Correctly rounded except, very rarely, at an exact tie.
  const SPLIT = 134217729; // 2^27 + 1
  function fma(a, b, c) {
    const p = a * b;
    const sa = SPLIT * a, sb = SPLIT * b;
    if (!Number.isFinite(p) || !Number.isFinite(sa) || !Number.isFinite(sb) || !Number.isFinite(c)) return p + c;
    const ah = sa - (sa - a), al = a - ah, bh = sb - (sb - b), bl = b - bh;
    const e = ((ah * bh - p) + ah * bl + al * bh) + al * bl;
    const s = p + c, v = s - p;
    const t = (p - (s - v)) + (c - v);
    return s + (t + e);
  }

  // -- surfaces: f(x, y) and its gradient, as descentlab.tasks.surfaces writes them ------------------
  // p holds a surface's constants from the page spec: tilt (local-minima), condition (bowl).
  const TWO_PI = 2 * Math.PI;
  const SURFACES = {
    saddle: {
      value: (x, y) => x * x + Math.pow(y, 4) / 4 - (y * y) / 2,
      grad: (x, y) => [2 * x, y * y * y - y],
    },
    "local-minima": {
      value: (x, y, p) => (x * x - 1) * (x * x - 1) + p.tilt * x + (y * y) / 2,
      grad: (x, y, p) => [2 * (x * x - 1) * (2 * x) + p.tilt, y],
    },
    rosenbrock: {
      value: (x, y) => (1 - x) * (1 - x) + 100 * ((y - x * x) * (y - x * x)),
      grad: (x, y) => {
        const a = 1 - x, b = y - x * x, db = 100 * (2 * b);
        return [-(2 * a) + -db * (2 * x), db];
      },
    },
    bowl: {
      value: (x, y, p) => 0.5 * ((x * x) / p.condition + y * y),
      grad: (x, y, p) => [(0.5 / p.condition) * (2 * x), y],
    },
    rastrigin: {
      value: (x, y) => 20 + x * x - 10 * Math.cos(TWO_PI * x) + y * y - 10 * Math.cos(TWO_PI * y),
      grad: (x, y) => [2 * x + 10 * Math.sin(TWO_PI * x) * TWO_PI, 2 * y + 10 * Math.sin(TWO_PI * y) * TWO_PI],
    },
  };

  // -- update rules, keyed by descentlab.optim's rule name; h holds torch's keyword arguments --------
  // init(h) -> state; step(w, g, state, t, h) updates w (a 2-element Float64Array) in place; t counts from 1.
  const RULES = {
    // SGD (torch.optim.SGD, dampening 0): b ← g at t = 1, then b ← ρ·b + g; w ← w − γ·b (w ← w − γ·g when ρ = 0)
    SGD: {
      init: () => ({ buf: new Float64Array(2) }),
      step(w, g, s, t, h) {
        for (let i = 0; i < 2; i++) {
          let d = g[i];
          if (h.momentum !== 0) {
            s.buf[i] = t === 1 ? g[i] : s.buf[i] * h.momentum + g[i];
            d = s.buf[i];
          }
          w[i] = fma(-h.lr, d, w[i]);
        }
      },
    },
    // AdaGrad: s ← s + g²; w ← w − γ·g/(√s + ε)
    Adagrad: {
      init: () => ({ sum: new Float64Array(2) }),
      step(w, g, s, t, h) {
        for (let i = 0; i < 2; i++) {
          s.sum[i] = fma(g[i], g[i], s.sum[i]);
          const std = Math.sqrt(s.sum[i]) + h.eps;
          w[i] = w[i] + (-h.lr * g[i]) / std;
        }
      },
    },
    // RMSProp: s ← α·s + (1 − α)·g²; w ← w − γ·g/(√s + ε)
    RMSprop: {
      init: () => ({ square_avg: new Float64Array(2) }),
      step(w, g, s, t, h) {
        const rest = 1 - h.alpha;
        for (let i = 0; i < 2; i++) {
          s.square_avg[i] = fma(rest * g[i], g[i], s.square_avg[i] * h.alpha);
          const avg = Math.sqrt(s.square_avg[i]) + h.eps;
          w[i] = w[i] + (-h.lr * g[i]) / avg;
        }
      },
    },
    // Adam: m ← β1·m + (1 − β1)·g; s ← β2·s + (1 − β2)·g²; m̂ = m/(1 − β1ᵗ); ŝ = s/(1 − β2ᵗ);
    // w ← w − γ·m̂/(√ŝ + ε), computed as torch does: w − (γ/(1 − β1ᵗ))·m / (√s/√(1 − β2ᵗ) + ε)
    Adam: {
      init: () => ({ exp_avg: new Float64Array(2), exp_avg_sq: new Float64Array(2) }),
      step(w, g, s, t, h) {
        const [beta1, beta2] = h.betas;
        const weight = 1 - beta1, rest = 1 - beta2;
        const stepSize = h.lr / (1 - Math.pow(beta1, t));
        const correction2 = Math.sqrt(1 - Math.pow(beta2, t));
        for (let i = 0; i < 2; i++) {
          const m = s.exp_avg[i];
          s.exp_avg[i] = Math.abs(weight) < 0.5 ? fma(weight, g[i] - m, m) : fma(-(g[i] - m), 1 - weight, g[i]);
          s.exp_avg_sq[i] = fma(rest * g[i], g[i], s.exp_avg_sq[i] * beta2);
          const denom = Math.sqrt(s.exp_avg_sq[i]) / correction2 + h.eps;
          w[i] = w[i] + (-stepSize * s.exp_avg[i]) / denom;
        }
      },
    },
  };

  // -- gradient noise: SplitMix64 + Box–Muller, the stream of descentlab.landscape_noise -------------
  const MASK64 = (1n << 64n) - 1n;
  function splitmix64(seed) {
    let state = BigInt.asUintN(64, BigInt(seed));
    return function uniform() {
      state = (state + 0x9e3779b97f4a7c15n) & MASK64;
      let z = state;
      z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
      z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
      z ^= z >> 31n;
      return Number(z >> 11n) * 2 ** -53;
    };
  }

  const noiseCache = new Map();
  /** ξ_0 … ξ_{steps−1} as a Float64Array [ξ_0x, ξ_0y, ξ_1x, …]; the same numbers as gradient_noise(seed, steps). */
  function gradientNoise(seed, steps) {
    const key = `${seed}`;
    const cached = noiseCache.get(key);
    if (cached && cached.length >= 2 * steps) return cached;
    const uniform = splitmix64(seed);
    const noise = new Float64Array(2 * steps);
    for (let k = 0; k < steps; k++) {
      const u = uniform(), v = uniform();
      const r = Math.sqrt(-2.0 * Math.log(1.0 - u));
      const angle = TWO_PI * v;
      noise[2 * k] = r * Math.cos(angle);
      noise[2 * k + 1] = r * Math.sin(angle);
    }
    if (noiseCache.size > 16) noiseCache.clear();
    noiseCache.set(key, noise);
    return noise;
  }

  // -- the runner: descentlab.landscape.trajectory, step for step ------------------------------------
  /**
   * run({surface, params, minima, rule, hypers, start, steps, noise, seed, tol, observe?}) -> trajectory
   * points[k] is w after k steps, losses[k] = f(points[k]). The path is cut at the first non-finite
   * loss (that point dropped, divergedAt = k), gradient or point (divergedAt = k + 1).
   */
  function run(o) {
    const surface = SURFACES[o.surface], rule = RULES[o.rule];
    if (!surface) throw new Error(`unknown surface ${o.surface}`);
    if (!rule) throw new Error(`unknown rule ${o.rule}`);
    const p = o.params || {};
    const xi = o.noise ? gradientNoise(o.seed, o.steps) : null;
    const w = Float64Array.from(o.start), g = new Float64Array(2), state = rule.init(o.hypers);
    const points = [[w[0], w[1]]], losses = [];
    let divergedAt = null;
    for (let k = 0; k <= o.steps; k++) {
      const loss = surface.value(w[0], w[1], p);
      if (!Number.isFinite(loss)) { divergedAt = k; points.pop(); break; }
      losses.push(loss);
      if (k === o.steps) break;
      const grad = surface.grad(w[0], w[1], p);
      g[0] = grad[0]; g[1] = grad[1];
      if (xi) { g[0] = fma(o.noise, xi[2 * k], g[0]); g[1] = fma(o.noise, xi[2 * k + 1], g[1]); }
      if (!Number.isFinite(g[0]) || !Number.isFinite(g[1])) { divergedAt = k + 1; break; }
      rule.step(w, g, state, k + 1, o.hypers);
      if (o.observe) o.observe(k + 1, state); // the rule's state after step k + 1 (the guide reads it)
      if (!Number.isFinite(w[0]) || !Number.isFinite(w[1])) { divergedAt = k + 1; break; }
      points.push([w[0], w[1]]);
    }
    return score({ points, losses: losses.slice(0, points.length), divergedAt }, o.minima || [], o.tol);
  }

  /** steps within tol of a minimum, nearest minimum to the final point and the distance to it, status. */
  function score(t, minima, tol) {
    t.stepsToTol = null;
    t.nearest = null;
    t.distance = Infinity;
    if (t.points.length && minima.length) {
      for (let k = 0; k < t.points.length && t.stepsToTol === null; k++) {
        const [x, y] = t.points[k];
        if (minima.some(([mx, my]) => Math.sqrt((x - mx) ** 2 + (y - my) ** 2) <= tol)) t.stepsToTol = k;
      }
      const [x, y] = t.points[t.points.length - 1];
      minima.forEach((m) => {
        const d = Math.hypot(x - m[0], y - m[1]);
        if (d < t.distance) { t.distance = d; t.nearest = m; }
      });
    }
    t.status = t.divergedAt !== null ? "diverged" : t.distance <= tol ? "converged" : "not converged";
    return t;
  }

  root.descentlabMath = { SURFACES, RULES, fma, gradientNoise, splitmix64, run };
})(typeof window !== "undefined" ? window : globalThis);
