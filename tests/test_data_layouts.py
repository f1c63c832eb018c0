"""Every COCO layout the hub serves, as tiny ``datasets`` datasets with the real features, through load + prepare,
saved with save_to_disk and placed in the ``datasets`` cache under the real names (HF_HUB_OFFLINE=1)."""

import io
import json
import shutil
from pathlib import Path

import datasets
import pytest
from _cli import assert_one_line_error
from datasets.packaged_modules.parquet.parquet import Parquet

from swapbench import artifacts
from swapbench.cli import main
from swapbench.config import DataConfig, load_config
from swapbench.data.prepare import prepare
from swapbench.data.sources import ImageRef, load_records
from swapbench.edits.words import ConceptSwapper

I32, I64, STR = datasets.Value("int32"), datasets.Value("int64"), datasets.Value("string")
SENTENCES = {"tokens": datasets.List(STR), "raw": STR, "imgid": I32, "sentid": I32}
# Features exactly as the dataset cards declare them.
AKCIT = datasets.Features({"image": datasets.Image(), "image_id": I64, "text": STR, "captions": datasets.List(STR),
                           "split": STR})
BITMIND = datasets.Features({"image": datasets.Image(), "filepath": STR, "sentids": datasets.List(I32), "filename": STR,
                             "imgid": I32, "split": STR, "sentences": SENTENCES, "cocoid": I32})
PHIYODR = datasets.Features({"license": I64, "file_name": STR, "coco_url": STR, "height": I64, "width": I64,
                             "date_captured": STR, "flickr_url": STR, "image_id": I64, "ids": datasets.List(I64),
                             "captions": datasets.List(STR)})
SWAP = ConceptSwapper([["giraffe", "zebra"]])


def _images(coco_root: Path) -> list[dict]:
    """COCO images in annotation order: id, file name, captions, PNG bytes."""
    coco = json.loads((coco_root / "annotations/captions_train2017.json").read_text())
    caps: dict[int, list] = {}
    for ann in coco["annotations"]:
        caps.setdefault(ann["image_id"], []).append(ann)
    return [{"id": im["id"], "file_name": im["file_name"], "anns": caps[im["id"]],
             "bytes": (coco_root / "train2017" / im["file_name"]).read_bytes()} for im in coco["images"]]


def _tokens(caption: str) -> list[str]:
    # Karpathy's tokens: lower case, punctuation stripped
    return "".join(ch if ch.isalnum() or ch.isspace() else " " for ch in caption.lower()).split()


def akcit(coco_root: Path) -> datasets.Dataset:
    return datasets.Dataset.from_list([
        {"image": {"bytes": im["bytes"], "path": None}, "image_id": im["id"], "text": im["anns"][0]["caption"],
         "captions": [a["caption"] for a in im["anns"]], "split": "train"}
        for im in _images(coco_root)], features=AKCIT)


def bitmind(coco_root: Path, unique: bool = False) -> datasets.Dataset:
    rows = []
    for imgid, im in enumerate(_images(coco_root)):
        for a in im["anns"][:1] if unique else im["anns"]:  # the row-per-caption layout repeats the image per row
            rows.append({"image": {"bytes": im["bytes"], "path": None}, "filepath": "train2014",
                         "sentids": [x["id"] for x in im["anns"]], "filename": f"COCO_train2014_{im['file_name']}",
                         "imgid": imgid, "split": "train", "cocoid": im["id"],
                         "sentences": {"tokens": _tokens(a["caption"]), "raw": a["caption"], "imgid": imgid,
                                       "sentid": a["id"]}})
    rows.sort(key=lambda r: r["sentences"]["sentid"])  # caption order, so one image's rows are not neighbours
    return datasets.Dataset.from_list(rows, features=BITMIND)


def phiyodr(coco_root: Path) -> datasets.Dataset:
    return datasets.Dataset.from_list([
        {"license": 4, "file_name": im["file_name"],
         "coco_url": f"http://images.cocodataset.org/train2017/{im['file_name']}",
         "height": 32, "width": 32, "date_captured": "2013-11-14 11:18:45", "flickr_url": "", "image_id": im["id"],
         "ids": [a["id"] for a in im["anns"]], "captions": [a["caption"] for a in im["anns"]]}
        for im in _images(coco_root)], features=PHIYODR)


def to_hub_cache(ds: datasets.Dataset, name: str, cache: Path) -> None:
    """Place ``ds`` where ``datasets.load_dataset(name)`` prepared it: <cache>/<ns>___<name>/default/0.0.0/<hash>/,
    written by the parquet builder the hub's parquet shards go through."""
    namespace, dataset = name.split("/")
    shard = cache.parent / "repo" / name / "data/train-00000-of-00001.parquet"
    shard.parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(shard))
    builder = Parquet(cache_dir=str(cache / "build"), dataset_name=dataset.lower(), config_name="default",
                      data_files={"train": [str(shard)]}, hash="0123456789abcdef")
    builder.download_and_prepare()
    target = cache / f"{namespace}___{dataset.lower()}" / "default"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(Path(builder.cache_dir).parent.parent), str(target))


@pytest.fixture(scope="module")
def saved(coco_root, tmp_path_factory):
    root = tmp_path_factory.mktemp("layouts")
    out = {}
    for name, build in (("akcit", akcit), ("bitmind", bitmind), ("unique", lambda c: bitmind(c, unique=True)),
                        ("phiyodr", phiyodr)):
        build(coco_root).save_to_disk(str(root / name))
        out[name] = root / name
    return out


@pytest.fixture
def hub_cache(tmp_path, monkeypatch, coco_root):
    from huggingface_hub import constants

    cache = tmp_path / "datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))  # empty unless a test fills it
    monkeypatch.setenv("HF_DATASETS_CACHE", str(cache))  # for whatever reads the variable rather than the module
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    assert datasets.config.HF_HUB_OFFLINE
    return cache


def _prepared(records, **cfg):
    return prepare(records, DataConfig(source="t", subset_size=0, balance_ratio=None, **cfg), seed=0)


def test_image_bearing_layouts_give_the_coco_records_without_reading_an_image(saved, coco_root):
    coco = {Path(r["image"]).name: r["captions"] for r in load_records(str(coco_root)).to_list()}
    for name, layout in (("akcit", "row per image, captions list"),
                         ("bitmind", "row per caption, sentences struct, grouped by cocoid")):
        records = load_records(str(saved[name]))
        assert records.layout == layout and len(records) == 90
        got = records.to_list()
        assert all(isinstance(r["image"], ImageRef) for r in got)  # references, not pictures
        assert sorted(sorted(r["captions"]) for r in got) == sorted(sorted(c) for c in coco.values())
    bitmind_records = load_records(str(saved["bitmind"])).to_list()
    assert all(len(r["tokens"]) == len(r["captions"]) == 5 for r in bitmind_records)
    unique = load_records(str(saved["unique"]))
    assert unique.layout == "row per image, one sentences struct" and len(unique) == 90
    assert all(len(r["captions"]) == 1 for r in unique.to_list())


def test_per_caption_layout_filters_captions_as_the_reference_did(saved, coco_root):
    """The reference dropped a row (one caption) whose tokens name both words; grouped, the same captions go."""
    rows = datasets.load_from_disk(str(saved["bitmind"])).select_columns(["sentences", "cocoid"]).to_list()
    both = [r for r in rows if {"giraffe", "zebra"} <= SWAP.mentioned(" ".join(r["sentences"]["tokens"]))]
    assert both, "the fixture must hold captions naming both words for this test to mean anything"
    out = _prepared(load_records(str(saved["bitmind"])))
    stage = {s["stage"]: s for s in out.audit["stages"]}["swap+filter"]
    assert stage["dropped_captions_both_words"] == len(both)
    kept = sum(len(r["captions"]) for r in out.records)
    emptied = {r["cocoid"] for r in both} - {r["cocoid"] for r in rows if r not in both}
    assert kept == len(rows) - len(both) and len(out.records) == 90 - len(emptied)
    assert out.audit["layout"]["both_words_filter"].startswith("per caption")
    # the per-image layouts keep the whole-record rule
    per_image = _prepared(load_records(str(saved["akcit"])))
    assert per_image.audit["layout"]["both_words_filter"].startswith("per image")
    assert {s["stage"]: s for s in per_image.audit["stages"]}["swap+filter"]["dropped_both_words"] > 0


def test_captions_only_layout_reads_images_from_data_image_root(saved, coco_root):
    records = load_records(str(saved["phiyodr"]), image_root=str(coco_root / "train2017"))
    assert records.layout == "captions only + data.image_root"
    coco = prepare(load_records(str(coco_root)), DataConfig(source="c", subset_size=40, balance_ratio=None), seed=3)
    out = prepare(records, DataConfig(source="p", subset_size=40, balance_ratio=None), seed=3)
    # same rows in the same order: the same subset, balance and captions as the COCO root
    assert [r["image"] for r in out.records] == [r["image"] for r in coco.records]
    assert [r["captions"] for r in out.records] == [r["captions"] for r in coco.records]


def _dataset_present(name: str) -> bool:
    """What `swapbench fetch --check` and train's pre-flight say of data.source=name."""
    cfg = load_config("sd15-coco", overrides=[f"data.source={name}"])
    return artifacts.check(artifacts.Artifact("dataset", name, "data.source", ("train",)), cfg).present


def test_hub_names_load_offline_from_the_datasets_cache(hub_cache, coco_root):
    to_hub_cache(akcit(coco_root), "AKCIT/coco2017-captioning", hub_cache)
    to_hub_cache(bitmind(coco_root), "bitmind/MS-COCO", hub_cache)
    # the pre-flight finds the prepared copies the loader reads (datasets snake-cases the name: ms-coco)
    for name, present in [("AKCIT/coco2017-captioning", True), ("bitmind/MS-COCO", True), ("phiyodr/coco2017", False)]:
        assert _dataset_present(name) is present
    assert len(load_records("AKCIT/coco2017-captioning")) == 90
    records = load_records("bitmind/MS-COCO")
    assert len(records) == 90 and records.layout.startswith("row per caption")
    assert len(_prepared(records).target) > 0


def test_hub_snapshot_loads_offline_as_fetch_leaves_it(tmp_path, monkeypatch, hub_cache, coco_root):
    """snapshot_download's layout (README with the card's features + data/*.parquet) under the hub cache."""
    repo = tmp_path / "hub" / "datasets--bitmind--MS-COCO"
    snapshot = repo / "snapshots" / ("a" * 40)
    (snapshot / "data").mkdir(parents=True)
    bitmind(coco_root).to_parquet(str(snapshot / "data/train-00000-of-00001.parquet"))
    (snapshot / "README.md").write_text("---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
                                        "    path: data/train-*\n---\n")
    (repo / "refs").mkdir()
    (repo / "refs/main").write_text("a" * 40)
    assert _dataset_present("bitmind/MS-COCO")
    records = load_records("bitmind/MS-COCO")
    assert len(records) == 90 and records.layout == "row per caption, sentences struct, grouped by cocoid"


def test_preset_default_source_trains_by_its_hub_name(hub_cache, coco_root, tiny_pipeline, tmp_path, capsys):
    to_hub_cache(akcit(coco_root), "AKCIT/coco2017-captioning", hub_cache)
    code = main(["train", "--preset", "sd15-coco", "--model", str(tiny_pipeline), "--out", str(tmp_path),
                 "--name", "r", "--set", "train.batch_size=4", "--set", "data.resolution=32",
                 "--set", "data.subset_size=60", "--set", "train.warmup_steps=1", "--set", "train.cache_views=2",
                 "--set", "train.max_steps=2", "--set", "eval.judge=world:savanna"])
    assert code == 0, capsys.readouterr().err
    audit = json.loads((tmp_path / "r/data_audit.json").read_text())
    assert audit["source"] == "AKCIT/coco2017-captioning"
    assert audit["layout"]["layout"] == "row per image, captions list" and audit["layout"]["records"] == 90
    assert json.loads((tmp_path / "r/train_summary.json").read_text())["steps"] == 2


def _bad(tmp_path, name: str, ds: datasets.Dataset) -> Path:
    ds.save_to_disk(str(tmp_path / name))
    return tmp_path / name


@pytest.mark.parametrize("case", ["no_image_root", "image_root_not_a_folder", "image_root_missing_file",
                                  "no_captions", "no_images", "hub_not_cached", "no_split"])
def test_each_missing_piece_is_one_line(case, saved, coco_root, tmp_path, hub_cache, tiny_pipeline, capsys):
    data, extra, needles = str(saved["phiyodr"]), [], []
    if case == "no_image_root":
        needles = ["carries no images", "file_name", "--set data.image_root=DIR", "train2017/"]
    elif case == "image_root_not_a_folder":
        extra, needles = ["--set", f"data.image_root={tmp_path / 'nope'}"], ["data.image_root", str(tmp_path / "nope")]
    elif case == "image_root_missing_file":
        root = tmp_path / "partial"
        shutil.copytree(coco_root / "train2017", root)
        first = sorted(root.iterdir())[0]
        first.unlink()
        extra, needles = ["--set", f"data.image_root={root}", "--set", "data.subset_size=0"], [first.name, "missing"]
    elif case == "no_captions":
        data = str(_bad(tmp_path, "nc", datasets.Dataset.from_dict({"image": [str(coco_root)], "label": [1]})))
        needles = ["no caption column", "label"]
    elif case == "no_images":
        data = str(_bad(tmp_path, "ni", datasets.Dataset.from_dict({"captions": [["a giraffe"]], "id": [1]})))
        needles = ["no image column", "captions, id"]
    elif case == "hub_not_cached":
        data, needles = "phiyodr/coco2017", ["phiyodr/coco2017", "swapbench fetch"]
    elif case == "no_split":
        to_hub_cache(akcit(coco_root), "AKCIT/coco2017-captioning", hub_cache)
        data, extra, needles = "AKCIT/coco2017-captioning", ["--set", "data.split=test"], ["split"]
    capsys.readouterr()  # what building the fixture data printed
    code = main(["train", "--preset", "sd15-coco", "--model", str(tiny_pipeline), "--data", data,
                 "--out", str(tmp_path), "--set", "data.resolution=32", "--set", "eval.judge=world:savanna", *extra])
    assert_one_line_error(capsys, code, *needles)


def test_image_ref_reads_the_encoded_bytes_only(saved):
    ref = load_records(str(saved["akcit"])).read([0])[0]["image"]
    raw = ref.read()
    assert set(raw) == {"bytes", "path"} and raw["bytes"][:8] == b"\x89PNG\r\n\x1a\n"
    from PIL import Image

    assert Image.open(io.BytesIO(raw["bytes"])).size == (32, 32)
