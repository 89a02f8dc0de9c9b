/* Attention explorer of the reverse-task report. No library, no network: everything it needs is in the
 * page (#explorer-data, written by reports/explorer.py). Embedded sequences show the patterns Python read
 * from hook_pattern; typed digits run the model's forward pass below, a re-statement of models/components.py
 * (one-hot Linear + positional encoding, blocks of attention / LayerNorm / MLP, output head). On load the
 * page recomputes the embedded sequences and prints the largest difference from Python's patterns. */
(function () {
  "use strict";
  var root = document.getElementById("explorer");
  var source = document.getElementById("explorer-data");
  if (!root || !source) return;
  var data = JSON.parse(source.textContent);
  var cfg = data.config;

  // --- weights: base64 little-endian float32 -> Float64Array -----------------------------------------
  var W = {};
  Object.keys(data.weights).forEach(function (name) {
    var entry = data.weights[name], bin = atob(entry.data);
    var view = new DataView(new ArrayBuffer(bin.length)), v = new Float64Array(bin.length / 4);
    for (var i = 0; i < bin.length; i++) view.setUint8(i, bin.charCodeAt(i));
    for (var j = 0; j < v.length; j++) v[j] = view.getFloat32(4 * j, true);
    W[name] = { shape: entry.shape, v: v };
  });

  // --- the forward pass; activations are flat row-major [pos, features] ------------------------------
  function linear(x, n, prefix) { // torch Linear: y = x W^T + b, W [out, in]
    var w = W[prefix + ".weight"], b = W[prefix + ".bias"].v, out = w.shape[0], dim = w.shape[1];
    var y = new Float64Array(n * out);
    for (var p = 0; p < n; p++) {
      for (var o = 0; o < out; o++) {
        var s = b[o];
        for (var i = 0; i < dim; i++) s += x[p * dim + i] * w.v[o * dim + i];
        y[p * out + o] = s;
      }
    }
    return y;
  }
  function layerNorm(x, n, prefix) { // (x - mean) / sqrt(mean((x - mean)^2) + eps) * w + b, per position
    var w = W[prefix + ".w"].v, b = W[prefix + ".b"].v, d = w.length, y = new Float64Array(n * d);
    for (var p = 0; p < n; p++) {
      var mean = 0, sq = 0, i;
      for (i = 0; i < d; i++) mean += x[p * d + i] / d;
      for (i = 0; i < d; i++) sq += Math.pow(x[p * d + i] - mean, 2) / d;
      var scale = Math.sqrt(sq + cfg.layer_norm_eps);
      for (i = 0; i < d; i++) y[p * d + i] = (x[p * d + i] - mean) / scale * w[i] + b[i];
    }
    return y;
  }
  function add(a, b) { var y = new Float64Array(a.length); for (var i = 0; i < a.length; i++) y[i] = a[i] + b[i]; return y; }
  function relu(a) { return a.map(function (v) { return v > 0 ? v : 0; }); }

  function attention(x, n, layer, patterns) { // fused qkv_proj, rows grouped per head as [q | k | v]
    var pre = "blocks." + layer + ".attn.", d = cfg.d_model, dh = cfg.d_head, H = cfg.n_heads;
    var qkv = linear(x, n, pre + "qkv_proj"), z = new Float64Array(n * d);
    for (var h = 0; h < H; h++) {
      var at = function (p, part, e) { return qkv[p * 3 * d + h * 3 * dh + part * dh + e]; };
      var rows = [];
      for (var i = 0; i < n; i++) {
        var row = new Float64Array(n), max = -Infinity, sum = 0, j, e;
        for (j = 0; j < n; j++) {
          var s = 0;
          for (e = 0; e < dh; e++) s += at(i, 0, e) * at(j, 1, e);
          row[j] = s / Math.sqrt(dh);
          if (row[j] > max) max = row[j];
        }
        for (j = 0; j < n; j++) { row[j] = Math.exp(row[j] - max); sum += row[j]; }
        for (j = 0; j < n; j++) row[j] /= sum;
        for (e = 0; e < dh; e++) {
          var acc = 0;
          for (j = 0; j < n; j++) acc += row[j] * at(j, 2, e);
          z[i * d + h * dh + e] = acc;
        }
        rows.push(row);
      }
      patterns.push(rows);
    }
    return linear(z, n, pre + "o_proj");
  }

  function forward(tokens) {
    var n = tokens.length, d = cfg.d_model, C = cfg.d_vocab, x = new Float64Array(n * d);
    var emb = W["embed.proj.weight"].v, bias = W["embed.proj.bias"].v, pos = W.pos;
    for (var p = 0; p < n; p++) {
      for (var i = 0; i < d; i++) x[p * d + i] = emb[i * C + tokens[p]] + bias[i] + (pos ? pos.v[p * d + i] : 0);
    }
    var patterns = [];
    for (var l = 0; l < cfg.n_layers; l++) {
      var b = "blocks." + l + ".", heads = [];
      if (cfg.normalization === "post") { // x = LN1(x + Attn(x)); x = LN2(x + MLP(x))
        var mid = layerNorm(add(x, attention(x, n, l, heads)), n, b + "ln1");
        var mlp = linear(relu(linear(mid, n, b + "mlp.fc_in")), n, b + "mlp.fc_out");
        x = layerNorm(add(mid, mlp), n, b + "ln2");
      } else { // x = x + Attn(LN1(x)); x = x + MLP(LN2(x))
        x = add(x, attention(layerNorm(x, n, b + "ln1"), n, l, heads));
        x = add(x, linear(relu(linear(layerNorm(x, n, b + "ln2"), n, b + "mlp.fc_in")), n, b + "mlp.fc_out"));
      }
      patterns.push(heads);
    }
    var logits = linear(relu(layerNorm(linear(x, n, "head.fc_in"), n, "head.ln")), n, "head.fc_out");
    var predictions = [];
    for (var q = 0; q < n; q++) {
      var best = 0;
      for (var c = 1; c < C; c++) if (logits[q * C + c] > logits[q * C + best]) best = c;
      predictions.push(best);
    }
    return { patterns: patterns, predictions: predictions };
  }

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
        var w = A[q][k], cell = div(k === n - 1 - q ? "cell flip" : "cell");
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
    els.rows.textContent = "";
    rows.forEach(function (r) {
      var line = div("digits-row"), name = div("row-name", r[0]);
      line.appendChild(name);
      r[1].forEach(function (v, i) {
        line.appendChild(div(r[0] === "model output" && v !== target[i] ? "digit wrong" : "digit", String(v)));
      });
      els.rows.appendChild(line);
    });
    var right = current.predictions.filter(function (v, i) { return v === target[i]; }).length;
    els.note.textContent = current.origin + " Head " + layer + "." + head + ": flip mass on this sequence " +
      flip.toFixed(3) + " (uniform 1/N = " + (1 / n).toFixed(3) + "); " + right + " of " + n + " digits reversed correctly.";
    els.readout.textContent = "Hover a cell to read its weight; outlined cells are the flipped keys N\u22121\u2212i.";
  }

  function showExample(index) {
    var ex = data.examples[index];
    current = { tokens: ex.tokens, patterns: ex.patterns, predictions: ex.predictions,
      origin: "Example sequence " + index + ": patterns from the model's forward pass in Python (hook_pattern)." };
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

  function showTyped() {
    var parsed = parseDigits(els.digits.value);
    if (parsed.error) { els.status.textContent = parsed.error; return; }
    var out = forward(parsed.tokens);
    current = { tokens: parsed.tokens, patterns: out.patterns, predictions: out.predictions,
      origin: "Typed sequence: patterns computed in this page by the JavaScript forward pass." };
    els.sequence.value = "typed";
    els.status.textContent = "";
    render();
  }

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
