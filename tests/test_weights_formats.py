"""``swapbench eval --weights``: every published checkpoint format, built here from savanna runs' own weights,
scores bit for bit what evaluating the run (or the pipeline holding the same weights) scores; every bad
file is one line, exit 2."""

import hashlib
import json

import pytest
import torch
from _cli import assert_one_line_error
from _replicas import put_repo
from _replicas_families import FLUX_SCHNELL, SD35_MEDIUM, SDXL, flux_schnell_files, sd35_medium_files, sdxl_files
from safetensors.torch import load_file, save_file

from swapbench.cli import main
from swapbench.weights import weights_hash
from swapbench.world import SHIPPED_WORLD

pytestmark = pytest.mark.skipif(not (SHIPPED_WORLD / "manifest.json").is_file(), reason="world not built yet")

TINY = ["--set", "train.max_steps=2", "--set", "data.subset_size=120", "--set", "train.batch_size=8"]
EVAL = ["--suite", "quick", "--set", "eval.seeds=1", "--set", "eval.steps=2"]
UNET_FILE = "model/unet/diffusion_pytorch_model.safetensors"
VAE_FILE = SHIPPED_WORLD / "pipeline/vae/diffusion_pytorch_model.safetensors"
UNET_TENSORS = 286
"""Tensors of the savanna UNet's state dict."""


def _eval(out, *args):
    assert main(["eval", *args, *EVAL, "--out", str(out)]) == 0
    return json.loads((out / "results.json").read_text())


def _kv(state):
    """The cross-attention key/value weights: what UCE and ESD-x edit and save."""
    return {k: v for k, v in state.items() if ".attn2.to_k." in k or ".attn2.to_v." in k}


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """Three tiny runs (the whole UNet fine-tuned, a LoRA, a token swap), the base with the first run's K/V
    in it as a pipeline folder (what a partial file is compared with), and each one's evaluation."""
    from diffusers import StableDiffusionPipeline

    root = tmp_path_factory.mktemp("weights")
    assert main(["train", "--out", str(root), "--name", "full", "--set", "train.trainable=unet", *TINY]) == 0
    assert main(["train", "--out", str(root), "--name", "lora", "--method", "lora", *TINY]) == 0
    assert main(["train", "--out", str(root), "--name", "ts", "--method", "token-swap"]) == 0
    pipe = StableDiffusionPipeline.from_pretrained(SHIPPED_WORLD / "pipeline")
    pipe.unet.load_state_dict(_kv(load_file(root / "full" / UNET_FILE)), strict=False)
    pipe.save_pretrained(root / "kv-pipeline")
    refs = {name: _eval(root / f"ref-{name}", str(root / name)) for name in ("full", "lora", "ts")}
    refs["kv"] = _eval(root / "ref-kv", str(root / "kv-pipeline"))
    return root, refs


# ---- each format, built from the runs' weights --------------------------------------------------------------


def _to_compvis(state, config):
    """diffusers UNet keys -> CompVis keys. diffusers ships this conversion one way only (the other way is a repo
    script, not part of the package), so the inverse is written here for the test's SD-layout UNet alone, and
    checked by converting back with diffusers' own ``convert_ldm_unet_checkpoint``."""
    from diffusers.loaders.single_file_utils import DIFFUSERS_TO_LDM_MAPPING

    fixed = DIFFUSERS_TO_LDM_MAPPING["unet"]["layers"]
    per_block = config["layers_per_block"] + 1  # LDM counts a block's layers plus its down/upsampler
    resnet = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0", "conv2": "out_layers.3",
              "time_emb_proj": "emb_layers.1", "conv_shortcut": "skip_connection"}

    def ldm(key):
        if key in fixed:
            return fixed[key]
        part = key.split(".")
        if part[0] == "mid_block":  # mid_block.<kind>.<j>.rest: resnets 0 and 1 around attention 0
            kind, rest = part[1], part[3:]
            head = f"middle_block.{2 * int(part[2]) if kind == 'resnets' else 1}"
        else:  # <down|up>_blocks.<b>.<kind>.<j>.rest
            kind, rest = part[2], part[4:]
            b = int(part[1])
            if kind == "downsamplers":
                return f"input_blocks.{(b + 1) * per_block}.0.op.{part[-1]}"  # ...downsamplers.0.conv.<weight|bias>
            if kind == "upsamplers":
                attentions = any(k.startswith(f"up_blocks.{b}.attentions.") for k in state)
                return f"output_blocks.{(b + 1) * per_block - 1}.{2 if attentions else 1}.conv.{part[-1]}"
            i = b * per_block + int(part[3])
            layer = 0 if kind == "resnets" else 1
            head = f"input_blocks.{i + 1}.{layer}" if part[0] == "down_blocks" else f"output_blocks.{i}.{layer}"
        if kind == "resnets":
            rest[0] = resnet[rest[0]]
        return f"{head}.{'.'.join(rest)}"

    return {f"model.diffusion_model.{ldm(k)}": v for k, v in state.items()}


def _partial(root):
    path = root / "esd-kv-esdx.safetensors"
    save_file(_kv(load_file(root / "full" / UNET_FILE)), path)
    return path


def _full_pt(root):
    path = root / "unet.pt"
    torch.save(load_file(root / "full" / UNET_FILE), path)
    return path


def _compvis(root):
    import diffusers
    from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

    state = load_file(root / "full" / UNET_FILE)
    config = diffusers.UNet2DConditionModel.load_config(root / "full/model/unet")
    ldm = _to_compvis(state, config)
    back = convert_ldm_unet_checkpoint(dict(ldm), config)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)
    vae = load_file(VAE_FILE)
    checkpoint = {"state_dict": {**ldm, **{f"first_stage_model.{k}": v for k, v in vae.items()},
                                 "betas": torch.linspace(1e-4, 2e-2, 1000)}, "global_step": 2}
    path = root / "model.ckpt"
    torch.save(checkpoint, path)
    return path


def _pipeline(root):
    return root / "full" / "model"


def _delta_unet(root):
    path = root / "delta.bin"
    torch.save({"unet": _kv(load_file(root / "full" / UNET_FILE))}, path)
    return path


def _delta_text(root):
    """Concept Ablation's 'embedding' group: the UNet's K/V (unchanged by a token swap) and the whole text encoder."""
    path = root / "delta-embedding.bin"
    te = load_file(root / "ts/model/text_encoder/model.safetensors")
    torch.save({"unet": _kv(load_file(root / "ts" / UNET_FILE)), "text_encoder": te}, path)
    return path


def _text_folder(root):
    return root / "ts" / "model" / "text_encoder"


def _text_file(root):
    """The token-swap run's text encoder as transformers 4 saved CLIP: ``text_model.*`` keys and the position
    ids buffer (AdvUnlearn's files)."""
    te = load_file(root / "ts/model/text_encoder/model.safetensors")
    old = {f"text_model.{k}": v for k, v in te.items()}
    old["text_model.embeddings.position_ids"] = torch.arange(te["embeddings.position_embedding.weight"].shape[0])[None]
    path = root / "TextEncoder-text_encoder_full.pt"
    torch.save(old, path)
    return path


def _lora(root):
    return root / "lora" / "lora"


def _kohya(root):
    """The LoRA run's adapter in kohya's naming, converted by diffusers (its ``.alpha`` is the rank, 4, which is the
    run's lora_alpha, so the scale is the same)."""
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya, convert_unet_state_dict_to_peft

    kohya = convert_state_dict_to_kohya(convert_unet_state_dict_to_peft(
        load_file(root / "lora/lora/pytorch_lora_weights.safetensors")))
    assert all(k.startswith("lora_unet_") for k in kohya) and any(k.endswith(".alpha") for k in kohya)
    path = root / "spm-kohya.safetensors"
    save_file(kohya, path)
    return path


CASES = {
    # name: (build, reference evaluation, format, what provenance.weights.loaded says)
    "partial-kv": (_partial, "kv", "denoiser", {"unet": (14, "partial")}),
    "full-pt": (_full_pt, "full", "denoiser", {"unet": (UNET_TENSORS, "strict")}),
    "compvis": (_compvis, "full", "compvis", {"unet": (UNET_TENSORS, "strict")}),
    "pipeline": (_pipeline, "full", "pipeline", {"unet": (UNET_TENSORS, "strict")}),
    "delta-unet": (_delta_unet, "kv", "concept-ablation", {"unet": (14, "partial")}),
    "delta-text": (_delta_text, "ts", "concept-ablation", {"unet": (14, "partial"), "text_encoder": (36, "strict")}),
    "text-folder": (_text_folder, "ts", "text-encoder", {"text_encoder": (36, "strict")}),
    "text-file": (_text_file, "ts", "text-encoder", {"text_encoder": (36, "strict")}),
    "lora": (_lora, "lora", "lora", {"unet": (112, "fused LoRA")}),
    "kohya": (_kohya, "lora", "kohya-lora", {"unet": (112, "fused LoRA")}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_each_format_scores_bit_for_bit_what_the_run_scores(name, made):
    root, refs = made
    build, ref, fmt, loaded = CASES[name]
    path = build(root)
    results = _eval(root / f"w-{name}", "--base", "world:savanna", "--weights", str(path))
    assert results["metrics"] == refs[ref]["metrics"]
    # the base half is the base's, shared with the runs' evaluations
    assert results["timing"]["base_sampled"] == 0 and results["timing"]["tuned_sampled"] > 0
    record = results["provenance"]["weights"]
    assert record["format"] == fmt and record["base"] == "world:savanna"
    assert record["sha256"] == (weights_hash(path) if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest())
    assert {part: (got["tensors"], got["load"]) for part, got in record["loaded"].items() if part in loaded} == loaded
    if fmt != "pipeline":
        assert record["loaded"].keys() == loaded.keys()
    if name == "compvis":
        vae = len(load_file(VAE_FILE))
        assert record["loaded"]["unet"]["not_loaded"] == {"first_stage_model.": vae, "schedule buffers": 1}
    if name == "text-file":
        assert record["loaded"]["text_encoder"]["skipped_buffers"] == 1


# ---- bad files ----------------------------------------------------------------------------------------------


class _NotATensor:
    pass


def test_bad_weights_are_one_line_errors(made, tmp_path, tiny_pipeline, capsys):
    root, _ = made
    kv = _kv(load_file(root / "full" / UNET_FILE))

    def fails(state, name, *needles, save=save_file):
        path = tmp_path / name
        save(state, path)
        assert_one_line_error(capsys, main(["eval", "--weights", str(path), *EVAL]), *needles)

    capsys.readouterr()
    fails({"encoder.fc1.weight": torch.zeros(2, 2), "head.bias": torch.zeros(2)}, "other.safetensors",
          "unknown format", "encoder.fc1.weight")
    # a UNet of another size (an SD1 file on an SDXL base, in small): one key and both shapes named
    other = load_file(tiny_pipeline / "unet/diffusion_pytorch_model.safetensors")
    own = load_file(SHIPPED_WORLD / "pipeline/unet/diffusion_pytorch_model.safetensors")
    key = next(k for k in other if k in own and other[k].shape != own[k].shape)
    fails(other, "other-unet.safetensors", "does not fit the base's unet",
          f"{key} is {list(other[key].shape)} in the file but {list(own[key].shape)} in the base")
    bias = "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.bias"  # SD's K/V projections have none
    fails({**kv, bias: torch.zeros(64)}, "extra.safetensors", "1 key outside the base's unet", bias)
    deeper = {k.replace("up_blocks.1.", "up_blocks.3."): v for k, v in kv.items() if k.startswith("up_blocks.1.")}
    fails(deeper, "deeper.safetensors", "covers none of the base's unet")
    fails({"unet": {"up_blocks.3.attentions.0.proj_in.weight": torch.zeros(1)}}, "delta.bin",
          "covers none of the base's unet", save=torch.save)
    lora = load_file(root / "lora/lora/pytorch_lora_weights.safetensors")
    down = next(k for k in lora if k.endswith("attn2.to_k.lora.down.weight"))
    fails({**lora, down: torch.zeros(4, 32)}, "bad-lora.safetensors", "does not fit the base",
          "is [4, 32] in the file but [4, 64] in the base")
    fails({"unet": _NotATensor()}, "pickled.pt", "torch.load(weights_only=True)", save=torch.save)
    assert_one_line_error(capsys, main(["eval", str(root / "full"), "--weights", str(root / "delta.bin")]),
                          "instead of TARGET")


# ---- other families ---------------------------------------------------------------------------------------

REPLICAS = {SDXL: sdxl_files, SD35_MEDIUM: sd35_medium_files, FLUX_SCHNELL: flux_schnell_files}


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("tokenizers")


@pytest.mark.parametrize("repo", list(REPLICAS))
def test_a_partial_file_goes_into_each_familys_own_denoiser(repo, hub_cache, work, tmp_path):
    """ESD/UCE-style partial files on SDXL's UNet and the MMDiT transformers: the family's text-reading layers."""
    from diffusers import DiffusionPipeline

    from swapbench.families import for_pipeline
    from swapbench.weights_formats import load_edited

    put_repo(hub_cache, repo, REPLICAS[repo](work))
    base = DiffusionPipeline.from_pretrained(repo, torch_dtype=torch.float32)
    family = for_pipeline(base)
    before = family.denoiser_of(base).state_dict()
    edited = {f"{name}.weight": module.weight.detach() + 1
              for name, module in family.text_attention_modules(family.denoiser_of(base))}
    save_file(edited, tmp_path / "edit.safetensors")
    pipe, record = load_edited(repo, tmp_path / "edit.safetensors")
    assert record["format"] == "denoiser"
    assert record["loaded"] == {family.denoiser: {"tensors": len(edited), "of": len(before), "load": "partial",
                                                  "dtypes": ["float32"]}}
    after = family.denoiser_of(pipe).state_dict()
    assert all(torch.equal(after[k], edited[k] if k in edited else before[k]) for k in before)


def test_sdxl_takes_a_text_encoder_file_into_the_encoder_it_fits_and_refuses_an_sd1_unet(hub_cache, work, tmp_path):
    from diffusers import DiffusionPipeline

    from swapbench.errors import UserError
    from swapbench.weights_formats import load_edited

    put_repo(hub_cache, SDXL, sdxl_files(work))
    base = DiffusionPipeline.from_pretrained(SDXL, torch_dtype=torch.float32)
    second = {k: v + 1 for k, v in base.text_encoder_2.state_dict().items()}  # the projecting OpenCLIP encoder
    save_file(second, tmp_path / "te2.safetensors")
    pipe, record = load_edited(SDXL, tmp_path / "te2.safetensors")
    assert record["format"] == "text-encoder" and list(record["loaded"]) == ["text_encoder_2"]
    assert all(torch.equal(pipe.text_encoder_2.state_dict()[k], v) for k, v in second.items())
    # the savanna world's SD-layout UNet on SDXL's: one key, both shapes
    with pytest.raises(UserError, match=r"does not fit the base's unet: \S+ is \[\d+(, \d+)*\] in the file but"):
        load_edited(SDXL, SHIPPED_WORLD / "pipeline/unet/diffusion_pytorch_model.safetensors")


def test_a_kohya_lora_on_a_family_whose_loader_does_not_convert_it_is_refused(hub_cache, work, tmp_path):
    from swapbench.errors import UserError
    from swapbench.weights_formats import load_edited

    put_repo(hub_cache, SD35_MEDIUM, sd35_medium_files(work))
    module = "lora_unet_transformer_blocks_0_attn_to_k"
    save_file({f"{module}.lora_down.weight": torch.zeros(2, 8), f"{module}.lora_up.weight": torch.zeros(8, 2),
               f"{module}.alpha": torch.tensor(2.0)}, tmp_path / "kohya.safetensors")
    with pytest.raises(UserError, match="does not convert kohya-style keys .* for the Stable Diffusion 3/3.5 family"):
        load_edited(SD35_MEDIUM, tmp_path / "kohya.safetensors")


def test_every_format_is_a_module_in_the_detection_order_and_in_the_docs():
    from pathlib import Path

    from swapbench import weights_formats

    modules = {p.stem for p in Path(weights_formats.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert modules == set(weights_formats.FORMATS)
    formats = weights_formats.all_formats()
    assert [f.name for f in formats] == weights_formats.format_names()
    doc = (Path(__file__).parents[1] / "README.md").read_text()
    assert all(f"| `{f.name}` |" in doc for f in formats)
