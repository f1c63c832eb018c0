"""Turning records into what the UNet trains on: VAE latent distributions and text embeddings.

Exact mode (``train.cache=false``) runs the recipe's random augmentation, the VAE and the text
encoder at every step, as the diffusers example trainer does.

Cached mode (default) is a documented approximation: each image is encoded once per *view*
(view 0 as is, view 1 flipped, views 2.. with a seeded ColorJitter and a random flip), and the
posterior's mean and log-variance are stored, so training still samples ``z ~ q(z|view)`` each step
exactly; only the augmentation is drawn from ``train.cache_views`` fixed views instead of afresh.
Only the (image, view) pairs and captions of the run's sample plan are encoded (swapbench/train/plan.py);
later runs reuse every entry any earlier run stored. The cache lives under the user cache folder,
in safetensors shards keyed by weights and augmentation settings; an entry is keyed by the image's
path, size and modification time (or content hash) and the view.

Encoders always see batches of one fixed size (the last one padded), so an entry's value does not
depend on which other entries were encoded beside it: a run reads the same numbers from a cache
filled by itself or by any other run.
"""

from __future__ import annotations

import hashlib
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError
from safetensors import safe_open
from safetensors.torch import save_file
from torchvision import transforms

from swapbench.config import DataConfig
from swapbench.errors import UserError
from swapbench.paths import cache_dir
from swapbench.progress import progress_bar
from swapbench.train.plan import SamplePlan, derived_seed


def missing_image(image) -> UserError:
    return UserError(f"image file {image} is missing; restore it or remove its record from the data")


@contextmanager
def opened_image(image) -> Iterator[Image.Image]:
    """``Image.open`` whose failures, while opening or decoding, become one-line user errors."""
    try:
        with Image.open(image) as im:
            yield im
    except FileNotFoundError:
        raise missing_image(image) from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"image file {image} is corrupt or not an image ({type(e).__name__}); replace or remove it") from None


def load_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, dict) and image.get("bytes"):
        import io

        image = io.BytesIO(image["bytes"])
    with opened_image(image) as im:
        return im.convert("RGB")


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


def view_image(image: Image.Image, cfg: DataConfig, view: int, seed: int) -> torch.Tensor:
    """View 0: the image; view 1: flipped (when ``data.hflip``); views 2..: seeded jitter + random flip."""
    if view == 0 or view == 1 and not cfg.hflip:
        return to_model_input(image)
    if view == 1:
        return to_model_input(image.transpose(Image.Transpose.FLIP_LEFT_RIGHT))
    return to_model_input(augment(cfg, torch.Generator().manual_seed(seed))(image))


def image_key(image) -> str:
    """A file's path, size and mtime (edits invalidate its entries); in-memory images hash their bytes."""
    if isinstance(image, dict):
        image = image.get("path") if image.get("path") and not image.get("bytes") else image.get("bytes")
    if isinstance(image, (str, os.PathLike)):
        try:
            st = os.stat(image)
        except FileNotFoundError:
            raise missing_image(image) from None
        return f"{os.fspath(image)}|{st.st_size}|{st.st_mtime_ns}"
    data = image.tobytes() if isinstance(image, Image.Image) else bytes(image)
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_images(records: list[dict]) -> None:
    """Fail before training, with one line, on a missing file or one that is not an image (header check)."""
    for record in records:
        image = record["image"]
        if isinstance(image, (str, os.PathLike)):
            with opened_image(image):
                pass


def _chunks(n: int, size: int):
    for start in range(0, n, size):
        yield start, min(start + size, n)


def _pad(batch: torch.Tensor, size: int) -> torch.Tensor:
    return torch.cat([batch, batch[-1:].expand(size - len(batch), *batch.shape[1:])]) if len(batch) < size else batch


def encode_captions(captions: list[str], tokenizer, text_encoder, device, batch: int = 256) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for start, stop in _chunks(len(captions), batch):
            ids = tokenizer(captions[start:stop], padding="max_length", truncation=True,
                            max_length=tokenizer.model_max_length, return_tensors="pt").input_ids
            out.append(text_encoder(_pad(ids, batch).to(device))[0][: stop - start].float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def weights_fingerprint(module: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().float().cpu().numpy().tobytes()[:4096])
        h.update(str(tuple(tensor.shape)).encode())
    return h.hexdigest()[:16]


class ShardStore:
    """Rows of one tensor, addressed by string keys, kept as append-only safetensors shards.

    Each shard holds ``values`` and its keys in the header metadata. Shards are written under a
    temporary name and renamed, so concurrent runs and interruptions never leave a torn entry."""

    def __init__(self, folder: Path, kind: str):
        self.folder, self.kind = folder, kind
        self.index: dict[str, tuple[Path, int]] = {}
        for shard in sorted(folder.glob(f"{kind}-*.safetensors")):
            with safe_open(str(shard), framework="pt") as f:
                for row, key in enumerate(json.loads(f.metadata()["keys"])):
                    self.index.setdefault(key, (shard, row))

    def missing(self, keys: list[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self.index]

    def add(self, keys: list[str], values: torch.Tensor) -> None:
        if not keys:
            return
        name = f"{self.kind}-{uuid.uuid4().hex[:16]}.safetensors"
        tmp = self.folder / f".{name}.tmp"
        save_file({"values": values.contiguous()}, str(tmp), metadata={"keys": json.dumps(keys)})
        tmp.rename(self.folder / name)
        self.index.update({k: (self.folder / name, row) for row, k in enumerate(keys)})

    def gather(self, keys: list[str]) -> torch.Tensor:
        if not keys:
            return torch.zeros(0)
        by_shard: dict[Path, list[tuple[int, int]]] = {}
        for i, key in enumerate(keys):
            shard, row = self.index[key]
            by_shard.setdefault(shard, []).append((i, row))
        out = None
        for shard, pairs in by_shard.items():
            with safe_open(str(shard), framework="pt") as f:
                values = f.get_tensor("values")
            if out is None:
                out = values.new_empty(len(keys), *values.shape[1:])
            out[torch.tensor([i for i, _ in pairs])] = values[torch.tensor([r for _, r in pairs])]
        return out


class FeatureCache:
    """The latent distributions and caption embeddings one sample plan reads, with the plan's rows into them."""

    CHUNK_IMAGES = 64
    CHUNK_CAPTIONS = 256

    def __init__(self, latents: torch.Tensor, embeddings: torch.Tensor, latent_rows: torch.Tensor,
                 text_rows: torch.Tensor, path: Path, encoded: int):
        self.latents = latents  # plan pairs x 2C x h x w (posterior mean, logvar)
        self.embeddings = embeddings  # plan captions x L x D
        self.latent_rows = latent_rows  # micro-batch x sample -> row of latents
        self.text_rows = text_rows  # micro-batch x sample -> row of embeddings
        self.path = path
        self.encoded = encoded  # entries this run had to encode (0 on a warm cache)

    @classmethod
    def for_plan(cls, records: list[dict], plan: SamplePlan, cfg: DataConfig, vae, tokenizer, text_encoder,
                 device, seed: int) -> FeatureCache:
        key = hashlib.sha256(json.dumps({
            "vae": weights_fingerprint(vae), "text": weights_fingerprint(text_encoder),
            "tokens": tokenizer.model_max_length, "resolution": cfg.resolution, "jitter": cfg.color_jitter,
            "hflip": cfg.hflip, "seed": seed, "format": 2,
        }, sort_keys=True).encode()).hexdigest()[:24]
        folder = cache_dir("train-features", key)

        pairs = plan.pairs()
        image_keys = {r: image_key(records[r]["image"]) for r in dict.fromkeys(r for r, _ in pairs)}
        pair_keys = [f"{image_keys[r]}#{v}" for r, v in pairs]
        latent_store = ShardStore(folder, "latents")
        todo = sorted((r, v) for (r, v), k in zip(pairs, pair_keys, strict=True) if k not in latent_store.index)
        if todo:
            cls._encode_images(records, todo, [f"{image_keys[r]}#{v}" for r, v in todo], latent_store, cfg, vae,
                               device, seed)
        latents = latent_store.gather(pair_keys)

        samples = list(zip(plan.record.flatten().tolist(), plan.caption.flatten().tolist(), strict=True))
        sample_captions = [records[r]["captions"][c] for r, c in samples]
        captions = list(dict.fromkeys(sample_captions))
        text_store = ShardStore(folder, "text")
        new_captions = text_store.missing(captions)
        text_store.add(new_captions, encode_captions(new_captions, tokenizer, text_encoder, device,
                                                     cls.CHUNK_CAPTIONS).half())
        embeddings = text_store.gather(captions).float()

        pair_row = {p: i for i, p in enumerate(pairs)}
        caption_row = {c: i for i, c in enumerate(captions)}
        shape = plan.record.shape
        latent_rows = torch.tensor([pair_row[p] for p in zip(plan.record.flatten().tolist(),
                                                             plan.view.flatten().tolist(), strict=True)]).view(shape)
        text_rows = torch.tensor([caption_row[c] for c in sample_captions]).view(shape)
        return cls(latents, embeddings, latent_rows, text_rows, folder, len(todo) + len(new_captions))

    @classmethod
    def _encode_images(cls, records, todo, keys, store: ShardStore, cfg: DataConfig, vae, device, seed: int) -> None:
        resize = base_transform(cfg.resolution)
        decoded: dict[int, Image.Image] = {}  # todo is sorted: one record's views are neighbours

        def image_of(record: int) -> Image.Image:
            if record not in decoded:
                decoded.clear()
                decoded[record] = resize(load_image(records[record]["image"]))
            return decoded[record]

        chunks = []
        with progress_bar(transient=True) as bar, torch.no_grad():
            task = bar.add_task("cache: VAE latents", total=len(todo), info="")
            for start, stop in _chunks(len(todo), cls.CHUNK_IMAGES):
                pixels = torch.stack([view_image(image_of(r), cfg, v, derived_seed(seed, keys[start + i]))
                                      for i, (r, v) in enumerate(todo[start:stop])])
                params = vae.encode(_pad(pixels, cls.CHUNK_IMAGES).to(device, vae.dtype)).latent_dist.parameters
                chunks.append(params[: stop - start].float().cpu())
                bar.advance(task, stop - start)
        store.add(keys, torch.cat(chunks))
