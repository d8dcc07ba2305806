/* descentlab guide maths, in the browser: what the guide adds to landscape_math.js (descentlabMath).
 *
 * - the minibatch task: a line fitted to scikit-learn's diabetes data (body-mass index -> progression),
 *   shuffled per epoch by Fisher–Yates on the SplitMix64 stream, trained with the SGD rule of
 *   landscape_math.js; the exact gradient noise of a batch of size B (descentlab/guide/minibatch.py);
 * - the closed-form convergence rate of momentum on a quadratic (descentlab/guide/theory.py): the largest
 *   |root| of z² − (1 + ρ − αλ)·z + ρ, maximised over the Hessian's eigenvalues, and its (lr, ρ) map;
 * - the article's Adam without bias correction (a wrong rule, shown beside the right one);
 * - compute(section, state, spec): every number a section draws. descentlab.guide.numbers computes the
 *   same with descentlab.optim and the NumPy reference; tests/test_guide_browser.py checks them equal to 1e-9.
 */
(function (root) {
  "use strict";
  const M = root.descentlabMath;

  // -- the article's Adam: m ← β1·m + (1 − β1)·g; s ← β2·s + (1 − β2)·g²; w ← w − α·m/(√s + ε) (no m̂, ŝ) --
  M.RULES.AdamPlain = {
    init: () => ({ exp_avg: new Float64Array(2), exp_avg_sq: new Float64Array(2) }),
    step(w, g, s, t, h) {
      const [beta1, beta2] = h.betas;
      for (let i = 0; i < 2; i++) {
        s.exp_avg[i] = beta1 * s.exp_avg[i] + (1 - beta1) * g[i];
        s.exp_avg_sq[i] = beta2 * s.exp_avg_sq[i] + (1 - beta2) * g[i] * g[i];
        w[i] = w[i] - (h.lr * s.exp_avg[i]) / (Math.sqrt(s.exp_avg_sq[i]) + h.eps);
      }
    },
  };

  // -- momentum on a quadratic: the closed-form rate ---------------------------------------------
  /** max |z| over the roots of z² − (1 + ρ − αλ)·z + ρ. */
  function rootRadius(lr, rho, lam) {
    const b = 1 + rho - lr * lam, disc = b * b - 4 * rho;
    return disc >= 0 ? (Math.abs(b) + Math.sqrt(disc)) / 2 : Math.sqrt(rho);
  }
  function momentumRate(lr, rho, eigenvalues) {
    return Math.max(...eigenvalues.map((lam) => rootRadius(lr, rho, lam)));
  }
  /** rate[i][j] at (lrs[j], rhos[i]). */
  function rateMap(lrs, rhos, eigenvalues) {
    return rhos.map((rho) => lrs.map((lr) => momentumRate(lr, rho, eigenvalues)));
  }
  const bowlEigenvalues = (condition) => [1 / condition, 1];

  // -- the minibatch task ------------------------------------------------------------------------------
  function epochOrders(seed, n, epochs) {
    const uniform = M.splitmix64(seed), orders = [];
    for (let e = 0; e < epochs; e++) {
      const order = Array.from({ length: n }, (_, i) => i);
      for (let i = n - 1; i > 0; i--) {
        const j = Math.min(Math.floor(uniform() * (i + 1)), i);
        const tmp = order[i]; order[i] = order[j]; order[j] = tmp;
      }
      orders.push(order);
    }
    return orders;
  }
  /** L(w) = ½·mean (w₀·x + w₁ − y)². */
  function fullLoss(w, x, y) {
    let sum = 0;
    for (let i = 0; i < x.length; i++) { const r = w[0] * x[i] + w[1] - y[i]; sum += r * r; }
    return 0.5 * (sum / x.length);
  }
  /** √E‖∇L_B − ∇L‖² for batches of size B drawn without replacement. */
  function batchNoise(w, batch, x, y) {
    const n = x.length, r = x.map((xi, i) => w[0] * xi + w[1] - y[i]);
    let m0 = 0, m1 = 0;
    for (let i = 0; i < n; i++) { m0 += r[i] * x[i]; m1 += r[i]; }
    m0 /= n; m1 /= n;
    let spread = 0;
    for (let i = 0; i < n; i++) spread += (r[i] * x[i] - m0) ** 2 + (r[i] - m1) ** 2;
    spread /= n;
    return Math.sqrt(Math.max(0, ((n - batch) / (batch * (n - 1))) * spread));
  }
  /** SGD (landscape_math.js's rule, ρ = 0) on the line, one batch size: points, full-data losses, steps per epoch. */
  function sgdRun(batch, o, x, y, orders) {
    const w = Float64Array.from(o.start), g = new Float64Array(2), h = { lr: o.lr, momentum: 0 };
    const rule = M.RULES.SGD, state = rule.init(h);
    const points = [[w[0], w[1]]], losses = [fullLoss(w, x, y)];
    let t = 0;
    orders.forEach((order) => {
      for (let i = 0; i < order.length; i += batch) {
        const idx = order.slice(i, i + batch);
        let g0 = 0, g1 = 0;
        idx.forEach((j) => { const r = w[0] * x[j] + w[1] - y[j]; g0 += r * x[j]; g1 += r; });
        g[0] = g0 / idx.length; g[1] = g1 / idx.length;
        rule.step(w, g, state, ++t, h);
        points.push([w[0], w[1]]);
        losses.push(fullLoss(w, x, y));
      }
    });
    return { points, losses, steps_per_epoch: Math.ceil(x.length / batch) };
  }

  // -- sections: every number each one draws ------------------------------------------------------
  function trajectory(spec, surface, params, rule, hypers, start, steps, extra) {
    return M.run({ surface, params, minima: spec.surfaces[surface].minima, rule, hypers, start, steps,
      noise: 0, seed: 0, tol: spec.tol, ...(extra || {}) });
  }
  const pick = (t) => ({ points: t.points, losses: t.losses, divergedAt: t.divergedAt, status: t.status,
    stepsToTol: t.stepsToTol });
  /** A trajectory plus γ/(√sᵢ + ε) per coordinate after each step (key: the rule's accumulator). */
  function adaptive(spec, sec, rule, hypers, start, key) {
    const effective = [];
    const observe = (k, state) => effective.push([0, 1].map((i) => hypers.lr / (Math.sqrt(state[key][i]) + hypers.eps)));
    const t = trajectory(spec, "bowl", { condition: sec.condition }, rule, hypers, start, sec.steps, { observe });
    return { t: pick(t), effective };
  }
  const stepLengths = (points) => points.slice(1).map((p, k) => Math.hypot(p[0] - points[k][0], p[1] - points[k][1]));

  const SECTIONS = {
    gd(st, spec, sec) {
      const eigs = bowlEigenvalues(sec.condition);
      return { gd: pick(trajectory(spec, "bowl", { condition: sec.condition }, "SGD", { lr: st.lr, momentum: 0 }, st.start, sec.steps)),
        factors: eigs.map((lam) => Math.abs(1 - st.lr * lam)), limit: 2 / Math.max(...eigs) };
    },
    sgd(st, spec) {
      const { x, y, batches } = spec.regression;
      const orders = epochOrders(st.seed, x.length, st.epochs);
      const runs = {}, noise = {};
      [...batches, x.length].forEach((b) => {
        runs[b] = sgdRun(b, st, x, y, orders);
        noise[b] = batchNoise(st.start, b, x, y);
      });
      return { runs, noise };
    },
    momentum(st, spec, sec) {
      const eigs = bowlEigenvalues(st.condition);
      return { momentum: pick(trajectory(spec, "bowl", { condition: st.condition }, "SGD", { lr: st.lr, momentum: st.rho },
        st.start, sec.steps)), rates: eigs.map((lam) => rootRadius(st.lr, st.rho, lam)),
      rate: momentumRate(st.lr, st.rho, eigs), map: null };
    },
    adagrad(st, spec, sec) {
      const a = adaptive(spec, sec, "Adagrad", { lr: st.lr, eps: sec.eps }, st.start, "sum");
      return { adagrad: a.t, reference: a.t.points, effective: a.effective };
    },
    rmsprop(st, spec, sec) {
      const a = adaptive(spec, sec, "Adagrad", { lr: st.adagrad_lr, eps: sec.adagrad_eps }, st.start, "sum");
      const r = adaptive(spec, sec, "RMSprop", { lr: st.rmsprop_lr, alpha: st.alpha, eps: sec.rmsprop_eps }, st.start, "square_avg");
      return { adagrad: a.t, rmsprop: r.t, adagrad_effective: a.effective, rmsprop_effective: r.effective };
    },
    adam(st, spec, sec) {
      const hypers = { lr: st.lr, betas: [st.beta1, st.beta2], eps: st.eps };
      const params = { condition: sec.condition };
      const right = pick(trajectory(spec, "bowl", params, "Adam", hypers, st.start, sec.steps));
      const wrong = trajectory(spec, "bowl", params, "AdamPlain", hypers, st.start, sec.steps);
      return { adam: right, adam_steps: stepLengths(right.points), plain: wrong.points, plain_losses: wrong.losses,
        plain_steps: stepLengths(wrong.points) };
    },
    saddle(st, spec, sec) {
      const params = spec.surfaces[st.surface].params;
      const run = (rule, hypers, extra) => pick(trajectory(spec, st.surface, params, rule, hypers, st.start, sec.steps, extra));
      return { gd: run("SGD", { lr: st.lr, momentum: 0 }), sgd: run("SGD", { lr: st.lr, momentum: 0 }, { noise: st.noise, seed: st.seed }),
        momentum: run("SGD", { lr: st.lr, momentum: st.rho }) };
    },
  };

  const mapCache = new Map();
  /** Every number of section `name` at `state`; the momentum map is computed once per condition number. */
  function compute(name, state, spec) {
    const out = SECTIONS[name](state, spec, spec.sections[name]);
    if (name === "momentum") {
      const key = String(state.condition);
      if (!mapCache.has(key)) {
        if (mapCache.size > 32) mapCache.clear();
        mapCache.set(key, rateMap(spec.map.lrs, spec.map.rhos, bowlEigenvalues(state.condition)));
      }
      out.map = mapCache.get(key);
    }
    return out;
  }

  root.descentlabGuideMath = { rootRadius, momentumRate, rateMap, epochOrders, fullLoss, batchNoise, sgdRun, compute };
})(typeof window !== "undefined" ? window : globalThis);
