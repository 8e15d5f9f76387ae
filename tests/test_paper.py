"""The paper command end to end: all four tables on the synthetic set, and the same run on tiny
data sets written here in the COCO and VOC file formats (synthetic scenes as their images)."""
import json

import numpy as np
import pytest

from layover_edge import cli
from layover_edge.apps.paper import table4
from layover_edge.data.synthetic import SyntheticScenes
from layover_edge.data.voc import CLASSES as VOC_CLASSES

RUN = ["--backbones", "test_convnext", "--weights", "none", "--image-size", "32", "--batch-size", "16",
       "--device", "cpu", "--quiet", "--json", "--gallery", "4"]


def run_paper(args, capsys):
    assert cli.main(["paper", *RUN, *args]) == 0
    return json.loads(capsys.readouterr().out)


def check_tables(out, results, classes, taps, ft, concat=False):
    text = (out / "tables.md").read_text()
    for title in ("Table 1", "Table 2", "Table 3", "Table 4"):
        assert f"## {title}" in text
    entry = results["backbones"]["test_convnext"]
    assert set(entry["methods"]) == {"LP", "RM", *(["FT"] if ft else [])}
    assert list(entry["taps"]) == [name for t in taps for name in
                                   (f"RM@{t}", f"RM@{t} (paper)", *([f"concat@{t}"] if concat else []))]
    assert {entry["taps"][f"RM@{t}"]["mix"] for t in taps} == {"residual"}
    assert {entry["taps"][f"RM@{t} (paper)"]["mix"] for t in taps} == {"paper"}
    if ft:
        assert entry["methods"]["FT"]["mix"] == "residual"
    lp, rm = entry["methods"]["LP"], entry["methods"]["RM"]
    assert rm["params_trainable"] > lp["params_trainable"] > 0
    assert set(lp["AP"]) == set(classes) and set(rm["alpha_per_class"]) == set(classes)
    # Table 4 rows are sorted by LP AP and carry RM - LP
    rows = [line.split("|")[1:-1] for line in table4(entry).splitlines()[2:]]
    assert len(rows) == len(classes)
    rows = [r for r in rows if r[1].strip() != "-"]  # classes without positives (no AP) come last
    lp_ap = [float(r[1]) for r in rows]
    assert lp_ap == sorted(lp_ap) and len(rows) >= 5
    assert all(abs(float(r[3]) - (float(r[2]) - float(r[1]))) < 0.11 for r in rows)
    assert (out / "gallery_test_convnext.png").stat().st_size > 0
    assert (out / "figure2_test_convnext.png").stat().st_size > 0
    hard = entry["hard_instances"]
    assert [h["lp"] for h in hard] == sorted(h["lp"] for h in hard)


def test_paper_on_the_synthetic_set(tmp_path, capsys):
    res = run_paper(["--data", "synthetic", "--train-size", "48", "--val-size", "32", "--data-image-size", "32",
                     "--taps", "1", "2", "3", "--concat", "--epochs", "2", "--ft-epochs", "1", "--out", str(tmp_path)],
                    capsys)
    check_tables(tmp_path, res, SyntheticScenes("val", 1, 32).classes, (1, 2, 3), ft=True, concat=True)
    # the synthetic scenes know their objects' sizes: AP on small and on large objects for every method and tap
    entry = res["backbones"]["test_convnext"]
    for m in [*entry["methods"].values(), *entry["taps"].values()]:
        assert 0 <= m["AP_small"] <= 100 and 0 <= m["AP_large"] <= 100
        assert m["hard_images"] == 32 and m["mAP_hard"] == pytest.approx(m["mAP"])  # every scene is a hard instance
    tables = (tmp_path / "tables.md").read_text()
    assert "## Object-size AP" in tables and "mAP hard" in tables and "over the 32 validation images" in tables
    # one cache per backbone serves LP and every RM tap
    assert sorted(p.name for p in (tmp_path / "features" / "test_convnext").iterdir()) == ["train", "val"]


def scenes(split, n, classes):
    return SyntheticScenes(split, n, 32, classes, seed=3)


def write_coco(root, n_train=40, n_val=24):
    """COCO 2014 layout; category ids with gaps, an image without annotations, a crowd annotation.
    Areas and boxes are those of 10x larger originals (320 px), so that COCO's size ranges see
    large, medium and small objects."""
    names = scenes("train", 1, 6).classes
    cats = [{"id": 3 * k + 1, "name": n, "supercategory": "thing"} for k, n in enumerate(names)]
    (root / "annotations").mkdir(parents=True)
    for split, n in (("train", n_train), ("val", n_val)):
        ds = scenes(split, n, 6)
        images, anns = [], []
        for i in range(n):
            file = f"COCO_{split}2014_{i:012d}.jpg"
            ds[i][0].save(root / f"{split}2014" / file if (root / f"{split}2014").is_dir()
                          else _mkdir(root / f"{split}2014") / file, quality=95)
            images.append({"id": i + 1, "file_name": file, "width": 320, "height": 320})
            if i == 0:
                continue  # no annotations: dropped from train, all-negative in val
            for o in ds.objects(i):
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": cats[o.class_index]["id"],
                             "iscrowd": int(len(anns) % 7 == 0), "area": float((10 * o.size) ** 2),
                             "bbox": [0, 0, 10 * o.size, 10 * o.size]})
        (root / "annotations" / f"instances_{split}2014.json").write_text(
            json.dumps({"images": images, "annotations": anns, "categories": cats}))
    return names


def _mkdir(path):
    path.mkdir(parents=True)
    return path


def write_voc(root, n_trainval=40, n_test=24):
    """VOC 2007 layout: XML per image, small objects marked difficult."""
    base = root / "VOCdevkit" / "VOC2007"
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (base / sub).mkdir(parents=True)
    for split, n in (("trainval", n_trainval), ("test", n_test)):
        ds, ids = scenes("train" if split == "trainval" else "val", n, 8), []
        for i in range(n):
            image_id = f"{split[:2]}{i:04d}"
            ids.append(image_id)
            ds[i][0].save(base / "JPEGImages" / f"{image_id}.jpg", quality=95)
            objs = "".join(f"<object><name>{VOC_CLASSES[o.class_index]}</name><difficult>{int(o.size <= 3)}"
                           f"</difficult></object>" for o in ds.objects(i))
            (base / "Annotations" / f"{image_id}.xml").write_text(f"<annotation>{objs}</annotation>")
        (base / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")


@pytest.mark.parametrize("fmt", ["coco2014", "voc2007"])
def test_paper_on_coco_and_voc_format_sets(tmp_path, capsys, fmt):
    data = tmp_path / "data"
    if fmt == "coco2014":
        write_coco(data)
        classes = scenes("train", 1, 6).classes
    else:
        write_voc(data)
        classes = list(VOC_CLASSES)
    out = tmp_path / "out"
    res = run_paper(["--data", fmt, "--data-root", str(data), "--taps", "1", "2", "--epochs", "1",
                     "--ft-epochs", "0", "--out", str(out)], capsys)
    check_tables(out, res, classes, (1, 2), ft=False)
    lp = res["backbones"]["test_convnext"]["methods"]["LP"]
    if fmt == "coco2014":  # object sizes from the annotations' areas
        assert 0 <= lp["AP_small"] <= 100 and 0 <= lp["AP_large"] <= 100 and 0 <= lp["mAP_hard"] <= 100
        assert 0 < lp["hard_images"] < 24
        assert "## Object-size AP" in (out / "tables.md").read_text()
    else:  # VOC has no object sizes
        assert "AP_small" not in lp and "mAP_hard" not in lp
        assert "## Object-size AP" not in (out / "tables.md").read_text()
    splits = ("train", "val") if fmt == "coco2014" else ("trainval", "test")
    assert sorted(p.name for p in (out / "features" / "test_convnext").iterdir()) == sorted(splits)
    n_train = res["data"]["train_images"]
    assert n_train == (39 if fmt == "coco2014" else 40)  # COCO train drops its unannotated image
    targets = np.load(out / "features" / "test_convnext" / splits[1] / "targets.npy")
    if fmt == "coco2014":
        assert res["data"]["val_images"] == 24 and not targets[0].any()  # kept, all negative
    else:
        assert (targets == -1).any()  # difficult-only labels stay ignored through the cache


def test_ft_epochs_are_planned_within_the_budget_and_the_report_says_so():
    from layover_edge.training.schedule import plan_ft
    from layover_edge.apps.reports import _ft_text
    from layover_edge.core.config import ModelConfig, TrainConfig
    from layover_edge.models import resolve_config
    cfg = resolve_config(ModelConfig(backbone="test_convnext", num_classes=5, weights="none", method="ft", image_size=32))
    ds = SyntheticScenes("train", 16, 32, 5)
    tcfg = TrainConfig(epochs=7, batch_size=8, device="cpu")
    assert plan_ft(cfg, tcfg, ds, ds, 1e9, 100.0)["epochs"] == 7  # ample time: what was asked for
    plan = plan_ft(cfg, tcfg, ds, ds, 0.0, 100.0)
    assert plan["epochs"] == 0 and plan["step_s"] > 0 and plan["epoch_s"] > 0
    assert "did not run" in _ft_text({"ft_plan": plan, "methods": {}})
    short = plan | {"epochs": 2}
    assert "2 of 7 epochs" in _ft_text({"ft_plan": short, "methods": {}}) and "under-trained" in _ft_text(
        {"ft_plan": short, "methods": {}})
