/* Attention explorer of the reverse-task report. No library, no network: everything it needs is in the
 * page (#explorer-data, written by reports/explorer.py). Embedded sequences show the patterns Python read
 * from hook_pattern; typed digits, and every sequence while the lab (lab.js) intervenes, run the model's
 * forward pass of model.js. On load the page recomputes the embedded sequences and prints the largest
 * difference from Python's patterns. A click on a cell asks the lab (RE.onPin) to pin that query row
 * to that key; the lab's pin form does the same from the keyboard. */
(function () {
  "use strict";
  var root = document.getElementById("explorer");
  var source = document.getElementById("explorer-data");
  if (!root || !source) return;
  var data = JSON.parse(source.textContent);
  var cfg = data.config;

  var labSource = document.getElementById("lab-data");
  var RE = window.ReverseEncoder;
  var model = new RE.Model(data, labSource ? JSON.parse(labSource.textContent) : null);
  RE.model = model;
  var iv = null; // the lab's interventions (ReverseEncoder.Interventions), null for the model as trained
  function forward(tokens, interventions) { return model.forward(tokens, interventions); }

  // --- the page --------------------------------------------------------------------------------------
  function el(id) { return document.getElementById("explorer-" + id); }
  var els = { sequence: el("sequence"), layer: el("layer"), head: el("head"), digits: el("digits"),
    status: el("status"), grid: el("heatmap"), readout: el("readout"), rows: el("rows"), note: el("note"),
    check: el("check"), scale: el("scale"), scaleMax: el("scale-max") };
  var current = null;

  function colour(w) { // white (0) -> dark blue (1), linear in the weight
    var t = Math.max(0, Math.min(1, w));
    return "rgb(" + Math.round(255 - 247 * t) + "," + Math.round(255 - 207 * t) + "," + Math.round(255 - 148 * t) + ")";
  }
  function div(cls, text) { var e = document.createElement("div"); e.className = cls; if (text !== undefined) e.textContent = text; return e; }

  function render() {
    var layer = +els.layer.value, head = +els.head.value, t = current.tokens, n = t.length;
    var A = current.patterns[layer][head], size = n <= 16 ? 24 : n <= 24 ? 18 : 13, flip = 0, top = 1;
    var pins = iv ? iv.pinsFor(layer, head) || {} : {};
    if (els.scale.checked) { // stretch the colours to this pattern's largest weight (diffuse heads)
      top = 0;
      A.forEach(function (row) { for (var j = 0; j < n; j++) top = Math.max(top, row[j]); });
    }
    els.scaleMax.textContent = els.scale.checked ? top.toFixed(3) : "1";
    els.grid.textContent = "";
    els.grid.style.gridTemplateColumns = "3.2em repeat(" + n + ", " + size + "px)";
    els.grid.appendChild(div("corner", "q \\ k"));
    for (var k = 0; k < n; k++) els.grid.appendChild(div("label key", k + ":" + t[k]));
    for (var q = 0; q < n; q++) {
      els.grid.appendChild(div("label query", q + ":" + t[q]));
      for (k = 0; k < n; k++) {
        var w = A[q][k], cell = div("cell" + (k === n - 1 - q ? " flip" : "") + (pins[q] === k ? " pinned" : ""));
        cell.style.background = colour(w / top);
        cell.style.height = size + "px";
        cell.dataset.q = q; cell.dataset.k = k; cell.dataset.w = String(w);
        cell.title = "query " + q + " (digit " + t[q] + ") -> key " + k + " (digit " + t[k] + "): " + w.toFixed(4);
        els.grid.appendChild(cell);
      }
      flip += A[q][n - 1 - q] / n;
    }
    var target = t.slice().reverse();
    var rows = [["input", t], ["target (input reversed)", target], ["model output", current.predictions]];
    if (current.clean) rows.push(["output without the interventions", current.clean]);
    els.rows.textContent = "";
    rows.forEach(function (r, index) {
      var line = div("digits-row"), name = div("row-name", r[0]);
      line.appendChild(name);
      r[1].forEach(function (v, i) {
        line.appendChild(div(index >= 2 && v !== target[i] ? "digit wrong" : "digit", String(v)));
      });
      els.rows.appendChild(line);
    });
    function right(predictions) { return predictions.filter(function (v, i) { return v === target[i]; }).length; }
    els.note.dataset.correct = String(right(current.predictions));
    els.note.dataset.flipMass = String(flip);
    els.note.textContent = current.origin + " Head " + layer + "." + head + ": flip mass on this sequence " +
      flip.toFixed(3) + " (uniform 1/N = " + (1 / n).toFixed(3) + "); " + right(current.predictions) + " of " + n +
      " digits reversed correctly" + (current.clean ? " (" + right(current.clean) + " without the interventions)." : ".");
    els.readout.textContent = "Hover a cell to read its weight; outlined cells are the flipped keys N\u22121\u2212i" +
      (RE.onPin ? "; click a cell to pin its query row to that key (the lab's interventions)." : ".");
  }

  var shown = { kind: "example", index: 0 };
  function compute(tokens, python, origin) { // the patterns shown: Python's if there is no intervention
    if (!iv && python) return { tokens: tokens, patterns: python.patterns, predictions: python.predictions, origin: origin.python };
    if (!iv) { var plain = forward(tokens); return { tokens: tokens, patterns: plain.patterns, predictions: plain.predictions, origin: origin.page }; }
    var out = forward(tokens, iv);
    return { tokens: tokens, patterns: out.patterns, predictions: out.predictions, origin: origin.lab,
      clean: python ? python.predictions : forward(tokens).predictions };
  }

  function showExample(index) {
    var ex = data.examples[index], name = "Example sequence " + index;
    shown = { kind: "example", index: index };
    current = compute(ex.tokens, ex, {
      python: name + ": patterns from the model's forward pass in Python (hook_pattern).",
      lab: name + " under the lab's interventions: patterns computed in this page." });
    render();
  }

  function parseDigits(text) {
    var clean = text.replace(/[\s,]+/g, " ").trim(), tokens;
    if (!clean) return { error: "Type a sequence of digits." };
    if (cfg.d_vocab <= 10) {
      clean = clean.replace(/ /g, "");
      var bad = clean.match(new RegExp("[^0-" + (cfg.d_vocab - 1) + "]"));
      if (bad) return { error: "Only digits 0\u2013" + (cfg.d_vocab - 1) + " are tokens (found \u201c" + bad[0] + "\u201d)." };
      tokens = clean.split("").map(Number);
    } else {
      if (/[^0-9 ]/.test(clean)) return { error: "Separate the tokens 0\u2013" + (cfg.d_vocab - 1) + " by spaces or commas." };
      tokens = clean.split(" ").map(Number);
      if (tokens.some(function (v) { return v >= cfg.d_vocab; })) return { error: "Tokens must lie in 0\u2013" + (cfg.d_vocab - 1) + "." };
    }
    if (tokens.length > cfg.max_typed_length) return { error: "At most " + cfg.max_typed_length + " tokens." };
    return { tokens: tokens };
  }

  function labProblem(tokens) { // an intervention that cannot act on this length (mean ablation, pins)
    if (!iv) return null;
    var n = tokens.length, bad = null;
    (iv.state.heads || []).forEach(function (h) {
      if (h.method === "mean" && n !== cfg.n_ctx) bad = "mean ablation holds means of " + cfg.n_ctx + " positions";
    });
    (iv.state.pins || []).forEach(function (p) { if (p.query >= n || p.key >= n) bad = "a pin lies beyond position " + (n - 1); });
    return bad;
  }

  function showTyped() {
    var parsed = parseDigits(els.digits.value);
    if (parsed.error) { els.status.textContent = parsed.error; return; }
    var problem = labProblem(parsed.tokens);
    if (problem) { els.status.textContent = "The lab's interventions do not apply to " + parsed.tokens.length + " digits: " + problem + "."; return; }
    shown = { kind: "typed" };
    current = compute(parsed.tokens, null, {
      page: "Typed sequence: patterns computed in this page by the JavaScript forward pass.",
      lab: "Typed sequence under the lab's interventions: patterns computed in this page." });
    els.sequence.value = "typed";
    els.status.textContent = "";
    render();
  }

  function refresh() { if (shown.kind === "typed") showTyped(); else showExample(shown.index); }

  els.layer.addEventListener("change", render);
  els.head.addEventListener("change", render);
  els.scale.addEventListener("change", render);
  els.sequence.addEventListener("change", function () {
    if (els.sequence.value === "typed") showTyped(); else showExample(+els.sequence.value);
  });
  els.digits.addEventListener("input", showTyped);
  el("run").addEventListener("click", showTyped);
  els.grid.addEventListener("mouseover", function (event) {
    var c = event.target;
    if (!c.dataset || c.dataset.w === undefined) return;
    var q = +c.dataset.q, k = +c.dataset.k, t = current.tokens;
    els.readout.textContent = "query " + q + " (digit " + t[q] + ") \u2192 key " + k + " (digit " + t[k] + "): weight " +
      (+c.dataset.w).toFixed(4) + (k === t.length - 1 - q ? " \u2014 the flipped key" : "");
  });
  els.grid.addEventListener("click", function (event) {
    var c = event.target;
    if (!RE.onPin || !c.dataset || c.dataset.w === undefined) return;
    RE.onPin(+els.layer.value, +els.head.value, +c.dataset.q, +c.dataset.k);
  });

  RE.explorer = {
    setInterventions: function (interventions) { iv = interventions; refresh(); },
    select: function (layer, head) { els.layer.value = String(layer); els.head.value = String(head); render(); },
    view: function () { return { layer: +els.layer.value, head: +els.head.value, sequence: els.sequence.value, digits: els.digits.value }; },
    showSequence: function (value, digits) {
      if (value === "typed") { els.digits.value = digits; showTyped(); } else { els.sequence.value = value; showExample(+value); }
    },
    labProblem: labProblem
  };

  // Self-check: the JavaScript forward pass against the patterns Python embedded (rounded to 1e-5).
  var worst = 0, agree = 0, total = 0;
  data.examples.forEach(function (ex) {
    var out = forward(ex.tokens);
    out.patterns.forEach(function (heads, l) {
      heads.forEach(function (rows, h) {
        rows.forEach(function (row, q) {
          row.forEach(function (w, k) { worst = Math.max(worst, Math.abs(w - ex.patterns[l][h][q][k])); });
        });
      });
    });
    out.predictions.forEach(function (v, i) { agree += v === ex.predictions[i] ? 1 : 0; total += 1; });
  });
  var ok = worst < 1e-4 && agree === total;
  els.check.dataset.maxDiff = String(worst);
  els.check.className = ok ? "note" : "note warning";
  els.check.textContent = (ok ? "Check passed: " : "Check FAILED: ") + "the in-page forward pass reproduces the " +
    "Python patterns of the " + data.examples.length + " embedded sequences to max |\u0394| = " +
    worst.toExponential(1) + " (patterns stored to " + data.pattern_decimals + " decimals) and " + agree + " of " +
    total + " predicted digits.";
  showExample(0);
})();
