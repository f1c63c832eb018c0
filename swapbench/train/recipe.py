"""The swap fine-tune as a recipe: ``setup`` -> ``train`` -> ``save_checkpoint`` / ``export`` -> ``cleanup``.

The loss is one pure function (:func:`diffusion_loss`). VAE and text encoder are frozen (eval mode,
no gradients, not in the optimiser). What every sample reads (record, caption, cached view) is the
sample plan, drawn up front from the seed (swapbench/train/plan.py); every other random draw — latent
sample, augmentation, noise, timestep — comes from one seeded generator whose state is checkpointed,
so an interrupted and resumed CPU run ends bit-identical to an uninterrupted one.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import signal
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from diffusers import DDPMScheduler, DiffusionPipeline
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file, save_file

from swapbench import __version__
from swapbench.config import Config
from swapbench.data.prepare import prepare
from swapbench.data.sources import load_records
from swapbench.errors import UserError
from swapbench.io import append_jsonl, atomic_write_json
from swapbench.progress import console, progress_bar
from swapbench.rundir import RunDir
from swapbench.train.features import (
    FeatureCache,
    augment,
    base_transform,
    check_images,
    encode_captions,
    load_image,
    to_model_input,
)
from swapbench.train.model import load_base_pipeline, resolve_model, trainable_parameters
from swapbench.train.plan import derived_seed, draw_plan


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written."""


def diffusion_loss(unet, scheduler: DDPMScheduler, latents: torch.Tensor, text: torch.Tensor,
                   noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """MSE between the UNet's prediction and its target: epsilon, or v for v-prediction schedulers."""
    noisy = scheduler.add_noise(latents, noise, timesteps)
    pred = unet(noisy, timesteps, text).sample
    if scheduler.config.prediction_type == "v_prediction":
        target = scheduler.get_velocity(latents, noise, timesteps)
    else:
        target = noise
    return F.mse_loss(pred.float(), target.float())


@dataclass
class Batch:
    latents: torch.Tensor
    text: torch.Tensor


class SwapRecipe:
    def __init__(self, cfg: Config, run: RunDir):
        self.cfg, self.run = cfg, run
        self.step = 0
        self._stop_signal: int | None = None

    # ---- setup -------------------------------------------------------------------------------
    def setup(self, resume: bool = False) -> None:
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        cpu = cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available())
        precision = cfg.train.mixed_precision
        if precision == "auto":
            precision = "bf16" if not cpu and torch.cuda.is_bf16_supported() else "no"
        self.accelerator = Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.train.grad_accum, cpu=cpu)
        self.device = self.accelerator.device
        self.base_path = resolve_model(cfg.model.pretrained)
        pipe = load_base_pipeline(cfg.model)
        self.pipe = pipe
        self.vae, self.text_encoder, self.tokenizer = pipe.vae, pipe.text_encoder, pipe.tokenizer
        for frozen in (self.vae, self.text_encoder):
            frozen.requires_grad_(False).eval().to(self.device)
        self.unet = pipe.unet.to(self.device)
        self.unet.train()
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)

        data = prepare(load_records(cfg.data.source, cfg.data.split, cfg.seed, world_size=cfg.data.subset_size),
                       cfg.data, cfg.seed)
        self.data = data
        atomic_write_json(self.run.data_audit, data.audit)
        self.records = data.records
        self.n_target = len(data.target)
        check_images(self.records)
        self.plan = draw_plan([len(r["captions"]) for r in self.records], self.n_target, cfg.data.target_share,
                              cfg.train.max_steps * cfg.train.grad_accum, cfg.train.batch_size,
                              cfg.train.cache_views if cfg.train.cache else 1, cfg.data.caption, cfg.seed)
        if cfg.train.cache:
            self.features = FeatureCache.for_plan(self.records, self.plan, cfg.data, self.vae, self.tokenizer,
                                                  self.text_encoder, self.device, cfg.seed)
        else:
            self.features = None
            self._resize = base_transform(cfg.data.resolution)

        params = self.trainable_parameters()
        # One fused kernel per step instead of a loop over ~300 tensors: ~6% of a savanna step on CPU.
        self.optimizer = torch.optim.AdamW(params, lr=cfg.train.lr, betas=(cfg.train.adam_beta1, cfg.train.adam_beta2),
                                           weight_decay=cfg.train.adam_weight_decay, eps=cfg.train.adam_epsilon,
                                           fused=self.device.type in ("cpu", "cuda"))
        self.lr_scheduler = get_scheduler(cfg.train.lr_scheduler, self.optimizer, num_warmup_steps=cfg.train.warmup_steps,
                                          num_training_steps=cfg.train.max_steps)
        self.unet, self.optimizer, self.lr_scheduler = self.accelerator.prepare(self.unet, self.optimizer, self.lr_scheduler)
        self.generator = torch.Generator().manual_seed(derived_seed(cfg.seed, "noise"))
        self._augment = augment(cfg.data, self.generator)
        if resume:
            self._load_latest_checkpoint()

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimiser updates. A method's recipe overrides this (LoRA injects its adapters here)."""
        return trainable_parameters(self.unet, self.cfg.train.trainable)

    # ---- data --------------------------------------------------------------------------------
    def next_batch(self, micro: int) -> Batch:
        """Micro-batch number ``micro`` of the plan (``step * grad_accum + k``)."""
        g = self.generator
        if self.features is not None:
            f = self.features
            mean, logvar = f.latents[f.latent_rows[micro]].chunk(2, dim=1)
            eps = torch.randn(mean.shape, generator=g)
            latents = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps
            text = f.embeddings[f.text_rows[micro]]
        else:
            idx, picks = self.plan.record[micro].tolist(), self.plan.caption[micro].tolist()
            pixels = torch.stack([to_model_input(self._augment(self._resize(load_image(self.records[i]["image"]))))
                                  for i in idx]).to(self.device)
            with torch.no_grad():
                dist = self.vae.encode(pixels.to(self.vae.dtype)).latent_dist
                mean, std = dist.mean.float().cpu(), dist.std.float().cpu()
                latents = mean + std * torch.randn(mean.shape, generator=g)
            caps = [self.records[i]["captions"][p] for i, p in zip(idx, picks, strict=True)]
            text = encode_captions(caps, self.tokenizer, self.text_encoder, self.device, batch=len(caps))
        latents = latents * self.vae.config.scaling_factor
        return Batch(latents.to(self.device), text.to(self.device))

    # ---- loop --------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, acc = self.cfg.train, self.accelerator
        started, last_time, last_step = time.perf_counter(), time.perf_counter(), self.step
        loss_value, grad_norm = float("nan"), float("nan")
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with progress_bar() as bar:
                task = bar.add_task("train", total=cfg.max_steps, completed=self.step, info="")
                while self.step < cfg.max_steps:
                    for k in range(cfg.grad_accum):
                        batch = self.next_batch(self.step * cfg.grad_accum + k)
                        noise = torch.randn(batch.latents.shape, generator=self.generator)
                        if cfg.noise_offset:
                            noise += cfg.noise_offset * torch.randn((*noise.shape[:2], 1, 1), generator=self.generator)
                        noise = noise.to(self.device)
                        t = torch.randint(0, self.noise_scheduler.config.num_train_timesteps, (len(noise),),
                                          generator=self.generator).to(self.device)
                        with acc.accumulate(self.unet), acc.autocast():
                            loss = diffusion_loss(self.unet, self.noise_scheduler, batch.latents, batch.text, noise, t)
                            if not torch.isfinite(loss):
                                raise UserError(self._nan_message())
                            acc.backward(loss)
                            if acc.sync_gradients:
                                grad_norm = float(acc.clip_grad_norm_(self.unet.parameters(), cfg.max_grad_norm))
                            self.optimizer.step()
                            self.lr_scheduler.step()
                            self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    loss_value = loss.item()
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        now = time.perf_counter()
                        img_s = (self.step - last_step) * cfg.batch_size * cfg.grad_accum / max(now - last_time, 1e-9)
                        last_time, last_step = now, self.step
                        lr = self.lr_scheduler.get_last_lr()[0]
                        append_jsonl(self.run.train_log, {"step": self.step, "loss": loss_value, "lr": lr,
                                                          "grad_norm": grad_norm, "img_per_s": img_s,
                                                          "elapsed_s": round(now - started, 3)})
                        bar.update(task, completed=self.step, info=f"loss {loss_value:.4f} lr {lr:.2e} {img_s:.0f} img/s")
                    if self._stop_signal is not None:
                        self.save_checkpoint()
                        raise Interrupted(self.step)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.max_steps:
                        self.save_checkpoint()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return {"loss": loss_value, "seconds": time.perf_counter() - started}

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def _nan_message(self) -> str:
        ckpts = sorted(self.run.checkpoints.glob("step-*"))
        keep = f"the last good checkpoint is {ckpts[-1].name}" if ckpts else "no checkpoint was written yet"
        return (f"loss became NaN/inf at step {self.step + 1} (lr {self.lr_scheduler.get_last_lr()[0]:.2e}); {keep}; "
                "lower train.lr or train.max_grad_norm, then rerun with --resume")

    # ---- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        folder = self.run.checkpoints / f"step-{self.step:07d}"
        tmp = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        unet = self.accelerator.unwrap_model(self.unet)
        save_file({k: v.detach().cpu().contiguous() for k, v in unet.state_dict().items()}, str(tmp / "unet.safetensors"))
        torch.save({"optimizer": self.optimizer.state_dict(), "lr_scheduler": self.lr_scheduler.state_dict(),
                    "generator": self.generator.get_state(), "torch_rng": torch.get_rng_state(), "step": self.step},
                   tmp / "trainer_state.pt")
        (tmp / "config.json").write_text(json.dumps(self.cfg.to_dict(), indent=2))
        shutil.rmtree(folder, ignore_errors=True)
        tmp.rename(folder)
        for old in sorted(self.run.checkpoints.glob("step-???????"))[:-2]:
            shutil.rmtree(old)
        return folder

    def _load_latest_checkpoint(self) -> None:
        ckpts = sorted(self.run.checkpoints.glob("step-???????"))
        if not ckpts:
            return
        folder = ckpts[-1]
        state = torch.load(folder / "trainer_state.pt", weights_only=True)
        self.accelerator.unwrap_model(self.unet).load_state_dict(load_file(str(folder / "unet.safetensors")))
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["lr_scheduler"])
        self.generator.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        self.step = state["step"]
        console.log(f"resumed from {folder.name}")

    # ---- export ------------------------------------------------------------------------------
    def export(self) -> Path:
        unet = self.accelerator.unwrap_model(self.unet).eval()
        pipe = DiffusionPipeline.from_pretrained(self.base_path, unet=unet, torch_dtype=unet.dtype)
        tmp = self.run.model.with_name("model.tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        pipe.save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(self.run.model, ignore_errors=True)
        tmp.rename(self.run.model)
        return self.run.model

    def summary(self, result: dict, wall: float, startup: float, setup: float, export: float) -> dict:
        """``wall``: the whole command from process start; ``startup``: interpreter, imports, config;
        ``setup``: models, data, sample plan and feature cache; ``export``: writing ``model/``."""
        import diffusers
        import transformers

        peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
                else _peak_rss_mb())
        return {
            "status": "finished", "method": self.cfg.train.method, "wall_s": round(wall, 2), "setup_s": round(setup, 2),
            "train_loop_s": round(result["seconds"], 2),
            "startup_s": round(startup, 2),
            "export_s": round(export, 2),
            "steps": self.step, "batch_size": self.cfg.train.batch_size,
            "img_per_s": round(self.step * self.cfg.train.batch_size * self.cfg.train.grad_accum / max(result["seconds"], 1e-9), 2),
            "peak_memory_mb": round(peak, 1), "device": str(self.device),
            "mixed_precision": self.accelerator.mixed_precision, "final_loss": result["loss"],
            "records": {"target": self.n_target, "preservation": len(self.records) - self.n_target},
            "cache": str(self.features.path) if self.features is not None else None,
            "cache_entries_encoded": self.features.encoded if self.features is not None else None,
            "versions": {"swapbench": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__,
                         "transformers": transformers.__version__, "python": platform.python_version()},
            "threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
        }


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
