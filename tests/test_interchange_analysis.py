"""analyses.interchange on hand-built models whose answer is known exactly, and its CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import no_figures
from vote_machine import flip_vote_machine

from analyses import interchange
from analyses.interchange import __main__ as cli
from interp.interchange import program_dependency
from models import save_model

N = 16
# 200 pairs: the fewest whose honest bounds at 100% can support "implements" — IIA CI low (α/2)^(1/P) ≥ 0.95
# needs P ≥ 72, and the off-program max's Bonferroni bound over 240 cells ≤ 0.05 needs P ≥ 179.
SMALL = dict(num_sequences=200, batch_size=400, bootstrap_resamples=50)


@pytest.fixture(scope="module")
def reverser():
    """Score 30 on the flipped key: attention is one-hot (e^−30 elsewhere), the output is t[N−1−i]."""
    return flip_vote_machine(30.0, n_heads=2)


@pytest.fixture(scope="module")
def result(reverser):
    return interchange.run(reverser, **SMALL)


def test_a_perfect_reverser_implements_the_program_exactly(result):
    for site in result.sites:
        assert (site.iia.mean, site.iia_whole.mean) == (1.0, 1.0), site.site
        assert site.off_program_max.mean == 0.0 and site.on_program.mean == 1.0
        assert np.array_equal(site.dependency, program_dependency(site.site, N).numpy())
    assert [s.site for s in result.sites] == ["z", "attn_out", "resid_mid", "resid_pre"]
    assert result.conclusion.label == "implements"


def test_a_perfect_reverser_on_too_few_pairs_is_not_declared_implemented(reverser):
    """60 pairs, all following the program: 100% bounds only IIA ≥ 0.94 and the off-program max ≤ 0.16,
    which cannot support "implements" (CI low ≥ 0.95, off-program ≤ 0.05): the honest answer is partly."""
    few = interchange.run(reverser, **{**SMALL, "num_sequences": 60, "sites": ("z", "resid_pre")})
    assert few.conclusion.label == "partly" and few.sites[0].iia.ci_low == pytest.approx(0.025 ** (1 / 60))


def test_the_selector_is_the_one_head_that_carries_the_aggregate(result):
    by_head = {(s.layer, s.head): s.iia.mean for s in result.heads}
    assert by_head == {(0, 0): 1.0, (0, 1): 0.0}  # head 1 is silent: patching it changes nothing
    assert result.selector == (0, 0) and result.selector_holds
    assert result.selector_sentence.startswith("The reverse selector lives in head 0.0 (one of 2 heads)")


def test_a_head_that_reads_every_key_alike_does_not_implement_it():
    """Zero scores: every output is the sequence's most frequent digit, not t[N−1−i]."""
    result = interchange.run(flip_vote_machine(0.0), **SMALL)
    assert result.conclusion.label == "does not"
    assert "No site carries the program's variable" in result.conclusion.text
    assert not result.selector_holds and "No single head carries the aggregate" in result.selector_sentence
    pre = result.site("resid_pre")
    assert pre.off_program.mean > 0.1  # a changed digit can change every output's vote
    assert "nan" not in result.summary().lower()


def test_result_api_and_document(result):
    doc = result.to_dict()
    assert set(doc) >= {"conclusion", "sites", "heads", "selector", "program_dependency"}
    assert doc["selector"] == {"layer": 0, "head": 0, "holds": True, "sentence": result.selector_sentence}
    assert doc["program_dependency"]["resid_pre"] == program_dependency("resid_pre", N).tolist()
    assert doc["settings"]["resampling_unit"] == "pair" and doc["settings"]["num_sequences"] == 200
    rows = result.csv_rows()
    assert {r["scope"] for r in rows} == {"model", "head"}
    iia = [r for r in rows if r["metric"] == "iia" and r["scope"] == "model"]
    assert [(r["site"], r["site_layer"], r["mean"]) for r in iia] == [
        ("z", 0, 1.0),
        ("attn_out", 0, 1.0),
        ("resid_mid", 0, 1.0),
        ("resid_pre", 0, 1.0),
    ]
    assert repr(result).startswith("<InterchangeResult interchange: 200 sequences, seed 0; implements")


def test_same_seed_same_numbers_and_sites_are_chosen(reverser, result):
    again = interchange.run(reverser, **SMALL).to_dict()
    first = result.to_dict()
    for doc in (again, first):
        doc["provenance"].pop("timestamp")
    assert again == first
    only = interchange.run(reverser, **{**SMALL, "num_sequences": 10}, sites=("resid_pre", "z"))
    assert [s.site for s in only.sites] == ["z", "resid_pre"]
    with pytest.raises(ValueError, match="sites must be distinct names among"):
        interchange.run(reverser, **SMALL, sites=("z", "nope"))


# --- the command line -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, reverser):
    return save_model(reverser, tmp_path_factory.mktemp("iia") / "reverser.pt")


@pytest.mark.parametrize(
    "flags, message",
    [
        (
            ["--sites", "z,foo"],
            "error: argument --sites: expected sites among z,attn_out,resid_mid,resid_pre",
        ),
        (["--sites", "z,z"], "error: argument --sites: each site once, got 'z,z'"),
        (["--num-sequences", "0"], "error: argument --num-sequences: expected a positive integer, got 0"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(checkpoint, tmp_path, capsys, flags, message):
    out = tmp_path / "out"
    assert cli.main(["--checkpoint", str(checkpoint), "--out", str(out), *flags]) == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1, err
    assert list(tmp_path.iterdir()) == []


def test_cli_writes_every_output(checkpoint, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "OUTPUTS", no_figures(monkeypatch, interchange.OUTPUTS))
    out = tmp_path / "iia"
    argv = [
        "--checkpoint",
        str(checkpoint),
        "--out",
        str(out),
        "--num-sequences",
        "20",
        "--sites",
        "z,resid_pre",
    ]
    assert cli.main([*argv, "--bootstrap-resamples", "20", "--quiet"]) == 0
    doc = json.loads((out / "metrics.json").read_text())
    # 20 pairs at 100% bound IIA only above 0.025^(1/20) = 0.83: too few to say "implements"
    assert doc["settings"]["sites"] == ["z", "resid_pre"] and doc["conclusion"]["label"] == "partly"
    html = (out / "report.html").read_text()
    assert "Conclusion: partly" in html and "IIA per head" in html
    assert capsys.readouterr().out.startswith("Interchange interventions: 20 (base, source) pairs")
