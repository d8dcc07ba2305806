/* The guide page: sections, figures (contours + paths, loss curves, the momentum map), controls, URL state.
 * The numbers come from descentlabGuideMath.compute (guide_math.js over landscape_math.js); everything
 * about the sections comes from the JSON spec that descentlab.guide.page writes into the page.
 */
(function () {
  "use strict";
  const spec = JSON.parse(document.getElementById("spec").textContent);
  const GM = window.descentlabGuideMath, M = window.descentlabMath;
  const NAMES = Object.keys(spec.sections);
  const INTEGER = new Set(spec.integer_controls);
  const C = d3.schemeTableau10;
  const PLOT = { w: 420, h: 300 }, CHART = { w: 330, h: 220 }, MARGIN = { top: 10, right: 12, bottom: 30, left: 48 };

  // -- formatting and sliders (the landscape page's scales) ------------------------------------------
  function format(v, digits = 4) {
    if (v === null || v === undefined) return "–";
    if (!Number.isFinite(v)) return String(v);
    const a = Math.abs(v), r = Number(v.toPrecision(digits));
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? r.toExponential() : String(r);
  }
  const scales = {
    log: { pos: (v) => Math.log10(v), value: (p) => Number(Math.pow(10, p).toPrecision(3)), step: 0.01 },
    "one-minus-log": { pos: (v) => -Math.log10(1 - v),
      value: (p) => Number((1 - Number(Math.pow(10, -p).toPrecision(3))).toFixed(12)), step: 0.01 },
    linear: { pos: (v) => v, value: (p) => p, step: null },
  };
  const within = (c, v) => Number.isFinite(v) && v >= c.low && v <= c.high;

  function makeSlider(c, id, onValue) {
    const scale = scales[c.scale];
    const row = document.createElement("label");
    row.className = "slider";
    const input = Object.assign(document.createElement("input"), { type: "range", id });
    const a = scale.pos(c.low), b = scale.pos(c.high);
    input.min = Math.min(a, b); input.max = Math.max(a, b);
    input.step = scale.step || (INTEGER.has(c.key) ? 1 : Number(((c.high - c.low) / 200).toPrecision(1)));
    const name = document.createElement("span");
    name.textContent = c.label;
    const out = document.createElement("output");
    out.htmlFor = id;
    row.append(name, input, out);
    input.addEventListener("input", () => {
      const raw = Number(input.value);
      const v = c.scale === "linear" ? Number(raw.toFixed(6)) : scale.value(raw);
      out.textContent = format(v);
      onValue(INTEGER.has(c.key) ? Math.round(v) : v);
    });
    return { element: row, set(v) { input.value = scale.pos(v); out.textContent = format(v); } };
  }

  // -- state and the URL hash ---------------------------------------------------------------------
  const defaults = () => Object.fromEntries(NAMES.map((n) => [n, JSON.parse(JSON.stringify(spec.sections[n].defaults))]));
  let state = defaults();

  function windowOf(name, st) {
    if (name === "sgd") return spec.regression.window;
    return spec.surfaces[name === "saddle" ? st.surface : "bowl"].window;
  }
  function toHash() {
    const q = new URLSearchParams();
    NAMES.forEach((n) => Object.entries(state[n]).forEach(([k, v]) => q.set(`${n}.${k}`, Array.isArray(v) ? v.join(",") : v)));
    return "#" + q.toString();
  }
  function fromHash(hash) {
    const q = new URLSearchParams(hash.replace(/^#/, "")), next = defaults(), errors = [];
    const surface = q.get("saddle.surface");
    if (surface !== null) {
      if (spec.sections.saddle.surfaces.includes(surface)) {
        next.saddle.surface = surface;
        next.saddle.start = spec.surfaces[surface].start.slice();
      } else errors.push(`saddle.surface=${surface}`);
    }
    for (const [key, text] of q.entries()) {
      const [n, k] = key.split(".");
      if (key === "saddle.surface") continue;
      const sec = spec.sections[n], bad = () => errors.push(`${key}=${text}`);
      if (!sec || !k) { bad(); continue; }
      if (k === "start") {
        const xy = text.split(",").map(Number), [x0, x1, y0, y1] = windowOf(n, next[n]);
        if (xy.length === 2 && xy[0] >= x0 && xy[0] <= x1 && xy[1] >= y0 && xy[1] <= y1) next[n].start = xy; else bad();
        continue;
      }
      const c = sec.controls.find((s) => s.key === k), v = Number(text);
      if (c && text.trim() !== "" && within(c, v) && (!INTEGER.has(k) || Number.isInteger(v))) next[n][k] = v; else bad();
    }
    return { next, errors };
  }
  let hashTimer = null, writtenHash = null;
  function writeHash() {
    clearTimeout(hashTimer);
    hashTimer = setTimeout(() => { writtenHash = toHash(); history.replaceState(null, "", writtenHash); }, 80);
  }

  // -- figure pieces --------------------------------------------------------------------------------
  const clampPx = (v) => Math.max(-1e5, Math.min(1e5, v));

  /** Contours of f over a window, paths on top, a start point to drag (mouse) or nudge (arrow keys). */
  function contourPlot(parent, label, onStart) {
    const svg = d3.select(parent).append("svg").attr("class", "plot").attr("width", PLOT.w).attr("height", PLOT.h)
      .attr("tabindex", 0).attr("role", "img").attr("aria-label", `${label}: contours and paths; arrow keys move the start point`);
    const iw = PLOT.w - MARGIN.left - MARGIN.right, ih = PLOT.h - MARGIN.top - MARGIN.bottom;
    const clip = `clip-${label.replace(/\W/g, "")}`;
    svg.append("defs").append("clipPath").attr("id", clip).append("rect").attr("width", iw).attr("height", ih);
    const g = svg.append("g").attr("transform", `translate(${MARGIN.left},${MARGIN.top})`);
    const contours = g.append("g").attr("clip-path", `url(#${clip})`), xa = g.append("g").attr("transform", `translate(0,${ih})`), ya = g.append("g");
    const overlay = g.append("rect").attr("width", iw).attr("height", ih).attr("fill", "transparent");
    const paths = g.append("g").attr("clip-path", `url(#${clip})`).attr("pointer-events", "none");
    const marks = g.append("g").attr("pointer-events", "none");
    const start = g.append("circle").attr("r", 6).attr("fill", "black").attr("stroke", "white").attr("stroke-width", 1.5);
    let x = d3.scaleLinear(), y = d3.scaleLinear(), key = null, win = null;
    const plot = {
      svg, get x() { return x; }, get y() { return y; },
      surface(k, window, f, opts) {
        if (key === k) return;
        key = k; win = window;
        const [x0, x1, y0, y1] = window;
        x = d3.scaleLinear([x0, x1], [0, iw]); y = d3.scaleLinear([y0, y1], [ih, 0]);
        xa.call(d3.axisBottom(x).ticks(6)); ya.call(d3.axisLeft(y).ticks(5));
        const nx = 100, ny = Math.round(100 * ih / iw), dx = (x1 - x0) / (nx - 1), dy = (y1 - y0) / (ny - 1);
        let z = new Float64Array(nx * ny);
        for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) z[j * nx + i] = f(x0 + i * dx, y0 + j * dy);
        let [lo, hi] = d3.extent(z), th;
        const levels = opts.levels || 16;
        if (opts.log) {
          const shift = -lo + 1e-3 * Math.max(hi - lo, 1e-12);
          z = z.map((v) => v + shift); lo += shift; hi += shift;
          th = d3.range(levels).map((k2) => lo * Math.pow(hi / lo, k2 / (levels - 1)));
        } else th = d3.range(levels).map((k2) => lo + (hi - lo) * k2 / (levels - 1));
        const project = d3.geoTransform({ point(gx, gy) { this.stream.point(x(x0 + (gx - 0.5) * dx), y(y0 + (gy - 0.5) * dy)); } });
        contours.selectAll("path").data(d3.contours().size([nx, ny]).thresholds(th)(z)).join("path")
          .attr("d", d3.geoPath(project)).attr("fill", (_, i) => d3.interpolateGreys(0.04 + 0.5 * i / (th.length - 1)))
          .attr("stroke", "#888").attr("stroke-width", 0.4);
        const m = [...(opts.minima || []).map((p) => ({ p, t: d3.symbolStar, f: "gold", s: 150, c: "minimum" })),
          ...(opts.saddles || []).map((p) => ({ p, t: d3.symbolX, f: "white", s: 90, c: "saddle" }))];
        marks.selectAll("path").data(m).join("path").attr("class", (d) => `mark ${d.c}`).attr("d", (d) => d3.symbol(d.t, d.s)())
          .attr("transform", (d) => `translate(${x(d.p[0])},${y(d.p[1])})`).attr("fill", (d) => d.f).attr("stroke", "black");
      },
      paths(list, startPoint) {
        const line = d3.line().x((p) => clampPx(x(p[0]))).y((p) => clampPx(y(p[1])));
        paths.selectAll("path").data(list, (d) => d.name).join("path").attr("class", "trajectory")
          .attr("data-name", (d) => d.name).attr("fill", "none").attr("stroke", (d) => d.colour)
          .attr("stroke-width", (d) => d.width || 1.8).attr("stroke-dasharray", (d) => (d.dash ? "5,3" : null))
          .attr("d", (d) => line(d.points));
        start.attr("cx", x(startPoint[0])).attr("cy", y(startPoint[1]));
      },
    };
    const round = (v, lo, hi) => Number(Math.min(hi, Math.max(lo, v)).toFixed(Math.max(0, 4 - Math.floor(Math.log10(hi - lo)))));
    const set = (px, py) => { const [x0, x1, y0, y1] = win; onStart([round(x.invert(px), x0, x1), round(y.invert(py), y0, y1)]); };
    const drag = d3.drag().container(g.node()).on("start drag", (e) => set(e.x, e.y));
    overlay.call(drag); start.call(drag);
    svg.on("keydown", (e) => {
      const moves = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] }[e.key];
      if (!moves) return;
      e.preventDefault();
      const cx = Number(start.attr("cx")), cy = Number(start.attr("cy"));
      set(cx + moves[0] * iw / 50, cy + moves[1] * ih / 50);
    });
    return plot;
  }

  /** A line chart: series [{name, colour, xs?, ys, dash}], log y by default; optional horizontal rules. */
  function lineChart(parent, xLabel, yLabel, opts = {}) {
    const svg = d3.select(parent).append("svg").attr("class", "chart").attr("width", CHART.w).attr("height", CHART.h)
      .attr("role", "img").attr("aria-label", `${yLabel} against ${xLabel}`);
    const iw = CHART.w - MARGIN.left - MARGIN.right, ih = CHART.h - MARGIN.top - MARGIN.bottom - 8;
    const g = svg.append("g").attr("transform", `translate(${MARGIN.left},${MARGIN.top})`);
    const xa = g.append("g").attr("transform", `translate(0,${ih})`), ya = g.append("g"), lines = g.append("g");
    g.append("text").attr("x", iw / 2).attr("y", ih + 32).attr("text-anchor", "middle").attr("font-size", 11).text(xLabel);
    g.append("text").attr("x", 4).attr("y", 8).attr("font-size", 11).text(yLabel);
    return {
      svg,
      set(series) {
        const pts = series.flatMap((s) => s.ys.map((v, i) => [s.xs ? s.xs[i] : i, v]));
        const ys = pts.map((p) => p[1]).filter((v) => Number.isFinite(v) && (!opts.linear ? v > 0 : true));
        const xMax = d3.max(pts, (p) => p[0]) || 1;
        const x = (opts.logX ? d3.scaleLog([opts.xMin || 1, xMax], [0, iw]) : d3.scaleLinear([opts.xMin || 0, xMax], [0, iw]));
        let [lo, hi] = ys.length ? d3.extent(ys) : [1e-3, 1];
        if (!opts.linear) { lo = Math.max(lo, hi * 1e-14, 1e-300); if (lo === hi) { lo /= 10; hi *= 10; } }
        else if (lo === hi) { lo -= 1; hi += 1; }
        const y = (opts.linear ? d3.scaleLinear([lo, hi], [ih, 0]) : d3.scaleLog([lo, hi], [ih, 0])).clamp(true);
        xa.call(d3.axisBottom(x).ticks(5, opts.logX ? "~s" : undefined));
        ya.call(d3.axisLeft(y).ticks(4, opts.linear ? undefined : "~e"));
        const line = d3.line().defined((p) => Number.isFinite(p[1]) && (opts.linear || p[1] > 0)).x((p) => x(p[0])).y((p) => y(p[1]));
        lines.selectAll("path").data(series, (s) => s.name).join("path").attr("data-name", (s) => s.name).attr("fill", "none")
          .attr("stroke", (s) => s.colour).attr("stroke-width", 1.6).attr("stroke-dasharray", (s) => (s.dash ? "5,3" : null))
          .attr("d", (s) => line(s.ys.map((v, i) => [s.xs ? s.xs[i] : i, v])));
        lines.selectAll("circle").data(series.filter((s) => s.dots).flatMap((s) => s.ys.map((v, i) => ({ s, v, i })))).join("circle")
          .attr("r", 4).attr("fill", (d) => d.s.colour).attr("cx", (d) => x(d.s.xs[d.i])).attr("cy", (d) => y(Math.max(d.v, lo)));
      },
    };
  }

  function legend(parent, items) {
    const div = document.createElement("div");
    div.className = "legend";
    div.innerHTML = items.map(([name, colour, dash]) => `<span><span class="swatch" style="background:${dash ? `repeating-linear-gradient(90deg,${colour} 0 5px,transparent 5px 8px)` : colour}"></span>${name}</span>`).join("");
    parent.append(div);
  }

  // -- the sections -----------------------------------------------------------------------------------
  const bowl = (condition) => (x, y) => M.SURFACES.bowl.value(x, y, { condition });
  const status = (t) => (t.status === "diverged" ? `<span class="bad">diverged at step ${t.divergedAt}</span>` : t.status);
  const last = (a) => a[a.length - 1];
  const stepsOf = (t) => t.losses.map((_, i) => i);

  /** name -> {build(figure) -> draw(numbers)}: the figures of each section. */
  const FIGURES = {
    gd(fig, name) {
      const plot = contourPlot(fig, name, (p) => setStart(name, p)), loss = lineChart(fig, "step", "loss f(w)");
      const out = readout(fig);
      return (n) => {
        const sec = spec.sections.gd, s = spec.surfaces.bowl;
        plot.surface(`bowl${sec.condition}`, s.window, bowl(sec.condition), { log: true, minima: s.minima });
        plot.paths([{ name: "gd", colour: C[0], points: n.gd.points }], state.gd.start);
        loss.set([{ name: "gd", colour: C[0], ys: n.gd.losses }]);
        const ok = state.gd.lr < n.limit;
        out.innerHTML = `γ = ${format(state.gd.lr)} ${ok ? "&lt;" : "&ge;"} 2/L = ${format(n.limit)}: |1 − γλ| = `
          + `${format(n.factors[0])} along x (λ = 1/${sec.condition}), <span class="${n.factors[1] >= 1 ? "bad" : ""}">${format(n.factors[1])} along y (λ = 1)</span> · `
          + `${status(n.gd)}, loss ${format(last(n.gd.losses))} after ${n.gd.losses.length - 1} steps`;
      };
    },
    sgd(fig, name) {
      const plot = contourPlot(fig, name, (p) => setStart(name, p)), loss = lineChart(fig, "epoch", "full-data loss");
      const noise = lineChart(fig, "batch size B", "gradient noise √E‖g_B − g‖²", { logX: true, xMin: 1, linear: true });
      const sizes = [...spec.regression.batches, spec.regression.x.length];
      const label = (b) => (b === spec.regression.x.length ? `full (${b})` : `B = ${b}`);
      legend(fig, sizes.map((b, i) => [label(b), C[i]]));
      const out = readout(fig);
      const { x, y } = spec.regression;
      const moments = x.reduce((m, xi, i) => [m[0] + xi * xi, m[1] + xi, m[2] + y[i], m[3] + xi * y[i], m[4] + y[i] * y[i]], [0, 0, 0, 0, 0]).map((v) => v / x.length);
      const f = (a, b) => 0.5 * (a * a * moments[0] + 2 * a * b * moments[1] + b * b - 2 * a * moments[3] - 2 * b * moments[2] + moments[4]);
      const slope = moments[3] / moments[0];
      return (n) => {
        plot.surface("regression", spec.regression.window, f, { log: true, minima: [[slope, 0]] });
        plot.paths(sizes.map((b, i) => ({ name: String(b), colour: C[i], points: n.runs[b].points, width: i === 3 ? 3 : 1.5 })), state.sgd.start);
        loss.set(sizes.map((b, i) => { const r = n.runs[b]; return { name: String(b), colour: C[i], ys: r.losses, xs: r.losses.map((_, k) => k / r.steps_per_epoch) }; }));
        const one = n.noise[1] !== undefined ? n.noise[1] : GM.batchNoise(state.sgd.start, 1, x, y), N = x.length;
        const bs = d3.range(0, 61).map((k) => Math.round(Math.pow(N, k / 60))).filter((b, i, a) => i === 0 || b !== a[i - 1]);
        noise.set([{ name: "theory", colour: "#999", xs: bs, ys: bs.map((b) => one * Math.sqrt((N - b) / (b * (N - 1)))) },
          ...sizes.map((b, i) => ({ name: `B${b}`, colour: C[i], xs: [b], ys: [n.noise[b]], dots: true }))]);
        out.innerHTML = sizes.map((b) => `${label(b)}: ${n.runs[b].steps_per_epoch} steps/epoch, noise ${format(n.noise[b], 3)}, loss after ${state.sgd.epochs} epochs ${format(last(n.runs[b].losses))}`).join("<br>");
      };
    },
    momentum(fig, name) {
      const plot = contourPlot(fig, name, (p) => setStart(name, p)), loss = lineChart(fig, "step", "loss f(w)");
      const eig = lineChart(fig, "step", "|error| along each eigen-direction");
      legend(fig, [["x: λ = 1/κ", C[0]], ["y: λ = 1", C[1]], ["rateᵏ (theory)", "#555", true]]);
      const map = mapFigure(fig);
      const out = readout(fig);
      return (n) => {
        const st = state.momentum, s = spec.surfaces.bowl;
        plot.surface(`bowl${st.condition}`, s.window, bowl(st.condition), { log: true, minima: s.minima });
        plot.paths([{ name: "momentum", colour: C[2], points: n.momentum.points }], st.start);
        loss.set([{ name: "momentum", colour: C[2], ys: n.momentum.losses }]);
        const p = n.momentum.points, e0 = Math.max(Math.abs(st.start[0]), Math.abs(st.start[1]));
        eig.set([{ name: "x", colour: C[0], ys: p.map((q) => Math.abs(q[0])) }, { name: "y", colour: C[1], ys: p.map((q) => Math.abs(q[1])) },
          { name: "rate", colour: "#555", dash: true, ys: p.map((_, k) => e0 * Math.pow(n.rate, k)) }]);
        map.draw(n.map, st.condition, st.lr, st.rho);
        out.innerHTML = `rate = max over eigenvalues of the largest |root| = <b>${format(n.rate, 5)}</b> `
          + `(x: ${format(n.rates[0], 5)}, y: ${format(n.rates[1], 5)})${n.rate >= 1 ? ' <span class="bad">≥ 1: diverges</span>' : ""} · ${status(n.momentum)}`;
      };
    },
    adagrad(fig, name) {
      const plot = contourPlot(fig, name, (p) => setStart(name, p)), loss = lineChart(fig, "step", "loss f(w)");
      const eff = lineChart(fig, "step", "effective lr γ/(√sᵢ + ε)");
      legend(fig, [["x (flat)", C[3]], ["y (steep)", C[3], true]]);
      const out = readout(fig);
      return (n) => {
        const sec = spec.sections.adagrad, s = spec.surfaces.bowl;
        plot.surface(`bowl${sec.condition}`, s.window, bowl(sec.condition), { log: true, minima: s.minima });
        plot.paths([{ name: "adagrad", colour: C[3], points: n.adagrad.points }], state.adagrad.start);
        loss.set([{ name: "adagrad", colour: C[3], ys: n.adagrad.losses }]);
        eff.set([{ name: "x", colour: C[3], xs: n.effective.map((_, k) => k + 1), ys: n.effective.map((e) => e[0]) },
          { name: "y", colour: C[3], dash: true, xs: n.effective.map((_, k) => k + 1), ys: n.effective.map((e) => e[1]) }]);
        const e = last(n.effective);
        out.innerHTML = `after ${n.effective.length} steps: effective lr ${format(e[0])} along x, ${format(e[1])} along y · ${status(n.adagrad)}`;
      };
    },
    rmsprop(fig, name) {
      const plot = contourPlot(fig, name, (p) => setStart(name, p)), loss = lineChart(fig, "step", "loss f(w)");
      const eff = lineChart(fig, "step", "effective lr γ/(√sᵢ + ε)");
      legend(fig, [["AdaGrad", C[3]], ["RMSProp", C[4]], ["x solid, y dashed", "#999"]]);
      const out = readout(fig);
      return (n) => {
        const sec = spec.sections.rmsprop, s = spec.surfaces.bowl;
        plot.surface(`bowl${sec.condition}`, s.window, bowl(sec.condition), { log: true, minima: s.minima });
        plot.paths([{ name: "adagrad", colour: C[3], points: n.adagrad.points }, { name: "rmsprop", colour: C[4], points: n.rmsprop.points }], state.rmsprop.start);
        loss.set([{ name: "adagrad", colour: C[3], ys: n.adagrad.losses }, { name: "rmsprop", colour: C[4], ys: n.rmsprop.losses }]);
        const series = (e, nm, colour) => [0, 1].map((i) => ({ name: `${nm}${i}`, colour, dash: i === 1, xs: e.map((_, k) => k + 1), ys: e.map((v) => v[i]) }));
        eff.set([...series(n.adagrad_effective, "adagrad", C[3]), ...series(n.rmsprop_effective, "rmsprop", C[4])]);
        out.innerHTML = `AdaGrad: ${status(n.adagrad)}, loss ${format(last(n.adagrad.losses))} · RMSProp: ${status(n.rmsprop)}, loss ${format(last(n.rmsprop.losses))}`;
      };
    },
    adam(fig, name) {
      const plot = contourPlot(fig, name, (p) => setStart(name, p)), loss = lineChart(fig, "step", "loss f(w)");
      const steps = lineChart(fig, "step", "step length ‖Δw‖ (first 30)");
      legend(fig, [["Adam (bias-corrected)", C[5]], ["the article's: no correction", C[5], true]]);
      const out = readout(fig);
      return (n) => {
        const sec = spec.sections.adam, s = spec.surfaces.bowl;
        plot.surface(`bowl${sec.condition}`, s.window, bowl(sec.condition), { log: true, minima: s.minima });
        plot.paths([{ name: "adam", colour: C[5], points: n.adam.points }, { name: "plain", colour: C[5], dash: true, points: n.plain }], state.adam.start);
        loss.set([{ name: "adam", colour: C[5], ys: n.adam.losses }, { name: "plain", colour: C[5], dash: true, ys: n.plain_losses }]);
        const first = (a) => a.slice(0, 30);
        steps.set([{ name: "adam", colour: C[5], xs: first(n.adam_steps).map((_, k) => k + 1), ys: first(n.adam_steps) },
          { name: "plain", colour: C[5], dash: true, xs: first(n.plain_steps).map((_, k) => k + 1), ys: first(n.plain_steps) }]);
        out.innerHTML = `first step: ${format(n.adam_steps[0])} with the correction, ${format(n.plain_steps[0])} without `
          + `(${format(n.plain_steps[0] / n.adam_steps[0], 3)}x) · Adam ${status(n.adam)}`;
      };
    },
    saddle(fig, name) {
      const select = document.createElement("select");
      select.id = "saddle-surface";
      spec.sections.saddle.surfaces.forEach((s) => select.append(new Option(s, s)));
      const row = document.createElement("label");
      row.append("surface ", select);
      fig.querySelector(".controls").prepend(row);
      select.addEventListener("change", () => {
        state.saddle.surface = select.value;
        state.saddle.start = spec.surfaces[select.value].start.slice();
        recompute("saddle");
      });
      const plot = contourPlot(fig, name, (p) => setStart(name, p)), loss = lineChart(fig, "step", "loss f(w) − min f", {});
      legend(fig, [["GD", C[0]], ["SGD (noise σ)", C[1]], ["momentum", C[2]]]);
      const out = readout(fig);
      return (n) => {
        const st = state.saddle, s = spec.surfaces[st.surface];
        select.value = st.surface;
        const f = (x, y) => M.SURFACES[st.surface].value(x, y, s.params);
        plot.surface(st.surface, s.window, f, { log: false, minima: s.minima, saddles: s.saddles });
        const names = ["gd", "sgd", "momentum"];
        plot.paths(names.map((k, i) => ({ name: k, colour: C[i], points: n[k].points })), st.start);
        const fmin = Math.min(...s.minima.map((m) => f(m[0], m[1])));
        loss.set(names.map((k, i) => ({ name: k, colour: C[i], ys: n[k].losses.map((v) => v - fmin + 1e-12) })));
        const basin = (t) => { const p = last(t.points); const m = s.minima.reduce((a, b) => (Math.hypot(p[0] - a[0], p[1] - a[1]) <= Math.hypot(p[0] - b[0], p[1] - b[1]) ? a : b));
          return `near (${format(m[0], 3)}, ${format(m[1], 3)})${s.global_minima.some((g) => g[0] === m[0] && g[1] === m[1]) ? " (global)" : ""}`; };
        out.innerHTML = names.map((k) => `${k}: ${status(n[k])}, ends ${basin(n[k])}`).join(" · ");
      };
    },
  };

  function readout(fig) { const p = document.createElement("p"); p.className = "readout"; fig.append(p); return p; }

  /** The (lr, ρ) rate map on a canvas (drawn once per κ), the sliders' point as a ring; a click sets lr and ρ. */
  function mapFigure(fig) {
    const lrs = spec.map.lrs, rhos = spec.map.rhos, W = 256, H = 200, L = 40, B = 30;
    const box = document.createElement("div");
    box.style.position = "relative";
    const canvas = Object.assign(document.createElement("canvas"), { width: W, height: H, className: "map" });
    canvas.setAttribute("aria-label", "convergence rate over learning rate and momentum; click to set both");
    const svg = d3.select(box).append("svg").attr("width", W + L + 8).attr("height", H + B + 14);
    svg.style("position", "relative").style("z-index", 1).style("pointer-events", "none"); // the ring above the canvas; clicks go through
    box.prepend(canvas);
    canvas.style.position = "absolute"; canvas.style.left = `${L}px`; canvas.style.top = "4px";
    const x = d3.scaleLog([lrs[0], last(lrs)], [0, W]), y = d3.scaleLinear([rhos[0], last(rhos)], [H, 0]);
    const g = svg.append("g").attr("transform", `translate(${L},4)`);
    g.append("g").attr("transform", `translate(0,${H})`).call(d3.axisBottom(x).ticks(4, "~g"));
    g.append("g").call(d3.axisLeft(y).ticks(5));
    g.append("text").attr("x", W / 2).attr("y", H + 28).attr("text-anchor", "middle").attr("font-size", 11).text("γ (lr) · colour: rate");
    const ring = g.append("circle").attr("r", 6).attr("fill", "none").attr("stroke", "#e15759").attr("stroke-width", 2.5);
    fig.append(box);
    let drawn = null;
    canvas.addEventListener("click", (e) => {
      const r = canvas.getBoundingClientRect();
      state.momentum.lr = Number(x.invert(e.clientX - r.left).toPrecision(3));
      state.momentum.rho = Number(y.invert(e.clientY - r.top).toFixed(3));
      syncControls("momentum");
      recompute("momentum");
    });
    return {
      draw(map, condition, lr, rho) {
        if (drawn !== condition) {
          drawn = condition;
          const ctx = canvas.getContext("2d"), img = ctx.createImageData(lrs.length, rhos.length);
          map.forEach((row, i) => row.forEach((r, j) => {
            const c = d3.rgb(r >= 1 ? "#fff" : d3.interpolateViridis(Math.min(1, -Math.log10(Math.max(1 - r, 1e-12)) / 3))), o = 4 * ((rhos.length - 1 - i) * lrs.length + j);
            img.data[o] = c.r; img.data[o + 1] = c.g; img.data[o + 2] = c.b; img.data[o + 3] = 255;
          }));
          const tmp = Object.assign(document.createElement("canvas"), { width: lrs.length, height: rhos.length });
          tmp.getContext("2d").putImageData(img, 0, 0);
          ctx.imageSmoothingEnabled = false;
          ctx.clearRect(0, 0, W, H);
          ctx.drawImage(tmp, 0, 0, W, H);
        }
        ring.attr("cx", x(lr)).attr("cy", y(rho));
      },
    };
  }

  // -- wiring -----------------------------------------------------------------------------------------
  const draws = {}, widgets = {}, timings = Object.fromEntries(NAMES.map((n) => [n, []])), numbers = {};

  function setStart(name, p) { state[name].start = p; recompute(name); }

  /** Compute and redraw one section; the synchronous time (maths + drawing) goes to timings[name]. */
  function recompute(name) {
    const begin = performance.now();
    numbers[name] = GM.compute(name, state[name], spec);
    draws[name](numbers[name]);
    timings[name].push(performance.now() - begin);
    if (timings[name].length > 2000) timings[name].splice(0, 1000);
    writeHash();
  }

  function syncControls(name) {
    Object.entries(widgets[name]).forEach(([k, w]) => w.set(state[name][k]));
  }

  function build() {
    document.querySelectorAll("code.rule[data-update]").forEach((el) => { el.textContent = spec.updates[el.dataset.update]; });
    NAMES.forEach((name) => {
      const fig = document.querySelector(`.figure[data-section="${name}"]`);
      const controls = document.createElement("div");
      controls.className = "controls";
      fig.append(controls);
      widgets[name] = {};
      spec.sections[name].controls.forEach((c) => {
        const w = makeSlider(c, `${name}-${c.key}`, (v) => { state[name][c.key] = v; recompute(name); });
        widgets[name][c.key] = w;
        controls.append(w.element);
      });
      draws[name] = FIGURES[name](fig, name);
    });
    const claim = spec.claim;
    document.getElementById("claim").innerHTML = `<p>${claim.sentences.map(escape).join(" ")}</p>`
      + `<p class="note">Source: ${escape(claim.source)}.${claim.note ? " " + escape(claim.note) : ""}</p>`;
    const rows = claim.entries.map((e) => `<tr data-verdict="${escape(e.verdict)}"><td>${escape(e.workload)}</td><td>${format(e.lr)}</td><td>${e.budget_epochs}</td>`
      + `<td>${escape(e.gap_text || (e.gap === null || e.gap === undefined ? "–" : format(e.gap, 3)))}</td><td>${e.still_improving ? "yes" : "no"}</td><td>${escape(e.verdict)}</td></tr>`).join("");
    document.querySelector('.figure[data-section="choice"]').innerHTML = `<table class="claim"><thead><tr><th>workload</th><th>Adam lr</th>`
      + `<th>budget (epochs)</th><th>gap to the best tuned</th><th>still improving</th><th>verdict</th></tr></thead><tbody>${rows}</tbody></table>`;
    document.getElementById("footer").textContent = `descentlab ${spec.version} · drawn with ${spec.d3.name} ${spec.d3.version} `
      + `(${spec.d3.licence} licence, inlined: the page needs no network)`;
  }
  function escape(text) { const d = document.createElement("div"); d.textContent = String(text); return d.innerHTML; }

  function load() {
    const { next, errors } = fromHash(location.hash);
    state = next;
    const box = document.getElementById("hash-errors");
    box.hidden = errors.length === 0;
    box.textContent = errors.length ? `Ignored in the link (unknown or out of range): ${errors.join(", ")}` : "";
    NAMES.forEach((n) => { syncControls(n); recompute(n); });
  }

  build();
  load();
  window.addEventListener("hashchange", () => { if (location.hash !== writtenHash) load(); });

  /** For tests and the console. */
  window.descentlabGuide = {
    spec, get state() { return state; }, numbers, timings, recompute, toHash,
    compute: (name, st) => GM.compute(name, st, spec),
    /** Viewport coordinates of the point p of section `name`'s contour plot. */
    clientPoint(name, p) {
      const svg = document.querySelector(`.figure[data-section="${name}"] svg.plot`), r = svg.getBoundingClientRect();
      const xs = d3.scaleLinear(windowOf(name, state[name]).slice(0, 2), [0, PLOT.w - MARGIN.left - MARGIN.right]);
      const ys = d3.scaleLinear(windowOf(name, state[name]).slice(2), [PLOT.h - MARGIN.top - MARGIN.bottom, 0]);
      return [r.left + MARGIN.left + xs(p[0]), r.top + MARGIN.top + ys(p[1])];
    },
  };
})();
