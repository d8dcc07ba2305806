/* The interactive landscape page: controls, URL-hash state, contours and paths (d3), readout.
 * The maths is descentlabMath (landscape_math.js); everything about the surfaces and optimizers comes
 * from the JSON spec that descentlab.landscape_page writes into the page.
 */
(function () {
  "use strict";
  const spec = JSON.parse(document.getElementById("spec").textContent);
  const math = window.descentlabMath;
  const surfaces = new Map(spec.surfaces.map((s) => [s.name, s]));
  const optimizers = spec.optimizers;
  const colour = new Map(optimizers.map((o, i) => [o.name, d3.schemeTableau10[i % 10]]));
  const WIDTH = 680, HEIGHT = 500, MARGIN = { top: 10, right: 10, bottom: 32, left: 46 };
  const GRID = 160; // contour grid: GRID columns, rows in proportion
  const CLAMP = 1e5; // pixel coordinates are clamped to ±CLAMP so diverging paths still draw

  // -- state ---------------------------------------------------------------------------------------
  // {surface, start: [x, y], steps, noise, seed, condition, on: Set, opt: {name: {lr, <slider key>: value}}}
  let state = null;

  function surfaceDefaults(s, base) {
    const next = { ...base, surface: s.name, start: s.start.slice() };
    next.condition = s.parameter ? s.params[s.parameter.key] : null;
    next.opt = {};
    optimizers.forEach((o) => {
      next.opt[o.name] = { ...(base.opt ? base.opt[o.name] : o.defaults), lr: s.lrs[o.name] };
    });
    return next;
  }

  function openingState() {
    const open = spec.state;
    const base = { steps: open.steps, noise: open.noise, seed: open.seed, on: new Set(open.on), opt: null };
    const next = surfaceDefaults(surfaces.get(open.surface), base);
    next.start = open.start.slice();
    if (open.condition !== undefined) next.condition = open.condition;
    Object.entries(open.lr || {}).forEach(([name, lr]) => { next.opt[name].lr = lr; });
    return next;
  }

  // -- sliders: position <-> value ------------------------------------------------------------------
  const scales = {
    log: { pos: (v) => Math.log10(v), value: (p) => Number(Math.pow(10, p).toPrecision(3)), step: 0.01 },
    "one-minus-log": {
      pos: (v) => -Math.log10(1 - v),
      value: (p) => Number((1 - Number(Math.pow(10, -p).toPrecision(3))).toFixed(12)), step: 0.01,
    },
    linear: { pos: (v) => v, value: (p) => p, step: null },
  };

  function within(slider, v) { return Number.isFinite(v) && v >= slider.low && v <= slider.high; }

  function format(v, digits = 4) {
    if (v === null || v === undefined) return "–";
    if (!Number.isFinite(v)) return String(v);
    const a = Math.abs(v);
    const rounded = Number(v.toPrecision(digits));
    return a !== 0 && (a < 1e-3 || a >= 1e5) ? rounded.toExponential() : String(rounded);
  }

  /** A labelled range input for `slider`; onValue(value) on input. Returns {element, set(value)}. */
  function makeSlider(slider, id, onValue, linearStep) {
    const scale = scales[slider.scale];
    const row = document.createElement("label");
    row.className = "slider";
    const name = document.createElement("span");
    name.textContent = slider.label;
    const input = document.createElement("input");
    input.type = "range";
    input.id = id;
    const a = scale.pos(slider.low), b = scale.pos(slider.high);
    input.min = Math.min(a, b);
    input.max = Math.max(a, b);
    input.step = scale.step || linearStep;
    const out = document.createElement("output");
    out.htmlFor = id;
    row.append(name, input, out);
    input.addEventListener("input", () => {
      const raw = Number(input.value);
      const value = slider.scale === "linear" ? Number(raw.toFixed(6)) : scale.value(raw);
      out.textContent = format(value);
      onValue(value);
    });
    return {
      element: row,
      set(value) { input.value = scale.pos(value); out.textContent = format(value); },
    };
  }

  // -- URL hash -------------------------------------------------------------------------------------
  function toHash(s) {
    const q = new URLSearchParams();
    q.set("surface", s.surface);
    q.set("start", `${s.start[0]},${s.start[1]}`);
    q.set("steps", s.steps);
    q.set("noise", s.noise);
    q.set("seed", s.seed);
    if (s.condition !== null) q.set("condition", s.condition);
    q.set("on", optimizers.filter((o) => s.on.has(o.name)).map((o) => o.name).join(","));
    optimizers.forEach((o) => {
      Object.entries(s.opt[o.name]).forEach(([key, value]) => q.set(`${o.name}.${key}`, value));
    });
    return "#" + q.toString();
  }

  /** The state a hash describes, on top of `base`; keys that are unknown or out of range are listed in errors. */
  function fromHash(hash, base) {
    const q = new URLSearchParams(hash.replace(/^#/, ""));
    const errors = [];
    let s = base;
    const name = q.get("surface");
    if (name !== null) {
      // another surface starts from its own defaults; the opening surface keeps the opening view
      if (surfaces.has(name)) s = name === base.surface ? base : surfaceDefaults(surfaces.get(name), base);
      else errors.push(`surface=${name}`);
    }
    const surface = surfaces.get(s.surface);
    s = { ...s, on: new Set(s.on), opt: JSON.parse(JSON.stringify(s.opt)) };
    for (const [key, text] of q.entries()) {
      const value = Number(text);
      const bad = () => errors.push(`${key}=${text}`);
      if (key === "surface") continue;
      if (key === "start") {
        const xy = text.split(",").map(Number);
        const [x0, x1, y0, y1] = surface.window;
        if (xy.length === 2 && xy[0] >= x0 && xy[0] <= x1 && xy[1] >= y0 && xy[1] <= y1) s.start = xy;
        else bad();
      } else if (key === "on") {
        const names = text.split(",").filter((n) => n);
        if (names.every((n) => colour.has(n))) s.on = new Set(names); else bad();
      } else if (key in spec.controls) {
        const control = spec.controls[key];
        if (within(control, value) && (key === "noise" || Number.isInteger(value))) s[key] = value; else bad();
      } else if (key === "condition") {
        if (surface.parameter && within(surface.parameter, value)) s.condition = value; else bad();
      } else {
        const [opt, hyper] = key.split(".");
        const o = optimizers.find((p) => p.name === opt);
        const slider = spec.sliders[hyper];
        if (o && slider && (hyper === "lr" || o.sliders.includes(hyper)) && within(slider, value)) {
          s.opt[opt][hyper] = value;
        } else bad();
      }
    }
    return { state: s, errors };
  }

  let hashTimer = null, writtenHash = null;
  function writeHash() {
    // replaceState, debounced: a drag must not add history entries or trip the browser's navigation throttle
    clearTimeout(hashTimer);
    hashTimer = setTimeout(() => {
      writtenHash = toHash(state);
      history.replaceState(null, "", writtenHash);
    }, 80);
  }

  // -- the plot --------------------------------------------------------------------------------------
  const svg = d3.select("#plot").attr("width", WIDTH).attr("height", HEIGHT);
  const innerW = WIDTH - MARGIN.left - MARGIN.right, innerH = HEIGHT - MARGIN.top - MARGIN.bottom;
  svg.append("defs").append("clipPath").attr("id", "clip").append("rect").attr("width", innerW).attr("height", innerH);
  const root = svg.append("g").attr("transform", `translate(${MARGIN.left},${MARGIN.top})`);
  const contourLayer = root.append("g").attr("clip-path", "url(#clip)");
  const xAxis = root.append("g").attr("transform", `translate(0,${innerH})`);
  const yAxis = root.append("g");
  const overlay = root.append("rect").attr("class", "overlay").attr("width", innerW).attr("height", innerH)
    .attr("fill", "transparent");
  const pathLayer = root.append("g").attr("clip-path", "url(#clip)").attr("pointer-events", "none");
  const markLayer = root.append("g").attr("clip-path", "url(#clip)").attr("pointer-events", "none");
  const startMark = root.append("circle").attr("class", "start").attr("r", 6).attr("fill", "black")
    .attr("stroke", "white").attr("stroke-width", 1.5);
  let x = d3.scaleLinear(), y = d3.scaleLinear();
  let drawnSurface = null;

  function drawSurface() {
    const s = surfaces.get(state.surface);
    const key = `${s.name}:${state.condition}`;
    if (drawnSurface === key) return;
    drawnSurface = key;
    const [x0, x1, y0, y1] = s.window;
    x = d3.scaleLinear([x0, x1], [0, innerW]);
    y = d3.scaleLinear([y0, y1], [innerH, 0]);
    xAxis.call(d3.axisBottom(x).ticks(8));
    yAxis.call(d3.axisLeft(y).ticks(6));
    const params = { ...s.params, ...(s.parameter ? { [s.parameter.key]: state.condition } : {}) };
    const nx = GRID, ny = Math.round(GRID * innerH / innerW);
    const dx = (x1 - x0) / (nx - 1), dy = (y1 - y0) / (ny - 1);
    const f = math.SURFACES[s.name].value;
    let z = new Float64Array(nx * ny);
    for (let j = 0; j < ny; j++) for (let i = 0; i < nx; i++) z[j * nx + i] = f(x0 + i * dx, y0 + j * dy, params);
    let [lo, hi] = d3.extent(z);
    let thresholds;
    if (s.log_levels) { // as the PNGs: shift to positive, log-spaced levels
      const shift = -lo + 1e-3 * Math.max(hi - lo, 1e-12);
      z = z.map((v) => v + shift);
      [lo, hi] = [lo + shift, hi + shift];
      thresholds = d3.range(s.levels).map((k) => lo * Math.pow(hi / lo, k / (s.levels - 1)));
    } else {
      thresholds = d3.range(s.levels).map((k) => lo + (hi - lo) * k / (s.levels - 1));
    }
    const contours = d3.contours().size([nx, ny]).thresholds(thresholds)(z);
    // grid value (i, j) sits at grid coordinate (i + 0.5, j + 0.5) in d3-contour's output
    const project = d3.geoTransform({
      point(gx, gy) { this.stream.point(x(x0 + (gx - 0.5) * dx), y(y0 + (gy - 0.5) * dy)); },
    });
    const shade = (i) => d3.interpolateGreys(0.04 + 0.5 * i / Math.max(thresholds.length - 1, 1)); // light = low
    contourLayer.selectAll("path").data(contours).join("path")
      .attr("d", d3.geoPath(project)).attr("fill", (_, i) => shade(i))
      .attr("stroke", "#777").attr("stroke-width", 0.4);
    const marks = [
      ...s.minima.map((m) => ({ p: m, type: d3.symbolStar, fill: "gold", size: 180, label: "minimum" })),
      ...s.saddles.map((m) => ({ p: m, type: d3.symbolX, fill: "white", size: 110, label: "saddle point" })),
    ];
    markLayer.selectAll("path.mark").data(marks).join("path").attr("class", (d) => `mark ${d.label.split(" ")[0]}`)
      .attr("d", (d) => d3.symbol(d.type, d.size)()).attr("transform", (d) => `translate(${x(d.p[0])},${y(d.p[1])})`)
      .attr("fill", (d) => d.fill).attr("stroke", "black").attr("stroke-width", (d) => (d.fill === "white" ? 2.5 : 1))
      .selectAll("title").data((d) => [d]).join("title").text((d) => `${d.label} (${format(d.p[0])}, ${format(d.p[1])})`);
    const value = s.parameter ? ` (${s.parameter.label.split(" ")[0]} = ${format(state.condition)})` : "";
    document.getElementById("formula").textContent = `f(x, y) = ${s.formula}${value} — ${s.doc}`;
  }

  const clampPx = (v) => Math.max(-CLAMP, Math.min(CLAMP, v));

  /** Run every enabled optimizer from the start and draw: what a drag or a slider triggers. */
  function runAll() {
    const s = surfaces.get(state.surface);
    const params = { ...s.params, ...(s.parameter ? { [s.parameter.key]: state.condition } : {}) };
    const results = {};
    optimizers.filter((o) => state.on.has(o.name)).forEach((o) => {
      const values = state.opt[o.name];
      results[o.name] = math.run({
        surface: s.name, params, minima: s.minima, rule: o.rule, hypers: hypersOf(o, values),
        start: state.start, steps: state.steps, noise: o.noisy ? state.noise : 0, seed: state.seed, tol: spec.tol,
      });
    });
    return results;
  }

  /** torch keyword arguments for optimizer o from its slider values (beta1, beta2 -> betas). */
  function hypersOf(o, values) {
    const h = JSON.parse(JSON.stringify(o.hypers));
    h.lr = values.lr;
    o.sliders.forEach((key) => {
      const slider = spec.sliders[key];
      if (slider.index === null) h[slider.hyper] = values[key]; else h[slider.hyper][slider.index] = values[key];
    });
    return h;
  }

  const line = d3.line().x((p) => clampPx(x(p[0]))).y((p) => clampPx(y(p[1])));

  function drawPaths(results) {
    const shown = optimizers.filter((o) => results[o.name]).map((o) => ({ o, t: results[o.name] }));
    pathLayer.selectAll("path.trajectory").data(shown, (d) => d.o.name).join("path")
      .attr("class", "trajectory").attr("data-optimizer", (d) => d.o.name).attr("fill", "none")
      .attr("stroke", (d) => colour.get(d.o.name)).attr("stroke-width", (d, i) => 1.2 + 2.2 * (shown.length - 1 - i) / Math.max(shown.length - 1, 1))
      .attr("stroke-opacity", 0.9).attr("d", (d) => line(d.t.points));
    pathLayer.selectAll("path.end").data(shown, (d) => d.o.name).join("path").attr("class", "end")
      .attr("d", (d) => d3.symbol(d.t.status === "diverged" ? d3.symbolX : d3.symbolCircle, 50)())
      .attr("transform", (d) => {
        const p = d.t.points[d.t.points.length - 1];
        return `translate(${clampPx(x(p[0]))},${clampPx(y(p[1]))})`;
      })
      .attr("fill", (d) => colour.get(d.o.name)).attr("stroke", (d) => (d.t.status === "diverged" ? colour.get(d.o.name) : "black"))
      .attr("stroke-width", (d) => (d.t.status === "diverged" ? 3 : 1));
    startMark.attr("cx", x(state.start[0])).attr("cy", y(state.start[1]));
  }

  function statusText(t) { return t.status === "diverged" ? `diverged at step ${t.divergedAt}` : t.status; }

  function readout(results) {
    const rows = optimizers.filter((o) => results[o.name]).map((o) => {
      const t = results[o.name], p = t.points[t.points.length - 1];
      const nearest = t.nearest ? ` to (${format(t.nearest[0], 3)}, ${format(t.nearest[1], 3)})` : "";
      return { o, cells: [statusText(t), `(${format(p[0])}, ${format(p[1])})`, format(t.losses[t.losses.length - 1]),
        `${format(t.distance, 3)}${nearest}`, t.stepsToTol === null ? "did not" : String(t.stepsToTol)], t };
    });
    d3.select("#readout tbody").selectAll("tr").data(rows, (r) => r.o.name).join("tr")
      .attr("data-optimizer", (r) => r.o.name)
      .html((r) => `<td><span class="swatch" style="--colour:${colour.get(r.o.name)}"></span> ${r.o.label}</td>`
        + r.cells.map((c, i) => `<td class="${i === 0 && r.t.status === "diverged" ? "diverged" : ""}">${c}</td>`).join(""));
    optimizers.forEach((o) => {
      const t = results[o.name];
      document.querySelector(`.card[data-optimizer="${o.name}"] .line`).textContent = t
        ? `${statusText(t)} · final loss ${format(t.losses[t.losses.length - 1])} · ${format(t.distance, 3)} from the nearest minimum`
        : "off";
    });
  }

  const timings = [];
  let lastResults = {};
  /** Recompute and redraw; the time of the synchronous work (maths + DOM updates) goes to `timings`. */
  function recompute() {
    const begin = performance.now();
    drawSurface();
    lastResults = runAll();
    drawPaths(lastResults);
    readout(lastResults);
    timings.push(performance.now() - begin);
    if (timings.length > 2000) timings.splice(0, 1000);
    writeHash();
  }

  // -- controls --------------------------------------------------------------------------------------
  const widgets = { globals: {}, cards: {}, parameter: null };

  function buildControls() {
    const select = document.getElementById("surface");
    spec.surfaces.forEach((s) => select.append(new Option(s.name, s.name)));
    select.addEventListener("change", () => {
      state = surfaceDefaults(surfaces.get(select.value), state);
      syncControls();
      recompute();
    });
    const globals = document.getElementById("globals");
    const steps = { ...spec.controls.steps }, noise = { ...spec.controls.noise };
    widgets.globals.steps = makeSlider(steps, "steps", (v) => { state.steps = Math.round(v); recompute(); }, 1);
    widgets.globals.noise = makeSlider(noise, "noise", (v) => { state.noise = v; recompute(); }, 0.01);
    const seedLabel = document.createElement("label");
    seedLabel.className = "slider";
    seedLabel.innerHTML = `<span>seed</span><input type="number" id="seed" min="0" max="${spec.controls.seed.high}" step="1">`;
    const seedInput = seedLabel.querySelector("input");
    seedInput.addEventListener("input", () => {
      const v = Number(seedInput.value);
      if (Number.isInteger(v) && within(spec.controls.seed, v)) { state.seed = v; recompute(); }
    });
    widgets.globals.seed = { element: seedLabel, set(v) { seedInput.value = v; } };
    const reset = document.createElement("button");
    reset.textContent = "reset";
    reset.title = "back to the surface's default start and learning rates";
    reset.addEventListener("click", () => { state = surfaceDefaults(surfaces.get(state.surface), { ...state, opt: null }); syncControls(); recompute(); });
    globals.append(widgets.globals.steps.element, widgets.globals.noise.element, seedLabel, reset);

    const cards = document.getElementById("optimizers");
    optimizers.forEach((o) => {
      const card = document.createElement("div");
      card.className = "card";
      card.dataset.optimizer = o.name;
      card.style.setProperty("--colour", colour.get(o.name));
      card.innerHTML = `<h2><input type="checkbox" id="on-${o.name}"><label for="on-${o.name}">${o.label}</label>`
        + `<span class="summary">${o.name} · ${o.summary}</span></h2><code class="rule"></code><div class="sliders"></div><div class="line"></div>`;
      card.querySelector("code.rule").textContent = o.update;
      const box = card.querySelector("input[type=checkbox]");
      box.addEventListener("change", () => {
        if (box.checked) state.on.add(o.name); else state.on.delete(o.name);
        card.classList.toggle("off", !box.checked);
        recompute();
      });
      const sliders = {};
      ["lr", ...o.sliders].forEach((key) => {
        sliders[key] = makeSlider(spec.sliders[key], `${o.name}-${key}`, (v) => { state.opt[o.name][key] = v; recompute(); }, 0.001);
        card.querySelector(".sliders").append(sliders[key].element);
      });
      widgets.cards[o.name] = { card, box, sliders };
      cards.append(card);
    });
    const noisy = optimizers.filter((o) => !o.noisy).map((o) => o.label).join(", ");
    document.getElementById("notes").textContent = `Gradient noise σ·ξ (ξ ~ N(0, I), one pair per step from the seed, `
      + `the same for every optimizer) stands in for a minibatch's error; ${noisy} is full-batch and sees the exact gradient. `
      + `"Within tol" is the first step within ${spec.tol} of a known minimum (★); ✖ marks saddle points and where a path diverged.`;
    document.getElementById("tol-head").textContent = `within ${spec.tol} at step`;
    document.getElementById("footer").textContent = `descentlab ${spec.version} · drawn with ${spec.d3.name} `
      + `${spec.d3.version} (${spec.d3.licence} licence, inlined: the page needs no network)`;
  }

  function syncControls() {
    const s = surfaces.get(state.surface);
    document.getElementById("surface").value = s.name;
    const row = document.getElementById("parameter-row");
    row.replaceChildren();
    if (s.parameter) {
      widgets.parameter = makeSlider(s.parameter, s.parameter.key, (v) => { state.condition = v; recompute(); });
      widgets.parameter.set(state.condition);
      row.append(widgets.parameter.element);
    }
    widgets.globals.steps.set(state.steps);
    widgets.globals.noise.set(state.noise);
    widgets.globals.seed.set(state.seed);
    optimizers.forEach((o) => {
      const w = widgets.cards[o.name];
      w.box.checked = state.on.has(o.name);
      w.card.classList.toggle("off", !w.box.checked);
      Object.entries(w.sliders).forEach(([key, slider]) => slider.set(state.opt[o.name][key]));
    });
  }

  function loadHash() {
    const { state: next, errors } = fromHash(location.hash, openingState());
    state = next;
    const box = document.getElementById("hash-errors");
    box.hidden = errors.length === 0;
    box.textContent = errors.length ? `Ignored in the link (unknown or out of range): ${errors.join(", ")}` : "";
    syncControls();
    recompute();
  }

  // -- start point: click or drag -------------------------------------------------------------------------
  function setStartFromPixel(px, py) {
    const [x0, x1, y0, y1] = surfaces.get(state.surface).window;
    const round = (v, lo, hi) => {
      const digits = Math.max(0, 4 - Math.floor(Math.log10(hi - lo)));
      return Number(Math.min(hi, Math.max(lo, v)).toFixed(digits));
    };
    state.start = [round(x.invert(px), x0, x1), round(y.invert(py), y0, y1)];
    recompute();
  }

  const drag = d3.drag().container(root.node())
    .on("start drag", (event) => setStartFromPixel(event.x, event.y));
  overlay.call(drag);
  startMark.call(drag);

  buildControls();
  loadHash();
  window.addEventListener("hashchange", () => { if (location.hash !== writtenHash) loadHash(); });

  /** For tests and the console: the state, the last results, the recompute timings. */
  window.landscapePage = {
    spec, get state() { return state; }, get results() { return lastResults; }, timings, recompute,
    /** The state as plain JSON (the set of optimizers switched on as a list, in card order). */
    snapshot: () => ({ ...state, on: optimizers.filter((o) => state.on.has(o.name)).map((o) => o.name) }),
    toHash: () => toHash(state),
    /** Viewport coordinates of the surface point p (where a click or a drag lands on it). */
    clientPoint(p) {
      const r = svg.node().getBoundingClientRect();
      return [r.left + MARGIN.left + x(p[0]), r.top + MARGIN.top + y(p[1])];
    },
  };
})();
