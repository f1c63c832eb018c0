"""train.method=esd: the negatively guided target, which weights each variant trains, erasures with and without an
anchor on the savanna world, and a flow-matching family (the SD3.5 replica)."""

import copy
import json

import pytest
import torch
from _cli import assert_one_line_error
from safetensors.torch import load_file

from swapbench.cli import main
from swapbench.config import load_config
from swapbench.world import SHIPPED_WORLD

shipped = pytest.mark.skipif(not (SHIPPED_WORLD / "manifest.json").is_file(), reason="world not built yet")

UNET = "unet/diffusion_pytorch_model.safetensors"


def _train(tmp_path, name, *overrides, model=None):
    """``--preset savanna-esd`` (the giraffe erased), two steps."""
    args = ["train", "--preset", "savanna-esd", "--out", str(tmp_path), "--name", name, "--set", "train.max_steps=2"]
    if model:
        args += ["--model", str(model)]
    for item in overrides:
        args += ["--set", item]
    return main(args)


def _changed(base: dict, tuned: dict) -> set[str]:
    assert base.keys() == tuned.keys()
    return {n for n in base if not torch.equal(base[n], tuned[n])}


def test_the_loss_regresses_on_the_frozen_base_guided_away_from_the_concept(tiny_pipeline):
    from diffusers import StableDiffusionPipeline

    from swapbench.families import for_pipeline
    from swapbench.train.methods.esd import esd_loss

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline, torch_dtype=torch.float32)
    family, train = for_pipeline(pipe), load_config("savanna").train
    frozen = copy.deepcopy(pipe.unet).requires_grad_(False)
    edited = pipe.unet
    g = torch.Generator().manual_seed(0)
    x_t, t = torch.randn(1, 4, 8, 8, generator=g), torch.tensor([501])
    c, e = (family.encode(pipe, [p], "cpu") for p in ("a giraffe", ""))

    def eps(model, cond):
        with torch.no_grad():
            return model(x_t, t, cond["text"]).sample

    e_c, e_0 = eps(frozen, c), eps(frozen, e)
    assert (e_c - e_0).abs().mean() > 1e-3  # the concept moves the prediction: the cases below differ
    # Edited = base: the prediction is e_c, the target e_0 - eta (e_c - e_0): the loss is (1 + eta)^2 |e_c - e_0|^2.
    for eta in (0.0, 1.0, 2.5):
        expected = (1 + eta) ** 2 * ((e_c - e_0) ** 2).mean()
        assert torch.allclose(esd_loss(family, pipe, edited, frozen, x_t, t, c, e, eta, train), expected, rtol=1e-5)

    # A moved edited model: the loss is its own prediction's distance to the frozen target, and only it gets gradients.
    with torch.no_grad():
        for p in edited.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=g))
    edited.requires_grad_(True)
    loss = esd_loss(family, pipe, edited, frozen, x_t, t, c, e, 1.0, train)
    assert torch.allclose(loss, ((eps(edited, c) - (e_0 - (e_c - e_0))) ** 2).mean(), rtol=1e-5)
    loss.backward()
    assert all(p.grad is None for p in frozen.parameters())
    assert all(p.grad is not None for p in edited.parameters() if p.requires_grad and p.dim() > 1)


def test_guides_are_the_empty_prompt_the_anchor_or_the_target():
    from swapbench.train.methods.esd import guides

    cfg = load_config("savanna", None, ["edits=[{erase: giraffe}, {erase: lion, anchor: cow}, "
                                        "{remap: elephant, to: horse}, {swap: [zebra, donkey]}]"])
    assert guides(cfg) == {"giraffe": "", "lion": "cow", "elephant": "horse", "zebra": "donkey", "donkey": "zebra"}
    assert guides(load_config("savanna")) == {"giraffe": "zebra", "zebra": "giraffe"}  # data.swap_pairs


@shipped
@pytest.mark.parametrize("variant", ["x-strict", "x", "u"])
def test_each_variant_changes_only_its_weights_on_the_savanna_world(variant, tmp_path):
    assert _train(tmp_path, variant, f"train.esd_variant={variant}") == 0
    run = tmp_path / variant
    base, tuned = load_file(SHIPPED_WORLD / "pipeline" / UNET), load_file(run / "model" / UNET)
    changed = _changed(base, tuned)
    attn2 = {n for n in base if ".attn2." in n}
    kv = {n for n in attn2 if ".attn2.to_k." in n or ".attn2.to_v." in n}
    expected = {"x-strict": kv, "x": attn2, "u": set(base) - attn2}[variant]
    # AdamW's first steps move every weight that gets a gradient: the changed set is the variant's own
    # (less the few that get none, such as a bias under a norm that cancels it).
    assert changed <= expected and len(changed) >= 0.9 * len(expected), sorted(expected - changed)[:5]
    assert (variant == "x") == any(".attn2.to_q." in n for n in changed)
    summary = json.loads((run / "train_summary.json").read_text())
    esd = summary["esd"]
    assert summary["method"] == "esd" and summary["steps"] == 2 and esd["variant"] == variant
    assert esd["trainable_parameters"] == sum(base[n].numel() for n in expected)
    assert all(map(torch.isfinite, torch.tensor([esd["loss_first"], esd["loss_last"]])))
    assert esd["loss_first"] > 0 and esd["guides"] == {"giraffe": ""} and esd["sampler"] == "DDIMScheduler"
    assert json.loads((run / "model/model_index.json").read_text())["scheduler"][1] == "DPMSolverMultistepScheduler"
    assert not (run / "data_audit.json").exists() and not (run / "checkpoints").exists()
    card = (run / "model/README.md").read_text()
    assert "| `train.esd_variant` |" in card and "| `train.esd_eta` |" in card


@shipped
def test_an_anchored_erasure_and_a_swap_train_in_one_loop(tmp_path):
    assert _train(tmp_path, "mix", "edits=[{erase: giraffe, anchor: horse}, {swap: [lion, cow]}]",
                  "train.max_steps=3", "train.esd_variant=x-strict") == 0
    esd = json.loads((tmp_path / "mix/train_summary.json").read_text())["esd"]
    assert esd["guides"] == {"giraffe": "horse", "lion": "cow", "cow": "lion"}
    assert esd["steps_per_concept"] == {"giraffe": 1, "lion": 1, "cow": 1}
    assert _changed(load_file(SHIPPED_WORLD / "pipeline" / UNET), load_file(tmp_path / "mix/model" / UNET))


def test_bad_esd_settings_are_one_line_errors(tmp_path, tiny_pipeline, capsys):
    assert_one_line_error(capsys, _train(tmp_path, "a", "train.esd_variant=xx", model=tiny_pipeline),
                          "train.esd_variant", "choose one of: x, x-strict, u")
    assert_one_line_error(capsys, _train(tmp_path, "b", "train.max_steps=0", model=tiny_pipeline),
                          "esd needs train.max_steps >= 1")


def test_esd_trains_a_flow_matching_family_on_its_selected_weights(hub_cache, tmp_path):
    """The SD3.5 replica: x_t from its flow-matching Euler sampler, a velocity target, ESD-x's text side."""
    from _replicas import put_repo
    from _replicas_families import SD35_MEDIUM, sd35_medium_files
    from diffusers import SD3Transformer2DModel

    put_repo(hub_cache, SD35_MEDIUM, sd35_medium_files(tmp_path / "work"))
    assert main(["train", "--preset", "sd15-coco", "--model", SD35_MEDIUM, "--out", str(tmp_path), "--name", "sd3",
                 "--method", "esd", "--set", "edits=[{erase: giraffe}]", "--set", "train.max_steps=2",
                 "--set", "data.resolution=32", "--set", "train.esd_variant=x", "--set", "eval.sampler=euler",
                 "--set", "eval.judge=world:savanna"]) == 0

    def weights(path):
        model = SD3Transformer2DModel.from_pretrained(path, subfolder="transformer", torch_dtype=torch.float32)
        return model.state_dict()

    base, tuned = weights(SD35_MEDIUM), weights(tmp_path / "sd3/model")
    changed = _changed(base, tuned)
    context = (".attn.add_q_proj.", ".attn.add_k_proj.", ".attn.add_v_proj.", ".attn.to_add_out.",
               ".attn.norm_added_q.", ".attn.norm_added_k.")
    assert changed and all(n.startswith(("context_embedder.", "time_text_embed.text_embedder."))
                           or any(c in n for c in context) for n in changed), sorted(changed)
    assert any(".add_q_proj." in n for n in changed) and any(n.startswith("context_embedder.") for n in changed)
    esd = json.loads((tmp_path / "sd3/train_summary.json").read_text())["esd"]
    assert esd["sampler"] == "FlowMatchEulerDiscreteScheduler" and esd["loss_first"] > 0
