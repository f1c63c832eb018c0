"""The SD3 and FLUX.1 families against their diffusers pipelines, on tiny random pipelines built here
(diffusers' own test configs: get_dummy_components of its SD3 and FLUX pipeline tests; the CLIP tokenizer
rebuilt offline, a T5 tokenizer trained on generated captions)."""

from __future__ import annotations

import copy
import itertools
import json
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    FlowMatchEulerDiscreteScheduler,
    FluxPipeline,
    FluxTransformer2DModel,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from swapbench.config import TrainConfig
from swapbench.errors import UserError
from swapbench.families import FAMILIES, for_class, for_pipeline, get_family
from swapbench.world import models

SIZE = 16  # pixels; the tiny VAEs do not downsample, so also latent pixels
CAPTIONS = ["a giraffe standing in the savanna", "two zebras near a river"]
# The real checkpoints' scheduler configs (SD3.5; FLUX.1-dev with resolution-dependent shifting; schnell).
SD35_SCHEDULER = {"shift": 3.0}
DEV_SCHEDULER = {"base_image_seq_len": 256, "base_shift": 0.5, "max_image_seq_len": 4096, "max_shift": 1.15,
                 "shift": 3.0, "use_dynamic_shifting": True}
SCHNELL_SCHEDULER = {"shift": 1.0, "use_dynamic_shifting": False}


def t5_tokenizer():
    """A real T5 (Unigram) tokenizer, trained on a few hundred generated captions."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from tokenizers.models import Unigram
    from transformers import T5Tokenizer

    animals = ["giraffe", "zebra", "lion", "elephant", "hippo", "rhino", "cheetah", "antelope", "buffalo", "ostrich"]
    counts = ["a", "two", "three", "a herd of", "a young"]
    scenes = ["standing in the savanna", "near a river", "under a tree", "on the grass", "at sunset", "in the dust"]
    corpus = [f"{n} {a}{'s' if n not in ('a', 'a young') else ''} {s}"
              for n, a, s in itertools.product(counts, animals, scenes)]
    tok = Tokenizer(Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(vocab_size=150, unk_token="<unk>",
                                                            special_tokens=["<pad>", "</s>", "<unk>"]))
    vocab = [tuple(piece) for piece in json.loads(tok.to_str())["model"]["vocab"]]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def t5_encoder(vocab_size: int, width: int) -> T5EncoderModel:
    torch.manual_seed(0)
    return T5EncoderModel(T5Config(vocab_size=vocab_size, d_model=width, d_kv=8, d_ff=37, num_layers=2, num_heads=4,
                                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1))


def clip_config() -> CLIPTextConfig:
    # diffusers' dummy CLIP, on the real CLIP vocabulary the rebuilt tokenizer uses
    return CLIPTextConfig(vocab_size=49408, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                          num_attention_heads=4, projection_dim=32, bos_token_id=49406, eos_token_id=49407,
                          pad_token_id=49407, max_position_embeddings=models.TEXT_LENGTH)


def vae(latent_channels: int) -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(4,), layers_per_block=1,
                         latent_channels=latent_channels, norm_num_groups=1, use_quant_conv=False,
                         use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5035)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory):
    return models.build_tokenizer(tmp_path_factory.mktemp("clip")), t5_tokenizer()


@pytest.fixture(scope="module")
def sd3(tokenizers):
    clip, t5 = tokenizers
    torch.manual_seed(0)
    # Two layers, the first a dual-attention block (SD3.5): its attn2 is an image self-attention.
    transformer = SD3Transformer2DModel(sample_size=32, patch_size=1, in_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=4, caption_projection_dim=32,
                                        joint_attention_dim=64, pooled_projection_dim=64, out_channels=4,
                                        dual_attention_layers=(0,))
    encoders = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        encoders.append(CLIPTextModelWithProjection(clip_config()))
    # T5 as wide as the two CLIP widths concatenated, so the pipeline pads CLIP's states rather than cutting them
    return ready(StableDiffusion3Pipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**SD35_SCHEDULER), vae=vae(4), transformer=transformer,
        text_encoder=encoders[0], tokenizer=clip, text_encoder_2=encoders[1], tokenizer_2=copy.deepcopy(clip),
        text_encoder_3=t5_encoder(len(t5), 64), tokenizer_3=t5))


def flux_pipeline(tokenizers, dev: bool) -> FluxPipeline:
    clip, t5 = tokenizers
    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(patch_size=1, in_channels=4, num_layers=1, num_single_layers=1,
                                         attention_head_dim=16, num_attention_heads=2, joint_attention_dim=32,
                                         pooled_projection_dim=32, axes_dims_rope=[4, 4, 8], guidance_embeds=dev)
    torch.manual_seed(0)
    return ready(FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(**(DEV_SCHEDULER if dev else SCHNELL_SCHEDULER)), vae=vae(1),
        transformer=transformer, text_encoder=CLIPTextModel(clip_config()), tokenizer=clip,
        text_encoder_2=t5_encoder(len(t5), 32), tokenizer_2=t5))


@pytest.fixture(scope="module")
def dev(tokenizers):
    return flux_pipeline(tokenizers, dev=True)


@pytest.fixture(scope="module")
def schnell(tokenizers):
    return flux_pipeline(tokenizers, dev=False)


def ready(pipe):
    """As ``from_pretrained`` hands it over: every module in eval mode (T5's dropout off)."""
    for module in pipe.components.values():
        if isinstance(module, torch.nn.Module):
            module.eval()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(params=["sd3", "dev", "schnell"])
def pipe(request):
    return request.getfixturevalue(request.param)


@contextmanager
def transformer_calls(module):
    """Every call's keyword arguments and output."""
    calls = []
    handle = module.register_forward_hook(lambda m, args, kwargs, out: calls.append((kwargs, out)), with_kwargs=True)
    try:
        yield calls
    finally:
        handle.remove()


def guidance_scale(pipe) -> float:
    # SD3: 1 turns classifier-free guidance off; FLUX: the guidance embedding's value (dev), unused (schnell)
    return 1.0 if isinstance(pipe, StableDiffusion3Pipeline) else 2.5


def sample(pipe, family, **kwargs) -> torch.Tensor:
    with torch.no_grad():
        return pipe(prompt=CAPTIONS, height=SIZE, width=SIZE, guidance_scale=guidance_scale(pipe), output_type="latent",
                    **family.prompt_kwargs(pipe, 24), **kwargs).images


def tensors(kwargs: dict) -> dict[str, torch.Tensor]:
    return {k: v for k, v in kwargs.items() if isinstance(v, torch.Tensor)}


# ---- declarations ----------------------------------------------------------------------------------------


def test_families_are_found_by_pipeline_class_and_refuse_what_does_not_apply(sd3, dev):
    assert FAMILIES == ("sd", "sdxl", "sd3", "flux")
    assert for_pipeline(sd3).name == "sd3" and for_pipeline(dev).name == "flux"
    assert for_class("StableDiffusion3Pipeline") is get_family("sd3")
    for family in (get_family("sd3"), get_family("flux")):
        with pytest.raises(UserError) as err:
            family.check_trainable("unet")
        assert "\n" not in str(err.value) and "transformer or transformer.text_attention" in str(err.value)
        with pytest.raises(UserError, match="use euler"):
            family.check_sampler("dpmsolver++")
        with pytest.raises(UserError, match="1 to 512"):
            family.sequence_length(dev, 513)
        assert family.cond_keys == ("text", "pooled")
    with pytest.raises(UserError, match="no T5"):
        get_family("sd").sequence_length(None, 77)
    assert get_family("sd").prompt_kwargs(None) == {}


def test_t5_length_defaults_to_the_checkpoints_and_keys_the_feature_cache(sd3, dev, schnell):
    sd3_family, flux = get_family("sd3"), get_family("flux")
    clip = models.TEXT_LENGTH
    assert sd3_family.token_lengths(sd3) == {"tokenizer": clip, "tokenizer_2": clip, "tokenizer_3": 256}
    assert flux.token_lengths(dev) == {"tokenizer": clip, "tokenizer_2": 512}
    assert flux.token_lengths(schnell) == {"tokenizer": clip, "tokenizer_2": 256}
    assert flux.token_lengths(dev, 24)["tokenizer_2"] == 24 and flux.prompt_kwargs(dev, 24) == {
        "max_sequence_length": 24}
    # the defaults reach the encoders: CLIP's tokens then T5's for SD3, T5's alone for FLUX
    assert sd3_family.encode(sd3, CAPTIONS, "cpu")["text"].shape[1] == clip + 256
    assert flux.encode(dev, CAPTIONS, "cpu")["text"].shape[1] == 512
    assert flux.encode(schnell, CAPTIONS, "cpu")["text"].shape[1] == 256


def test_image_size_channels_and_samplers(sd3, dev):
    sd3_family, flux = get_family("sd3"), get_family("flux")
    assert sd3_family.image_size(sd3) == 32 * sd3.vae_scale_factor  # the transformer's sample_size
    assert flux.image_size(dev) == 128 * dev.vae_scale_factor  # FluxPipeline's default_sample_size
    assert sd3_family.latent_channels(sd3) == 4 and flux.latent_channels(dev) == 1
    euler = flux.sampler("euler", dev.scheduler.config)
    assert isinstance(euler, FlowMatchEulerDiscreteScheduler) and euler.config.use_dynamic_shifting
    assert sd3_family.sampler("euler", sd3.scheduler.config).config.shift == 3.0


# ---- conditioning, latents and the denoiser call ------------------------------------------------------------


def test_encode_and_predict_are_what_the_pipeline_passes_its_transformer(pipe):
    family = for_pipeline(pipe)
    train = TrainConfig(guidance=guidance_scale(pipe))
    with transformer_calls(pipe.transformer) as calls:
        sample(pipe, family, num_inference_steps=1)
    (pipe_kwargs, pipe_out), = calls
    cond = family.encode(pipe, CAPTIONS, "cpu", 24)
    # bit for bit the pipeline's own encode_prompt output, no classifier-free guidance batch
    assert torch.equal(cond["text"], pipe_kwargs["encoder_hidden_states"])
    assert torch.equal(cond["pooled"], pipe_kwargs["pooled_projections"])

    latents = pipe_kwargs["hidden_states"]
    if isinstance(pipe, FluxPipeline):
        latents = FluxPipeline._unpack_latents(latents, SIZE, SIZE, pipe.vae_scale_factor)
    assert latents.shape == (len(CAPTIONS), family.latent_channels(pipe), SIZE, SIZE)
    timesteps = pipe.scheduler.timesteps[:1].expand(len(CAPTIONS))
    with transformer_calls(pipe.transformer) as calls, torch.no_grad():
        pred = family.predict(pipe, pipe.transformer, latents, timesteps, cond, train)
    (family_kwargs, family_out), = calls
    assert tensors(family_kwargs).keys() == tensors(pipe_kwargs).keys()
    for key, value in tensors(pipe_kwargs).items():
        assert torch.equal(family_kwargs[key], value), key
    assert torch.equal(family_out[0], pipe_out[0])
    if isinstance(pipe, FluxPipeline):
        assert torch.equal(pred, FluxPipeline._unpack_latents(pipe_out[0], SIZE, SIZE, pipe.vae_scale_factor))
    assert pred.shape == latents.shape


def test_flux_dev_embeds_the_training_guidance_and_schnell_has_none(dev, schnell):
    flux = get_family("flux")
    for pipe, distilled in ((dev, True), (schnell, False)):
        cond = flux.encode(pipe, CAPTIONS, "cpu", 24)
        latents = torch.randn(2, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
        t = torch.tensor([700.0, 300.0])
        with torch.no_grad(), transformer_calls(pipe.transformer) as calls:
            low, high = (flux.predict(pipe, pipe.transformer, latents, t, cond, TrainConfig(guidance=g))
                         for g in (1.0, 4.0))
        if distilled:
            assert calls[1][0]["guidance"].tolist() == [4.0, 4.0] and not torch.allclose(low, high)
        else:
            assert calls[1][0]["guidance"] is None and torch.equal(low, high)
            assert not hasattr(pipe.transformer.time_text_embed, "guidance_embedder")


def test_initial_latents_are_the_pipelines_own_draw_of_each_seed(pipe):
    family = for_pipeline(pipe)
    seeds = [3, 11]
    own = sample(pipe, family, num_inference_steps=1,
                 generator=[torch.Generator("cpu").manual_seed(s) for s in seeds])
    given = sample(pipe, family, num_inference_steps=1, latents=family.initial_latents(pipe, seeds, SIZE, SIZE))
    assert torch.equal(own, given)


def test_to_latents_is_the_img2img_encoding_and_inverts_the_decode(dev, sd3):
    from diffusers.pipelines.flux.pipeline_flux_img2img import retrieve_latents

    image = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    img2img = get_family("flux").img2img_pipeline(dev)
    with torch.no_grad():
        z = retrieve_latents(dev.vae.encode(image), generator=torch.Generator().manual_seed(1))
        own = img2img._encode_vae_image(image, torch.Generator().manual_seed(1))
    assert torch.equal(get_family("flux").to_latents(dev.vae, z), own)
    latents = get_family("sd3").to_latents(sd3.vae, z.expand(1, 4, SIZE, SIZE))
    # the pipelines' decode: latents / scaling_factor + shift_factor
    decoded = latents / sd3.vae.config.scaling_factor + sd3.vae.config.shift_factor
    assert torch.allclose(decoded, z.expand(1, 4, SIZE, SIZE), atol=1e-6)


# ---- training ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sd3", "dev"])
def test_a_flow_matching_step_trains_only_the_text_attention_subset(request, name):
    pipe = request.getfixturevalue(name)
    family, transformer = for_pipeline(pipe), pipe.transformer
    train = TrainConfig(weighting_scheme="logit_normal", guidance=3.5)
    projections = family.text_projections(transformer)
    assert [(p.name, p.reads) for p in projections] == [("context_embedder", "text"),
                                                        ("time_text_embed.text_embedder.linear_1", "pooled")]
    trained = [n for n, _ in family.text_attention_modules(transformer)]
    joint = [f"transformer_blocks.{i}.attn.{p}" for i in range(len(transformer.transformer_blocks))
             for p in ("add_k_proj", "add_v_proj")]
    assert trained == [p.name for p in projections] + joint
    if name == "sd3":  # a dual-attention block has an image self-attention attn2; nothing selects it
        assert any(".attn2." in n for n, _ in transformer.named_modules())
    assert not any("attn2" in n or "single_transformer_blocks" in n for n in trained)

    cond = family.encode(pipe, CAPTIONS, "cpu", 24)
    latents = torch.randn(2, family.latent_channels(pipe), SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    objective = family.objective(pipe.scheduler.config, train)
    timesteps = objective.draw(torch.Generator().manual_seed(0), 2)
    noisy, target = objective.noisy_and_target(latents, torch.randn_like(latents), timesteps)
    params = family.trainable_parameters(transformer, "transformer.text_attention")
    inputs = {}

    def keep_input(name):
        def hook(module, args):
            inputs[name] = args[0].detach().clone()
        return hook

    hooks = [p.module.register_forward_pre_hook(keep_input(p.name)) for p in projections]
    try:
        loss = objective.loss(family.predict(pipe, transformer, noisy, timesteps, cond, train), target, timesteps)
        loss.backward()
    finally:
        for hook in hooks:
            hook.remove()
    # the closed-form targets read the conditioning tensors themselves
    for p in projections:
        assert torch.equal(inputs[p.name], cond[p.reads])
    assert torch.isfinite(loss)
    subset = {id(p) for p in params}
    assert {id(p) for p in transformer.parameters() if p.grad is not None} == subset
    assert all(float(p.grad.abs().sum()) > 0 for p in params)
    transformer.zero_grad(set_to_none=True)
    transformer.requires_grad_(False)


# ---- sampling ------------------------------------------------------------------------------------------------


def test_img2img_runs_two_steps_on_the_same_modules(pipe):
    family = for_pipeline(pipe)
    img2img = family.img2img_pipeline(pipe)
    assert type(img2img).__name__ == family.img2img and img2img.transformer is pipe.transformer
    image = torch.rand(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), transformer_calls(pipe.transformer) as calls:
        out = img2img(prompt=CAPTIONS, image=image, strength=0.5, num_inference_steps=4, height=SIZE, width=SIZE,
                      guidance_scale=guidance_scale(pipe), output_type="pt", **family.prompt_kwargs(pipe, 24)).images
    assert len(calls) == 2 and out.shape == (2, 3, SIZE, SIZE) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ["sd3", "dev"])
def test_saved_lora_loads_into_the_pipeline_and_changes_its_output(request, tmp_path, name):
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    pipe = request.getfixturevalue(name)
    family = for_pipeline(pipe)
    tuned = copy.deepcopy(pipe.transformer)
    tuned.add_adapter(LoraConfig(r=2, lora_alpha=4, target_modules=["add_k_proj", "add_v_proj"],
                                 init_lora_weights=False))
    family.save_lora(tmp_path, get_peft_model_state_dict(tuned), tuned.peft_config["default"].to_dict(),
                     "lora.safetensors")
    latents = family.initial_latents(pipe, [0, 1], SIZE, SIZE)
    base = sample(pipe, family, num_inference_steps=1, latents=latents)
    pipe.transformer, original = tuned, pipe.transformer
    try:
        expected = sample(pipe, family, num_inference_steps=1, latents=latents)
    finally:
        pipe.transformer = original
    pipe.load_lora_weights(tmp_path, weight_name="lora.safetensors")
    try:
        loaded = sample(pipe, family, num_inference_steps=1, latents=latents)
    finally:
        pipe.unload_lora_weights()
    assert not torch.allclose(loaded, base, atol=1e-4)
    assert torch.allclose(loaded, expected, atol=1e-6)  # alpha / rank came with the file
    assert torch.equal(sample(pipe, family, num_inference_steps=1, latents=latents), base)


# ---- the trajectory probe's handover ------------------------------------------------------------------------


@pytest.mark.parametrize("name, exact", [("sd3", False), ("dev", True), ("schnell", True)])
def test_continuation_after_k_steps_finishes_the_plain_trajectory(request, name, exact):
    pipe = request.getfixturevalue(name)
    family, steps, k = for_pipeline(pipe), 4, 2
    noise = family.initial_latents(pipe, [5, 6], SIZE, SIZE)
    held = {}

    def keep(p, i, t, kwargs):
        held[i + 1] = kwargs["latents"].clone()
        return kwargs

    plain = sample(pipe, family, num_inference_steps=steps, latents=noise, callback_on_step_end=keep)
    full_timesteps = pipe.scheduler.timesteps.clone()
    from_start = sample(pipe, family, **family.continuation(pipe, steps, 0, noise))
    handover = sample(pipe, family, **family.continuation(pipe, steps, k, held[k]))
    assert pipe.scheduler.timesteps.shape == (steps - k,)
    # FLUX's own grid is cast to float32 before its shift in both calls: bit for bit. SD3's full call shifts
    # its float64 grid, the continuation the float32 one: equal to float32 rounding.
    if exact:
        assert torch.equal(pipe.scheduler.timesteps, full_timesteps[k:])
        assert torch.equal(from_start, plain) and torch.equal(handover, plain)
    else:
        assert torch.allclose(pipe.scheduler.timesteps, full_timesteps[k:], rtol=1e-6, atol=1e-4)
        assert torch.allclose(from_start, plain, atol=1e-5) and torch.allclose(handover, plain, atol=1e-5)
    assert not torch.allclose(held[k], plain, atol=1e-2)  # the handover point is mid-trajectory


def test_continuation_refuses_a_respaced_sigma_grid(dev):
    # Karras sigmas respace the whole grid from its ends and length: a tail is not the tail of the whole
    karras = SimpleNamespace(scheduler=FlowMatchEulerDiscreteScheduler.from_config(dev.scheduler.config,
                                                                                   use_karras_sigmas=True))
    with pytest.raises(UserError, match="plain sigma grid"):
        get_family("flux").continuation(karras, 4, 2, torch.zeros(1))


def test_sd_continuation_is_the_remaining_timesteps_from_latents_the_pipeline_rescales(tiny_pipeline):
    from diffusers import EulerDiscreteScheduler, StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tiny_pipeline)
    pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    family, steps, k = get_family("sd"), 4, 2
    noise = family.initial_latents(pipe, [5], 32, 32)
    held = {}

    def keep(p, i, t, kwargs):
        held[i + 1] = kwargs["latents"].clone()
        return kwargs

    def run(**kwargs):
        with torch.no_grad():
            return pipe(prompt=CAPTIONS[:1], height=32, width=32, guidance_scale=1.0, output_type="latent",
                        **kwargs).images

    plain = run(num_inference_steps=steps, latents=noise, callback_on_step_end=keep)
    continuation = family.continuation(pipe, steps, k, held[k])
    assert torch.allclose(run(**continuation), plain, atol=1e-5)
    # the pipeline multiplies given latents by the shortened schedule's init_noise_sigma: they must come undone
    assert not torch.allclose(run(timesteps=continuation["timesteps"], latents=held[k]), plain, atol=1e-3)

