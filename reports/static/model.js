/* The model of the reverse-task report, run in the page: its weights are embedded (#explorer-data, written by
 * reports/explorer.py) and forward() re-states models/components.py (one-hot Linear + positional encoding,
 * blocks of attention / LayerNorm / MLP, output head) in float64. forward() takes an optional intervention
 * object `iv` applied at the same hook points as interp.ablation in Python:
 *   iv.pe    {method, shift, seed, band, alpha}  hook_pos_embed: ablate_positional_encoding(method), then
 *                                                ablate_positional_encoding("scale", alpha) if alpha != 1
 *   iv.attn  [{layer, head, tau, replace, mix}]  hook_pattern, in this order: patterns.temperature(tau),
 *                                                patterns.flip(shift) / patterns.uniform, patterns.neighbour_mix(s)
 *   iv.pins  [{layer, head, query, key}]         hook_pattern: patterns.pin(query, key), after the above
 *   iv.heads [{layer, head, method}]             hook_z: ablate_heads(zero | mean, means from Python)
 * Shuffle permutations and head means come from Python (#lab-data): torch's generator is not re-stated. */
(function () {
  "use strict";

  function decode(entry) { // base64 little-endian float32 -> Float64Array
    var bin = atob(entry.data), view = new DataView(new ArrayBuffer(bin.length)), v = new Float64Array(bin.length / 4);
    for (var i = 0; i < bin.length; i++) view.setUint8(i, bin.charCodeAt(i));
    for (var j = 0; j < v.length; j++) v[j] = view.getFloat32(4 * j, true);
    return { shape: entry.shape, v: v };
  }

  function Model(data, lab) {
    var W = {};
    Object.keys(data.weights).forEach(function (name) { W[name] = decode(data.weights[name]); });
    this.W = W;
    this.cfg = data.config;
    this.lab = lab || null;
    this.means = {};
    if (lab && lab.head_means) {
      var means = this.means;
      Object.keys(lab.head_means).forEach(function (layer) { means[layer] = decode(lab.head_means[layer]); });
    }
  }

  // --- building blocks; activations are flat row-major [pos, features] ---------------------------------
  Model.prototype.linear = function (x, n, prefix) { // torch Linear: y = x W^T + b, W [out, in]
    var w = this.W[prefix + ".weight"], wv = w.v, b = this.W[prefix + ".bias"].v, out = w.shape[0], dim = w.shape[1];
    var y = new Float64Array(n * out);
    for (var p = 0; p < n; p++) {
      var base = p * dim;
      for (var o = 0; o < out; o++) {
        var s = b[o], row = o * dim;
        for (var i = 0; i < dim; i++) s += x[base + i] * wv[row + i];
        y[p * out + o] = s;
      }
    }
    return y;
  };
  Model.prototype.layerNorm = function (x, n, prefix) { // (x - mean) / sqrt(var + eps) * w + b, per position
    var w = this.W[prefix + ".w"].v, b = this.W[prefix + ".b"].v, d = w.length, y = new Float64Array(n * d);
    for (var p = 0; p < n; p++) {
      var mean = 0, sq = 0, i, o = p * d;
      for (i = 0; i < d; i++) mean += x[o + i];
      mean /= d;
      for (i = 0; i < d; i++) sq += (x[o + i] - mean) * (x[o + i] - mean);
      var scale = Math.sqrt(sq / d + this.cfg.layer_norm_eps);
      for (i = 0; i < d; i++) y[o + i] = (x[o + i] - mean) / scale * w[i] + b[i];
    }
    return y;
  };
  function add(a, b) { var y = new Float64Array(a.length); for (var i = 0; i < a.length; i++) y[i] = a[i] + b[i]; return y; }
  function relu(a) { for (var i = 0; i < a.length; i++) if (a[i] < 0) a[i] = 0; return a; }

  // --- positional encoding and its interventions (interp.ablation.positional_transform) ----------------
  Model.prototype.positionalRow = function (p) { // interp.ablation.positional_rows: the table, else the formula
    var cfg = this.cfg, d = cfg.d_model, table = this.W.pos, rows = table.shape[0], row = new Float64Array(d);
    if (cfg.positional_embedding === "learned") p = Math.max(0, Math.min(rows - 1, p));
    if (p >= 0 && p < rows) return table.v.subarray(p * d, (p + 1) * d);
    for (var k = 0; 2 * k < d; k++) {
      var angle = p * Math.exp(2 * k * (-Math.log(10000) / d));
      row[2 * k] = Math.sin(angle);
      if (2 * k + 1 < d) row[2 * k + 1] = Math.cos(angle);
    }
    return row;
  };
  Model.prototype.positional = function (n, pe) { // [n, d] rows added to the embedding, after the intervention
    var cfg = this.cfg, d = cfg.d_model, P = new Float64Array(n * d), i, e;
    if (cfg.positional_embedding === "none") return P;
    for (i = 0; i < n; i++) P.set(this.positionalRow(i), i * d);
    if (!pe) return P;
    var out = new Float64Array(n * d), m = pe.method;
    if (m === "none" || !m) out.set(P);
    else if (m === "zero") { /* zeros */ }
    else if (m === "mean") {
      for (e = 0; e < d; e++) {
        var s = 0;
        for (i = 0; i < n; i++) s += P[i * d + e];
        for (i = 0; i < n; i++) out[i * d + e] = s / n;
      }
    } else if (m === "shuffle") {
      var sigma = this.lab.permutations[String(pe.seed)][n - 1];
      for (i = 0; i < n; i++) out.set(P.subarray(sigma[i] * d, sigma[i] * d + d), i * d);
    } else if (m === "shift") {
      for (i = 0; i < n; i++) out.set(this.positionalRow(i + pe.shift), i * d);
    } else if (m === "mirror") {
      for (i = 0; i < n; i++) out.set(P.subarray((n - 1 - i) * d, (n - i) * d), i * d);
    } else if (m === "remove_band") {
      out.set(P);
      for (i = 0; i < n; i++) { out[i * d + 2 * pe.band] = 0; if (2 * pe.band + 1 < d) out[i * d + 2 * pe.band + 1] = 0; }
    } else throw new Error("unknown positional-encoding method " + m);
    if (pe.alpha !== undefined && pe.alpha !== 1) for (i = 0; i < out.length; i++) out[i] *= pe.alpha;
    return out;
  };

  // --- attention-pattern interventions (interp.patterns), one row at a time ---------------------------
  var NEIGHBOURS = [-2, -1, 1, 2];
  function editRow(row, i, n, spec) {
    var j, sum = 0, f = n - 1 - i;
    if (spec.tau !== undefined && spec.tau !== 1) { // softmax(log A / tau)
      var max = -Infinity;
      for (j = 0; j < n; j++) { row[j] = Math.log(row[j]) / spec.tau; if (row[j] > max) max = row[j]; }
      for (j = 0; j < n; j++) { row[j] = Math.exp(row[j] - max); sum += row[j]; }
      for (j = 0; j < n; j++) row[j] /= sum;
    }
    if (spec.replace === "uniform") for (j = 0; j < n; j++) row[j] = 1 / n;
    else if (spec.replace === "flip" || spec.replace === "flip+1" || spec.replace === "flip-1") {
      var shift = spec.replace === "flip" ? 0 : spec.replace === "flip+1" ? 1 : -1;
      var key = Math.max(0, Math.min(n - 1, f + shift));
      for (j = 0; j < n; j++) row[j] = j === key ? 1 : 0;
    }
    if (spec.mix) { // (1 - s) A + s B, B uniform over the neighbour keys f(i) + d that exist
      var keys = NEIGHBOURS.map(function (d) { return f + d; }).filter(function (k) { return k >= 0 && k < n; });
      for (j = 0; j < n; j++) row[j] *= 1 - spec.mix;
      keys.forEach(function (k) { row[k] += spec.mix / keys.length; });
    }
  }

  Model.prototype.attention = function (x, n, layer, iv, patterns) { // fused qkv_proj, per head [q | k | v]
    var cfg = this.cfg, d = cfg.d_model, dh = cfg.d_head, H = cfg.n_heads, scale = Math.sqrt(dh);
    var qkv = this.linear(x, n, "blocks." + layer + ".attn.qkv_proj"), z = new Float64Array(n * d);
    for (var h = 0; h < H; h++) {
      var spec = iv ? iv.attnFor(layer, h) : null, pins = iv ? iv.pinsFor(layer, h) : null;
      var ablate = iv ? iv.headFor(layer, h) : null, rows = [], qo = h * 3 * dh, ko = qo + dh, vo = qo + 2 * dh;
      for (var i = 0; i < n; i++) {
        var row = new Float64Array(n), max = -Infinity, sum = 0, j, e;
        for (j = 0; j < n; j++) {
          var s = 0, a = i * 3 * d + qo, b = j * 3 * d + ko;
          for (e = 0; e < dh; e++) s += qkv[a + e] * qkv[b + e];
          row[j] = s / scale;
          if (row[j] > max) max = row[j];
        }
        for (j = 0; j < n; j++) { row[j] = Math.exp(row[j] - max); sum += row[j]; }
        for (j = 0; j < n; j++) row[j] /= sum;
        if (spec) editRow(row, i, n, spec);
        if (pins && pins[i] !== undefined && pins[i] < n) { for (j = 0; j < n; j++) row[j] = j === pins[i] ? 1 : 0; }
        rows.push(row);
        var zo = i * d + h * dh;
        if (ablate === "zero") continue;
        if (ablate === "mean") { // z̄[i, h] over the lab's sequences (interp.ablation.head_means)
          var mean = this.means[layer].v, mo = (i * H + h) * dh;
          for (e = 0; e < dh; e++) z[zo + e] = mean[mo + e];
          continue;
        }
        for (e = 0; e < dh; e++) {
          var acc = 0, vb = vo + e;
          for (j = 0; j < n; j++) acc += row[j] * qkv[j * 3 * d + vb];
          z[zo + e] = acc;
        }
      }
      patterns.push(rows);
    }
    return this.linear(z, n, "blocks." + layer + ".attn.o_proj");
  };

  // tokens -> {patterns [layer][head][query] Float64Array(key), predictions}
  Model.prototype.forward = function (tokens, iv) {
    var cfg = this.cfg, n = tokens.length, d = cfg.d_model, C = cfg.d_vocab, x = new Float64Array(n * d);
    var emb = this.W["embed.proj.weight"].v, bias = this.W["embed.proj.bias"].v;
    var P = this.positional(n, iv ? iv.pe : null);
    for (var p = 0; p < n; p++) {
      for (var i = 0; i < d; i++) x[p * d + i] = emb[i * C + tokens[p]] + bias[i] + P[p * d + i];
    }
    var patterns = [];
    for (var l = 0; l < cfg.n_layers; l++) {
      var b = "blocks." + l + ".", heads = [];
      if (cfg.normalization === "post") { // x = LN1(x + Attn(x)); x = LN2(x + MLP(x))
        var mid = this.layerNorm(add(x, this.attention(x, n, l, iv, heads)), n, b + "ln1");
        var mlp = this.linear(relu(this.linear(mid, n, b + "mlp.fc_in")), n, b + "mlp.fc_out");
        x = this.layerNorm(add(mid, mlp), n, b + "ln2");
      } else { // x = x + Attn(LN1(x)); x = x + MLP(LN2(x))
        x = add(x, this.attention(this.layerNorm(x, n, b + "ln1"), n, l, iv, heads));
        x = add(x, this.linear(relu(this.linear(this.layerNorm(x, n, b + "ln2"), n, b + "mlp.fc_in")), n, b + "mlp.fc_out"));
      }
      patterns.push(heads);
    }
    var logits = this.linear(relu(this.layerNorm(this.linear(x, n, "head.fc_in"), n, "head.ln")), n, "head.fc_out");
    var predictions = [];
    for (var q = 0; q < n; q++) {
      var best = 0;
      for (var c = 1; c < C; c++) if (logits[q * C + c] > logits[q * C + best]) best = c;
      predictions.push(best);
    }
    return { patterns: patterns, predictions: predictions };
  };

  // An intervention object from the lab's plain state (see reports/static/lab.js for the state).
  function Interventions(state) {
    this.state = state;
    this.pe = state.pe && (state.pe.method !== "none" || state.pe.alpha !== 1) ? state.pe : null;
    var attn = {}, pins = {}, heads = {};
    (state.attn || []).forEach(function (a) { attn[a.layer + "." + a.head] = a; });
    (state.pins || []).forEach(function (p) {
      var key = p.layer + "." + p.head;
      (pins[key] = pins[key] || {})[p.query] = p.key;
    });
    (state.heads || []).forEach(function (h) { heads[h.layer + "." + h.head] = h.method; });
    this.attnFor = function (l, h) { return attn[l + "." + h] || null; };
    this.pinsFor = function (l, h) { return pins[l + "." + h] || null; };
    this.headFor = function (l, h) { return heads[l + "." + h] || null; };
  }

  window.ReverseEncoder = { Model: Model, Interventions: Interventions, NEIGHBOURS: NEIGHBOURS };
})();
