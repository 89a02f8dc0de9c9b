"""reports.build: the CLI end to end (two worker processes), reuse of matching results, all-or-nothing
writes, bad input, the summary numbers on hand-built documents, the explorer data, safe JSON embedding,
and the index page. The browser side is tests/test_report_browser.py."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_model

from analyses.frame import loading, sequences
from analyses.frame.html import json_script, read_captions, render_section
from analyses.interchange import __main__ as interchange_cli
from interp.ablation import head_means, shuffled_positions
from models import load_model, save_model, sha256_file
from reports import build, explorer, pipeline
from reports.index import build_index
from reports.summary import key_metrics

ROOT = Path(__file__).resolve().parents[1]
EVIL = "<script>alert(1)</script>"
NUM = 48  # sequences per analysis: enough for every analysis, small enough for seconds
# The checkpoint has two layers, which the certificate does not cover: its section says why, no folder.
RUN = [a for a in pipeline.ANALYSES if a != "certificate"]
NOT_APPLICABLE = {
    "certificate": "not applicable: the certificate covers 1-layer models only; this model has 2 layers, and "
    "beyond the first layer a key depends on every position, not on its own (position, digit) alone"
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A random two-layer, one-head model (tiny) saved in our format."""
    return save_model(make_model(seed=3, n_layers=2, n_heads=1), tmp_path_factory.mktemp("ckpt") / "model.pt")


@pytest.fixture(scope="module")
def built(tmp_path_factory, checkpoint) -> tuple[Path, subprocess.CompletedProcess]:
    """One full build through the command line's entry point, analyses on two forked worker processes.

    It runs in this process, whose imports are already paid (a fresh interpreter costs ~5 s of them);
    ``python -m reports.build`` as a real process is tested in tests/test_output_reliability.py. Its
    stdout and stderr are files, which the forked workers inherit: what they print is checked too."""
    root = tmp_path_factory.mktemp("build")
    out = root / "report"
    args = ["--checkpoint", str(checkpoint), "--out", str(out), "--num-sequences", str(NUM), "--name", EVIL]
    streams = root / "stdout.txt", root / "stderr.txt"
    with (
        open(streams[0], "a", buffering=1) as stdout,
        open(streams[1], "a", buffering=1) as stderr,
        contextlib.redirect_stdout(stdout),
        contextlib.redirect_stderr(stderr),
    ):
        code = build.main([*args, "--jobs", "2"])
    done = subprocess.CompletedProcess(
        ["reports.build", *args], code, streams[0].read_text(), streams[1].read_text()
    )
    assert done.returncode == 0, done.stderr
    return out, done


def copy_of(built_out: Path, tmp_path: Path, name: str = "report") -> Path:
    target = tmp_path / name
    shutil.copytree(built_out, target)
    return target


def listing(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- the command line, end to end ------------------------------------------------------------------
def test_cli_writes_one_offline_page_with_every_section(built):
    out, done = built
    assert re.search(r"wrote .*report\.html \(\d+\.\d\d MB\) in \d+\.\d s", done.stdout)
    assert "%|" not in done.stderr  # transformer_lens' progress bars are swallowed
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([*RUN, "report.html", "summary.json"])  # no staging left
    html = (out / "report.html").read_text()
    assert (out / "report.html").stat().st_size <= 5_000_000
    # offline: no external URL in any attribute, images are data URIs, scripts and styles inline
    assert not re.search(r"""(src|href|action)\s*=\s*["']?\s*(https?:|//)""", html)
    assert "<link" not in html and "@import" not in html and "url(" not in html
    assert re.findall(r"<img [^>]*src=\"([a-z]+:[a-z/]+)", html) == ["data:image/png"] * html.count("<img ")
    assert re.findall(r"<script[^>]*>", html) == [
        '<script type="application/json" id="explorer-data">',
        '<script type="application/json" id="lab-data">',
        "<script>",
    ]
    assert html.count("</script>") == 3
    # the browser may run this one inline script and fetch nothing (Content-Security-Policy)
    script = re.search(r"<script>(.*?)</script>", html, re.S).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert (
        f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'sha256-{digest}'" in html
    )
    # every figure of every analysis with its caption, except the example heatmaps the explorer shows
    captions = {a: read_captions(out / a / "figures") for a in RUN}
    examples = [k for k in captions["flip_alignment"] if k.startswith("example_attention_")]
    n_figures = sum(map(len, captions.values())) - len(examples)
    assert html.count("data:image/png;base64,") == html.count("<figcaption>") == n_figures > 10
    assert len(examples) == 3 and "example_attention_" not in html.replace("example_attention_*.png", "")
    shown = json.loads(re.search(r'id="explorer-data">(.*?)</script>', html, re.S).group(1))["examples"]
    flip_examples = json.loads((out / "flip_alignment" / "metrics.json").read_text())["examples"]
    assert [e["tokens"] for e in flip_examples] == [e["tokens"] for e in shown[:3]]  # the same sequences
    # contents: every in-page link lands on an element of the page, ids are unique
    ids = re.findall(r'\sid="([^"]+)"', html)
    assert len(ids) == len(set(ids))
    assert set(re.findall(r'href="#([^"]+)"', html)) <= set(ids)
    for anchor in (
        "summary", "explorer", "lab", "flip-alignment", "qk-circuit", "pe-ablation", "head-ablation",
        "length-generalisation", "tolerance", "interchange",
    ):  # fmt: skip
        assert f'href="#{anchor}"' in html and f'id="{anchor}"' in html
    assert "<h1" not in html.split('id="summary"', 1)[1]  # the analyses' titles became h2s
    for sentence in ("how much weight lands on the flipped key", "Holm-corrected Wilcoxon tests"):
        assert sentence in html
    # the summary opens with the verdicts on the tutorial's two sentences and the program, then the IIA table
    summary = html.split('id="summary"', 1)[1].split('id="contents"', 1)[0]
    order = [
        summary.index(s) for s in ("QK verdict", "Tolerance verdict", "Interchange interventions", "Accuracy")
    ]
    assert order == sorted(order)
    sites = [s["site"] for s in json.loads((out / "interchange" / "metrics.json").read_text())["sites"]]
    assert sites == ["z", "attn_out", "resid_mid", "resid_pre", "z", "attn_out", "resid_mid"]  # 2 layers
    assert summary.count("<tr>") == 1 + 9 + 1 + len(sites)  # header + 9 rows, header + one row per site


def test_the_lab_data_are_the_first_256_sequences_and_interps_head_means(built, checkpoint):
    out, _ = built
    html = (out / "report.html").read_text()
    lab = json.loads(re.search(r'id="lab-data">(.*?)</script>', html, re.S).group(1))
    model = load_model(checkpoint)
    tokens = next(sequences.token_batches(256, 16, 10, 0, 256))  # the analyses' stream, seed 0
    assert lab["tokens"] == tokens.tolist() and lab["count"] == 256 and lab["seed"] == 0
    assert lab["checkpoint"] == str(checkpoint)
    means = head_means(model, [tokens])
    for layer in range(2):
        entry = lab["head_means"][str(layer)]
        got = np.frombuffer(base64.b64decode(entry["data"]), dtype="<f4").reshape(entry["shape"])
        assert np.array_equal(got, means[layer].numpy())  # float32, bit for bit
    assert lab["permutations"]["3"][15] == shuffled_positions(16, 3).tolist()
    assert len(lab["permutations"]["0"]) == 32 and lab["num_bands"] == 8  # typed lengths 1..2N, d 16
    assert f"The {lab['count']} sequences" in html and "".join(map(str, tokens[255].tolist())) in html


def test_run_name_and_paths_are_escaped_everywhere(built):
    out, _ = built
    html = (out / "report.html").read_text()
    assert "alert(1)</script>" not in html.replace("\\u003c/script\\u003e", "")
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html  # title, heading, provenance
    data = re.search(r'<script type="application/json" id="explorer-data">(.*?)</script>', html, re.S).group(
        1
    )
    assert "<" not in data and json.loads(data)["name"] == EVIL


def test_summary_json_carries_the_key_numbers_and_provenance(built, checkpoint):
    out, _ = built
    summary = json.loads((out / "summary.json").read_text())
    docs = {a: json.loads((out / a / "metrics.json").read_text()) for a in RUN}
    m = summary["metrics"]
    assert m["accuracy"] == {"estimate": docs["flip_alignment"]["accuracy"], "source": "flip_alignment"}
    assert m["pe_zero_accuracy"]["estimate"] == docs["pe_ablation"]["conditions"]["zero"]["accuracy"]
    assert m["qk_verdict"]["label"] == docs["qk_circuit"]["verdict"]["label"]
    assert m["tolerance_verdict"]["label"] == docs["tolerance"]["verdict"]["label"]
    assert m["interchange"]["label"] == docs["interchange"]["conclusion"]["label"]
    assert len(m["interchange"]["iia_table"]) == len(docs["interchange"]["sites"])
    assert summary["checkpoint_sha256"] == sha256_file(checkpoint)
    assert summary["name"] == EVIL and summary["seed"] == 0 and summary["num_sequences"] == NUM
    assert summary["config"] == json.loads(json.dumps(load_model(checkpoint).cfg.to_dict()))  # the model's
    assert summary["config"]["n_layers"] == 2 and "reports.build" in summary["command"]
    assert {a["name"]: a["status"] for a in summary["analyses"]} == {
        a: NOT_APPLICABLE.get(a, "computed") for a in pipeline.ANALYSES
    }
    assert m["certificate"] is None
    assert summary["report_bytes"] == (out / "report.html").stat().st_size
    for a, doc in docs.items():  # each analysis records how the report ran it
        prov = doc["provenance"]
        assert prov["run_kwargs"] == pipeline.ANALYSES[a].kwargs and prov["num_sequences"] == NUM
        assert (
            prov["checkpoint_sha256"] == summary["checkpoint_sha256"]
            and prov["command"] == summary["command"]
        )


# --- reuse ----------------------------------------------------------------------------------------
def test_rebuild_reuses_every_matching_result(built, checkpoint, tmp_path):
    out = copy_of(built[0], tmp_path)
    before = {a: listing(out / a) for a in RUN}
    messages: list[str] = []
    build.build_report(checkpoint, out, num_sequences=NUM, name="again", log=messages.append)
    assert sorted(messages) == sorted(f"{a}: reusing {out / a}" for a in RUN)
    assert {a: listing(out / a) for a in RUN} == before
    summary = json.loads((out / "summary.json").read_text())
    assert {a["name"]: a["status"] for a in summary["analyses"]} == {
        a: NOT_APPLICABLE.get(a, "reused") for a in pipeline.ANALYSES
    }
    assert summary["name"] == "again"
    assert "again" in (out / "report.html").read_text()


def test_reuse_requires_the_same_inputs(built, checkpoint, tmp_path):
    out = copy_of(built[0], tmp_path)
    model = load_model(checkpoint)
    expected = {
        "checkpoint_sha256": sha256_file(checkpoint),
        "config": json.loads(json.dumps(model.cfg.to_dict())),
        "seed": 0,
        "num_sequences": NUM,
        "run_kwargs": dict(pipeline.ANALYSES["qk_circuit"].kwargs),
    }
    folder = out / "qk_circuit"
    assert pipeline.reusable(folder, "qk_circuit", expected)
    for key, value in (("seed", 1), ("num_sequences", NUM + 1), ("checkpoint_sha256", "0" * 64)):
        assert not pipeline.reusable(folder, "qk_circuit", {**expected, key: value})
    assert not pipeline.reusable(
        folder, "qk_circuit", {**expected, "run_kwargs": {"bootstrap_resamples": 10}}
    )
    assert not pipeline.reusable(
        folder, "qk_circuit", {**expected, "config": {**expected["config"], "n_heads": 2}}
    )
    assert not pipeline.reusable(folder, "flip_alignment", expected)  # another analysis' folder
    (folder / "figures" / "captions.json").unlink()
    assert not pipeline.reusable(folder, "qk_circuit", expected)  # incomplete
    assert not pipeline.reusable(out / "missing", "qk_circuit", expected)


def test_a_result_of_the_analysis_cli_is_reused_when_its_settings_match(tmp_path, monkeypatch):
    # interchange: its defaults (bootstrap_resamples 1000) are the report's, and its figures the quickest
    checkpoint = save_model(make_model(), tmp_path / "one_head.pt")  # one panel per figure: quicker
    out = tmp_path / "report"
    argv = ["--checkpoint", str(checkpoint), "--num-sequences", str(NUM), "--seed", "2"]
    assert interchange_cli.main([*argv, "--out", str(out / "interchange")]) == 0
    made = (out / "interchange" / "metrics.json").read_bytes()
    messages: list[str] = []
    # no checkpoint: the default model of analyses.frame.loading.resolve_model (here: the same file)
    monkeypatch.setattr(loading, "ensure_default_model", lambda log=None: checkpoint)
    build.build_report(None, out, only=["interchange"], seed=2, num_sequences=NUM, log=messages.append)
    assert messages == [f"interchange: reusing {out / 'interchange'}"]
    assert (out / "interchange" / "metrics.json").read_bytes() == made
    html = (out / "report.html").read_text()
    assert "Not in this report: skipped (--only / --skip)" in html and "Result reused" in html


# --- all or nothing -------------------------------------------------------------------------------
def test_a_failing_build_leaves_the_folder_as_it_was(built, checkpoint, tmp_path, monkeypatch):
    def fail(task, model=None):
        task.out.mkdir(parents=True)
        (task.out / "metrics.json").write_text("{")  # half-written, as a crash would leave it
        raise RuntimeError("analysis crashed")

    monkeypatch.setattr(pipeline, "run_task", fail)
    fresh = tmp_path / "new" / "report"
    with pytest.raises(RuntimeError, match="analysis crashed"):
        build.build_report(checkpoint, fresh, num_sequences=NUM)
    assert not (tmp_path / "new").exists()  # the folders it created are gone again

    out = copy_of(built[0], tmp_path)
    (out / "head_ablation" / "figures" / "captions.json").unlink()  # forces one recomputation
    before = listing(out)
    with pytest.raises(RuntimeError, match="analysis crashed"):
        build.build_report(checkpoint, out, num_sequences=NUM)
    assert listing(out) == before and not [p for p in out.iterdir() if p.name.startswith(".")]


# --- bad input: one line, exit code 2, nothing written ---------------------------------------------
@pytest.mark.parametrize(
    "case, message",
    [
        ("missing_checkpoint", "error: --checkpoint"),
        ("unknown_analysis", "error: --only: unknown analysis 'bogus'"),
        ("out_under_a_file", "error: cannot write to --out"),
        ("out_is_a_file", "is not a folder"),
        ("index_without_report", "no report.html"),
        ("index_with_checkpoint", "error: --index takes report folders only, not --checkpoint"),
        ("empty_out", "error: argument --out: empty path"),
        ("section_folder_is_not_an_output", "exists and is not a report folder"),
        ("out_holds_other_files", "exists and is not a report folder"),
        ("index_over_a_report", "report.html exists and is not an index page of reports.build"),
    ],
)
def test_bad_input_is_one_line_and_exit_code_2(case, message, checkpoint, tmp_path, capsys):
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    empty_run = tmp_path / "runs" / "empty"
    empty_run.mkdir(parents=True)
    out = tmp_path / "out"
    if case == "section_folder_is_not_an_output":  # OUT/<analysis> is replaced whole: never user files
        (out / "flip_alignment").mkdir(parents=True)
        (out / "flip_alignment" / "notes.txt").write_text("mine")
    if case == "out_holds_other_files":  # report.html and summary.json would be overwritten
        out.mkdir()
        (out / "report.html").write_text("<p>my own page</p>")
    if case == "index_over_a_report":
        (tmp_path / "runs" / "r1").mkdir(parents=True)
        (tmp_path / "runs" / "r1" / "report.html").write_text("<p>a report</p>")
        (tmp_path / "runs" / "r1" / "summary.json").write_text('{"kind": "report_summary"}')
    argv = {
        "missing_checkpoint": ["--checkpoint", str(tmp_path / "nope.pt"), "--out", str(out)],
        "unknown_analysis": [
            "--checkpoint",
            str(checkpoint),
            "--out",
            str(out),
            "--only",
            "flip_alignment,bogus",
        ],
        "out_under_a_file": ["--checkpoint", str(checkpoint), "--out", str(a_file / "sub")],
        "out_is_a_file": ["--checkpoint", str(checkpoint), "--out", str(a_file)],
        "index_without_report": ["--index", str(empty_run)],
        "index_with_checkpoint": ["--index", str(empty_run), "--checkpoint", str(checkpoint)],
        "empty_out": ["--checkpoint", str(checkpoint), "--out", ""],
        "section_folder_is_not_an_output": ["--checkpoint", str(checkpoint), "--out", str(out)],
        "out_holds_other_files": ["--checkpoint", str(checkpoint), "--out", str(out)],
        "index_over_a_report": [
            "--index",
            str(tmp_path / "runs" / "r1"),
            "--out",
            str(tmp_path / "runs" / "r1" / "report.html"),
        ],
    }[case]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert build.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and message in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert a_file.read_text() == "x"


# --- the summary numbers on hand-built documents ----------------------------------------------------
def est(mean: float) -> dict[str, float]:
    return {"mean": mean, "ci_low": mean - 0.01, "ci_high": mean + 0.01}


def test_key_metrics_pick_the_flip_head_and_the_most_needed_head():
    head = lambda layer, h, flip, nb: {
        "layer": layer,
        "head": h,
        "flip_mass": est(flip),
        "neighbour_mass": est(nb),
    }
    flip = {
        "accuracy": est(0.9),
        "reference": {"uniform_mass": 1 / 16},
        "layers": [
            {"heads": [head(0, 0, 0.2, 0.1), head(0, 1, 0.3, 0.2)]},
            {"heads": [head(1, 0, 0.8, 0.15)]},
        ],
    }
    ablation = lambda layer, h, delta, method="zero": {
        "kind": "ablation",
        "layer": layer,
        "head": h,
        "method": method,
        "delta_accuracy": est(delta),
        "wilcoxon_loss": {"p_holm": 0.001},
    }
    heads = {
        "conditions": {
            "none": {"kind": "clean", "accuracy": est(0.7)},
            "zero/L0H0": ablation(0, 0, -0.1),
            "zero/L1H0": ablation(1, 0, -0.6),
            "mean/L0H0": ablation(0, 0, -0.9, "mean"),  # not a zero ablation: ignored
        }
    }
    pe = {
        "conditions": {
            "none": {"accuracy": est(0.95)},
            "zero": {"accuracy": est(0.2), "delta_accuracy": est(-0.75)},
        },
        "reference": {"chance_accuracy": 0.1, "no_position": {"accuracy": 0.24}},
    }
    qk = {
        "verdict": {"label": "right", "head": 1, "sentences": ["Verdict: yes.", "more"]},
        "heads": [
            {"head": h, "similarity": {"raw_pe": {"spearman_positions": est(0.5 + h / 10)}}} for h in (0, 1)
        ],
    }
    m = key_metrics({"flip_alignment": flip, "head_ablation": heads, "pe_ablation": pe, "qk_circuit": qk})
    assert m["flip_mass"]["head"] == "1.0" and m["flip_mass"]["flip_mass"]["mean"] == 0.8
    assert m["flip_mass"]["neighbour_mass"]["mean"] == 0.15
    assert m["top_head"] == {"head": "1.0", "delta_accuracy": est(-0.6), "p_holm": 0.001}
    assert (
        m["pe_zero_accuracy"]["estimate"]["mean"] == 0.2
        and m["pe_zero_accuracy"]["no_position_ceiling"] == 0.24
    )
    assert m["qk_verdict"] == {
        "label": "right",
        "head": "0.1",
        "headline": "Verdict: yes.",
        "spearman_rho": est(0.6),
    }
    assert m["accuracy"] == {"estimate": est(0.9), "source": "flip_alignment"}
    # without flip_alignment the accuracy comes from another analysis' clean run; absent ones are None
    m = key_metrics({"pe_ablation": pe})
    assert m["accuracy"] == {"estimate": est(0.95), "source": "pe_ablation"}
    assert m["flip_mass"] is m["qk_verdict"] is m["top_head"] is None


def test_key_metrics_of_tolerance_and_interchange():
    threshold = lambda family, level, margin, statistic="accuracy": {
        "family": family,
        "level": level,
        "statistic": statistic,
        "margin": {"mean": margin, "ci_low": None if margin is None else margin - 0.01, "ci_high": None},
        "flip_mass": est(0.5),
    }
    tol = {
        "settings": {"level": 0.99},
        "head": {"layer": 1, "head": 0},
        "own": {"flip_mass": est(0.57)},
        "verdict": {"label": "right", "headline": "right: it needs 0.5.", "sentences": ["first"]},
        "sequence_verdict": {"label": "partly right"},
        "thresholds": [
            threshold("temperature", 0.99, 0.08),
            threshold("single_key+1", 0.99, 0.06),
            threshold("uniform", 0.99, None),  # censored: never crossed
            threshold("single_key+1", 0.5, 0.01),  # another level
            threshold("uniform", 0.99, 0.01, "sequence_accuracy"),  # another statistic
        ],
    }
    site = lambda name, layer, iia: {
        "site": name, "layer": layer, "iia": est(iia), "iia_whole": est(iia), "off_program_max": est(0.0)
    }  # fmt: skip
    iia = {
        "conclusion": {"label": "implements", "sentences": ["Patching ...", "more"]},
        "sites": [site("z", 0, 0.99), site("resid_pre", 0, 1.0)],
        "selector": {"layer": 0, "head": 1, "holds": False, "sentence": "No single head ..."},
    }
    m = key_metrics({"tolerance": tol, "interchange": iia})
    assert m["tolerance_verdict"] == {
        "label": "right",
        "head": "1.0",
        "headline": "right: it needs 0.5.",
        "sequence_label": "partly right",
        "own_flip_mass": est(0.57),
        "level": 0.99,
        "margin": {"mean": 0.06, "ci_low": 0.06 - 0.01, "ci_high": None},
        "margin_family": "single_key+1",
        "threshold": est(0.5),
    }
    assert m["interchange"]["label"] == "implements" and m["interchange"]["headline"] == "Patching ..."
    assert [r["site"] for r in m["interchange"]["iia_table"]] == ["z", "resid_pre"]
    assert m["interchange"]["selector"] == {"head": "0.1", "holds": False, "sentence": "No single head ..."}
    assert key_metrics({})["tolerance_verdict"] is key_metrics({})["interchange"] is None


# --- explorer data and safe embedding --------------------------------------------------------------
def decode(entry: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(entry["data"]), dtype="<f4").reshape(entry["shape"])


@pytest.mark.parametrize("pe", ["sinusoidal", "learned", "none"])
def test_explorer_data_holds_exact_weights_and_the_hooked_patterns(pe):
    model = make_model(seed=5, n_layers=2, n_heads=2, positional_embedding=pe)
    data = explorer.explorer_data(model, seed=4, count=3, name=EVIL)
    state = model.state_dict()
    for name, value in state.items():
        if name != "pos_embed.W_pos":
            assert np.array_equal(decode(data["weights"][name]), value.numpy()), name
    rows = {"sinusoidal": 32, "learned": 16, "none": None}[pe]
    assert data["config"]["max_typed_length"] == (rows or 32)
    if rows is None:
        assert "pos" not in data["weights"]
    else:
        assert np.array_equal(decode(data["weights"]["pos"]), model.pos_embed.table[:rows].detach().numpy())
    tokens = next(sequences.token_batches(3, 16, 10, 4, 3))
    assert [e["tokens"] for e in data["examples"]] == tokens.tolist()
    logits, cache = model.run_with_cache(tokens)
    for layer in range(2):
        got = np.array([e["patterns"][layer] for e in data["examples"]])
        assert np.abs(got - cache[f"blocks.{layer}.attn.hook_pattern"].numpy()).max() <= 5e-6
    assert [e["predictions"] for e in data["examples"]] == logits.argmax(-1).tolist()


def test_json_script_cannot_end_the_script_element():
    obj = {"a": "</script><script>alert(1)</script>", "b": "<!-- & -->", "c": "line\u2028sep", "n": [1.5, 2]}
    text = str(json_script(obj))
    assert not set(text) & set("<>&\u2028\u2029")
    assert json.loads(text) == obj
    with pytest.raises(ValueError):
        json_script({"x": float("nan")})


def test_render_section_demotes_headings_and_prefixes_ids(built):
    out, _ = built
    doc = json.loads((out / "flip_alignment" / "metrics.json").read_text())
    doc["provenance"]["checkpoint"] = '<h1 id="x">'  # user text stays text
    figures = out / "flip_alignment" / "figures"
    html = str(render_section(doc, figures, read_captions(figures), id_prefix="fa--"))
    assert html.startswith("<h2>Flip alignment</h2>") and "<h1" not in html
    assert all(i.startswith("fa--") for i in re.findall(r'\sid="([^"]+)"', html))
    assert "&lt;h1 id=&#34;x&#34;&gt;" in html


# --- the index page -------------------------------------------------------------------------------
def test_index_links_each_run_and_shows_its_numbers(built, tmp_path, capsys):
    runs = tmp_path / "runs"
    first, second = copy_of(built[0], runs, "seed a"), copy_of(built[0], runs, "b")
    summary = json.loads((second / "summary.json").read_text())
    summary["name"] = "b & <i>second</i>"
    (second / "summary.json").write_text(json.dumps(summary))
    assert build.main(["--index", str(first), str(second)]) == 0
    page = runs / "index.html"
    assert capsys.readouterr().out.strip() == f"wrote {page}"
    html = page.read_text()
    assert 'href="seed%20a/report.html"' in html and 'href="b/report.html"' in html
    assert "b &amp; &lt;i&gt;second&lt;/i&gt;" in html and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    acc = summary["metrics"]["accuracy"]["estimate"]
    assert f"[{acc['ci_low']:.3f}, {acc['ci_high']:.3f}]" in html
    assert "<script" not in html and "http:" not in html and "https:" not in html
    # from Python, into another folder: links stay relative and resolve to the reports
    page = build_index([first, second], tmp_path / "elsewhere" / "deep")
    links = re.findall(r'<a href="([^"]+)"', page.read_text())
    assert links == ["../../runs/seed%20a/report.html", "../../runs/b/report.html"]
    assert (page.parent / "../../runs/b/report.html").resolve() == (second / "report.html").resolve()
    assert build_index([first], page).read_text().count("<tr") >= 2  # its own index page: rewritten
    # a hand-edited summary with the wrong types shows as missing numbers, not a traceback
    summary.update(metrics=[1, 2], config="x", training=3, checkpoint_sha256=5)
    (second / "summary.json").write_text(json.dumps(summary))
    assert build.main(["--index", str(second), "--out", str(tmp_path / "odd")]) == 0
    assert "b &amp; &lt;i&gt;second&lt;/i&gt;" in (tmp_path / "odd" / "index.html").read_text()


def test_explorer_typed_length_limits_follow_the_encoding():
    cfg = make_model(positional_embedding="learned").cfg
    assert explorer.max_typed_length(cfg) == cfg.n_ctx
    assert explorer.max_typed_length(make_model().cfg) == 2 * cfg.n_ctx
    assert torch.equal(explorer.example_tokens(cfg, 0, 2), next(sequences.token_batches(2, 16, 10, 0, 2)))
