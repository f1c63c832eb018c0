"""Turning records into what the UNet trains on: VAE latent distributions and text embeddings.

Exact mode (``train.cache=false``) runs the recipe's random augmentation, the VAE and the text
encoder at every step, as the diffusers example trainer does.

Cached mode (default) is a documented approximation: each image is encoded once per *view*
(view 0 as is, view 1 flipped, views 2.. with a seeded ColorJitter and a random flip), and the
posterior's mean and log-variance are stored, so training still samples ``z ~ q(z|view)`` each step
exactly; only the augmentation is drawn from ``train.cache_views`` fixed views instead of afresh.
Every distinct caption is encoded once. The cache lives under the user cache folder, keyed by
data, weights and augmentation settings.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from safetensors.torch import load_file, save_file
from torchvision import transforms

from swapbench.config import DataConfig
from swapbench.errors import UserError
from swapbench.paths import cache_dir
from swapbench.progress import progress_bar


def load_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, dict) and image.get("bytes"):
        import io

        image = io.BytesIO(image["bytes"])
    try:
        with Image.open(image) as im:
            return im.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"image file {image} is missing; restore it or remove its record from the data") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"image file {image} is corrupt or not an image ({type(e).__name__}); replace or remove it") from None


def base_transform(resolution: int) -> transforms.Compose:
    return transforms.Compose([
        transforms.Resize(resolution, interpolation=transforms.InterpolationMode.BILINEAR),
        transforms.CenterCrop(resolution),
    ])


def to_model_input(image: Image.Image) -> torch.Tensor:
    return transforms.Normalize([0.5], [0.5])(transforms.functional.to_tensor(image))


def augment(cfg: DataConfig, generator: torch.Generator) -> transforms.Compose:
    """The recipe's random augmentation (ColorJitter + horizontal flip), seeded through ``generator``."""
    steps = []
    if any(cfg.color_jitter):
        steps.append(transforms.ColorJitter(*cfg.color_jitter))
    if cfg.hflip:
        steps.append(transforms.RandomHorizontalFlip())

    def apply(image: Image.Image) -> Image.Image:
        # torchvision draws from the global RNG; fork it so the trainer's generator alone decides.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2**31, (1,), generator=generator)))
            for step in steps:
                image = step(image)
        return image

    return apply


def view_images(image: Image.Image, cfg: DataConfig, views: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = [to_model_input(image)]
    if views > 1:
        out.append(to_model_input(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)) if cfg.hflip else out[0])
    jitter = augment(cfg, g)
    out += [to_model_input(jitter(image)) for _ in range(views - 2)]
    return out


def encode_captions(captions: list[str], tokenizer, text_encoder, device, batch: int = 256) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(captions), batch):
            ids = tokenizer(captions[i : i + batch], padding="max_length", truncation=True,
                            max_length=tokenizer.model_max_length, return_tensors="pt").input_ids.to(device)
            out.append(text_encoder(ids)[0].float().cpu())
    return torch.cat(out)


def weights_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
        h.update(str(tuple(tensor.shape)).encode())
    return h.hexdigest()[:16]


class FeatureCache:
    """Latent distributions per (record, view) and embeddings per distinct caption, in safetensors."""

    def __init__(self, latents: torch.Tensor, embeddings: torch.Tensor, caption_ids: list[list[int]], path: Path | None):
        self.latents = latents  # records x views x 2C x h x w (mean, logvar)
        self.embeddings = embeddings  # distinct captions x L x D
        self.caption_ids = caption_ids  # per record: indices into embeddings
        self.path = path

    @classmethod
    def build(cls, records: list[dict], cfg: DataConfig, views: int, vae, tokenizer, text_encoder, device, seed: int) -> FeatureCache:
        key = hashlib.sha256(json.dumps({
            "records": [[str(r["image"]), r["captions"]] for r in records],
            "vae": weights_fingerprint(vae), "text": weights_fingerprint(text_encoder),
            "resolution": cfg.resolution, "jitter": cfg.color_jitter, "hflip": cfg.hflip, "views": views, "seed": seed,
        }, sort_keys=True).encode()).hexdigest()[:24]
        folder = cache_dir("train-features", key)
        captions = sorted({c for r in records for c in r["captions"]})
        index = {c: i for i, c in enumerate(captions)}
        caption_ids = [[index[c] for c in r["captions"]] for r in records]
        if (folder / "features.safetensors").is_file():
            tensors = load_file(str(folder / "features.safetensors"))
            return cls(tensors["latents"], tensors["embeddings"].float(), caption_ids, folder)
        resize = base_transform(cfg.resolution)
        chunks = []
        with progress_bar(transient=True) as bar, torch.no_grad():
            task = bar.add_task("cache: VAE latents", total=len(records), info=f"{views} views")
            for start in range(0, len(records), 64):
                batch = records[start : start + 64]
                pixels = torch.stack([v for i, r in enumerate(batch)
                                      for v in view_images(resize(load_image(r["image"])), cfg, views, seed + start + i)])
                params = vae.encode(pixels.to(device, vae.dtype)).latent_dist.parameters.float().cpu()
                chunks.append(params.view(len(batch), views, *params.shape[1:]))
                bar.advance(task, len(batch))
        latents = torch.cat(chunks)
        embeddings = encode_captions(captions, tokenizer, text_encoder, device)
        save_file({"latents": latents.contiguous(), "embeddings": embeddings.half().contiguous()},
                  str(folder / ".features.tmp"))
        (folder / ".features.tmp").rename(folder / "features.safetensors")
        return cls(latents, embeddings.half().float(), caption_ids, folder)
