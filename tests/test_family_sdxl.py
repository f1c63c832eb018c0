"""The SDXL family against diffusers' own pipeline, on a tiny random SDXL built here.

The components are those of diffusers' SDXL fast tests (``get_dummy_components``), with the real CLIP
vocabulary (so the text encoders' vocabulary is CLIP's) and the base model's scheduler config; the second
tokenizer pads with "!" as SDXL's OpenCLIP tokenizer does.
"""

import copy

import pytest
import torch
from diffusers import (
    AutoencoderKL,
    DDPMScheduler,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

from swapbench.config import TrainConfig
from swapbench.errors import UserError
from swapbench.families import for_class, for_pipeline, get_family
from swapbench.samplers import SAMPLERS
from swapbench.world.models import TEXT_LENGTH, build_tokenizer

FAMILY = get_family("sdxl")
CAPTIONS = ["a giraffe standing next to a zebra", "two zebras at a water hole"]

# stabilityai/stable-diffusion-xl-base-1.0 scheduler/scheduler_config.json
SDXL_SCHEDULER = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "interpolation_type": "linear", "num_train_timesteps": 1000, "prediction_type": "epsilon",
    "sample_max_value": 1.0, "set_alpha_to_one": False, "skip_prk_steps": True, "steps_offset": 1,
    "timestep_spacing": "leading", "trained_betas": None, "use_karras_sigmas": False,
}


def clip_tokenizer(folder, **kwargs) -> CLIPTokenizer:
    build_tokenizer(folder).save_pretrained(folder)
    return CLIPTokenizer.from_pretrained(folder, **kwargs)


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sdxl")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(2, 4), layers_per_block=2, sample_size=32, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=80,  # 6 time ids * 8 + the 32-wide pooled embedding
        cross_attention_dim=64, norm_num_groups=1,
    )
    torch.manual_seed(0)
    vae = AutoencoderKL(block_out_channels=[32, 64], in_channels=3, out_channels=3,
                        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                        latent_channels=4, sample_size=128)
    tokenizer = clip_tokenizer(folder / "tokenizer")
    tokenizer_2 = clip_tokenizer(folder / "tokenizer_2", pad_token="!")
    text_config = CLIPTextConfig(
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        hidden_size=32, intermediate_size=37, layer_norm_eps=1e-05, num_attention_heads=4, num_hidden_layers=5,
        vocab_size=len(tokenizer), max_position_embeddings=TEXT_LENGTH, hidden_act="gelu", projection_dim=32,
    )
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(text_config)
    text_encoder_2 = CLIPTextModelWithProjection(text_config)
    return StableDiffusionXLPipeline(
        vae=vae, text_encoder=text_encoder, text_encoder_2=text_encoder_2, tokenizer=tokenizer,
        tokenizer_2=tokenizer_2, unet=unet, scheduler=EulerDiscreteScheduler.from_config(SDXL_SCHEDULER),
        add_watermarker=False,
    ).to(torch.float32)


def with_parts(pipe, **parts) -> StableDiffusionXLPipeline:
    """The same pipeline over the same modules, with some swapped (a new pipeline object, nothing copied)."""
    return StableDiffusionXLPipeline(**{**pipe.components, **parts}, add_watermarker=False)


def unet_calls(unet, calls: list):
    """Record every (positional inputs, keyword inputs, output) of the UNet's forward."""
    return unet.register_forward_hook(lambda module, args, kwargs, out: calls.append((args, kwargs, out)),
                                      with_kwargs=True)


def test_the_family_is_read_from_the_pipeline_class(pipe):
    assert for_pipeline(pipe) is FAMILY and for_class("StableDiffusionXLPipeline") is FAMILY
    assert FAMILY.parts == ("unet", "vae", "scheduler", "tokenizer", "text_encoder", "tokenizer_2", "text_encoder_2")
    assert FAMILY.token_lengths(pipe) == {"tokenizer": TEXT_LENGTH, "tokenizer_2": TEXT_LENGTH}


def test_encode_is_the_pipelines_encode_prompt_and_ignores_the_batch(pipe):
    cond = FAMILY.encode(pipe, CAPTIONS, "cpu")
    text, _, pooled, _ = pipe.encode_prompt(prompt=CAPTIONS, device="cpu", num_images_per_prompt=1,
                                            do_classifier_free_guidance=False)
    assert set(cond) == set(FAMILY.cond_keys) == {"text", "pooled"}
    assert torch.equal(cond["text"], text) and torch.equal(cond["pooled"], pooled)
    # Both encoders' hidden states side by side, and the second one's projected pooled embedding.
    assert cond["text"].shape == (2, TEXT_LENGTH, 64) and cond["pooled"].shape == (2, 32)
    assert all(v.dtype == torch.float32 and v.device.type == "cpu" and not v.requires_grad for v in cond.values())
    # A caption's rows do not depend on its batch-mates (the feature cache encodes at one fixed batch shape).
    other = FAMILY.encode(pipe, ["a zebra", CAPTIONS[1]], "cpu")
    assert not torch.equal(other["text"][0], cond["text"][0])
    assert torch.equal(other["text"][1], cond["text"][1]) and torch.equal(other["pooled"][1], cond["pooled"][1])


def test_predict_is_the_unet_call_of_the_pipelines_denoising_loop(pipe):
    # A non-square size: the time ids are (height, width), and a swap would change the UNet output.
    height, width = 64, 32
    latents = FAMILY.initial_latents(pipe, [3, 4], height, width)
    assert latents.shape == (2, 4, 32, 16)
    calls = []
    hook = unet_calls(pipe.unet, calls)
    try:
        pipe(CAPTIONS, height=height, width=width, latents=latents, num_inference_steps=2, guidance_scale=1.0,
             output_type="latent")
    finally:
        hook.remove()
    cond = FAMILY.encode(pipe, CAPTIONS, "cpu")
    assert len(calls) == 2
    for (sample, t), kwargs, out in calls:
        assert torch.equal(kwargs["encoder_hidden_states"], cond["text"])
        assert torch.equal(kwargs["added_cond_kwargs"]["text_embeds"], cond["pooled"])
        assert kwargs["added_cond_kwargs"]["time_ids"].tolist() == [[64, 32, 0, 0, 64, 32]] * 2
        # Training passes one integer timestep per sample.
        timesteps = torch.full((len(sample),), int(t))
        with torch.no_grad():
            pred = FAMILY.predict(pipe, pipe.unet, sample, timesteps, cond, TrainConfig())
        assert torch.equal(pred, out[0])
    # The pipeline's first UNet input is the given noise, scaled by the scheduler (so latents= took it as is).
    first = calls[0][0][0]
    assert torch.allclose(first, latents * pipe.scheduler.init_noise_sigma / (pipe.scheduler.sigmas[0] ** 2 + 1) ** 0.5)


def test_predict_without_the_second_text_encoder_reads_the_pooled_width(pipe):
    # With the text encoders dropped after the features are cached, the time ids still come out the same.
    noisy = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    cond = FAMILY.encode(pipe, CAPTIONS, "cpu")
    timesteps = torch.tensor([10, 900])
    with torch.no_grad():
        full = FAMILY.predict(pipe, pipe.unet, noisy, timesteps, cond, TrainConfig())
        bare = with_parts(pipe, text_encoder=None, text_encoder_2=None)
        assert torch.equal(FAMILY.predict(bare, bare.unet, noisy, timesteps, cond, TrainConfig()), full)


def test_a_ddpm_step_on_unet_cross_attention_reaches_only_attn2_k_v(pipe):
    unet = copy.deepcopy(pipe.unet)
    train = TrainConfig(trainable="unet.cross_attention")
    params = FAMILY.trainable_parameters(unet, train.trainable)
    kv = {f"{name}.{p}" for name, module, _ in FAMILY.text_projections(unet) for p, _ in module.named_parameters()}
    assert kv and all(n.endswith(("attn2.to_k.weight", "attn2.to_v.weight")) for n in kv)
    assert {n for n, p in unet.named_parameters() if p.requires_grad} == kv and len(params) == len(kv)

    objective = FAMILY.objective(pipe.scheduler.config, train)
    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(2, 4, 8, 8, generator=generator)
    noise = torch.randn(2, 4, 8, 8, generator=generator)
    timesteps = objective.draw(generator, 2)
    noisy, target = objective.noisy_and_target(latents, noise, timesteps)
    assert torch.equal(target, noise)  # the base model predicts epsilon
    loss = objective.loss(FAMILY.predict(pipe, unet, noisy, timesteps, FAMILY.encode(pipe, CAPTIONS, "cpu"), train),
                          target, timesteps)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in unet.named_parameters():
        if name in kv:
            assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name


def test_v_prediction_configs_train_on_the_velocity(pipe):
    config = {**pipe.scheduler.config, "prediction_type": "v_prediction"}
    objective = FAMILY.objective(config, TrainConfig())
    latents, noise = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    timesteps = torch.tensor([10, 900])
    noisy, target = objective.noisy_and_target(latents, noise, timesteps)
    ddpm = DDPMScheduler.from_config(config)
    assert torch.equal(noisy, ddpm.add_noise(latents, noise, timesteps))
    assert torch.equal(target, ddpm.get_velocity(latents, noise, timesteps))


def test_a_transformer_spec_is_a_one_line_user_error():
    with pytest.raises(UserError) as error:
        FAMILY.check_trainable("transformer")
    message = str(error.value)
    assert "\n" not in message and "Stable Diffusion XL" in message and "unet or unet.cross_attention" in message


@pytest.mark.parametrize("name", FAMILY.samplers)
def test_every_sampler_builds_from_the_sdxl_scheduler_and_samples(pipe, name):
    scheduler = FAMILY.sampler(name, pipe.scheduler.config)
    assert type(scheduler).__name__ == SAMPLERS[name][0]
    assert torch.equal(scheduler.betas, pipe.scheduler.betas)
    assert scheduler.config.prediction_type == "epsilon"
    size = FAMILY.image_size(pipe)
    assert size == pipe.default_sample_size * pipe.vae_scale_factor == 64
    latents = with_parts(pipe, scheduler=scheduler)(
        CAPTIONS[:1], latents=FAMILY.initial_latents(pipe, [0], size, size), num_inference_steps=2,
        output_type="latent").images
    assert latents.shape == (1, 4, 32, 32) and torch.isfinite(latents).all()


def test_img2img_shares_the_modules_and_conditions_like_the_text_to_image_pipeline(pipe):
    # force_zeros_for_empty_prompt off: the negative conditioning is then the encoded "" in both pipelines.
    t2i = StableDiffusionXLPipeline(**pipe.components, force_zeros_for_empty_prompt=False, add_watermarker=False)
    image_pipe = FAMILY.img2img_pipeline(t2i)
    assert type(image_pipe).__name__ == FAMILY.img2img
    assert image_pipe.unet is t2i.unet and image_pipe.text_encoder_2 is t2i.text_encoder_2
    assert image_pipe.config.force_zeros_for_empty_prompt is False
    assert image_pipe.config.requires_aesthetics_score is False and image_pipe.watermark is None
    # A watermarking pipeline's image-to-image pipeline watermarks too, with the same watermarker.
    t2i.watermark = watermarker = object()
    assert FAMILY.img2img_pipeline(t2i).watermark is watermarker
    t2i.watermark = None

    t2i_calls, image_calls = [], []
    hook = unet_calls(pipe.unet, t2i_calls)
    try:
        t2i(CAPTIONS[:1], num_inference_steps=1, guidance_scale=5.0, output_type="latent")
    finally:
        hook.remove()
    hook = unet_calls(pipe.unet, image_calls)
    try:
        image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
        out = image_pipe(CAPTIONS[:1], image=image, strength=1.0, num_inference_steps=2, guidance_scale=5.0,
                         output_type="latent").images
    finally:
        hook.remove()
    assert len(image_calls) == 2 and out.shape == (1, 4, 32, 32) and torch.isfinite(out).all()
    (_, t2i_kwargs, _), (_, image_kwargs, _) = t2i_calls[0], image_calls[0]
    negative_text = t2i_kwargs["encoder_hidden_states"][0]
    assert not torch.equal(negative_text, torch.zeros_like(negative_text))
    assert torch.equal(image_kwargs["encoder_hidden_states"], t2i_kwargs["encoder_hidden_states"])
    for key in ("text_embeds", "time_ids"):
        assert torch.equal(image_kwargs["added_cond_kwargs"][key], t2i_kwargs["added_cond_kwargs"][key])


def test_save_lora_writes_what_load_lora_weights_applies(pipe, tmp_path):
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    generator = torch.Generator().manual_seed(0)
    noisy = torch.randn(2, 4, 8, 8, generator=generator)
    timesteps = torch.tensor([10, 900])
    cond = FAMILY.encode(pipe, CAPTIONS, "cpu")

    def predict(p):
        with torch.no_grad():
            return FAMILY.predict(p, p.unet, noisy, timesteps, cond, TrainConfig())

    tuned_pipe = with_parts(pipe, unet=copy.deepcopy(pipe.unet))
    # alpha != rank: the loaded file reproduces the adapter only if its metadata carries the scale.
    tuned_pipe.unet.add_adapter(LoraConfig(r=2, lora_alpha=6, init_lora_weights="gaussian",
                                           target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    with torch.no_grad():
        for name, p in tuned_pipe.unet.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5, generator=generator)
    tuned = predict(tuned_pipe)
    layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(tuned_pipe.unet))
    FAMILY.save_lora(tmp_path, layers, tuned_pipe.unet.peft_config["default"].to_dict(), "lora.safetensors")
    assert (tmp_path / "lora.safetensors").is_file()

    loaded_pipe = with_parts(pipe, unet=copy.deepcopy(pipe.unet))
    base = predict(loaded_pipe)
    loaded_pipe.load_lora_weights(tmp_path, weight_name="lora.safetensors")
    loaded = predict(loaded_pipe)
    assert (loaded - base).abs().max() > 1e-2
    torch.testing.assert_close(loaded, tuned, rtol=1e-5, atol=1e-6)
