"""The edit fine-tune as a recipe: ``setup`` -> ``train`` -> ``save_checkpoint`` / ``export`` -> ``cleanup``.
Every edit kind trains the same way: the prepared data carries the edit (swapbench/data/prepare.py).

The loss is one pure function (:func:`diffusion_loss`). VAE and text encoder are frozen (eval mode,
no gradients, not in the optimiser). What every sample reads (record, caption, cached view) is the
sample plan, drawn up front from the seed (swapbench/train/plan.py); every other random draw — latent
sample, augmentation, noise, timestep — comes from one seeded generator whose state is checkpointed,
so an interrupted and resumed CPU run ends bit-identical to an uninterrupted one.

Several processes (``accelerate launch`` / ``torchrun``, DDP through accelerate): ``train.batch_size``
is the global batch. Every process draws the same plan and the same global random tensors and keeps
its own slice of each micro-batch, so N processes read exactly the samples, noise and timesteps of
one process, and DDP's gradient mean over equal slices is the one-process gradient. Only the main
process writes the run directory; the others wait at barriers.
"""

from __future__ import annotations

import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from accelerate import Accelerator, DataLoaderConfiguration
from diffusers.optimization import get_scheduler
from safetensors.torch import load_file, save_file

from swapbench.config import Config, TrainConfig
from swapbench.data.prepare import Prepared, prepare_run
from swapbench.devices import is_cpu, mixed_precision, peak_rss_mb, resolve_device, version_info
from swapbench.errors import UserError
from swapbench.families import Conditioning, Family, for_pipeline
from swapbench.families.objectives import Objective
from swapbench.io import append_jsonl, atomic_write_json, read_json, replace_dir, staging_dir, truncate_jsonl
from swapbench.loading import load_pipeline, pipeline_folder
from swapbench.progress import console, progress_bar
from swapbench.rundir import RunDir
from swapbench.train import in_loop, trackers
from swapbench.train.features import (
    Encoders,
    FeatureCache,
    augment,
    base_transform,
    check_images,
    encode_captions,
    load_image,
    to_model_input,
)
from swapbench.train.methods import get_method
from swapbench.train.plan import derived_seed, draw_plan
from swapbench.weights import weights_hash


def checkpoint_step(folder: Path, max_steps: int) -> int:
    """The step a checkpoint holds, checked against the run's (possibly overridden) ``train.max_steps``."""
    if not (folder / "trainer_state.json").is_file():
        raise UserError(f"checkpoint {folder} was written by an older swapbench (no trainer_state.json) and "
                        "cannot be resumed; start the run again under a new --name")
    step = read_json(folder / "trainer_state.json")["step"]
    if step >= max_steps:
        raise UserError(f"train.max_steps={max_steps} is not beyond the checkpoint's step {step}; "
                        f"pass --set train.max_steps=N with N > {step}")
    return step


class Interrupted(Exception):
    """SIGINT/SIGTERM arrived; a checkpoint was written."""


def diffusion_loss(family: Family, objective: Objective, pipe, denoiser: torch.nn.Module, batch: Batch,
                   noise: torch.Tensor, timesteps: torch.Tensor, train: TrainConfig) -> torch.Tensor:
    """The family's objective on one batch: the denoiser's prediction against its target."""
    noisy, target = objective.noisy_and_target(batch.latents, noise, timesteps)
    pred = family.predict(pipe, denoiser, noisy, timesteps, batch.cond, train)
    return objective.loss(pred, target, timesteps)


@dataclass
class Batch:
    latents: torch.Tensor
    cond: Conditioning


class SwapRecipe:
    def __init__(self, cfg: Config, run: RunDir, resume_changes: dict[str, tuple] | None = None):
        self.cfg, self.run = cfg, run
        self.step = 0
        self.start_step = 0
        self.resume_changes = resume_changes or {}
        self._stop_signal: int | None = None
        self.in_loop: in_loop.InLoopEval | None = None
        self.selected: dict | None = None

    # ---- setup -------------------------------------------------------------------------------
    def setup(self, resume: bool = False,
              make_evaluator: Callable[[torch.device], in_loop.StepEvaluator] | None = None) -> None:
        """Accelerator, data and models, sample plan and feature cache, optimiser; then the checkpoint
        (``resume``), the in-loop evaluation and the trackers."""
        cfg = self.cfg
        torch.manual_seed(cfg.seed)
        self.accelerator = acc = self._accelerator()
        data, weights_key = self._load_data_and_models()
        self._plan(data, weights_key)
        self._optimiser()
        self.generator = torch.Generator().manual_seed(derived_seed(cfg.seed, "noise"))
        if resume:
            self._load_latest_checkpoint()
            if acc.is_main_process:
                in_loop.on_resume(self.run, self.step)
        self.start_step = self.step
        if cfg.train.eval_every:
            if make_evaluator is None:
                raise ValueError("train.eval_every needs an evaluator: pass setup(make_evaluator=...)")
            self.in_loop = in_loop.InLoopEval(cfg, self.run, make_evaluator(self.device))
        trackers.start(acc, cfg, self.run)

    def _accelerator(self) -> Accelerator:
        """The Accelerator, and this process's slice of every global batch (``self.samples``)."""
        cfg = self.cfg
        cpu = is_cpu(cfg.device)
        precision = mixed_precision(cfg.train.mixed_precision, resolve_device(cfg.device))
        if cfg.train.select == "first-passing" and not cfg.train.eval_every:
            raise UserError("train.select=first-passing chooses among the steps evaluated in training, and "
                            "train.eval_every is 0; set e.g. --set train.eval_every=50")
        # split_batches: train.batch_size is the global batch, so the LR schedule steps once per optimiser
        # step whatever the number of processes (accelerate otherwise steps it once per process).
        acc = Accelerator(mixed_precision=precision, gradient_accumulation_steps=cfg.train.grad_accum,
                          cpu=cpu, dataloader_config=DataLoaderConfiguration(split_batches=True),
                          log_with=trackers.log_with(cfg), project_dir=str(trackers.tracker_dir(self.run)))
        batch, n = cfg.train.batch_size, acc.num_processes
        if batch % n:
            raise UserError(f"train.batch_size={batch} is the global batch and does not split evenly over {n} "
                            f"processes; set it to a multiple of {n} "
                            f"(e.g. --set train.batch_size={max(n, batch - batch % n)})")
        per_process = batch // n
        self.samples = slice(acc.process_index * per_process, (acc.process_index + 1) * per_process)
        self.device = acc.device
        return acc

    def _load_data_and_models(self) -> tuple[Prepared, str]:
        """The prepared data, and the base pipeline with VAE and text encoder frozen on the device; returns
        the data and the key of the frozen encoders' weights (the feature cache's)."""
        cfg, acc = self.cfg, self.accelerator
        # The main process goes first through whatever may download or materialise files (hub snapshots,
        # the world's dataset, weight hashes); the others then find them in place.
        with acc.main_process_first():
            # data first: a data mistake then fails in seconds, before gigabytes of weights are read
            data = prepare_run(cfg)
            pipe = load_pipeline(cfg.model, safety_checker=False)  # the export takes it from the base
            folder = pipeline_folder(cfg.model)
            text_parts = for_pipeline(pipe).text_parts
            frozen = ("vae", *(encoder for _, encoder in text_parts), *(tokenizer for tokenizer, _ in text_parts))
            weights_key = "/".join(weights_hash(folder / part) for part in frozen)
            if cfg.model.variant is not None:  # a hub snapshot keeps every variant's files side by side
                weights_key += f"/variant={cfg.model.variant}"
        self.pipe, self.family = pipe, for_pipeline(pipe)
        if cfg.train.eval_every:  # the in-loop evaluation samples with it: refuse it before any step runs
            self.family.check_sampler(cfg.eval.sampler)
        encoders = (getattr(pipe, encoder) for _, encoder in self.family.text_parts)
        for frozen in (pipe.vae, *(e for e in encoders if e is not None)):  # SD3 may run without its T5
            frozen.requires_grad_(False).eval().to(self.device)
        self.denoiser = self.family.denoiser_of(pipe).to(self.device)
        self.denoiser.train()
        self.objective = self.family.objective(pipe.scheduler.config, cfg.train)
        return data, weights_key

    def _plan(self, data: Prepared, weights_key: str) -> None:
        """``data_audit.json``, the sample plan, and the feature cache filled for it (``train.cache``)."""
        cfg = self.cfg
        self.data = data
        if self.accelerator.is_main_process:
            atomic_write_json(self.run.data_audit, data.audit)
        self.records = data.records
        self.n_target = len(data.target)
        check_images(self.records)
        self.plan = draw_plan([len(r["captions"]) for r in self.records], self.n_target, cfg.data.target_share,
                              cfg.train.max_steps * cfg.train.grad_accum, cfg.train.batch_size,
                              cfg.train.cache_views if cfg.train.cache else 1, cfg.data.caption, cfg.seed)
        if cfg.train.cache:
            encoders = Encoders(self.pipe, self.family, self.device, weights_key, cfg.model.max_sequence_length)
            self.features = FeatureCache.for_plan(self.records, self.plan, cfg.data, encoders, cfg.seed)
        else:
            self.features = None
            self._resize = base_transform(cfg.data.resolution)

    def _optimiser(self) -> None:
        """AdamW over what the method trains and the LR schedule, prepared with the denoiser by accelerate."""
        t = self.cfg.train
        params = self.trainable_parameters()
        # One fused kernel per step instead of a loop over ~300 tensors: ~6% of a savanna step on CPU.
        self.optimizer = torch.optim.AdamW(params, lr=t.lr, betas=(t.adam_beta1, t.adam_beta2),
                                           weight_decay=t.adam_weight_decay, eps=t.adam_epsilon,
                                           fused=self.device.type in ("cpu", "cuda"))
        self.lr_scheduler = get_scheduler(t.lr_scheduler, self.optimizer, num_warmup_steps=t.warmup_steps,
                                          num_training_steps=t.max_steps)
        self.denoiser, self.optimizer, self.lr_scheduler = self.accelerator.prepare(self.denoiser, self.optimizer,
                                                                                    self.lr_scheduler)

    def trainable_parameters(self) -> list[torch.nn.Parameter]:
        """What the optimiser updates: the method decides (LoRA injects its adapters here)."""
        return get_method(self.cfg.train.method).trainable_parameters(self.denoiser, self.family, self.cfg)

    # ---- data --------------------------------------------------------------------------------
    def next_batch(self, micro: int) -> Batch:
        """This process's slice of micro-batch ``micro`` of the plan (``step * grad_accum + k``).

        Random tensors are drawn for the whole global batch and sliced, so the generator advances
        identically in every process and the slice is what one process would have drawn."""
        g, mine, size = self.generator, self.samples, self.cfg.train.batch_size
        if self.features is not None:
            params, cond = self.features.batch(micro, mine)
            mean, logvar = params.chunk(2, dim=1)
            eps = torch.randn((size, *mean.shape[1:]), generator=g)[mine]
            latents = mean + torch.exp(0.5 * logvar.clamp(-30, 20)) * eps
        else:
            idx, picks = self.plan.record[micro][mine].tolist(), self.plan.caption[micro][mine].tolist()
            seeds = torch.randint(2**31, (size,), generator=g)[mine].tolist()
            pixels = torch.stack([
                to_model_input(augment(self.cfg.data, torch.Generator().manual_seed(s))(
                    self._resize(load_image(self.records[i]["image"]))))
                for i, s in zip(idx, seeds, strict=True)]).to(self.device)
            vae = self.pipe.vae
            with torch.no_grad():
                dist = vae.encode(pixels.to(vae.dtype)).latent_dist
                mean, std = dist.mean.float().cpu(), dist.std.float().cpu()
            latents = mean + std * torch.randn((size, *mean.shape[1:]), generator=g)[mine]
            caps = [self.records[i]["captions"][p] for i, p in zip(idx, picks, strict=True)]
            encoders = Encoders(self.pipe, self.family, self.device, "", self.cfg.model.max_sequence_length)
            (cond,) = encode_captions(caps, encoders, batch=len(caps))
        latents = self.family.to_latents(self.pipe.vae, latents)
        return Batch(latents.to(self.device), {k: v.to(self.device) for k, v in cond.items()})

    def _noise_and_timesteps(self, shape: torch.Size) -> tuple[torch.Tensor, torch.Tensor]:
        g, cfg, size = self.generator, self.cfg.train, self.cfg.train.batch_size
        noise = torch.randn((size, *shape[1:]), generator=g)
        if cfg.noise_offset:
            noise += cfg.noise_offset * torch.randn((size, shape[1], 1, 1), generator=g)
        t = self.objective.draw(g, size)
        return noise[self.samples].to(self.device), t[self.samples].to(self.device)

    # ---- loop --------------------------------------------------------------------------------
    def train(self) -> dict:
        cfg, acc = self.cfg.train, self.accelerator
        started, last_time, last_step = time.perf_counter(), time.perf_counter(), self.step
        loss_value, grad_norm = float("nan"), float("nan")
        eval_seconds = 0.0
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            with progress_bar() as bar:
                task = bar.add_task("train", total=cfg.max_steps, completed=self.step, info="")
                while self.step < cfg.max_steps:
                    step_loss, stop = 0.0, False
                    for k in range(cfg.grad_accum):
                        batch = self.next_batch(self.step * cfg.grad_accum + k)
                        noise, t = self._noise_and_timesteps(batch.latents.shape)
                        with acc.accumulate(self.denoiser), acc.autocast():
                            loss = diffusion_loss(self.family, self.objective, self.pipe, self.denoiser, batch, noise,
                                                  t, self.cfg.train)
                            # One all-reduce carries the loss (logged as the mean over processes), the NaN check
                            # and a pending Ctrl-C, so every process agrees on all three at the same step.
                            shared = acc.reduce(torch.stack([loss.detach().float(),
                                                             torch.tensor(float(self._stop_signal is not None))]
                                                            ).to(self.device), "sum")
                            mean_loss, stop = float(shared[0]) / acc.num_processes, stop or bool(shared[1] > 0)
                            if not torch.isfinite(torch.tensor(mean_loss)):
                                raise UserError(self._nan_message())
                            step_loss += mean_loss / cfg.grad_accum
                            acc.backward(loss)
                            if acc.sync_gradients:
                                grad_norm = float(acc.clip_grad_norm_(self.denoiser.parameters(), cfg.max_grad_norm))
                            self.optimizer.step()
                            self.lr_scheduler.step()
                            self.optimizer.zero_grad(set_to_none=True)
                    self.step += 1
                    loss_value = step_loss
                    if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                        now = time.perf_counter()
                        img_s = (self.step - last_step) * cfg.batch_size * cfg.grad_accum / max(now - last_time, 1e-9)
                        last_time, last_step = now, self.step
                        lr = self.lr_scheduler.get_last_lr()[0]
                        if acc.is_main_process:
                            append_jsonl(self.run.train_log, {"step": self.step, "loss": loss_value, "lr": lr,
                                                              "grad_norm": grad_norm, "img_per_s": img_s,
                                                              "elapsed_s": round(now - started, 3)})
                        acc.log({"train/loss": loss_value, "train/lr": lr, "train/grad_norm": grad_norm,
                                 "train/img_per_s": img_s}, step=self.step)
                        bar.update(task, completed=self.step,
                                   info=f"loss {loss_value:.4f} lr {lr:.2e} {img_s:.0f} img/s")
                    if self.in_loop is not None and self.in_loop.due(self.step, cfg.max_steps):
                        before = self.in_loop.seconds
                        self.evaluate_now(time.perf_counter() - started)
                        # The evaluation's time is not training time: leave it out of the next img/s.
                        last_time += self.in_loop.seconds - before
                        eval_seconds = self.in_loop.seconds
                    if stop:
                        self.save_checkpoint()
                        raise Interrupted(self.step)
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.step < cfg.max_steps:
                        self.save_checkpoint()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
        return {"loss": loss_value, "seconds": time.perf_counter() - started, "eval_seconds": eval_seconds}

    def evaluate_now(self, elapsed: float) -> None:
        """In-loop evaluation of the current weights (every process samples its share); the main process
        logs the row, sends it to the trackers and keeps the weights ``first-passing`` chooses."""
        denoiser = self.accelerator.unwrap_model(self.denoiser)
        row = self.in_loop.run(self.step, denoiser, self.pipe, elapsed)
        if row is None:
            return
        self.accelerator.log(trackers.metric_scalars(row["metrics"]), step=self.step)
        trackers.log_images(self.accelerator, row["images"], self.step)
        if (self.cfg.train.select == "first-passing" and row["gate"]["passed"]
                and in_loop.selected_step(self.run) is None):
            in_loop.save_selection(self.run, self.step, denoiser)
        console.log(f"step {self.step} eval ({row['suite']}, {row['wall_s']:.1f} s): {in_loop.format_metrics(row)}")

    def apply_selection(self) -> dict:
        """Before export: put the weights ``train.select`` chose into the model; returns the summary's ``selected``."""
        chosen = in_loop.selection_summary(self.cfg, self.run, self.step, self.run.eval_rows())
        self.selected = chosen
        if self.accelerator.is_main_process and not chosen.get("fallback", True) and chosen["step"] != self.step:
            in_loop.restore_selection(self.run, self.accelerator.unwrap_model(self.denoiser))
        return chosen

    def _on_signal(self, signum, frame) -> None:
        self._stop_signal = signum

    def _nan_message(self) -> str:
        last = self.run.latest_checkpoint
        lr = self.lr_scheduler.get_last_lr()[0]
        fix = (f"continue from it with a lower rate: swapbench train --resume {self.run.root} "
               f"--set train.lr={self.cfg.train.lr / 2:.2g}"
               if last else "rerun with a lower train.lr or train.max_grad_norm")
        keep = f"the last good checkpoint is {last.name}" if last else "no checkpoint was written yet"
        return f"loss became NaN/inf at step {self.step + 1} (lr {lr:.2e}); {keep}; {fix}"

    # ---- checkpoints -------------------------------------------------------------------------
    def save_checkpoint(self) -> Path:
        """Everything a resume needs, through ``Accelerator.save_state`` (weights as safetensors; optimiser,
        LR schedule, GradScaler and RNG states as weights-only torch files) plus the noise generator and
        step. Written to ``step-N.tmp`` by every process, then renamed by the main process."""
        acc = self.accelerator
        folder = self.run.checkpoints / f"step-{self.step:07d}"
        tmp = staging_dir(folder, clear=acc.is_main_process)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        if acc.is_main_process:
            save_file({"generator": self.generator.get_state()}, str(tmp / "generator.safetensors"))
            atomic_write_json(tmp / "trainer_state.json", {"step": self.step})
            atomic_write_json(tmp / "config.json", self.cfg.to_dict())
        acc.wait_for_everyone()
        if acc.is_main_process:
            replace_dir(tmp, folder)
            for old in sorted(self.run.checkpoints.glob("step-???????"))[:-2]:
                shutil.rmtree(old)
        acc.wait_for_everyone()
        return folder

    def _load_latest_checkpoint(self) -> None:
        folder = self.run.latest_checkpoint
        if folder is None:
            return
        step = checkpoint_step(folder, self.cfg.train.max_steps)
        self.accelerator.load_state(str(folder))
        self.generator.set_state(load_file(str(folder / "generator.safetensors"))["generator"])
        self.step = step
        if {"train.lr", "train.max_steps"} & set(self.resume_changes):
            self._reshape_schedule()
        if self.accelerator.is_main_process:
            # Lines logged after the checkpoint belong to steps that will run again.
            truncate_jsonl(self.run.train_log, lambda row: row["step"] <= step)
        console.log(f"resumed from {folder.name}")

    def _reshape_schedule(self) -> None:
        """After ``--resume --set train.lr=...|train.max_steps=...``: the schedule keeps its step but takes the
        new peak rate and end point (the restored state carries the old base rate)."""
        sched = self.lr_scheduler.scheduler
        sched.base_lrs = [self.cfg.train.lr for _ in sched.base_lrs]
        for group, fn, base in zip(self.optimizer.param_groups, sched.lr_lambdas, sched.base_lrs, strict=True):
            group["initial_lr"] = base
            group["lr"] = base * fn(sched.last_epoch)
        sched._last_lr = [group["lr"] for group in self.optimizer.param_groups]

    # ---- export ------------------------------------------------------------------------------
    def export(self) -> Path:
        """Main process: the method writes ``model/`` (and its own extras); the others wait."""
        acc = self.accelerator
        if acc.is_main_process:
            get_method(self.cfg.train.method).export(acc.unwrap_model(self.denoiser), self.family, self.cfg, self.run,
                                                     self.model_card())
        acc.wait_for_everyone()
        return self.run.model

    def model_card(self):
        from swapbench.train.model_card import build_card

        return build_card(self.cfg, self.run, {"selected": self.selected})

    def summary(self, result: dict, wall: float, startup: float, setup: float, export: float,
                selected: dict | None = None) -> dict:
        """``wall``: the whole command from process start; ``startup``: interpreter, imports, config;
        ``setup``: models, data, sample plan and feature cache; ``export``: writing ``model/``.
        Throughput counts the steps this command ran (a resumed run's loop started at ``resumed_from_step``)."""
        cfg = self.cfg.train
        ran = self.step - self.start_step
        loop_s = result["seconds"] - result.get("eval_seconds", 0.0)
        evaluation = None
        if self.in_loop is not None:
            evaluation = {"every": cfg.eval_every, "suite": cfg.eval_suite, "evaluations": len(self.in_loop.rows),
                          "seconds": round(self.in_loop.seconds, 2),
                          "share_of_wall": round(self.in_loop.seconds / max(wall, 1e-9), 4)}
        return {
            "status": "finished", "method": self.cfg.train.method, "wall_s": round(wall, 2), "setup_s": round(setup, 2),
            "train_loop_s": round(result["seconds"], 2),
            "startup_s": round(startup, 2),
            "export_s": round(export, 2),
            "steps": self.step, "steps_this_run": ran, "resumed_from_step": self.start_step or None,
            "batch_size": cfg.batch_size, "processes": self.accelerator.num_processes,
            "batch_size_per_process": cfg.batch_size // self.accelerator.num_processes,
            "img_per_s": round(ran * cfg.batch_size * cfg.grad_accum / max(loop_s, 1e-9), 2),
            "in_loop_eval": evaluation, "selected": selected,
            "peak_rss_mb": round(peak_rss_mb(), 1),
            "mixed_precision": self.accelerator.mixed_precision, "final_loss": result["loss"],
            "records": {"target": self.n_target, "preservation": len(self.records) - self.n_target},
            "cache": str(self.features.path) if self.features is not None else None,
            "cache_entries_encoded": self.features.encoded if self.features is not None else None,
            "resumes": self.run.resumes(),
            **version_info(self.device),
        }
