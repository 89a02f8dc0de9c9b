"""The routines every analysis command shares (analyses.frame): flags, the CLI body,
the output folder and its provenance — checked once here, across the analyses that use them."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
from conftest import figures_module, make_model, no_figures

from analyses import certificate as cert
from analyses import flip_alignment as fa
from analyses import head_ablation as ha
from analyses import interchange as ic
from analyses import length_generalisation as lg
from analyses import pe_ablation as pa
from analyses import qk_circuit as qk
from analyses import tolerance as tol
from analyses import training_dynamics as td
from analyses import zoo_summary as zs
from analyses.certificate import __main__ as cert_cli
from analyses.flip_alignment import __main__ as fa_cli
from analyses.frame import arguments, cli, command, files
from analyses.head_ablation import __main__ as ha_cli
from analyses.interchange import __main__ as ic_cli
from analyses.length_generalisation import __main__ as lg_cli
from analyses.pe_ablation import __main__ as pa_cli
from analyses.qk_circuit import __main__ as qk_cli
from analyses.tolerance import __main__ as tol_cli
from analyses.training_dynamics import __main__ as td_cli
from analyses.zoo_summary import __main__ as zs_cli
from models import EncoderConfig
from models.storage.checkpoints import save_model

# the CLIs of the analyses of one model with --seq-len
MODEL_ANALYSES = (fa_cli, qk_cli, pa_cli, ha_cli, tol_cli, ic_cli)
TINY = ["--num-sequences", "8", "--batch-size", "8", "--bootstrap-resamples", "5"]


# --- --seq-len ------------------------------------------------------------------------------------
def test_check_seq_len_by_hand():
    learned = EncoderConfig(n_ctx=16, positional_embedding="learned")
    arguments.check_seq_len(learned, 16)  # every row exists
    with pytest.raises(ValueError) as info:
        arguments.check_seq_len(learned, 17, "--seq-len")
    assert str(info.value) == (
        "--seq-len 17 exceeds what the model's learned positional encoding supports (16 positions)"
    )
    sinusoidal = EncoderConfig(n_ctx=16, pe_max_len=40)
    arguments.check_seq_len(sinusoidal, 40)
    with pytest.raises(ValueError, match=r"^seq_len 41 exceeds .* sinusoidal .* \(40 positions\)$"):
        arguments.check_seq_len(sinusoidal, 41)
    arguments.check_seq_len(EncoderConfig(positional_embedding="none"), 10**6)  # no table, no limit


@pytest.mark.parametrize("module", MODEL_ANALYSES, ids=lambda m: m.__name__.split(".")[-2])
def test_seq_len_beyond_the_encoding_is_one_line_exit_2_and_no_output(module, tmp_path, capsys):
    checkpoint = save_model(make_model(positional_embedding="learned"), tmp_path / "learned.pt")
    argv = ["--checkpoint", str(checkpoint), "--seq-len", "17", "--out", str(tmp_path / "out"), *TINY]
    assert module.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "error: --seq-len 17 exceeds what the model's learned positional encoding supports (16 positions)\n"
    )
    assert captured.out == "" and sorted(p.name for p in tmp_path.iterdir()) == ["SHA256SUMS", "learned.pt"]


# --- the shared flags -----------------------------------------------------------------------------
def _actions(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {a.option_strings[0]: a for a in parser._actions if a.option_strings}


def test_every_analysis_has_the_shared_flags_with_the_same_help():
    reference = _actions(command.analysis_parser("x", "", out=Path("o"), num_sequences=7))
    assert list(reference) == [
        "-h",
        "--checkpoint",
        "--n-heads",
        "--num-sequences",
        "--seq-len",
        "--seed",
        "--out",
        "--device",
        "--batch-size",
        "--bootstrap-resamples",
        "--quiet",
        "--svg",
    ]
    per_analysis = {  # analysis → shared flags it leaves out
        fa: (),
        qk: (),
        pa: (),
        ha: (),
        lg: ("--seq-len",),
        tol: (),
        ic: (),
        td: ("--checkpoint", "--n-heads", "--seq-len"),
        zs: ("--checkpoint", "--n-heads", "--seq-len"),
        cert: ("--num-sequences", "--seed", "--bootstrap-resamples"),  # every input, nothing sampled
    }
    clis = {fa: fa_cli, qk: qk_cli, pa: pa_cli, ha: ha_cli, lg: lg_cli, td: td_cli, zs: zs_cli}
    clis |= {tol: tol_cli, ic: ic_cli, cert: cert_cli}
    for module, missing in per_analysis.items():
        actions = _actions(clis[module].build_parser())
        assert clis[module].build_parser().prog == f"python -m analyses.{module.ANALYSIS}"
        for flag, expected in reference.items():
            if flag in missing:
                assert flag not in actions, (module.__name__, flag)
                continue
            got = actions[flag]
            assert got.type is expected.type, (module.__name__, flag)
            if flag not in ("--num-sequences", "--batch-size", "--out"):  # defaults of each analysis
                assert (got.help, got.default) == (expected.help, expected.default), (module.__name__, flag)
        assert actions["--out"].default == module.DEFAULT_OUT


def test_sampling_kwargs_are_the_shared_flags_the_parser_has():
    parser = command.analysis_parser("x", "", out=Path("o"), num_sequences=7, batch_size=3)
    assert command.sampling_kwargs(parser.parse_args(["--seq-len", "5"])) == {
        "num_sequences": 7,
        "seq_len": 5,
        "seed": 0,
        "batch_size": 3,
        "bootstrap_resamples": 1000,
    }
    parser = command.analysis_parser("x", "", out=Path("o"), num_sequences=7, seq_len=False)
    assert "seq_len" not in command.sampling_kwargs(parser.parse_args([]))


def test_int_flags_say_what_they_expect():
    assert (arguments.positive_int("3"), arguments.non_negative_int("0")) == (3, 0)
    for parse, text, message in (
        (arguments.positive_int, "0", "expected a positive integer, got 0"),
        (arguments.positive_int, "x", "expected a positive integer, got 'x'"),
        (arguments.non_negative_int, "-1", "expected a non-negative integer, got -1"),
    ):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            parse(text)
        assert str(info.value) == message


# --- the CLI body ---------------------------------------------------------------------------------
def _fake_cli(argv, calls):
    parser = command.analysis_parser("qk_circuit", "", out=Path("o"), num_sequences=7, model=False)
    outputs = command.Outputs("qk_circuit")
    return command.main(argv, parser, lambda args, folder: calls.append(args), outputs=outputs)


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--out", "{blocker}/out"], "error: cannot write to --out"),
        (["--device", "tpu9", "--out", "{tmp}/out"], "error: --device 'tpu9' is not a device torch knows"),
        # device types torch parses but the analyses cannot run on: a line, not a traceback
        (["--device", "meta", "--out", "{tmp}/out"], "error: --device meta: the toolkit runs on cpu"),
        (["--device", "xpu", "--out", "{tmp}/out"], "error: --device xpu: the toolkit runs on cpu"),
        (["--device", "hpu", "--out", "{tmp}/out"], "error: --device hpu: the toolkit runs on cpu"),
        (["--out", ""], "error: argument --out: empty path"),
        (["--num-sequences", "0", "--out", "{tmp}/out"], "error: argument --num-sequences: expected a"),
    ],
)
def test_main_checks_device_and_out_before_any_work(tmp_path, capsys, flags, message):
    (tmp_path / "blocker").write_text("")
    argv = [f.format(tmp=tmp_path, blocker=tmp_path / "blocker") for f in flags]
    calls = []
    assert _fake_cli(argv, calls) == 2 and calls == []
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["blocker"]


def test_cli_provenance_reads_the_command_line_when_argv_is_none(tmp_path, monkeypatch):
    checkpoint = save_model(make_model(), tmp_path / "model.pt")
    argv = ["--checkpoint", str(checkpoint), "--out", str(tmp_path / "out"), *TINY]
    monkeypatch.setattr(sys, "argv", ["qk_circuit.py", *argv])
    monkeypatch.setattr(qk_cli, "OUTPUTS", no_figures(monkeypatch, qk.OUTPUTS))
    assert qk_cli.main() == 0
    provenance = json.loads((tmp_path / "out" / "metrics.json").read_text())["provenance"]
    assert provenance["command"].endswith("-m analyses.qk_circuit " + " ".join(argv))
    assert provenance["device"] == "cpu" and provenance["num_sequences"] == 8


# --- outputs from Python --------------------------------------------------------------------------
SMALL = {"num_sequences": 8, "batch_size": 8, "bootstrap_resamples": 5}


def _python_results(tmp_path):
    """(result, what its provenance names as checkpoint) of analyses run from Python."""
    model = make_model()
    snapshots = [(0, make_model(seed=1)), (10, model)]
    return {
        "qk_circuit": (qk, qk.run(model, **SMALL), None),
        "pe_ablation": (
            pa,
            pa.run(model, **SMALL, alphas=(1.0,), shuffle_seeds=0, monte_carlo_sequences=50),
            None,
        ),
        "training_dynamics": (td, td.run(snapshots, **SMALL, run_dir=tmp_path), str(tmp_path.absolute())),
    }


def test_python_results_get_a_provenance_record_and_keep_their_own(tmp_path, monkeypatch):
    for name, (module, result, checkpoint) in _python_results(tmp_path).items():
        out = no_figures(monkeypatch, module.OUTPUTS).write(result, tmp_path / name)
        provenance = json.loads((out / "metrics.json").read_text())["provenance"]
        assert provenance["analysis"] == name and provenance["command"] is None
        assert (provenance["checkpoint"], provenance["checkpoint_sha256"]) == (checkpoint, None)
        assert provenance["config"] == result.config and provenance["config"]["d_model"] == 16
        assert (provenance["seed"], provenance["num_sequences"]) == (0, 8)
        assert provenance["packages"]["torch"] and provenance["timestamp"]
        result.provenance = {"built_by": "someone else"}  # a provenance the caller set is kept
        no_figures(monkeypatch, module.OUTPUTS).write(result, out)
        assert json.loads((out / "metrics.json").read_text())["provenance"] == {"built_by": "someone else"}


def test_outputs_are_all_or_nothing(tmp_path, monkeypatch):
    def make_figures(result, directory):
        directory.mkdir()
        (directory / "half.png").write_bytes(b"")
        raise RuntimeError("figure failed")

    broken = figures_module(monkeypatch, "broken_figures", make_figures)
    outputs = command.Outputs(qk.ANALYSIS, figures=broken)
    result = qk.run(make_model(), **SMALL)
    out = no_figures(monkeypatch, qk.OUTPUTS).write(result, tmp_path / "out")
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(RuntimeError, match="figure failed"):
        outputs.write(result, out)
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["out"]  # no temporary folder left


def test_python_results_name_the_checkpoint_the_model_was_loaded_from(tmp_path, monkeypatch):
    from models import load_model, sha256_file

    monkeypatch.setattr(fa_cli, "OUTPUTS", no_figures(monkeypatch, fa.OUTPUTS))  # provenance only
    path = save_model(make_model(d_model=16), tmp_path / "model.pt")
    model = load_model(path)
    assert (model.checkpoint_path, model.checkpoint_sha256) == (str(path.absolute()), sha256_file(path))
    result = fa.run(model, num_sequences=8, bootstrap_resamples=20)
    out = no_figures(monkeypatch, fa.OUTPUTS).write(result, tmp_path / "out")
    provenance = json.loads((out / "metrics.json").read_text())["provenance"]
    assert provenance["checkpoint"] == str(path.absolute())
    assert provenance["checkpoint_sha256"] == sha256_file(path)
    assert provenance["command"] is None
    # the CLI, given the run folder, records the same file and hash
    argv = ["--checkpoint", str(tmp_path), "--num-sequences", "8", "--out", str(tmp_path / "cli")]
    assert fa_cli.main(argv) == 0
    cli = json.loads((tmp_path / "cli" / "metrics.json").read_text())["provenance"]
    assert (cli["checkpoint"], cli["checkpoint_sha256"]) == (str(path.absolute()), sha256_file(path))


# --- bad input found by the CLI audits -------------------------------------------------------------
def test_sigterm_unwinds_like_ctrl_c_and_leaves_no_temporary_folder(tmp_path, capsys):
    import os
    import signal

    def body():
        with files.atomic_output_dir(tmp_path / "out") as folder:
            (folder / "half.json").write_text("{")
            os.kill(os.getpid(), signal.SIGTERM)  # what `timeout` or a job scheduler sends
            raise AssertionError("not reached")

    before = signal.getsignal(signal.SIGTERM)
    assert cli.run_cli(body) == 143
    assert capsys.readouterr().err == "error: terminated\n"
    assert list(tmp_path.iterdir()) == []  # no .out.tmp-* left behind
    assert signal.getsignal(signal.SIGTERM) is before  # the handler is the caller's again


@pytest.mark.parametrize(
    "main, argv, message",
    [
        (qk_cli.main, ["--seed", str(2**64)], "argument --seed: expected a seed from 0 to 4294967295"),
        (pa_cli.main, ["--alphas", "1,0.5,1"], "argument --alphas: each scale once"),
        (td_cli.main, ["--run", ""], "argument --run: empty path"),
        (zs_cli.main, [""], "argument zoo: empty path"),
    ],
)
def test_more_bad_arguments_are_one_line(main, argv, message, tmp_path, capsys):
    assert main([*argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


def test_an_analysis_refuses_to_replace_the_folder_holding_its_checkpoint(tmp_path, capsys, monkeypatch):
    out = tmp_path / "earlier"
    checkpoint = str(save_model(make_model(), tmp_path / "m.pt"))
    monkeypatch.setattr(qk_cli, "OUTPUTS", no_figures(monkeypatch, qk.OUTPUTS))  # the folder is what matters
    assert qk_cli.main(["--checkpoint", checkpoint, "--num-sequences", "8", "--out", str(out)]) == 0
    checkpoint = save_model(make_model(), out / "model.pt")  # a checkpoint kept inside an output
    capsys.readouterr()
    assert qk_cli.main(["--checkpoint", str(checkpoint), "--num-sequences", "8", "--out", str(out)]) == 2
    assert "lies inside --out" in capsys.readouterr().err
    assert checkpoint.is_file()


def test_printed_intervals_round_outwards_and_tiny_p_values_have_a_floor():
    from analyses.frame import numbers
    from analyses.frame.html import environment

    assert numbers.interval(0.912, 0.9051, 0.9184) == "0.912 [0.905, 0.919]"
    assert numbers.interval(0.5891, 0.58904, 0.58912) == "0.589 [0.589, 0.590]"
    assert numbers.interval(0.5891, 0.58904, 0.58912, digits=5) == "0.58910 [0.58904, 0.58912]"
    # 100% on 10,000 sequences: the honest [0.99963, 1], not "1.000 [1.000, 1.000]"
    assert numbers.interval(1.0, 0.99963, 1.0) == "1.000 [0.999, 1.000]"
    assert numbers.interval(1.0, 0.99963, 1.0, 0, pct=True) == "100% [99%, 100%]"
    assert numbers.interval(0.0, 0.0, 0.00037, 1, pct=True) == "0.0% [0.0%, 0.1%]"
    assert numbers.interval(0.9, 0.9, 0.95, 1) == "0.9 [0.9, 1.0]"  # exact ends stay put
    assert numbers.interval(1.0, 1.0, 1.0, 0, pct=True) == "100% (zero-width CI)"
    assert numbers.interval(0.3, float("nan"), 0.4) == "0.300 (no CI)"
    assert numbers.interval(None, 0.1, 0.2) == "n/a"
    assert [numbers.p_value(p) for p in (0.0321, 4.12e-9, 2e-16, 1e-16, 9.9e-17, 0.0, None)] == [
        "0.032",
        "4.1e-09",
        "2e-16",
        "< 1e-16",
        "< 1e-16",
        "< 1e-16",
        "n/a",
    ]
    env = environment()
    page = env.from_string("{{ e | est }} p {{ p | pvalue }}").render(
        e={"mean": 0.589, "ci_low": 0.5889, "ci_high": 0.5891}, p=3e-40
    )
    assert page == "0.589 [0.588, 0.590] p &lt; 1e-16"
