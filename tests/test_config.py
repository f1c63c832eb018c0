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
    with pytest.raises(UserError,
                       match="'train.lr_scheduler' is 'cosin'; did you mean 'cosine'.*choose one of: linear, cosine"):
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


def test_every_offered_lr_scheduler_runs_from_the_recipe_settings():
    """Each train.lr_scheduler choice must build and step with what the recipe passes (warm-up, steps)."""
    import torch
    from diffusers.optimization import get_scheduler

    from swapbench.config import CHOICES

    for name in CHOICES["train.lr_scheduler"]:
        cfg = load_config("savanna", None, [f"train.lr_scheduler={name}", "train.warmup_steps=2", "train.max_steps=6"])
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.train.lr)
        scheduler = get_scheduler(cfg.train.lr_scheduler, optimizer, num_warmup_steps=cfg.train.warmup_steps,
                                  num_training_steps=cfg.train.max_steps)
        for _ in range(cfg.train.max_steps):
            optimizer.step()
            scheduler.step()
        assert 0 <= scheduler.get_last_lr()[0] <= cfg.train.lr, name
    # diffusers' piecewise_constant also needs step_rules: rejected when the config loads, not after data preparation
    with pytest.raises(UserError, match="'train.lr_scheduler' is 'piecewise_constant'.*choose one of: linear"):
        load_config("savanna", None, ["train.lr_scheduler=piecewise_constant"])


def test_unknown_eval_sampler_is_rejected_at_load_time():
    with pytest.raises(UserError, match="'eval.sampler' is 'dpmsolver'; did you mean 'dpmsolver\\+\\+'.*ddim, euler"):
        load_config("savanna", None, ["eval.sampler=dpmsolver"])


def test_run_config_from_before_keep_samples_was_wired_still_loads():
    from swapbench.config import config_from_dict

    old = load_config("savanna").to_dict()
    old["eval"]["keep_samples"] = 8  # what every config.json written so far holds
    assert config_from_dict(old).eval.keep_samples == 8
    assert load_config("savanna").eval.keep_samples is None  # default: the suite decides


def test_yaml_1_1_words_stay_strings(tmp_path):
    """YAML 1.1 reads no/off/yes/on as booleans: `train.mixed_precision=no` came back as False and was refused."""
    from swapbench.config import load_config

    (tmp_path / "c.yaml").write_text("train:\n  mixed_precision: no\n  cache: false\n")
    assert load_config("savanna", tmp_path / "c.yaml").train.mixed_precision == "no"
    cfg = load_config("savanna", None, ["train.mixed_precision=no", "data.hflip=true", "train.cache=false"])
    assert (cfg.train.mixed_precision, cfg.data.hflip, cfg.train.cache) == ("no", True, False)
