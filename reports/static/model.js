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
    this.caches = new WeakMap(); // per array of sequences: the embedding and layer 0's qkv (see run)
    this.means = {};
    if (lab && lab.head_means) {
      var means = this.means;
      Object.keys(lab.head_means).forEach(function (layer) { means[layer] = decode(lab.head_means[layer]); });
    }
  }

  // --- building blocks; activations are flat row-major [pos, features] ---------------------------------
  Model.prototype.linear = function (x, n, prefix) { // torch Linear: y = x W^T + b, W [out, in]
    var w = this.W[prefix + ".weight"], wv = w.v, b = this.W[prefix + ".bias"].v, out = w.shape[0], dim = w.shape[1];
    var y = new Float64Array(n * out), p = 0, o, i, row;
    for (; p + 3 < n; p += 4) { // four rows at a time: each weight is read once for four dot products
      var x0 = p * dim, x1 = x0 + dim, x2 = x1 + dim, x3 = x2 + dim;
      for (o = 0; o < out; o++) {
        var s0 = b[o], s1 = s0, s2 = s0, s3 = s0;
        row = o * dim;
        for (i = 0; i < dim; i++) {
          var wi = wv[row + i];
          s0 += x[x0 + i] * wi; s1 += x[x1 + i] * wi; s2 += x[x2 + i] * wi; s3 += x[x3 + i] * wi;
        }
        y[p * out + o] = s0; y[(p + 1) * out + o] = s1; y[(p + 2) * out + o] = s2; y[(p + 3) * out + o] = s3;
      }
    }
    for (; p < n; p++) {
      for (o = 0; o < out; o++) {
        var s = b[o];
        row = o * dim;
        for (i = 0; i < dim; i++) s += x[p * dim + i] * wv[row + i];
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
    } else if (m === "keep_band") {
      for (i = 0; i < n; i++) for (e = 2 * pe.band; e < Math.min(2 * pe.band + 2, d); e++) out[i * d + e] = P[i * d + e];
    } else throw new Error("unknown positional-encoding method " + m);
    if (pe.alpha !== undefined && pe.alpha !== 1) for (i = 0; i < out.length; i++) out[i] *= pe.alpha;
    return out;
  };

  // --- attention-pattern interventions (interp.patterns), one row at a time ---------------------------
  var NEIGHBOURS = [-2, -1, 1, 2];
  function editRow(A, o, i, n, spec) { // the row A[o .. o + n) of query i
    var j, sum = 0, f = n - 1 - i;
    if (spec.tau !== undefined && spec.tau !== 1) { // softmax(log A / tau)
      var max = -Infinity;
      for (j = 0; j < n; j++) { A[o + j] = Math.log(A[o + j]) / spec.tau; if (A[o + j] > max) max = A[o + j]; }
      for (j = 0; j < n; j++) { A[o + j] = Math.exp(A[o + j] - max); sum += A[o + j]; }
      for (j = 0; j < n; j++) A[o + j] /= sum;
    }
    if (spec.replace === "uniform") for (j = 0; j < n; j++) A[o + j] = 1 / n;
    else if (spec.replace === "flip" || spec.replace === "flip+1" || spec.replace === "flip-1") {
      var shift = spec.replace === "flip" ? 0 : spec.replace === "flip+1" ? 1 : -1;
      var key = Math.max(0, Math.min(n - 1, f + shift));
      for (j = 0; j < n; j++) A[o + j] = j === key ? 1 : 0;
    }
    if (spec.mix) { // (1 - s) A + s B, B uniform over the neighbour keys f(i) + d that exist (none: A stays)
      var keys = NEIGHBOURS.map(function (d) { return f + d; }).filter(function (k) { return k >= 0 && k < n; });
      if (!keys.length) return;
      for (j = 0; j < n; j++) A[o + j] *= 1 - spec.mix;
      keys.forEach(function (k) { A[o + k] += spec.mix / keys.length; });
    }
  }

  // One layer's attention on B sequences of n positions: qkv [B n, 3d] -> z [B n, d]; the pattern of
  // every (sequence, head) goes to A [B, H, n, n] (after the interventions, as hook_pattern shows it).
  Model.prototype.attend = function (qkv, B, n, layer, iv, A) {
    var cfg = this.cfg, d = cfg.d_model, dh = cfg.d_head, H = cfg.n_heads, scale = Math.sqrt(dh), d3 = 3 * d;
    var z = new Float64Array(B * n * d);
    for (var h = 0; h < H; h++) {
      var spec = iv ? iv.attnFor(layer, h) : null, pins = iv ? iv.pinsFor(layer, h) : null;
      var ablate = iv ? iv.headFor(layer, h) : null, qo = h * 3 * dh, ko = qo + dh, vo = qo + 2 * dh;
      var mean = ablate === "mean" ? this.means[layer].v : null;
      for (var b = 0; b < B; b++) {
        var base = b * n;
        for (var i = 0; i < n; i++) {
          var o = ((b * H + h) * n + i) * n, max = -Infinity, sum = 0, j, e, a = (base + i) * d3 + qo;
          for (j = 0; j < n; j++) {
            var s = 0, c = (base + j) * d3 + ko;
            for (e = 0; e < dh; e++) s += qkv[a + e] * qkv[c + e];
            s /= scale;
            A[o + j] = s;
            if (s > max) max = s;
          }
          for (j = 0; j < n; j++) { var w = Math.exp(A[o + j] - max); A[o + j] = w; sum += w; }
          for (j = 0; j < n; j++) A[o + j] /= sum;
          if (spec) editRow(A, o, i, n, spec);
          if (pins && pins[i] !== undefined && pins[i] < n) for (j = 0; j < n; j++) A[o + j] = j === pins[i] ? 1 : 0;
          var zo = (base + i) * d + h * dh;
          if (ablate === "zero") continue;
          if (mean) { // z̄[i, h] over the lab's sequences (interp.ablation.head_means)
            for (e = 0; e < dh; e++) z[zo + e] = mean[(i * H + h) * dh + e];
            continue;
          }
          for (e = 0; e < dh; e++) {
            var acc = 0, vb = base * d3 + vo + e;
            for (j = 0; j < n; j++) acc += A[o + j] * qkv[vb + j * d3];
            z[zo + e] = acc;
          }
        }
      }
    }
    return z;
  };

  // B token sequences of one length -> {n, patterns: [layer] Float64Array [B, head, query, key],
  // predictions: Int32Array [B n]}. The embedding and layer 0's q, k, v depend only on the tokens and
  // the positional-encoding intervention, so they are kept for the next call with the same two.
  Model.prototype.run = function (seqs, iv) {
    var cfg = this.cfg, B = seqs.length, n = seqs[0].length, M = B * n, d = cfg.d_model, C = cfg.d_vocab, H = cfg.n_heads;
    var peKey = JSON.stringify(iv && iv.pe ? iv.pe : null), cache = this.caches.get(seqs);
    if (!cache || cache.pe !== peKey) {
      // Before the first attention a row depends only on its (token, position): compute the C n distinct
      // rows of the embedding and of layer 0's q, k, v once, then copy them to the B n positions.
      var emb = this.W["embed.proj.weight"].v, bias = this.W["embed.proj.bias"].v, P = this.positional(n, iv ? iv.pe : null);
      var U = new Float64Array(C * n * d), x0 = new Float64Array(M * d), qkv0 = new Float64Array(M * 3 * d);
      for (var c = 0; c < C; c++) {
        for (var p = 0; p < n; p++) for (var i = 0; i < d; i++) U[(c * n + p) * d + i] = emb[i * C + c] + bias[i] + P[p * d + i];
      }
      var Uqkv = this.linear(cfg.normalization === "post" ? U : this.layerNorm(U, C * n, "blocks.0.ln1"), C * n, "blocks.0.attn.qkv_proj");
      for (var b = 0; b < B; b++) {
        for (var pos = 0; pos < n; pos++) {
          var r = seqs[b][pos] * n + pos, dst = b * n + pos;
          x0.set(U.subarray(r * d, (r + 1) * d), dst * d);
          qkv0.set(Uqkv.subarray(r * 3 * d, (r + 1) * 3 * d), dst * 3 * d);
        }
      }
      cache = { pe: peKey, x0: x0, qkv0: qkv0 };
      this.caches.set(seqs, cache);
    }
    var x = cache.x0, patterns = [];
    for (var l = 0; l < cfg.n_layers; l++) {
      var pre = "blocks." + l + ".", A = new Float64Array(B * H * n * n), qkv, attn;
      if (cfg.normalization === "post") { // x = LN1(x + Attn(x)); x = LN2(x + MLP(x))
        qkv = l === 0 ? cache.qkv0 : this.linear(x, M, pre + "attn.qkv_proj");
        attn = this.linear(this.attend(qkv, B, n, l, iv, A), M, pre + "attn.o_proj");
        var mid = this.layerNorm(add(x, attn), M, pre + "ln1");
        x = this.layerNorm(add(mid, this.linear(relu(this.linear(mid, M, pre + "mlp.fc_in")), M, pre + "mlp.fc_out")), M, pre + "ln2");
      } else { // x = x + Attn(LN1(x)); x = x + MLP(LN2(x))
        qkv = l === 0 ? cache.qkv0 : this.linear(this.layerNorm(x, M, pre + "ln1"), M, pre + "attn.qkv_proj");
        x = add(x, this.linear(this.attend(qkv, B, n, l, iv, A), M, pre + "attn.o_proj"));
        x = add(x, this.linear(relu(this.linear(this.layerNorm(x, M, pre + "ln2"), M, pre + "mlp.fc_in")), M, pre + "mlp.fc_out"));
      }
      patterns.push(A);
    }
    var logits = this.linear(relu(this.layerNorm(this.linear(x, M, "head.fc_in"), M, "head.ln")), M, "head.fc_out");
    var predictions = new Int32Array(M);
    for (var q = 0; q < M; q++) {
      var best = 0;
      for (var k = 1; k < C; k++) if (logits[q * C + k] > logits[q * C + best]) best = k;
      predictions[q] = best;
    }
    return { n: n, patterns: patterns, predictions: predictions };
  };

  // One sequence -> {patterns [layer][head][query] (Float64Array over keys), predictions [pos]}.
  Model.prototype.forward = function (tokens, iv) {
    var out = this.run([tokens], iv), n = tokens.length, H = this.cfg.n_heads;
    return { predictions: Array.prototype.slice.call(out.predictions), patterns: out.patterns.map(function (A) {
      var heads = [];
      for (var h = 0; h < H; h++) {
        var rows = [];
        for (var i = 0; i < n; i++) rows.push(A.subarray((h * n + i) * n, (h * n + i + 1) * n));
        heads.push(rows);
      }
      return heads;
    }) };
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
