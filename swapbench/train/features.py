"""Turning records into what the UNet trains on: VAE latent distributions and text embeddings.

Exact mode (``train.cache=false``) runs the recipe's random augmentation, the VAE and the text
encoder at every step, as the diffusers example trainer does.

Cached mode (default) is a documented approximation: each image is encoded once per *view*
(view 0 as is, view 1 flipped, views 2.. with a seeded ColorJitter and a random flip), and the
posterior's mean and log-variance are stored, so training still samples ``z ~ q(z|view)`` each step
exactly; only the augmentation is drawn from ``train.cache_views`` fixed views instead of afresh.
Only the (image, view) pairs and captions of the run's sample plan are encoded (swapbench/train/plan.py);
later runs reuse every entry any earlier run stored. The cache lives under the user cache folder,
in fp16 safetensors shards keyed by the encoders' weights hash and augmentation settings; an entry
is keyed by the image's path, size and modification time (or content hash) and the view, a caption's
by its text. The run's edits are in no key on purpose: an entry is what the encoders make of that image
or caption whatever the edit, so a swap's entries are exactly an erasure's (an erased record is a
caption and an image, each encoded by its own key) and runs of every kind share them.

Memory does not grow with the run: encoding streams fixed-size chunks into shards of at most
``SHARD_BYTES``, and training reads each micro-batch's rows from disk. Under several processes the
processes of a node split the missing chunks between them and wait for each other; every process
then reads the same shards. What is missing is listed once per node, by the node's first process,
and every process of the node adopts that list before any of them writes: were each process to list
for itself, one that lists after another has written a shard would see a shorter list, the chunk
split would no longer cover every entry, and the run would fail looking an entry up.

Encoders always see batches of one fixed size (the last one padded), so an entry's value does not
depend on which other entries were encoded beside it: a run reads the same numbers from a cache
filled by itself or by any other run.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import PartialState
from PIL import Image, UnidentifiedImageError
from safetensors.torch import save_file
from torchvision import transforms

from swapbench.config import DataConfig
from swapbench.data.sources import ImageRef
from swapbench.errors import UserError
from swapbench.families import Conditioning, Family
from swapbench.paths import cache_dir
from swapbench.progress import progress_bar
from swapbench.train.plan import SamplePlan, derived_seed

if TYPE_CHECKING:
    from diffusers import DiffusionPipeline


def missing_image(image) -> UserError:
    return UserError(f"image file {image} is missing; restore it or remove its record from the data")


@contextmanager
def opened_image(image, where=None) -> Iterator[Image.Image]:
    """``Image.open`` whose failures, while opening or decoding, become one-line user errors."""
    where = image if where is None else where
    try:
        with Image.open(image) as im:
            yield im
    except FileNotFoundError:
        raise missing_image(where) from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"image {where} is corrupt or not an image ({type(e).__name__}); "
                        "replace or remove it") from None


def load_image(image) -> Image.Image:
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    where = image
    if isinstance(image, ImageRef):
        image = image.read()
    if isinstance(image, dict):
        image = io.BytesIO(image["bytes"]) if image.get("bytes") else image.get("path")
    if image is None:
        raise UserError(f"{where} holds no image bytes and no path; fix or remove that record")
    with opened_image(image, where) as im:
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
    if isinstance(image, ImageRef):
        image = image.read()
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


def encode_captions(captions: list[str], encoders: Encoders, batch: int = 256) -> Iterator[Conditioning]:
    """The conditioning of ``captions`` in chunks of ``batch`` (fixed encoder batch shape, last chunk padded)."""
    for start, stop in _chunks(len(captions), batch):
        chunk = captions[start:stop]
        cond = encoders.family.encode(encoders.pipe, chunk + chunk[-1:] * (batch - len(chunk)), encoders.device,
                                      encoders.max_sequence_length)
        yield {key: value[: stop - start] for key, value in cond.items()}


SHARD_BYTES = 64 << 20
"""Rows are buffered up to this size before a shard is written: the encoder's only resident data."""

_DTYPES = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}


@dataclass
class _Shard:
    path: Path
    keys: list[str]
    dtype: torch.dtype
    row_shape: tuple[int, ...]
    offset: int  # byte offset of row 0 in the file
    row_bytes: int
    fd: int | None = None

    @classmethod
    def open(cls, path: Path) -> _Shard:
        # The safetensors layout: 8-byte little-endian header length, JSON header, then the data.
        with open(path, "rb") as f:
            n = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(n))
        info = header["values"]
        dtype, row_shape = _DTYPES[info["dtype"]], tuple(info["shape"][1:])
        return cls(path, json.loads(header["__metadata__"]["keys"]), dtype, row_shape, 8 + n + info["data_offsets"][0],
                   torch.Size(row_shape).numel() * dtype.itemsize)

    def read(self, row: int) -> bytes:
        if self.fd is None:
            self.fd = os.open(self.path, os.O_RDONLY)
        return os.pread(self.fd, self.row_bytes, self.offset + row * self.row_bytes)


class ShardStore:
    """Rows of one tensor kind, addressed by string keys, kept as append-only safetensors shards.

    Each shard holds one tensor ``values`` and its keys in the header metadata. Shards are written
    under a temporary name and renamed, so concurrent runs and interruptions never leave a torn
    entry. Rows are read with ``pread`` rather than by mapping or loading shards: a mapped page
    stays in the process's resident set once touched, so random reads over a long run would grow
    RSS towards the size of the whole cache (gigabytes at the reference recipe's shapes)."""

    def __init__(self, folder: Path, kind: str):
        self.folder, self.kind = folder, kind
        self.shards: list[_Shard] = []
        self.index: dict[str, tuple[int, int]] = {}
        self.refresh()

    def refresh(self) -> None:
        """Index shards written since the last look (by other processes or runs)."""
        known = {s.path for s in self.shards}
        for path in sorted(self.folder.glob(f"{self.kind}-*.safetensors")):
            if path not in known:
                self.shards.append(_Shard.open(path))
                for row, key in enumerate(self.shards[-1].keys):
                    self.index.setdefault(key, (len(self.shards) - 1, row))

    def missing(self, keys: list[str]) -> list[str]:
        return [k for k in dict.fromkeys(keys) if k not in self.index]

    def add(self, keys: list[str], values: torch.Tensor) -> None:
        if not keys:
            return
        name = f"{self.kind}-{uuid.uuid4().hex[:16]}.safetensors"
        tmp = self.folder / f".{name}.tmp"
        save_file({"values": values.contiguous()}, str(tmp), metadata={"keys": json.dumps(keys)})
        tmp.rename(self.folder / name)
        self.refresh()

    @contextmanager
    def writer(self) -> Iterator[_ShardWriter]:
        w = _ShardWriter(self)
        yield w
        w.flush()

    def locate(self, keys: list[str]) -> torch.Tensor:
        """(shard, row) of each key, as an ``n x 2`` int32 tensor."""
        return torch.tensor([self.index[k] for k in keys], dtype=torch.int32).view(len(keys), 2)

    def read(self, locations: torch.Tensor) -> torch.Tensor:
        """The rows at ``locations`` (from :meth:`locate`), stacked in that order."""
        if len(locations) == 0:
            return torch.zeros(0)
        rows = [(self.shards[s], r) for s, r in locations.tolist()]
        first = rows[0][0]
        data = bytearray(b"".join(shard.read(r) for shard, r in rows))
        return torch.frombuffer(data, dtype=first.dtype).view(len(rows), *first.row_shape)


class _ShardWriter:
    """Buffers rows and writes a shard whenever ``SHARD_BYTES`` are held."""

    def __init__(self, store: ShardStore):
        self.store, self.keys, self.parts, self.nbytes = store, [], [], 0

    def append(self, keys: list[str], values: torch.Tensor) -> None:
        self.keys += keys
        self.parts.append(values)
        self.nbytes += values.numel() * values.element_size()
        if self.nbytes >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        if self.keys:
            self.store.add(self.keys, torch.cat(self.parts))
        self.keys, self.parts, self.nbytes = [], [], 0


@dataclass
class Encoders:
    """The frozen encoders a cache entry depends on (the pipeline's VAE, tokenizers and text encoders, read
    through its family); ``weights_key`` names their weights (swapbench/weights.py)."""

    pipe: DiffusionPipeline
    family: Family
    device: torch.device | str
    weights_key: str
    max_sequence_length: int | None = None
    """``model.max_sequence_length`` (T5 families)."""

    @property
    def vae(self) -> torch.nn.Module:
        return self.pipe.vae


class FeatureCache:
    """Where the latent distributions and caption conditionings of one sample plan live, read per micro-batch."""

    CHUNK_IMAGES = 64
    CHUNK_CAPTIONS = 256

    def __init__(self, latents: ShardStore, text: dict[str, ShardStore], latent_loc: torch.Tensor,
                 text_loc: dict[str, torch.Tensor], path: Path, encoded: int):
        self.latents, self.text = latents, text
        self.latent_loc = latent_loc  # micro-batch x sample x (shard, row): posterior mean and logvar
        self.text_loc = text_loc  # per conditioning key: micro-batch x sample x (shard, row)
        self.path = path
        self.encoded = encoded  # entries missing when the run started (0 on a warm cache)

    def batch(self, micro: int, samples: slice = slice(None)) -> tuple[torch.Tensor, Conditioning]:
        """(posterior parameters, conditioning) of ``samples`` of micro-batch ``micro``, in float32."""
        return (self.latents.read(self.latent_loc[micro, samples]).float(),
                {key: store.read(self.text_loc[key][micro, samples]).float() for key, store in self.text.items()})

    @classmethod
    def for_plan(cls, records: list[dict], plan: SamplePlan, cfg: DataConfig, encoders: Encoders,
                 seed: int) -> FeatureCache:
        tokens = encoders.family.token_lengths(encoders.pipe, encoders.max_sequence_length)
        key = hashlib.sha256(json.dumps({
            "weights": encoders.weights_key, "tokens": tokens,
            "resolution": cfg.resolution, "jitter": cfg.color_jitter, "hflip": cfg.hflip, "seed": seed, "format": 3,
        }, sort_keys=True).encode()).hexdigest()[:24]
        folder = cache_dir("train-features", key)
        state = PartialState()
        # Processes of one node share its cache folder; another node may not see it, so each node fills its own.
        workers = int(os.environ.get("LOCAL_WORLD_SIZE", state.num_processes))
        worker = state.local_process_index

        pairs = plan.pairs()
        image_keys = {r: image_key(records[r]["image"]) for r in dict.fromkeys(r for r, _ in pairs)}
        samples = list(zip(plan.record.flatten().tolist(), plan.caption.flatten().tolist(), strict=True))
        sample_captions = [records[r]["captions"][c] for r, c in samples]
        latent_store = ShardStore(folder, "latents")
        text_stores = {k: ShardStore(folder, k) for k in encoders.family.cond_keys}
        todo, new_captions = _agree(cls.missing_work(latent_store, text_stores, pairs, image_keys, sample_captions),
                                    state)

        cls._encode_images(records, todo, image_keys, latent_store, cfg, encoders, seed, worker, workers)
        with ExitStack() as stack, progress_bar(transient=True) as bar:
            outs = {k: stack.enter_context(store.writer()) for k, store in text_stores.items()}
            task = bar.add_task("cache: text embeddings", total=len(new_captions), info="")
            for start, stop in _my_chunks(len(new_captions), cls.CHUNK_CAPTIONS, worker, workers):
                (cond,) = encode_captions(new_captions[start:stop], encoders, cls.CHUNK_CAPTIONS)
                for k, out in outs.items():
                    out.append(new_captions[start:stop], cond[k].half())
                bar.advance(task, stop - start)
        state.wait_for_everyone()
        for store in (latent_store, *text_stores.values()):
            store.refresh()

        shape = (*plan.record.shape, 2)
        latent_loc = latent_store.locate([f"{image_keys[r]}#{v}" for r, v in
                                          zip(plan.record.flatten().tolist(), plan.view.flatten().tolist(),
                                              strict=True)])
        text_loc = {k: store.locate(sample_captions).view(shape) for k, store in text_stores.items()}
        return cls(latent_store, text_stores, latent_loc.view(shape), text_loc, folder,
                   len(todo) + len(new_captions))

    @staticmethod
    def missing_work(latents: ShardStore, text: dict[str, ShardStore], pairs: list[tuple[int, int]],
                     image_keys: dict[int, str], captions: list[str]) -> tuple[list[tuple[int, int]], list[str]]:
        """The (record, view) pairs, sorted, and the distinct captions that some conditioning store lacks."""
        lacking = {c for store in text.values() for c in store.missing(captions)}
        return (sorted((r, v) for r, v in pairs if f"{image_keys[r]}#{v}" not in latents.index),
                [c for c in dict.fromkeys(captions) if c in lacking])

    @classmethod
    def _encode_images(cls, records, todo, image_keys, store: ShardStore, cfg: DataConfig, encoders: Encoders,
                       seed: int, worker: int, workers: int) -> None:
        resize = base_transform(cfg.resolution)
        decoded: dict[int, Image.Image] = {}  # todo is sorted: one record's views are neighbours

        def image_of(record: int) -> Image.Image:
            if record not in decoded:
                decoded.clear()
                decoded[record] = resize(load_image(records[record]["image"]))
            return decoded[record]

        vae = encoders.vae
        mine = _my_chunks(len(todo), cls.CHUNK_IMAGES, worker, workers)
        with store.writer() as out, progress_bar(transient=True) as bar, torch.no_grad():
            task = bar.add_task("cache: VAE latents", total=sum(b - a for a, b in mine), info="")
            for start, stop in mine:
                keys = [f"{image_keys[r]}#{v}" for r, v in todo[start:stop]]
                pixels = torch.stack([view_image(image_of(r), cfg, v, derived_seed(seed, k))
                                      for (r, v), k in zip(todo[start:stop], keys, strict=True)])
                params = (vae.encode(_pad(pixels, cls.CHUNK_IMAGES).to(encoders.device, vae.dtype))
                          .latent_dist.parameters)
                out.append(keys, params[: stop - start].cpu().half())
                bar.advance(task, stop - start)


def _my_chunks(n: int, size: int, worker: int, workers: int) -> list[tuple[int, int]]:
    """Chunk ``i`` of ``range(n)`` goes to worker ``i % workers`` (chunk boundaries, and so values, as in one
    process)."""
    return [c for i, c in enumerate(_chunks(n, size)) if i % workers == worker]


def _agree(work, state: PartialState):
    """The work list of this node's first process, adopted by every process of the node.

    The all-gather is also the barrier that keeps every process from writing before the first one has
    listed, so the adopted list is complete whatever the others saw when they listed."""
    if state.num_processes == 1 or not torch.distributed.is_initialized():
        return work
    lists = [None] * state.num_processes
    torch.distributed.all_gather_object(lists, work if state.local_process_index == 0 else None)
    # torchrun numbers a node's processes consecutively, so its first process is this one's rank minus its local rank.
    return lists[state.process_index - state.local_process_index]
