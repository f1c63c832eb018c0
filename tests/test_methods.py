"""train.method: UCE's closed form, the token-swap control, LoRA's export, and every method end to end."""

import json

import pytest
import torch
from _cli import assert_one_line_error

from swapbench.cli import main
from swapbench.config import load_config
from swapbench.world import SHIPPED_WORLD

shipped = pytest.mark.skipif(not (SHIPPED_WORLD / "manifest.json").is_file(), reason="world not built yet")


@pytest.fixture(scope="module")
def world_pipe():
    from diffusers import StableDiffusionPipeline

    return lambda: StableDiffusionPipeline.from_pretrained(SHIPPED_WORLD / "pipeline", torch_dtype=torch.float32)


# ---- UCE ------------------------------------------------------------------------------------------


def test_uce_closed_form_satisfies_its_normal_equations():
    from swapbench.train.methods.uce import closed_form

    g = torch.Generator().manual_seed(0)
    w0, ce, v, cp = (torch.randn(*s, generator=g, dtype=torch.float64) for s in ((5, 6), (3, 6), (3, 5), (4, 6)))
    lam, se, sp = 0.3, 2.0, 0.7
    w = closed_form(w0, ce, v, cp, lam, se, sp)
    # d/dW of lam|W-W0|^2 + se sum|W c - v|^2 + sp sum|W c - W0 c|^2, halved
    grad = lam * (w - w0) + se * (ce @ w.T - v).T @ ce + sp * (cp @ (w - w0).T).T @ cp
    assert grad.abs().max() < 1e-10
    # ... and it is the minimum: any perturbation raises the objective
    def objective(m):
        return lam * ((m - w0) ** 2).sum() + se * ((ce @ m.T - v) ** 2).sum() + sp * ((cp @ (m - w0).T) ** 2).sum()

    for _ in range(5):
        assert objective(w + 1e-3 * torch.randn(w.shape, generator=g, dtype=torch.float64)) > objective(w)
    # With d independent edit rows and a vanishing ridge the edit becomes exact.
    ce6, v6 = torch.randn(6, 6, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    exact = closed_form(w0, ce6, v6, torch.zeros(0, 6, dtype=torch.float64), 1e-9, 1.0, 1.0)
    assert torch.allclose(ce6 @ exact.T, v6, atol=1e-6)


@shipped
def test_uce_maps_edits_to_their_partners_and_keeps_other_concepts(world_pipe):
    from swapbench.families import for_pipeline
    from swapbench.train.methods.uce import UCE, TextReader, aligned_positions

    pipe = world_pipe()
    cfg = load_config("savanna", None, ["train.method=uce"])
    family = for_pipeline(pipe)
    base = {n: m.weight.detach().clone() for n, m, _ in family.text_projections(pipe.unet)}
    assert all(n.endswith(("attn2.to_k", "attn2.to_v")) for n in base)
    info = UCE().edit(pipe, cfg, run=None)["uce"]
    assert info["projections"] == len(base) == 14
    edited = {n: m.weight.detach().double() for n, m, _ in family.text_projections(pipe.unet)}
    reader = TextReader(pipe, family)

    # Each edit embedding now gives (nearly) what its partner gave before; the unedited gap is large.
    t = cfg.train
    enc = {w: reader.encode_word(t.uce_templates, w) for w in ("giraffe", "zebra")}
    for src, dst in (("giraffe", "zebra"), ("zebra", "giraffe")):
        for k in range(len(t.uce_templates)):
            ps, pd = aligned_positions(enc[src], enc[dst], k, t.uce_positions)
            c, c_partner = enc[src].cond["text"][k, ps], enc[dst].cond["text"][k, pd]
            for name, w in edited.items():
                w0 = base[name].double()
                target = c_partner @ w0.T
                before, after = (c @ w0.T - target).norm(), (c @ w.T - target).norm()
                assert after < 0.35 * before, (name, src, t.uce_templates[k], float(after / before))

    def drift(prompt):
        c = reader.encode([prompt])["text"][0]
        return max(float((c @ (w - base[n].double()).T).norm() / (c @ base[n].double().T).norm())
                   for n, w in edited.items())

    # Preserved concepts keep their keys and values: tightly in the templates UCE solved for, and
    # within a bound in prompts it never saw (the eval suite's prompts are of that kind). Without the
    # preservation term (train.uce_preserve_scale=0) the same drifts are 0.5-1.3.
    for prompt in ("a lion", "horses", "two cows", "okapi", ""):
        assert drift(prompt) < 0.15, prompt
    for prompt in ("a lion standing in a field", "a photo of a horse", "three elephants near a tree"):
        assert drift(prompt) < 0.4, prompt
    assert info["edit_error"] < 0.2 and info["preserve_drift"] < 0.1


@shipped
@pytest.mark.parametrize(("edits", "bound"), [
    ("[{remap: lion, to: cow}]", 0.25), ("[{erase: giraffe}]", 0.35),
    ("[{erase: giraffe}, {remap: lion, to: cow}, {swap: [horse, deer]}]", 0.5)])
def test_uce_solves_every_edit_kind_at_once(world_pipe, edits, bound):
    """Each source's rows now give (nearly) its stand-in's values: a remap's B, for a plain erasure the empty
    prompt's rows at the same positions; the concepts left out of the edit keep theirs."""
    from swapbench.families import for_pipeline
    from swapbench.train.methods.uce import UCE, TextReader, aligned_positions, own_positions

    pipe = world_pipe()
    cfg = load_config("savanna", None, ["train.method=uce", f"edits={edits}"])
    family = for_pipeline(pipe)
    base = {n: m.weight.detach().double().clone() for n, m, _ in family.text_projections(pipe.unet)}
    info = UCE().edit(pipe, cfg, run=None)["uce"]
    edited = {n: m.weight.detach().double() for n, m, _ in family.text_projections(pipe.unet)}
    assert all(not torch.equal(edited[n], base[n]) for n in base)
    sources = cfg.edit_set.sources
    labels = ["giraffe", "zebra", "elephant", "horse", "lion", "cow", "donkey", "deer", "okapi"]
    assert info["preserved_concepts"] == [c for c in labels if c not in sources]  # a remap's B among them
    reader, t = TextReader(pipe, family), cfg.train
    empty = reader.encode([""])["text"][0]
    for src in sources:
        dst = cfg.edit_set.replacement(src)
        enc = reader.encode_word(t.uce_templates, src)
        to = reader.encode_word(t.uce_templates, dst) if dst else None
        for k in range(len(t.uce_templates)):
            if to is None:
                ps = own_positions(enc, k, t.uce_positions)
                c, c_to = enc.cond["text"][k, ps], empty[ps]
            else:
                ps, pd = aligned_positions(enc, to, k, t.uce_positions)
                c, c_to = enc.cond["text"][k, ps], to.cond["text"][k, pd]
            for name, w in edited.items():
                target = c_to @ base[name].T
                before, after = (c @ base[name].T - target).norm(), (c @ w.T - target).norm()
                assert after < bound * before, (edits, src, name, float(after / before))

    def drift(prompt):
        c = reader.encode([prompt])["text"][0]
        return max(float((c @ (w - base[n]).T).norm() / (c @ base[n].T).norm()) for n, w in edited.items())

    # a remap's B and every concept no edit names keep their keys and values; the erased word's move
    for prompt in ("a cow", "two cows", "zebras", "an elephant", ""):
        assert drift(prompt) < 0.1, (edits, prompt)
    assert drift(f"a {sources[0]}") > 0.5
    assert info["edit_error"] < 0.25 and info["preserve_drift"] < 0.1


def test_uce_preserves_a_remap_target_but_no_source():
    from swapbench.errors import UserError
    from swapbench.train.methods.uce import preserved_concepts

    edits = "edits=[{erase: giraffe}, {remap: lion, to: cow}]"
    assert preserved_concepts(load_config("savanna", None, [edits, "train.uce_preserve=[cow, horse]"])) == \
        ["cow", "horse"]
    with pytest.raises(UserError, match=r"names the erased/remapped word\(s\) giraffe, lion; a concept cannot be "
                                        "both erased/remapped and preserved"):
        preserved_concepts(load_config("savanna", None, [edits, "train.uce_preserve=[lion, cow, giraffe]"]))


def test_uce_bad_settings_are_one_line_errors(tmp_path, tiny_pipeline, capsys):
    args = ["train", "--preset", "savanna", "--model", str(tiny_pipeline), "--out", str(tmp_path), "--method", "uce"]
    assert_one_line_error(capsys, main([*args, "--name", "a", "--set", "train.uce_templates=[a photo]"]),
                          "has no {a} or {plural}")
    assert_one_line_error(capsys, main([*args, "--name", "b", "--set", "train.uce_preserve=[lion,zebra]"]),
                          "both swapped and preserved")
    assert_one_line_error(capsys, main([*args, "--name", "c", "--set", "train.uce_lambda=0",
                                        "--set", "train.uce_preserve_scale=0"]), "singular")
    assert_one_line_error(capsys, main([*args, "--name", "d", "--set", "train.uce_positions=all"]),
                          "choose one of: last+after, word+after, word")


# ---- token-swap -----------------------------------------------------------------------------------


@shipped
def test_token_swap_changes_exactly_the_named_rows(world_pipe):
    from swapbench.train.methods.token_swap import TokenSwap

    base, pipe = world_pipe(), world_pipe()
    cfg = load_config("savanna", None, ["train.method=token-swap"])
    info = TokenSwap().edit(pipe, cfg, run=None)["token_swap"]
    tok = pipe.tokenizer
    g, z = tok.convert_tokens_to_ids(["giraffe</w>", "zebra</w>"])
    before = base.text_encoder.get_input_embeddings().weight
    after = pipe.text_encoder.get_input_embeddings().weight
    changed = (before != after).any(dim=1).nonzero().flatten().tolist()
    assert changed == sorted([g, z]) and info["rows_changed"] == 2
    assert torch.equal(after[g], before[z]) and torch.equal(after[z], before[g])
    # The world's BPE splits the plurals into pieces other words share: they are reported, not swapped.
    plurals = next(f for f in info["forms"] if f["forms"] == ["giraffes", "zebras"])
    assert plurals["tokens"] == [["gira", "ffes</w>"], ["ze", "bras</w>"]] and not plurals["swapped"]

    def encode(p, prompt):
        ids = p.tokenizer([prompt], padding="max_length", max_length=p.tokenizer.model_max_length,
                          return_tensors="pt").input_ids
        with torch.no_grad():
            return p.text_encoder(ids)[0]

    for prompt in ("a photo of a lion", "two giraffes on the grass", "zebrafish", ""):
        assert torch.equal(encode(pipe, prompt), encode(base, prompt)), prompt
    assert torch.equal(encode(pipe, "a photo of a Giraffe"), encode(base, "a photo of a zebra"))


@shipped
def test_token_swap_remaps_and_erases_exactly_the_named_rows(world_pipe):
    from swapbench.train.methods.token_swap import TokenSwap

    def encode(p, prompt):
        ids = p.tokenizer([prompt], padding="max_length", max_length=p.tokenizer.model_max_length,
                          return_tensors="pt").input_ids
        with torch.no_grad():
            return p.text_encoder(ids)[0]

    base = world_pipe()
    before = base.text_encoder.get_input_embeddings().weight
    ids = dict(zip(["lion", "lions", "cow", "cows", "giraffe", "pad"], base.tokenizer.convert_tokens_to_ids(
        ["lion</w>", "lions</w>", "cow</w>", "cows</w>", "giraffe</w>", base.tokenizer.pad_token]), strict=True))
    for edits, rows in (("[{remap: lion, to: cow}]", {"lion": "cow", "lions": "cows"}),
                        ("[{erase: giraffe}]", {"giraffe": "pad"}),
                        ("[{erase: giraffe, anchor: cow}, {remap: lion, to: cow}]",
                         {"giraffe": "cow", "lion": "cow", "lions": "cows"})):
        pipe = world_pipe()
        info = TokenSwap().edit(pipe, load_config("savanna", None, ["train.method=token-swap", f"edits={edits}"]),
                                run=None)["token_swap"]
        after = pipe.text_encoder.get_input_embeddings().weight
        changed = (before != after).any(dim=1).nonzero().flatten().tolist()
        assert changed == sorted(ids[r] for r in rows) and info["rows_changed"] == len(rows), edits
        # every row takes its stand-in's base values, two edits sharing one stand-in included
        assert all(torch.equal(after[ids[a]], before[ids[b]]) for a, b in rows.items()), edits
    # an erased word reads as one more padding position: the prompt without it, exactly
    assert torch.equal(encode(pipe, "a photo of a cow"), encode(base, "a photo of a cow"))
    erased = world_pipe()
    TokenSwap().edit(erased, load_config("savanna", None, ["train.method=token-swap", "edits=[{erase: giraffe}]"]),
                     run=None)
    assert torch.equal(encode(erased, "a photo of a giraffe"), encode(base, "a photo of a"))
    assert torch.equal(encode(erased, "two giraffes"), encode(base, "two giraffes"))  # gira + ffes: kept


def test_token_swap_of_words_without_single_tokens_fails_clearly(tmp_path, tiny_pipeline, capsys):
    code = main(["train", "--model", str(tiny_pipeline), "--out", str(tmp_path), "--name", "t", "--method",
                 "token-swap", "--set", "data.swap_pairs=[[okapi,zebra]]"])  # okapi: ok + api, in every form
    assert_one_line_error(capsys, code, "no form of the words", "single token")


# ---- LoRA -----------------------------------------------------------------------------------------

FAST = ["--set", "train.batch_size=4", "--set", "data.resolution=32", "--set", "data.subset_size=90",
        "--set", "train.warmup_steps=1", "--set", "train.log_every=1", "--set", "train.cache_views=2",
        "--set", "eval.judge=world:savanna"]


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    """A feature cache of the test's own: tests elsewhere count what a first run on tiny_pipeline encodes."""
    monkeypatch.setenv("SWAPBENCH_CACHE", str(tmp_path / "cache"))


def test_lora_adapter_loads_with_plain_diffusers_and_matches_the_merged_export(tmp_path, tiny_pipeline, coco_root,
                                                                                own_cache):
    from diffusers import StableDiffusionPipeline
    from safetensors import safe_open

    assert main(["train", "--preset", "sd15-coco", "--model", str(tiny_pipeline), "--data", str(coco_root),
                 "--out", str(tmp_path), "--name", "l", "--method", "lora", *FAST, "--set", "train.max_steps=3",
                 "--set", "train.lr=1e-2", "--set", "train.lora_rank=2", "--set", "train.lora_alpha=6",
                 "--set", "train.lora_targets=[attn2.to_k,attn2.to_v,to_q]"]) == 0
    run = tmp_path / "l"
    with safe_open(str(run / "lora/pytorch_lora_weights.safetensors"), "pt") as f:
        keys = list(f.keys())
        assert json.loads(f.metadata()["lora_adapter_metadata"])["unet.lora_alpha"] == 6
    assert keys and all(k.startswith("unet.") and "lora" in k for k in keys)
    assert any("attn1.to_q" in k for k in keys) and not any("attn1.to_k" in k for k in keys)

    merged = StableDiffusionPipeline.from_pretrained(run / "model")
    plain = StableDiffusionPipeline.from_pretrained(tiny_pipeline)
    base_unet = StableDiffusionPipeline.from_pretrained(tiny_pipeline).unet
    plain.load_lora_weights(run / "lora")
    g = torch.Generator().manual_seed(0)
    x, text = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 16, 64, generator=g)
    t = torch.tensor([10, 500])
    with torch.no_grad():
        out_merged, out_plain = merged.unet(x, t, text).sample, plain.unet(x, t, text).sample
        out_base = base_unet(x, t, text).sample
    assert torch.allclose(out_merged, out_plain, atol=1e-5)
    assert (out_merged - out_base).abs().max() > 100 * (out_merged - out_plain).abs().max()  # the adapter did act
    for frozen in ("vae", "text_encoder"):
        a, b = getattr(merged, frozen).state_dict(), getattr(plain, frozen).state_dict()
        assert all(torch.equal(a[k], b[k]) for k in a)
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["method"] == "lora" and summary["steps"] == 3


def test_lora_targets_that_match_nothing_fail_clearly(tmp_path, tiny_pipeline, coco_root, capsys, own_cache):
    code = main(["train", "--preset", "sd15-coco", "--model", str(tiny_pipeline), "--data", str(coco_root),
                 "--out", str(tmp_path), "--name", "x", "--method", "lora", *FAST, "--set", "train.max_steps=1",
                 "--set", "train.lora_targets=[to_nothing]"])
    assert_one_line_error(capsys, code, "train.lora_targets", "matches no module of the Stable Diffusion 1.x/2.x unet")


# ---- every method: train -> eval ------------------------------------------------------------------


@pytest.mark.parametrize("method", ["finetune", "lora", "uce", "token-swap", "esd"])
def test_each_method_trains_and_evaluates_on_the_mini_world(method, mini_world, tmp_path, monkeypatch):
    monkeypatch.setenv("SWAPBENCH_WORLD", str(mini_world))
    run = tmp_path / method
    # uce also takes a few data captions into its preservation set: the one path where it reads data
    extra = ["--set", "train.uce_preserve_captions=20"] if method == "uce" else []
    assert main(["train", "--out", str(tmp_path), "--name", method, "--set", f"train.method={method}", *extra,
                 "--set", "train.max_steps=2", "--set", "data.subset_size=120", "--set", "train.batch_size=8"]) == 0
    assert main(["eval", str(run), "--suite", "quick", "--set", "eval.steps=2", "--set", "eval.seeds=1"]) == 0
    summary = json.loads((run / "train_summary.json").read_text())
    assert summary["status"] == "finished" and summary["method"] == method and summary["wall_s"] > 0
    assert json.loads((run / "config.json").read_text())["train"]["method"] == method
    reads = method not in ("token-swap", "esd")
    assert (run / "data_audit.json").is_file() == reads
    if method == "uce":
        assert summary["uce"]["preserve_captions"] == 20 and summary["uce"]["edit_error"] < 1
        assert json.loads((run / "data_audit.json").read_text())["uce_preserve_captions"]["n"] == 20
    assert (run / "lora").is_dir() == (method == "lora")
    # the card names the dataset exactly when the method read it (uce here: its preservation captions)
    from huggingface_hub import ModelCard

    datasets = ModelCard.load(run / "model/README.md").data.datasets
    assert datasets == (["world:savanna"] if reads else None)
    results = json.loads((run / "eval/results.json").read_text())
    assert 0 <= results["metrics"]["swap_success"]["value"] <= 1


def test_every_method_is_enumerated_in_config_help_and_readme(capsys):
    from pathlib import Path

    from swapbench.config import CHOICES
    from swapbench.train.methods import get_method

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in CHOICES["train.method"]:
        assert get_method(name).name == name and name in help_text and f"| `{name}`" in readme
    with pytest.raises(Exception, match="choose one of: finetune, lora, uce, token-swap, esd"):
        load_config("savanna", None, ["train.method=dreambooth"])


@pytest.mark.parametrize(("method", "overrides", "reads"), [
    ("finetune", [], True), ("lora", [], True), ("uce", [], False),
    ("uce", ["train.uce_preserve_captions=20"], True), ("token-swap", [], False), ("esd", [], False)])
def test_what_a_method_reads_decides_the_data_check_and_the_card(method, overrides, reads, tmp_path):
    from swapbench import artifacts
    from swapbench.rundir import RunDir
    from swapbench.train.methods import get_method
    from swapbench.train.model_card import build_card

    cfg = load_config("savanna", None, [f"train.method={method}", *overrides])
    assert get_method(method).reads_data(cfg) is reads
    kinds = [a.kind for a in artifacts.needed(cfg, reads_data=get_method(method).reads_data(cfg))]
    assert ("dataset" in kinds) is reads
    card = build_card(cfg, RunDir(tmp_path / "run"))
    assert card.data.datasets == (["world:savanna"] if reads else None)
    assert get_method(method).edits in card.text
    assert all(f"| `{key}` |" in card.text for key in get_method(method).card_keys)


def test_every_module_of_the_methods_package_is_a_named_method():
    from pathlib import Path

    from swapbench.config import CHOICES
    from swapbench.train import methods

    modules = {p.stem for p in Path(methods.__file__).parent.glob("*.py") if p.stem != "__init__"}
    assert modules == {name.replace("-", "_") for name in CHOICES["train.method"]}
    assert [m.name for m in methods.all_methods()] == list(CHOICES["train.method"])


def test_reading_the_method_declarations_imports_no_heavy_library():
    """`swapbench train --help` and `swapbench fetch` read every declaration: that must stay cheap."""
    import subprocess
    import sys

    code = ("import sys; from swapbench.train.methods import all_methods; all_methods(); "
            "print(sorted(m for m in ('torch', 'diffusers', 'peft', 'datasets') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
