"""Several judges on one evaluation: the world judge, a second copy of it and a torchvision ImageNet
classifier (a ResNet-18 built here: a random backbone whose classifier layer is fitted to a few world
images, saved under its real torch.hub file name). The primary judge's metrics must not change."""

import io
import json
import os
from collections import Counter

import numpy as np
import pytest
import torch
import torchvision
import yaml
from _cli import assert_one_line_error
from PIL import Image
from rich.console import Console

from swapbench import catalog
from swapbench.cli import main
from swapbench.eval import stats
from swapbench.reports.summary import print_summary
from swapbench.world import generator

QUICK = ["--suite", "quick", "--set", "eval.steps=2", "--set", "eval.seeds=1"]
# The small mapping of the classifier built here: one class per label; deer has none, so its images can
# only be judged as another label or "other" (as giraffe, donkey, deer and okapi in eval/judges/imagenet.yaml).
CLASSES = {"giraffe": [0], "zebra": [1], "elephant": [2], "horse": [3], "lion": [4], "cow": [5], "donkey": [6],
           "deer": [], "okapi": [7]}
RESNET18 = torchvision.models.ResNet18_Weights.DEFAULT
RESNET50_FILE = os.path.basename(torchvision.models.ResNet50_Weights.DEFAULT.url)


def fitted_resnet18() -> torchvision.models.ResNet:
    """ResNet-18 with random convolutions and a classifier layer fitted by ridge regression (on the
    weights' own preprocessing of four world images per concept) to the classes of ``CLASSES``."""
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None).eval()
    concepts = [c for c, idx in CLASSES.items() if idx]
    images = np.stack([generator.make_single(c, seed=7, index=i) for c in concepts for i in range(4)])
    pixels = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    head, model.fc = model.fc, torch.nn.Identity()
    with torch.no_grad():
        features = model(RESNET18.transforms()(pixels)).double()
    mean = features.mean(0)
    targets = torch.zeros(len(images), 1000, dtype=torch.float64)
    for row, concept in enumerate(c for c in concepts for _ in range(4)):
        targets[row, CLASSES[concept][0]] = 1
    centred = features - mean
    weight = torch.linalg.solve(centred.T @ centred + 1e-2 * torch.eye(centred.shape[1], dtype=torch.float64),
                                centred.T @ targets).T
    head.weight.data = weight.float()
    head.bias.data = (targets.mean(0) - weight @ mean).float()
    model.fc = head
    return model


@pytest.fixture(scope="module")
def torch_home(tmp_path_factory):
    """TORCH_HOME holding the fitted ResNet-18 under torchvision's own file name, and nothing else."""
    home = tmp_path_factory.mktemp("torch-home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(fitted_resnet18().state_dict(), checkpoints / os.path.basename(RESNET18.url))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_HOME", str(home))
        yield home


@pytest.fixture(scope="module")
def evaluations(default_run, torch_home, tmp_path_factory):
    """The default run on the quick suite judged by the world judge alone, then with two further judges."""
    out = tmp_path_factory.mktemp("judges")
    mapping = out / "classes.yaml"
    mapping.write_text(yaml.safe_dump({"labels": CLASSES}))
    assert main(["eval", str(default_run), *QUICK, "--out", str(out / "one")]) == 0
    assert main(["eval", str(default_run), *QUICK, "--out", str(out / "three"),
                 "--set", "eval.judges=[self=world:savanna, torchvision:resnet18]",
                 "--set", f"eval.judge_classes={mapping}"]) == 0
    read = lambda name: json.loads((out / name / "results.json").read_text())  # noqa: E731
    return read("one"), read("three"), out


def _further(name):
    return name.startswith((catalog.JUDGE_PREFIX, "agreement/"))


def test_a_one_judge_evaluation_is_unchanged_and_further_judges_leave_the_primary_bit_for_bit(evaluations):
    one, three, _ = evaluations
    assert not any(_further(n) for n in one["metrics"]) and "judges" not in one["provenance"]
    assert all("labels" not in row for row in one["per_prompt"])
    primary = {n: m for n, m in three["metrics"].items() if not _further(n)}
    assert json.dumps(primary) == json.dumps(one["metrics"])  # values, intervals and order
    assert [{k: v for k, v in row.items() if k != "labels"} for row in three["per_prompt"]] == one["per_prompt"]
    assert list(three["provenance"]["judges"]) == ["self", "resnet18"]
    about = three["provenance"]["judges"]["resnet18"]
    assert about["kind"] == "torchvision" and "IMAGENET1K_V1" in about["weights"]
    assert about["no_imagenet_class"] == ["deer"]


def test_a_judge_compared_with_itself_scores_the_same_and_agrees_fully(evaluations):
    _, three, _ = evaluations
    metrics = three["metrics"]
    mine = {catalog.judge_of(n)[1]: m for n, m in metrics.items() if catalog.judge_of(n)[0] == "self"}
    label_metrics = {n: m for n, m in metrics.items() if not _further(n) and catalog.rows_for(n, three["per_prompt"])
                     and not n.startswith("clip_score")}
    assert set(mine) == set(label_metrics)
    for name, entry in label_metrics.items():
        assert {**mine[name], "description": entry["description"]} == entry, name
    rows = three["per_prompt"]
    for which in ("share", "kappa"):
        m = metrics[f"agreement/self/{which}"]
        assert (m["value"], m["n"], m["n_clusters"]) == (1.0, 2 * len(rows), len({r["prompt"] for r in rows}))


def _image_labels(rows, judge):
    """(primary, judge) labels of every tuned and base image, and the images' prompts."""
    pairs = [(row[f"{side}_label"], row["labels"][judge][side], row["prompt"]) for row in rows
             for side in ("tuned", "base")]
    return [a for a, _, _ in pairs], [b for _, b, _ in pairs], [p for _, _, p in pairs]


def test_classifier_judge_metrics_and_agreement_are_computed_from_its_labels(evaluations):
    _, three, out = evaluations
    metrics, rows = three["metrics"], three["per_prompt"]
    judged = Counter(row["labels"]["resnet18"][side] for row in rows for side in ("base", "tuned"))
    assert set(judged) <= {*CLASSES, "other"} and "deer" not in judged and len(judged) >= 3, judged
    # its own swap metric, by hand from its labels
    giraffe = [row for row in rows if row["group"] == "swap" and row["concept"] == "giraffe"]
    m = metrics["judge/resnet18/swap_success/giraffe->zebra"]
    assert m["n"] == len(giraffe)
    assert m["value"] == pytest.approx(np.mean([row["labels"]["resnet18"]["tuned"] == "zebra" for row in giraffe]))
    fidelity = [row["labels"]["resnet18"]["base"] == "zebra" for row in rows
                if row["group"] in ("swap", "control", "specificity") and row["concept"] == "zebra"]
    assert metrics["judge/resnet18/base_fidelity/zebra"]["value"] == pytest.approx(np.mean(fidelity), abs=1e-6)
    assert metrics["judge/resnet18/swap_success/giraffe->zebra"]["description"].startswith("judge resnet18: ")
    # agreement with the primary judge, by hand: share and Cohen's kappa over every image
    primary, other, prompts = _image_labels(rows, "resnet18")
    n = len(primary)
    observed = sum(a == b for a, b in zip(primary, other, strict=True)) / n
    first, second = Counter(primary), Counter(other)
    chance = sum(first[c] * second[c] for c in first) / n**2
    share, kappa = metrics["agreement/resnet18/share"], metrics["agreement/resnet18/kappa"]
    assert 0 < observed < 1  # it disagrees sometimes
    assert share["value"] == pytest.approx(observed, abs=1e-6)
    assert kappa["value"] == pytest.approx((observed - chance) / (1 - chance), abs=1e-6)
    assert (share["n"], kappa["n"], kappa["n_clusters"]) == (n, n, len(set(prompts)))
    # prompts as clusters, the evaluation's bootstrap seed and replicates
    again = stats.clustered_kappa(primary, other, prompts, 1000, 0)
    assert kappa["ci95"] == pytest.approx(list(again.ci95), abs=1e-6)
    assert -1 <= kappa["ci95"][0] <= kappa["value"] <= kappa["ci95"][1] <= 1 and kappa["ci95"][0] < kappa["ci95"][1]
    # the label is the one whose classes hold the top-1 class of the weights' own preprocessing
    model = torchvision.models.resnet18(weights=None).eval()
    model.load_state_dict(torch.load(os.environ["TORCH_HOME"] + "/hub/checkpoints/" + os.path.basename(RESNET18.url),
                                     weights_only=True))
    owner = {i: label for label, idx in CLASSES.items() for i in idx}
    kept = [row for row in rows if "images" in row]
    pixels = torch.stack([torch.from_numpy(np.array(Image.open(out / "three" / row["images"]["tuned"])))
                          .permute(2, 0, 1).float() / 255 for row in kept])
    with torch.no_grad():
        top1 = model(RESNET18.transforms()(pixels)).argmax(-1).tolist()
    assert [owner.get(i, "other") for i in top1] == [row["labels"]["resnet18"]["tuned"] for row in kept]


def test_the_table_describes_further_judges_and_the_summary_and_report_list_them(evaluations):
    _, three, out = evaluations
    metrics = three["metrics"]
    name = "judge/resnet18/swap_success/giraffe->zebra"
    assert catalog.family(name) is catalog.BY_HEAD["swap_success"] and catalog.higher_is_better(name) is True
    assert catalog.headline(metrics) == catalog.headline({n: m for n, m in metrics.items() if not _further(n)})
    assert catalog.ordered(metrics)[-1].startswith("judge/self/")  # each further judge after the primary's
    rows = catalog.rows_for(name, three["per_prompt"])
    assert np.mean([catalog.family(name).outcome(r) for r in rows]) == pytest.approx(metrics[name]["value"])
    buf = io.StringIO()
    print_summary(three, Console(file=buf, width=200))
    line = next(x for x in buf.getvalue().splitlines() if x.startswith("judge resnet18"))
    assert f"agreement {metrics['agreement/resnet18/share']['value']:.3f}" in line
    assert f"kappa {metrics['agreement/resnet18/kappa']['value']:.3f}" in line
    assert 'data-judge="resnet18"' in (out / "three" / "report.html").read_text()


def test_cohen_kappa_known_values():
    # 50 items: 20 + 15 agree; p_o = 0.7, p_e = 0.5 * 0.6 + 0.5 * 0.4 = 0.5 -> kappa 0.4
    assert stats.cohen_kappa(np.array([[20, 5], [10, 15]])) == pytest.approx(0.4)
    assert stats.cohen_kappa(np.array([[7, 0], [0, 0]])) == 1.0  # one label throughout, identical
    assert stats.cohen_kappa(np.array([[0, 5], [5, 0]])) == pytest.approx(-1.0)


def test_missing_classifier_weights_fail_in_one_line_naming_fetch(default_run, torch_home, tmp_path, capsys):
    code = main(["eval", str(default_run), *QUICK, "--out", str(tmp_path),
                 "--set", "eval.judges=[torchvision:resnet50]"])
    assert_one_line_error(capsys, code, RESNET50_FILE, str(torch_home / "hub" / "checkpoints"), "swapbench fetch")


def test_fetch_check_names_the_missing_weights_file(torch_home, capsys):
    assert main(["fetch", "--check", "--set", "eval.judges=[torchvision:resnet18]"]) == 0
    capsys.readouterr()
    code = main(["fetch", "--check", "--set", "eval.judges=[torchvision:resnet18, torchvision:resnet50]"])
    assert_one_line_error(capsys, code, f"judge torchvision:resnet50 (eval.judges) not at "
                          f"{torch_home / 'hub' / 'checkpoints' / RESNET50_FILE}")


@pytest.mark.parametrize(("settings", "needles"), [
    (["eval.judge=torchvision:resnet18"], ["not a zero-shot open_clip judge", "eval.judges"]),
    (["eval.judges=[a=world:savanna, a=torchvision:resnet18]"], ["two judges 'a'", "NAME=SPEC"]),
    (["eval.judges=[torchvision:resnet19]"], ["not a supported torchvision ImageNet classifier"]),
    (["eval.judges=[torchvision:resnet18/IMAGENET1K_V9]"], ["IMAGENET1K_V1"]),
])
def test_bad_judges_fail_in_one_line_before_sampling(default_run, torch_home, tmp_path, capsys, settings, needles):
    overrides = [x for s in settings for x in ("--set", s)]
    code = main(["eval", str(default_run), *QUICK, "--out", str(tmp_path), *overrides])
    assert_one_line_error(capsys, code, *needles)
    assert not (tmp_path / "results.json").exists()


def test_the_shipped_mapping_covers_the_suites_labels_and_says_which_have_no_imagenet_class():
    from swapbench.eval.judge import imagenet_classes
    from swapbench.eval.suite import load_suite

    labels = load_suite("default").labels
    classes, shown = imagenet_classes(None, labels)
    assert shown == "eval/judges/imagenet.yaml" and set(classes) == set(labels)
    assert classes["zebra"] == [340] and {c for c, idx in classes.items() if not idx} == {"giraffe", "donkey", "deer",
                                                                                          "okapi"}
    categories = RESNET18.meta["categories"]
    assert [categories[i] for i in classes["elephant"]] == ["tusker", "Indian elephant", "African elephant"]
    assert [categories[i] for i in classes["horse"] + classes["cow"] + classes["lion"]] == ["sorrel", "ox", "lion"]
