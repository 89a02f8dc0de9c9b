"""pyvene (the optional extra ``reverse-encoder-interp[pyvene]``) intervenes on the encoder's HookPoints.

pyvene's ``IntervenableModel`` reads ``model.config`` (``to_dict()`` and sizes) and ``model.device``;
the encoder gives both (``models.encoder.config.ConfigView``). Its model registry does not know the
encoder, so an intervention is passed as an object (``"intervention": pv.VanillaIntervention()``) and
a site by its HookPoint name (``"component": "blocks.0.hook_resid_mid.output"``); inputs are keyword
dicts (``{"tokens": ...}``). Checked here: pyvene's interchange at one position gives the logits of the
same interchange done with ``interp.ablation.intervene``, and it changes them."""

from __future__ import annotations

import pytest
import torch
from conftest import make_model

from interp.ablation import intervene
from models.encoder.config import ConfigView


@pytest.fixture(scope="module")
def model():
    return make_model(seed=3, n_layers=2, n_heads=2)


def test_config_is_a_hugging_face_style_view_of_cfg(model):
    config = model.config
    assert isinstance(config, ConfigView) and config.to_dict() == {
        **model.cfg.to_dict(),
        "hidden_size": model.cfg.d_model,
        "num_attention_heads": model.cfg.n_heads,
        "num_hidden_layers": model.cfg.n_layers,
        "vocab_size": model.cfg.d_vocab,
        "n_positions": model.cfg.n_ctx,
    }
    assert config.hidden_size == model.cfg.d_model and model.device == next(model.parameters()).device
    with pytest.raises(AttributeError, match="model.config has no field 'nope'"):
        _ = config.nope


@pytest.mark.parametrize(
    "name", ["blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre", "blocks.0.attn.hook_z"]
)
def test_pyvene_interchange_is_ours(model, name):
    # a dev dependency (pyproject: dev includes [pyvene]); a user installs it with the extra
    pv = pytest.importorskip("pyvene", reason="the extra reverse-encoder-interp[pyvene] is not installed")
    g = torch.Generator().manual_seed(0)
    base, source = (torch.randint(0, model.cfg.d_vocab, (8, model.cfg.n_ctx), generator=g) for _ in range(2))
    p = 5
    im = pv.IntervenableModel(
        {"layer": 0, "component": f"{name}.output", "unit": "pos", "max_number_of_units": 1,
         "intervention": pv.VanillaIntervention()},
        model=model,
    )  # fmt: skip
    where = [[[p]] * len(base)]
    _, theirs = im({"tokens": base}, [{"tokens": source}], {"sources->base": (where, where)})
    _, cache = model.run_with_cache(source, names_filter=name)

    def patch(act: torch.Tensor) -> torch.Tensor:
        act = act.clone()
        act[:, p] = cache[name][:, p]
        return act

    with torch.no_grad(), intervene(model, [(name, patch)]):
        ours = model(base)
    torch.testing.assert_close(theirs, ours, rtol=1e-6, atol=1e-6)
    assert (ours - model(base)).abs().max() > 1e-3  # the interchange did something
