"""Build the embedded worlds from their seed.

savanna: data -> VAE -> judge -> text encoder + UNet -> quality card. savanna-flow (Stable Diffusion 3
layout): savanna's data -> latents from savanna's VAE -> two text encoders + MMDiT (flow matching) ->
quality card with savanna's judge.

Stages run in a fixed order with fixed seeds, so a rebuild on the same machine gives the same
weights. The judge is trained on clean images *and* VAE reconstructions, because generated images
look like reconstructions (a judge trained on clean images alone misreads them).
"""

from __future__ import annotations

import copy
import logging
import math
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, StableDiffusion3Pipeline, StableDiffusionPipeline
from diffusers.optimization import get_cosine_schedule_with_warmup

from swapbench import __version__
from swapbench.config import TrainConfig
from swapbench.eval.judge import WORLD_TEMPLATES, ZeroShotJudge
from swapbench.eval.metrics import confusion
from swapbench.eval.sampling import sample
from swapbench.families import get_family
from swapbench.io import atomic_write_json, read_json, replace_dir, sha256_file, staging_dir
from swapbench.loading import world_dir
from swapbench.progress import console, progress_bar
from swapbench.train.recipe import Batch, diffusion_loss
from swapbench.world import generator as gen
from swapbench.world import models

VAE_WEIGHTS = "pipeline/vae/diffusion_pytorch_model.safetensors"
FIDELITY_TEMPLATES = ("a photo of a {}", "a {} standing in a field", "a {} in the savanna", "there is a {}")


@dataclass
class BuildSettings:
    seed: int = 0
    train_images: int = 25_000
    val_images: int = 2_000
    vae_steps: int = 1_200
    vae_batch: int = 32
    vae_lr: float = 2e-3
    judge_steps: int = 1_200
    judge_batch: int = 256
    judge_lr: float = 1e-3
    unet_steps: int = 1_800
    unet_batch: int = 64
    unet_lr: float = 1e-3
    caption_dropout: float = 0.1
    check_images: int = 200  # held-out judge check, per concept
    fidelity_seeds: int = 64  # base-fidelity samples per concept

    @classmethod
    def mini(cls) -> BuildSettings:
        """A build small enough for a test: same code, a few images and steps."""
        return cls(train_images=600, val_images=100, vae_steps=4, vae_batch=8, judge_steps=3, judge_batch=32,
                   unet_steps=4, unet_batch=8, check_images=4, fidelity_seeds=2)


@dataclass
class FlowBuildSettings:
    """savanna-flow: the savanna build's images (same generator, seed and count) in savanna's VAE latents."""

    seed: int = 0
    train_images: int = 25_000
    transformer_steps: int = 4_400  # 2,200 left donkey 0.55 and deer 0.70 in base fidelity, and the swap at 0.85
    transformer_batch: int = 64
    transformer_lr: float = 1e-3
    caption_dropout: float = 0.1
    weighting_scheme: str = "logit_normal"
    fidelity_seeds: int = 64

    @classmethod
    def mini(cls) -> FlowBuildSettings:
        return cls(train_images=600, transformer_steps=4, transformer_batch=8, fidelity_seeds=2)


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W floats in [-1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)


def _loop(description: str, steps: int, step_fn) -> list[float]:
    losses = []
    with progress_bar() as bar:
        task = bar.add_task(description, total=steps, info="")
        for step in range(steps):
            loss = step_fn(step)
            losses.append(loss)
            if step % 10 == 0 or step == steps - 1:
                bar.update(task, completed=step + 1, info=f"loss {np.mean(losses[-50:]):.4f}")
    console.log(f"{description}: {steps} steps, final loss {np.mean(losses[-50:]) if losses else float('nan'):.4f}")
    return losses


def train_vae(images: torch.Tensor, s: BuildSettings) -> models.AutoencoderKL:
    vae = models.build_vae(images.shape[-1])
    opt = torch.optim.AdamW(vae.parameters(), lr=s.vae_lr, weight_decay=0.0)
    sched = get_cosine_schedule_with_warmup(opt, 50, max(s.vae_steps, 1))
    g = torch.Generator().manual_seed(s.seed + 1)

    def step(_: int) -> float:
        x = images[torch.randint(len(images), (s.vae_batch,), generator=g)]
        posterior = vae.encode(x).latent_dist
        recon = vae.decode(posterior.sample(generator=g)).sample
        loss = F.mse_loss(recon, x) + 0.5 * F.l1_loss(recon, x) + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        sched.step()
        return loss.item()

    _loop("world: VAE", s.vae_steps, step)
    return vae.eval().requires_grad_(False)


@torch.no_grad()
def encode(vae, images: torch.Tensor, batch: int = 512) -> torch.Tensor:
    return torch.cat([vae.encode(images[i : i + batch]).latent_dist.mean for i in range(0, len(images), batch)])


@torch.no_grad()
def decode(vae, latents: torch.Tensor, batch: int = 512) -> torch.Tensor:
    return torch.cat([vae.decode(latents[i : i + batch]).sample.clamp(-1, 1) for i in range(0, len(latents), batch)])


def multi_positive_clip_loss(image: torch.Tensor, text: torch.Tensor, scale: torch.Tensor,
                             groups: torch.Tensor) -> torch.Tensor:
    """CLIP loss where every pair from the same group (same species set) counts as a positive.

    Plain CLIP treats the other 30-odd zebra images of a 256 batch as negatives for a zebra caption,
    which teaches the towers to separate zebras from each other instead of zebras from okapis.
    """
    logits = scale * image @ text.T
    target = (groups[:, None] == groups[None, :]).float()
    target = target / target.sum(dim=1, keepdim=True)
    return -((target * logits.log_softmax(1)).sum(1).mean() + (target * logits.T.log_softmax(1)).sum(1).mean()) / 2


def train_judge(clean: torch.Tensor, recon: torch.Tensor, caps: list[list[str]], labels: list[dict[str, int]],
                s: BuildSettings) -> open_clip.CLIP:
    """Contrastive training on world captions; half of every batch is VAE reconstructions."""
    model = models.build_judge()
    tokenizer = open_clip.SimpleTokenizer(context_length=models.TEXT_LENGTH)
    keys = [",".join(sorted(label)) for label in labels]
    index = {k: i for i, k in enumerate(sorted(set(keys)))}
    groups = torch.tensor([index[k] for k in keys])
    opt = torch.optim.AdamW(model.parameters(), lr=s.judge_lr, weight_decay=0.1)
    sched = get_cosine_schedule_with_warmup(opt, 50, max(s.judge_steps, 1))
    g = torch.Generator().manual_seed(s.seed + 2)
    n_recon = len(recon)

    def step(_: int) -> float:
        idx = torch.randint(n_recon, (s.judge_batch,), generator=g)
        use_recon = torch.rand(s.judge_batch, generator=g) < 0.5
        x = torch.where(use_recon.view(-1, 1, 1, 1), recon[idx], clean[idx])
        x = torch.where(torch.rand(s.judge_batch, 1, 1, 1, generator=g) < 0.5, x, x.flip(-1))
        texts = tokenizer([caps[i][int(torch.randint(len(caps[i]), (1,), generator=g))] for i in idx.tolist()])
        img, txt, scale = model(x, texts)[:3]
        loss = multi_positive_clip_loss(img, txt, scale, groups[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        return loss.item()

    _loop("world: judge", s.judge_steps, step)
    return model.eval().requires_grad_(False)


def draw_captions(caps: list[list[str]], idx: torch.Tensor, dropout: float, g: torch.Generator) -> list[str]:
    """One caption of each image, the empty one with probability ``dropout`` (what classifier-free guidance's
    unconditional branch reads)."""
    texts = [caps[i][int(torch.randint(len(caps[i]), (1,), generator=g))] for i in idx.tolist()]
    drop = torch.rand(len(texts), generator=g) < dropout
    return ["" if d else t for t, d in zip(texts, drop.tolist(), strict=True)]


def _update(loss: torch.Tensor, opt: torch.optim.Optimizer, sched, params: list[torch.Tensor]) -> float:
    """One optimiser step of a denoiser build (gradients clipped to norm 1); returns the loss."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    sched.step()
    return loss.item()


def train_unet(latents: torch.Tensor, caps: list[list[str]], tokenizer, s: BuildSettings):
    """Text encoder and UNet trained jointly from scratch (epsilon MSE, DDPM noising)."""
    text_encoder, unet = models.build_text_encoder(), models.build_unet(latents.shape[-1])
    noise_sched = models.train_scheduler()
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=s.unet_lr, weight_decay=1e-2)
    sched = get_cosine_schedule_with_warmup(opt, 100, max(s.unet_steps, 1))
    g = torch.Generator().manual_seed(s.seed + 3)

    def step(_: int) -> float:
        idx = torch.randint(len(latents), (s.unet_batch,), generator=g)
        x0 = latents[idx]
        texts = draw_captions(caps, idx, s.caption_dropout, g)
        ids = tokenizer(texts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                        return_tensors="pt").input_ids
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, noise_sched.config.num_train_timesteps, (len(x0),), generator=g)
        pred = unet(noise_sched.add_noise(x0, noise, t), t, text_encoder(ids)[0]).sample
        loss = F.mse_loss(pred, noise)
        return _update(loss, opt, sched, params)

    unet.train()
    text_encoder.train()
    _loop("world: text encoder + UNet", s.unet_steps, step)
    return text_encoder.eval().requires_grad_(False), unet.eval().requires_grad_(False)


def train_transformer(vae, latents: torch.Tensor, caps: list[list[str]], tokenizer,
                      s: FlowBuildSettings) -> StableDiffusion3Pipeline:
    """The two CLIP text encoders and the MMDiT trained jointly from scratch, the way swapbench trains the SD3
    family: its conditioning (the pipeline's ``encode_prompt``, here with gradients into the encoders), its
    flow-matching objective (``weighting_scheme`` timesteps, target noise - x0) and denoiser call, through the
    recipe's loss."""
    family = get_family("sd3")
    pipe = models.assemble_flow_pipeline(vae, models.build_projection_text_encoder(), tokenizer,
                                         models.build_projection_text_encoder(), copy.deepcopy(tokenizer),
                                         models.build_transformer(latents.shape[-1]))
    train = TrainConfig(weighting_scheme=s.weighting_scheme)
    objective = family.objective(pipe.scheduler.config, train)
    trained = (pipe.transformer, pipe.text_encoder, pipe.text_encoder_2)
    params = [p for module in trained for p in module.parameters()]
    # fused: one kernel over the two 49,408-row embedding tables instead of a loop, ~10x faster steps of Adam
    opt = torch.optim.AdamW(params, lr=s.transformer_lr, weight_decay=1e-2, fused=True)
    sched = get_cosine_schedule_with_warmup(opt, 100, max(s.transformer_steps, 1))
    g = torch.Generator().manual_seed(s.seed + 3)

    def step(_: int) -> float:
        idx = torch.randint(len(latents), (s.transformer_batch,), generator=g)
        x0 = latents[idx]
        cond = family.conditioning(pipe, draw_captions(caps, idx, s.caption_dropout, g), "cpu", models.FLOW_T5_LENGTH)
        noise = torch.randn(x0.shape, generator=g)
        t = objective.draw(g, len(x0))
        loss = diffusion_loss(family, objective, pipe, pipe.transformer, Batch(x0, cond), noise, t, train)
        return _update(loss, opt, sched, params)

    for module in trained:
        module.train()
    # Captions over the 16 CLIP tokens are cut, as the savanna build cuts them; SD3's encode_prompt would say
    # so at every step.
    pipeline_log = logging.getLogger(StableDiffusion3Pipeline.__module__)
    level = pipeline_log.level
    pipeline_log.setLevel(logging.ERROR)
    try:
        _loop("world: text encoders + transformer", s.transformer_steps, step)
    finally:
        pipeline_log.setLevel(level)
    for module in trained:
        module.eval().requires_grad_(False)
    return pipe


def quality_card(pipe: StableDiffusionPipeline, judge: ZeroShotJudge, vae, s: BuildSettings) -> dict:
    """Measured at build time: judge accuracy on held-out images, base fidelity, sampling speed."""
    labels = list(gen.CONCEPTS)
    truth, clean_images = [], []
    for concept in labels:
        for i in range(s.check_images):
            clean_images.append(gen.make_single(concept, s.seed + 1000, i))
            truth.append(concept)
    clean = _to_tensor(np.stack(clean_images))
    recon = decode(vae, encode(vae, clean))
    judged_clean = judge.classify((clean + 1) / 2)
    judged_recon = judge.classify((recon + 1) / 2)

    def accuracy(pred: list[str]) -> dict[str, float]:
        return {c: float(np.mean([p == c for p, t in zip(pred, truth, strict=True) if t == c])) for c in labels}

    return {
        "judge_accuracy_clean": accuracy(judged_clean),
        "judge_accuracy_reconstructed": accuracy(judged_recon),
        "judge_check_n_per_concept": s.check_images,
        **base_fidelity(pipe, judge, s.fidelity_seeds, models.DEFAULT_SAMPLER),
    }


def base_fidelity(pipe, judge: ZeroShotJudge, seeds_per_concept: int, sampler: dict,
                  max_sequence_length: int | None = None) -> dict:
    """How often the judge sees the prompted concept in the pipeline's samples (seeds 0..n-1 of every concept,
    the prompts cycling through FIDELITY_TEMPLATES), with the world's default sampler; and sampling speed."""
    labels = list(gen.CONCEPTS)
    prompts, wanted, seeds = [], [], []
    for concept in labels:
        for k in range(seeds_per_concept):
            prompts.append(FIDELITY_TEMPLATES[k % len(FIDELITY_TEMPLATES)].format(concept))
            wanted.append(concept)
            seeds.append(k)
    start = time.perf_counter()
    with progress_bar() as bar:
        task = bar.add_task("world: base fidelity", total=len(prompts), info="")
        images = sample(pipe, prompts, seeds, sampler["steps"], sampler["guidance_scale"], batch_size=64,
                        progress=lambda n: bar.advance(task, n), max_sequence_length=max_sequence_length)
    seconds = time.perf_counter() - start
    judged = judge.classify(images)
    fidelity = {c: float(np.mean([j == c for j, w in zip(judged, wanted, strict=True) if w == c])) for c in labels}
    return {
        "base_fidelity": fidelity,
        "base_fidelity_n_per_concept": seeds_per_concept,
        "base_fidelity_prompts": list(FIDELITY_TEMPLATES),
        "base_confusion": confusion(list(zip(wanted, judged, strict=True)), labels),
        "sampling_images_per_s": len(prompts) / seconds,
        "sampling_batch": 64,
        "sampling_threads": torch.get_num_threads(),
    }


def file_hashes(world: Path) -> dict[str, str]:
    """sha256 of every file of a world but its manifest, keyed by path relative to the world."""
    return {str(p.relative_to(world)): sha256_file(p) for p in sorted(world.rglob("*"))
            if p.is_file() and p.relative_to(world) != Path("manifest.json")}


def rehash_manifest(world: str | Path) -> dict:
    """Rewrite the ``files`` table of a world's manifest after a file was corrected in place (a config,
    never weights: the quality card was measured on them); returns the manifest."""
    world = Path(world)
    manifest = read_json(world / "manifest.json")
    manifest["files"] = file_hashes(world)
    atomic_write_json(world / "manifest.json", manifest)
    return manifest


def _stopwatch() -> tuple[float, dict[str, float], Callable[[str, float], float]]:
    """The build's start, its per-stage seconds, and ``mark(stage, since)``, which records a stage and returns now."""
    started = time.perf_counter()
    timings: dict[str, float] = {}

    def mark(stage: str, since: float) -> float:
        now = time.perf_counter()
        timings[stage] = round(now - since, 1)
        return now

    return started, timings, mark


def _draw_training_images(seed: int, count: int) -> tuple[torch.Tensor, list[list[str]], list[dict[str, int]]]:
    """Every build's first stage: the generator's training images (as tensors), captions and labels."""
    _seed_everything(seed)
    with console.status("world: drawing images"):
        images, caps, labels = gen.generate_arrays(seed, "train", count)
    return _to_tensor(images), caps, labels


def build_world(out_dir: str | Path, settings: BuildSettings | None = None) -> dict:
    """Build the whole world into ``out_dir`` (replaced atomically at the end); returns the manifest."""
    s = settings or BuildSettings()
    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    started, timings, mark = _stopwatch()
    clean, caps, labels = _draw_training_images(s.seed, s.train_images)
    t = mark("data", started)

    vae = train_vae(clean, s)
    latents = encode(vae, clean)
    vae.register_to_config(scaling_factor=float(1.0 / latents.std()))
    latents = latents * vae.config.scaling_factor
    t = mark("vae", t)

    recon = decode(vae, latents[: len(latents) // 2] / vae.config.scaling_factor)
    judge_model = train_judge(clean, recon, caps, labels, s)
    t = mark("judge", t)

    tokenizer = models.build_tokenizer(staging / "_tokenizer_src")
    text_encoder, unet = train_unet(latents, caps, tokenizer, s)
    t = mark("unet", t)

    pipe = models.assemble_pipeline(vae, text_encoder, tokenizer, unet)
    models.save_pipeline(pipe, staging / "pipeline")
    shutil.rmtree(staging / "_tokenizer_src")
    models.save_judge(judge_model, staging / "judge")

    # The card is measured on the saved fp16 weights, loaded back the way users load them.
    shipped = StableDiffusionPipeline.from_pretrained(staging / "pipeline", torch_dtype=torch.float32)
    judge = ZeroShotJudge.from_dir(staging / "judge", list(gen.CONCEPTS), WORLD_TEMPLATES)
    card = quality_card(shipped, judge, shipped.vae, s)
    t = mark("quality_card", t)

    manifest = {
        "name": "savanna",
        **_provenance(s, started, timings),
        "sampler": models.DEFAULT_SAMPLER,
    }
    return _publish(staging, out_dir, manifest, card)


def _publish(staging: Path, out_dir: Path, manifest: dict, card: dict) -> dict:
    """Completes a build's manifest (judge templates, quality card, sha256 of every staged file), writes it and
    moves the staged world into ``out_dir``."""
    manifest = {**manifest, "judge_templates": list(WORLD_TEMPLATES), "quality": card, "files": file_hashes(staging)}
    atomic_write_json(staging / "manifest.json", manifest)
    replace_dir(staging, out_dir)
    return manifest


def _provenance(s: BuildSettings | FlowBuildSettings, started: float, timings: dict[str, float]) -> dict:
    """What every world's manifest records of its build."""
    return {
        "swapbench": __version__,
        "generator_version": gen.GENERATOR_VERSION,
        "seed": s.seed,
        "settings": asdict(s),
        "built": datetime.now(UTC).isoformat(timespec="seconds"),
        "build_seconds": round(time.perf_counter() - started, 1),
        "stage_seconds": timings,
        "machine": {"cpu_threads": torch.get_num_threads(), "platform": platform.platform(),
                    "torch": torch.__version__},
        "image_size": gen.IMAGE_SIZE,
        "concepts": {"swapped": list(gen.SWAPPED), "controls": list(gen.CONTROLS), "neighbours": list(gen.NEIGHBOURS)},
    }


def build_flow_world(out_dir: str | Path, settings: FlowBuildSettings | None = None) -> dict:
    """Build savanna-flow into ``out_dir`` (replaced atomically at the end); returns the manifest.

    It reuses the savanna world in use (:func:`swapbench.loading.world_dir`): its generator's images, its VAE
    (not retrained; its weights file is copied byte for byte so the pipeline folder loads on its own) and its
    judge (not copied: ``world:savanna-flow``'s judge resolves to savanna's)."""
    s = settings or FlowBuildSettings()
    savanna = world_dir("savanna")
    out_dir = Path(out_dir)
    staging = staging_dir(out_dir)
    started, timings, mark = _stopwatch()
    clean, caps, _ = _draw_training_images(s.seed, s.train_images)
    t = mark("data", started)

    # shift_factor 0 instead of savanna's null: SD3's pipeline adds it when it decodes (null fails there); the
    # latents are the same.
    vae = AutoencoderKL.from_pretrained(savanna / "pipeline" / "vae", torch_dtype=torch.float32, shift_factor=0.0)
    vae.eval().requires_grad_(False)
    latents = get_family("sd3").to_latents(vae, encode(vae, clean))
    t = mark("latents", t)

    tokenizer = models.build_tokenizer(staging / "_tokenizer_src")
    pipe = train_transformer(vae, latents, caps, tokenizer, s)
    t = mark("transformer", t)

    models.save_pipeline(pipe, staging / "pipeline")
    shutil.rmtree(staging / "_tokenizer_src")
    shutil.copyfile(savanna / VAE_WEIGHTS, staging / VAE_WEIGHTS)  # savanna's VAE file, byte for byte

    # Measured on the saved fp16 weights, loaded back the way users load them.
    shipped = StableDiffusion3Pipeline.from_pretrained(staging / "pipeline", text_encoder_3=None, tokenizer_3=None,
                                                       torch_dtype=torch.float32)
    judge = ZeroShotJudge.from_dir(savanna / "judge", list(gen.CONCEPTS), WORLD_TEMPLATES)
    card = base_fidelity(shipped, judge, s.fidelity_seeds, models.FLOW_SAMPLER, models.FLOW_T5_LENGTH)
    t = mark("quality_card", t)

    savanna_files = read_json(savanna / "manifest.json")["files"]
    manifest = {
        "name": "savanna-flow",
        **_provenance(s, started, timings),
        "sampler": models.FLOW_SAMPLER,
        "max_sequence_length": models.FLOW_T5_LENGTH,
        "vae": {"from": "world:savanna", "files": {VAE_WEIGHTS: savanna_files[VAE_WEIGHTS]}},
        "judge": {"from": "world:savanna", "files": {k: v for k, v in savanna_files.items() if k.startswith("judge/")}},
    }
    return _publish(staging, out_dir, manifest, card)
