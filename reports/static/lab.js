/* The interventions lab of the reverse-task report: controls for the ablations of interp.ablation and the
 * patterns of interp.patterns, applied by the in-page forward pass (model.js) to the explorer's sequence and
 * to the lab's batch of embedded sequences (#lab-data, reports/lab.py), with live measures. The state lives
 * in the URL fragment (#lab&...), and "copy as Python" writes the notebook code of the same intervention.
 * state = {pe: {method, shift, seed, band, alpha}, attn: {target, tau, replace, mix},
 *          heads: {"l.h": "zero" | "mean"}, pins: [{layer, head, query, key}]} */
(function () {
  "use strict";
  var RE = window.ReverseEncoder, source = document.getElementById("lab-data"), root = document.getElementById("lab");
  if (!RE || !RE.model || !source || !root) return;
  var model = RE.model, cfg = model.cfg, lab = JSON.parse(source.textContent), N = lab.seq_len;
  var PE_METHODS = ["none", "zero", "mean", "shuffle", "shift", "mirror", "remove_band", "keep_band"];
  var REPLACE = ["none", "flip", "flip+1", "flip-1", "uniform"];
  var L = cfg.n_layers, H = cfg.n_heads, hasPE = cfg.positional_embedding !== "none";
  function $(id) { return document.getElementById("lab-" + id); }
  function heads() { var out = []; for (var l = 0; l < L; l++) for (var h = 0; h < H; h++) out.push(l + "." + h); return out; }

  function defaults() {
    return { pe: { method: "none", shift: 1, seed: 0, band: 0, alpha: 1 },
      attn: { target: "all", tau: 1, replace: "none", mix: 0 }, heads: {}, pins: [] };
  }
  var state = defaults();

  // --- controls <-> state ------------------------------------------------------------------------------
  var tauExponent = $("tau"), alpha = $("alpha"), mix = $("mix");
  function readControls() {
    var shift = Math.max(-N, Math.min(N, Math.round(+$("pe-shift").value || 0))); // an integer k, as interp takes
    state.pe = { method: $("pe-method").value, shift: shift, seed: +$("pe-seed").value,
      band: +$("pe-band").value, alpha: +alpha.value };
    state.attn = { target: $("attn-target").value, tau: Math.pow(2, +tauExponent.value), replace: $("attn-replace").value, mix: +mix.value };
    state.heads = {};
    heads().forEach(function (key) { var v = $("head-" + key.replace(".", "-")).value; if (v !== "none") state.heads[key] = v; });
  }
  function writeControls() {
    $("pe-method").value = state.pe.method; $("pe-shift").value = String(state.pe.shift);
    $("pe-seed").value = String(state.pe.seed); $("pe-band").value = String(state.pe.band); alpha.value = String(state.pe.alpha);
    $("attn-target").value = state.attn.target; tauExponent.value = String(Math.round(Math.log2(state.attn.tau) * 4) / 4);
    $("attn-replace").value = state.attn.replace; mix.value = String(state.attn.mix);
    heads().forEach(function (key) { $("head-" + key.replace(".", "-")).value = state.heads[key] || "none"; });
  }
  function showValues() {
    $("alpha-value").textContent = state.pe.alpha.toFixed(2);
    $("tau-value").textContent = state.attn.tau.toFixed(3);
    $("mix-value").textContent = state.attn.mix.toFixed(2);
    $("pe-shift").disabled = state.pe.method !== "shift";
    $("pe-seed").disabled = state.pe.method !== "shuffle";
    $("pe-band").disabled = state.pe.method !== "remove_band" && state.pe.method !== "keep_band";
    $("pins").textContent = state.pins.length ? state.pins.map(function (p) {
      return "head " + p.layer + "." + p.head + ": query " + p.query + " \u2192 key " + p.key; }).join("; ") : "none";
  }

  // The interventions of the state, as model.js takes them (identity settings are left out).
  function interventions() {
    var a = state.attn, attn = [], hs = [];
    if (a.tau !== 1 || a.replace !== "none" || a.mix !== 0) {
      heads().forEach(function (key) {
        if (a.target !== "all" && a.target !== key) return;
        var lh = key.split(".");
        attn.push({ layer: +lh[0], head: +lh[1], tau: a.tau, replace: a.replace, mix: a.mix });
      });
    }
    Object.keys(state.heads).forEach(function (key) { var lh = key.split("."); hs.push({ layer: +lh[0], head: +lh[1], method: state.heads[key] }); });
    var pe = hasPE && (state.pe.method !== "none" || state.pe.alpha !== 1) ? state.pe : null;
    if (!pe && !attn.length && !hs.length && !state.pins.length) return null;
    return new RE.Interventions({ pe: pe || { method: "none", alpha: 1 }, attn: attn, heads: hs, pins: state.pins });
  }

  // --- the URL fragment: #lab&pe=shift:1&alpha=0.5&at=all&tau=0.5&rep=flip&mix=0.2&heads=0.1:zero&pins=0.0.3.12
  function encode() {
    var p = new URLSearchParams(), pe = state.pe, a = state.attn;
    if (pe.method !== "none") p.set("pe", pe.method + (pe.method === "shift" ? ":" + pe.shift : pe.method === "shuffle" ? ":" + pe.seed : /_band$/.test(pe.method) ? ":" + pe.band : ""));
    if (pe.alpha !== 1) p.set("alpha", String(pe.alpha));
    if (a.target !== "all") p.set("at", a.target);
    if (a.tau !== 1) p.set("tau", String(Math.log2(a.tau)));
    if (a.replace !== "none") p.set("rep", a.replace);
    if (a.mix) p.set("mix", String(a.mix));
    var hs = Object.keys(state.heads).map(function (k) { return k + ":" + state.heads[k]; });
    if (hs.length) p.set("heads", hs.join(","));
    if (state.pins.length) p.set("pins", state.pins.map(function (q) { return [q.layer, q.head, q.query, q.key].join("."); }).join(","));
    var text = p.toString();
    return "#lab" + (text ? "&" + text : "");
  }
  function integer(text, low, high, what) {
    if (!/^-?\d+$/.test(text) || +text < low || +text > high) throw new Error(what + " must be an integer in " + low + "\u2013" + high + ", not \u201c" + text + "\u201d");
    return +text;
  }
  function number(text, input, what) { // a value the slider can take, written as a decimal number
    var v = Number(text), low = +input.min, high = +input.max, step = +input.step;
    // Number() reads " " and "" as 0 and "0x1" as 1: only a plain decimal is a value
    if (!/^-?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$/.test(text) || !isFinite(v) || v < low || v > high || Math.abs((v - low) / step - Math.round((v - low) / step)) > 1e-9)
      throw new Error(what + " must be a slider value in " + low + "\u2013" + high + " (steps of " + step + "), not \u201c" + text + "\u201d");
    return v;
  }
  function decodeFragment(hash) { // -> state, or throws an Error naming the problem
    // a literal "+" (rep=flip+1, as typed in a link) is a plus, not a space: no lab value holds a space
    var s = defaults(), p = new URLSearchParams(hash.slice(4).replace(/\+/g, "%2B")), known = ["pe", "alpha", "at", "tau", "rep", "mix", "heads", "pins"];
    p.forEach(function (value, key) { if (known.indexOf(key) < 0) throw new Error("unknown field \u201c" + key + "\u201d"); });
    if (p.has("pe")) {
      if (!hasPE) throw new Error("this model has no positional encoding");
      var parts = p.get("pe").split(":"), m = parts[0];
      if (PE_METHODS.indexOf(m) < 0 || (/_band$/.test(m) && !lab.num_bands)) throw new Error("unknown positional-encoding method \u201c" + m + "\u201d");
      var needs = { shift: 1, shuffle: 1, remove_band: 1, keep_band: 1 }[m] || 0;
      if (parts.length !== 1 + needs) throw new Error("pe=" + p.get("pe") + " has the wrong number of parameters");
      s.pe.method = m;
      if (m === "shift") s.pe.shift = integer(parts[1], -N, N, "the shift");
      if (m === "shuffle") s.pe.seed = integer(parts[1], 0, Object.keys(lab.permutations).length - 1, "the shuffle seed");
      if (/_band$/.test(m)) s.pe.band = integer(parts[1], 0, lab.num_bands - 1, "the band");
    }
    if (p.has("alpha")) { if (!hasPE) throw new Error("this model has no positional encoding"); s.pe.alpha = number(p.get("alpha"), alpha, "alpha"); }
    if (p.has("at")) { if (heads().indexOf(p.get("at")) < 0) throw new Error("head " + p.get("at") + " does not exist in this model"); s.attn.target = p.get("at"); }
    if (p.has("tau")) s.attn.tau = Math.pow(2, number(p.get("tau"), tauExponent, "log2 tau"));
    if (p.has("rep")) { if (REPLACE.indexOf(p.get("rep")) < 0) throw new Error("unknown pattern \u201c" + p.get("rep") + "\u201d"); s.attn.replace = p.get("rep"); }
    if (p.has("mix")) s.attn.mix = number(p.get("mix"), mix, "the neighbour mix");
    if (p.has("heads")) p.get("heads").split(",").forEach(function (item) {
      var kv = item.split(":");
      if (kv.length !== 2 || heads().indexOf(kv[0]) < 0 || ["zero", "mean"].indexOf(kv[1]) < 0) throw new Error("head ablation \u201c" + item + "\u201d is not layer.head:zero|mean of this model");
      s.heads[kv[0]] = kv[1];
    });
    if (p.has("pins")) p.get("pins").split(",").forEach(function (item) {
      var v = item.split(".");
      if (v.length !== 4) throw new Error("pin \u201c" + item + "\u201d is not layer.head.query.key");
      s.pins.push({ layer: integer(v[0], 0, L - 1, "a pin's layer"), head: integer(v[1], 0, H - 1, "a pin's head"),
        query: integer(v[2], 0, N - 1, "a pin's query"), key: integer(v[3], 0, N - 1, "a pin's key") });
    });
    return s;
  }

  // --- the Python snippet ------------------------------------------------------------------------------
  function py(v) { return JSON.stringify(v); }
  function python() {
    var lines = [], ctx = [], pe = state.pe, a = state.attn, anyMean = false;
    if (hasPE && pe.method !== "none") {
      var arg = pe.method === "shift" ? ", shift=" + pe.shift : pe.method === "shuffle" ? ", seed=" + pe.seed : /_band$/.test(pe.method) ? ", band=" + pe.band : "";
      ctx.push("ablate_positional_encoding(model, " + py(pe.method) + arg + ")");
    }
    if (hasPE && pe.alpha !== 1) ctx.push("ablate_positional_encoding(model, \"scale\", alpha=" + pe.alpha + ")");
    (interventions() || { state: { attn: [] } }).state.attn.forEach(function (x) {
      var at = "replace_pattern(model, " + x.layer + ", " + x.head + ", ";
      if (x.tau !== 1) ctx.push(at + "partial(patterns.temperature, tau=" + x.tau + "))");
      if (x.replace === "flip") ctx.push(at + "patterns.flip)");
      if (x.replace === "flip+1" || x.replace === "flip-1") ctx.push(at + "partial(patterns.flip, shift=" + (x.replace === "flip+1" ? 1 : -1) + "))");
      if (x.replace === "uniform") ctx.push(at + "patterns.uniform)");
      if (x.mix) ctx.push(at + "partial(patterns.neighbour_mix, s=" + x.mix + "))");
    });
    state.pins.forEach(function (p) { ctx.push("replace_pattern(model, " + p.layer + ", " + p.head + ", partial(patterns.pin, query=" + p.query + ", key=" + p.key + "))"); });
    Object.keys(state.heads).forEach(function (key) {
      var lh = key.split("."), m = state.heads[key];
      anyMean = anyMean || m === "mean";
      ctx.push("ablate_heads(model, [(" + lh[0] + ", " + lh[1] + ")], " + py(m) + (m === "mean" ? ", means=means" : "") + ")");
    });
    lines.push("# The report lab's intervention" + (ctx.length ? "" : " (none: the model as trained)") + ", with the toolkit's context managers.");
    lines.push("from contextlib import ExitStack", "from functools import partial", "", "import torch", "");
    lines.push("from analyses.frame.sequences import token_batches", "from interp import metrics, patterns");
    lines.push("from interp.ablation import ablate_heads, ablate_positional_encoding, head_means, replace_pattern");
    lines.push("from models import load_model", "");
    lines.push("model = load_model(" + (lab.checkpoint ? py(lab.checkpoint) : "None") + ")" + (lab.checkpoint ? "" : "  # the default model; name the report's checkpoint"));
    lines.push("tokens = next(token_batches(" + lab.count + ", " + N + ", " + cfg.d_vocab + ", " + lab.seed + ", " + lab.count + "))  # the lab's sequences");
    if (anyMean) lines.push("with torch.no_grad():", "    means = head_means(model, [tokens])  # z\u0304 of every head over these sequences, as the page's");
    lines.push("with torch.no_grad(), ExitStack() as stack:");
    ctx.forEach(function (c) { lines.push("    stack.enter_context(" + c + ")"); });
    lines.push("    logits, cache = model.run_with_cache(tokens)");
    lines.push("correct = metrics.reversal_correct(logits, tokens)");
    lines.push("print(f\"digits correct: {int(correct.sum())} of {correct.numel()}\")");
    lines.push("print(f\"sequences correct: {int(correct.all(-1).sum())} of {correct.shape[0]}\")");
    lines.push("for layer in range(model.cfg.n_layers):");
    lines.push("    pattern = cache[f\"blocks.{layer}.attn.hook_pattern\"]");
    lines.push("    flip, near = metrics.flip_mass(pattern).mean((0, 2)), metrics.neighbour_mass(pattern).mean((0, 2))");
    lines.push("    for head in range(model.cfg.n_heads):");
    lines.push("        print(f\"head {layer}.{head}: flip mass {flip[head]:.4f}, neighbour mass {near[head]:.4f}\")");
    return lines.join("\n") + "\n";
  }

  // --- measures on the batch ---------------------------------------------------------------------------
  function measure(iv) {
    var count = lab.tokens.length, perPos = new Float64Array(N), flip = [], near = [], digits = 0, seqs = 0;
    var out = model.run(lab.tokens, iv), pred = out.predictions, b, i, l, h;
    for (b = 0; b < count; b++) {
      var all = true, t = lab.tokens[b];
      for (i = 0; i < N; i++) if (pred[b * N + i] === t[N - 1 - i]) { perPos[i] += 1; digits += 1; } else all = false;
      if (all) seqs += 1;
    }
    for (l = 0; l < L; l++) for (h = 0; h < H; h++) { // means over sequences and queries, as interp.metrics
      var A = out.patterns[l], f = 0, m = 0;
      for (b = 0; b < count; b++) {
        for (i = 0; i < N; i++) {
          var o = ((b * H + h) * N + i) * N, k = N - 1 - i;
          f += A[o + k];
          for (var e = 0; e < RE.NEIGHBOURS.length; e++) { var j = k + RE.NEIGHBOURS[e]; if (j >= 0 && j < N) m += A[o + j]; }
        }
      }
      flip.push(f / N / count); near.push(m / N / count);
    }
    return { digits: digits, sequences: seqs, count: count, perPosition: Array.prototype.map.call(perPos, function (v) { return v / count; }),
      flipMass: flip, neighbourMass: near };
  }
  var clean = measure(null);

  function pct(x) { return (100 * x).toFixed(1) + "%"; }
  function render(m) {
    var rows = [["digits reversed correctly", m.digits + " of " + N * m.count + " (" + pct(m.digits / N / m.count) + ")",
      clean.digits + " (" + pct(clean.digits / N / clean.count) + ")"],
    ["sequences entirely right", m.sequences + " of " + m.count + " (" + pct(m.sequences / m.count) + ")",
      clean.sequences + " (" + pct(clean.sequences / clean.count) + ")"]];
    heads().forEach(function (key, i) {
      rows.push(["head " + key + " flip mass", m.flipMass[i].toFixed(4), clean.flipMass[i].toFixed(4)]);
      rows.push(["head " + key + " neighbour mass (\u00b11, \u00b12)", m.neighbourMass[i].toFixed(4), clean.neighbourMass[i].toFixed(4)]);
    });
    var body = $("measures");
    body.textContent = "";
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      r.forEach(function (text, i) { var td = document.createElement("td"); td.className = i ? "value" : "label"; td.textContent = text; tr.appendChild(td); });
      body.appendChild(tr);
    });
    var strip = $("strip");
    strip.textContent = "";
    m.perPosition.forEach(function (acc, i) {
      var cell = document.createElement("span"), g = Math.round(200 * acc);
      cell.className = "strip-cell";
      cell.style.background = "rgb(" + (230 - g) + "," + (120 + Math.round(g / 2)) + "," + (120 - Math.round(g / 3)) + ")";
      cell.textContent = Math.round(100 * acc);
      cell.title = "output position " + i + ": " + pct(acc) + " correct (without interventions " + pct(clean.perPosition[i]) + ")";
      strip.appendChild(cell);
    });
    root.dataset.result = JSON.stringify(m);
  }

  var pending = false;
  function update() { // coalesce bursts of slider events into one recomputation per frame
    if (pending) return;
    pending = true;
    window.requestAnimationFrame(function () { pending = false; apply(); });
  }
  function apply() {
    var started = performance.now(), iv = interventions();
    showValues();
    RE.explorer.setInterventions(iv);
    render(iv ? measure(iv) : clean);
    var ms = performance.now() - started;
    $("timing").dataset.ms = String(ms);
    $("timing").textContent = "Measured on " + lab.tokens.length + " sequences in " + ms.toFixed(0) + " ms (the explorer's sequence included).";
    root.dataset.updates = String(+(root.dataset.updates || 0) + 1);
    if (window.history && window.history.replaceState) window.history.replaceState(null, "", encode());
    $("python").value = python();
  }

  function setPin(layer, head, query, key) { // toggles: the same pin again removes it
    var same = state.pins.filter(function (p) { return p.layer === layer && p.head === head && p.query === query; });
    state.pins = state.pins.filter(function (p) { return same.indexOf(p) < 0; });
    if (!same.length || same[0].key !== key) state.pins.push({ layer: layer, head: head, query: query, key: key });
    apply();
  }
  RE.onPin = setPin;

  root.querySelectorAll("select, input[type=range], input[type=number]").forEach(function (c) {
    if (c.id.indexOf("lab-pin-") === 0) return;
    c.addEventListener("input", function () { readControls(); update(); });
    c.addEventListener("change", function () { readControls(); update(); });
  });
  $("pin-add").addEventListener("click", function () {
    var q = $("pin-query"), k = $("pin-key"), view = RE.explorer.view();
    var n = view.sequence === "typed" ? Math.min(N, view.digits.replace(/[^0-9]/g, "").length || N) : N;
    if (!/^\d+$/.test(q.value) || !/^\d+$/.test(k.value) || +q.value >= n || +k.value >= n) {
      $("pin-status").textContent = "Query and key must be positions 0\u2013" + (N - 1) + ".";
      return;
    }
    $("pin-status").textContent = "";
    setPin(view.layer, view.head, +q.value, +k.value);
  });
  $("pin-clear").addEventListener("click", function () { state.pins = []; apply(); });
  $("reset").addEventListener("click", function () { state = defaults(); writeControls(); $("fragment-note").textContent = ""; apply(); });
  $("copy").addEventListener("click", function () {
    var area = $("python"), done = $("copy-status");
    area.value = python();
    area.focus();
    area.select();
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(area.value).then(function () { done.textContent = "Copied to the clipboard."; },
        function () { done.textContent = "Selected below: press Ctrl+C to copy."; });
    } else done.textContent = "Selected below: press Ctrl+C to copy.";
  });

  function fromFragment() {
    var hash = window.location.hash;
    if (hash.indexOf("#lab") !== 0) return false;
    try {
      state = decodeFragment(hash);
      $("fragment-note").textContent = "";
    } catch (error) {
      state = defaults();
      $("fragment-note").textContent = "The link's lab settings were ignored (" + error.message + "); the lab starts from the model as trained.";
    }
    writeControls();
    apply();
    return true;
  }
  window.addEventListener("hashchange", fromFragment);
  RE.lab = { state: function () { return JSON.parse(JSON.stringify(state)); }, python: python, encode: encode,
    patterns: function (index) { var iv = interventions(); return model.forward(lab.tokens[index], iv).patterns.map(function (hs) {
      return hs.map(function (rows) { return rows.map(function (r) { return Array.prototype.slice.call(r); }); }); }); } };
  if (!fromFragment()) { writeControls(); showValues(); render(clean); $("python").value = python(); }
})();
