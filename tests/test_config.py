import pytest

from swapbench.config import all_keys, load_config, preset_names
from swapbench.errors import UserError


@pytest.mark.parametrize("preset", preset_names())
def test_every_shipped_preset_loads(preset):
    cfg = load_config(preset)
    assert cfg.preset == preset and cfg.train.max_steps > 0 and cfg.data.swap_pairs


def test_sd15_coco_is_the_reference_recipe_verbatim():
    cfg = load_config("sd15-coco")
    assert cfg.model.pretrained == "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert (cfg.data.subset_size, cfg.data.resolution, cfg.data.balance_ratio) == (25000, 256, 1.7)
    assert (cfg.train.batch_size, cfg.train.max_steps, cfg.train.lr) == (8, 10000, 2e-5)
    assert (cfg.train.lr_scheduler, cfg.train.warmup_steps, cfg.train.max_grad_norm) == ("linear", 200, 1.0)
    assert cfg.data.color_jitter == [0.2, 0.2, 0.2] and cfg.data.hflip and cfg.train.trainable == "unet"


def test_precedence_defaults_preset_file_set(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 1.0e-3\n  max_steps: 7\n")
    cfg = load_config("savanna", f, ["train.max_steps=9", "data.hflip=false"])
    assert (cfg.train.lr, cfg.train.max_steps, cfg.data.hflip) == (1e-3, 9, False)
    assert cfg.train.batch_size == load_config("savanna").train.batch_size


def test_unknown_key_suggests_close_names():
    with pytest.raises(UserError, match="did you mean 'train.lr'"):
        load_config("savanna", None, ["train.lrr=1"])


def test_type_errors_and_unknown_presets():
    with pytest.raises(UserError, match="expects int"):
        load_config("savanna", None, ["train.max_steps=lots"])
    with pytest.raises(UserError, match="unknown preset 'savana'.*did you mean 'savanna'"):
        load_config("savana")


def test_enumerated_keys_name_their_choices():
    with pytest.raises(UserError, match="'train.lr_scheduler' is 'cosin'; did you mean 'cosine'.*choose one of: linear, cosine"):
        load_config("savanna", None, ["train.lr_scheduler=cosin"])
    with pytest.raises(UserError, match="'data.caption' is 'last'; choose one of: random, first"):
        load_config("savanna", None, ["data.caption=last"])
    assert load_config("savanna", None, ["train.mixed_precision=fp16"]).train.mixed_precision == "fp16"


def test_design_keys_exist():
    keys = set(all_keys())
    for key in ("model.pretrained", "data.source", "data.subset_size", "data.swap_pairs", "data.drop_both",
                "data.balance_ratio", "data.keep_other", "train.trainable", "train.lr", "train.lr_scheduler",
                "train.warmup_steps", "train.max_grad_norm", "train.batch_size", "train.max_steps",
                "data.resolution", "data.color_jitter", "data.hflip", "train.loss", "train.cache",
                "train.mixed_precision", "train.grad_accum", "export.push_to_hub"):
        assert key in keys
