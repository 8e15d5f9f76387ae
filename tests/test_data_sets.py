"""COCO, VOC and folder loaders on fixtures written here in the real file formats; every expected
target is written out by hand from the fixture's annotations, independent of pycocotools."""
import json

import numpy as np
import pytest
from PIL import Image

from layover_edge.core.config import Preprocess
from layover_edge.core.errors import LayoverError
from layover_edge.data import build_dataset
from layover_edge.data.loading import image_loader, skipped_report


def image(path, colour=(200, 30, 30), size=(20, 16), fmt=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, format=fmt)


# ---------------------------------------------------------------- COCO

CATS = [{"id": 1, "name": "person", "supercategory": "person"},
        {"id": 3, "name": "car", "supercategory": "vehicle"},
        {"id": 18, "name": "dog", "supercategory": "animal"},
        {"id": 90, "name": "toothbrush", "supercategory": "indoor"}]


def ann(i, image_id, cat, crowd=0):
    return {"id": i, "image_id": image_id, "category_id": cat, "iscrowd": crowd, "area": 10.0,
            "bbox": [0, 0, 2, 5], "segmentation": [[0, 0, 2, 0, 2, 5]]}


def coco_doc():
    images = [{"id": i, "file_name": f"COCO_val2014_{i:012d}.jpg", "width": 20, "height": 16} for i in (7, 3, 12, 5)]
    anns = [ann(1, 7, 3), ann(2, 7, 3), ann(3, 7, 1), ann(4, 3, 90), ann(5, 12, 1, crowd=1)]  # image 5: nothing
    return {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": CATS}


@pytest.fixture
def coco(tmp_path):
    doc = coco_doc()
    for split in ("train", "val"):
        d = dict(doc, images=[dict(im, file_name=im["file_name"].replace("val", split)) for im in doc["images"]])
        (tmp_path / "annotations").mkdir(exist_ok=True)
        (tmp_path / "annotations" / f"instances_{split}2014.json").write_text(json.dumps(d))
        for im in d["images"]:
            image(tmp_path / f"{split}2014" / im["file_name"], fmt="JPEG")
    return tmp_path


def test_coco_targets_classes_and_empty_images(coco):
    val = build_dataset("coco2014", "val", str(coco))
    assert val.classes == ["person", "car", "dog", "toothbrush"]  # category-id order, not alphabetical
    # image ids sorted: 3 (toothbrush), 5 (nothing: kept as all-negative), 7 (car x2, person), 12 (crowd person)
    assert val.image_ids == [3, 5, 7, 12]
    np.testing.assert_array_equal(val.targets, [[0, 0, 0, 1], [0, 0, 0, 0], [1, 1, 0, 0], [1, 0, 0, 0]])
    assert val.path(2).endswith("val2014/COCO_val2014_000000000007.jpg")
    img, target = val[2]
    assert img.size == (20, 16) and target.tolist() == [1.0, 1.0, 0.0, 0.0]

    train = build_dataset("coco2014", "train", str(coco))  # the training split drops image 5 by default
    assert train.image_ids == [3, 7, 12]
    assert build_dataset("coco2014", "train", str(coco), drop_empty=False).image_ids == [3, 5, 7, 12]
    assert build_dataset("coco2014", "val", str(coco), drop_empty=True).image_ids == [3, 7, 12]


def test_coco_fingerprint_follows_content_not_mtime(coco):
    a = build_dataset("coco2014", "val", str(coco)).fingerprint()
    ann_file = coco / "annotations" / "instances_val2014.json"
    ann_file.write_text(ann_file.read_text() + "\n")  # same content, new mtime and bytes
    assert build_dataset("coco2014", "val", str(coco)).fingerprint() == a
    doc = json.loads(ann_file.read_text())
    doc["annotations"].append(ann(9, 5, 18))
    ann_file.write_text(json.dumps(doc))
    assert build_dataset("coco2014", "val", str(coco)).fingerprint() != a
    assert build_dataset("coco2014", "val", str(coco), drop_empty=True).fingerprint() != a


@pytest.mark.parametrize("content, message", [
    (None, "COCO annotation file not found"),
    ('{"images": [{"id": 1, "file_name": "a.jpg"}], "annotations": [', "not valid JSON"),
    ('[1, 2]', "not a COCO instances file"),
    ('{"images": [], "annotations": []}', "no 'categories' list"),
    ('{"images": [{"id": 1}], "annotations": [], "categories": [{"id": 1, "name": "x"}]}', r"images\[0\] lacks"),
    ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "x"}]}', "split 'val' is empty"),
])
def test_coco_bad_annotation_files(tmp_path, content, message):
    if content is not None:
        (tmp_path / "annotations").mkdir()
        (tmp_path / "annotations" / "instances_val2014.json").write_text(content)
    with pytest.raises(LayoverError, match=message) as e:
        build_dataset("coco2014", "val", str(tmp_path))
    if content is not None:
        assert "instances_val2014.json" in str(e.value)


def test_coco_unknown_category_and_missing_images(coco):
    ann_file = coco / "annotations" / "instances_val2014.json"
    doc = json.loads(ann_file.read_text())
    (coco / "val2014" / doc["images"][1]["file_name"]).unlink()
    with pytest.raises(LayoverError, match="1 of 4 images .* do not exist, e.g. .*000000000003.jpg"):
        build_dataset("coco2014", "val", str(coco))
    ds = build_dataset("coco2014", "val", str(coco), missing="skip")  # listed as unreadable instead
    pre = Preprocess(image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    bad = [b for _, _, _, batch_bad in image_loader(ds, pre, 2) for b in batch_bad]
    assert skipped_report(ds, bad) == [{"index": 0, "path": ds.path(0), "reason": f"{ds.path(0)}: file not found"}]
    doc["annotations"].append(ann(9, 5, 44))
    ann_file.write_text(json.dumps(doc))
    with pytest.raises(LayoverError, match="category_id 44"):
        build_dataset("coco2014", "val", str(coco), missing="skip")
    with pytest.raises(LayoverError, match="--data-root"):
        build_dataset("coco2014", "val", None)


# ---------------------------------------------------------------- VOC

VOC_OBJECTS = {  # image id -> [(class, difficult)]
    "000005": [("chair", 0), ("chair", 1), ("diningtable", 1)],
    "000007": [("car", 0)],
    "000009": [("horse", 0), ("person", 1), ("person", 0), ("dog", 1)],
}
# by hand: chair has a non-difficult one -> 1; diningtable only difficult -> -1; person mixed -> 1; dog -> -1
VOC_EXPECTED = {"000005": {"chair": 1, "diningtable": -1}, "000007": {"car": 1},
                "000009": {"horse": 1, "person": 1, "dog": -1}}


def voc_xml(image_id, objects):
    objs = "".join(f"<object><name>{c}</name><pose>Left</pose><truncated>0</truncated><difficult>{d}</difficult>"
                   f"<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
                   for c, d in objects)
    return (f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            f"<size><width>20</width><height>16</height><depth>3</depth></size>{objs}</annotation>")


@pytest.fixture
def voc(tmp_path):
    from layover_edge.data.voc import CLASSES
    base = tmp_path / "VOCdevkit" / "VOC2007"
    main = base / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (base / "Annotations").mkdir()
    ids = sorted(VOC_OBJECTS)
    (main / "test.txt").write_text("\n".join(ids) + "\n")
    for image_id, objects in VOC_OBJECTS.items():
        (base / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, objects))
        image(base / "JPEGImages" / f"{image_id}.jpg", fmt="JPEG")
    for c in CLASSES:  # the per-class lists, in VOC's own encoding: 1, 0 (difficult only), -1
        code = {1: " 1", -1: " 0", 0: "-1"}
        (main / f"{c}_test.txt").write_text("".join(f"{i} {code[VOC_EXPECTED[i].get(c, 0)]}\n" for i in ids))
    return tmp_path


def expected_voc():
    from layover_edge.data.voc import CLASSES
    return np.array([[VOC_EXPECTED[i].get(c, 0) for c in CLASSES] for i in sorted(VOC_EXPECTED)])


@pytest.mark.parametrize("source", ["xml", "imagesets"])
def test_voc_targets_mark_difficult_as_ignored(voc, source):
    ds = build_dataset("voc2007", "test", str(voc), source=source)
    assert len(ds.classes) == 20 and ds.classes[0] == "aeroplane"
    np.testing.assert_array_equal(ds.targets, expected_voc())
    assert ds.path(1).endswith("VOC2007/JPEGImages/000007.jpg")
    assert ds[2][1][ds.classes.index("dog")] == -1


def test_voc_sources_agree_and_auto_falls_back_to_imagesets(voc):
    a = build_dataset("voc2007", "test", str(voc / "VOCdevkit"), source="xml")
    for f in (voc / "VOCdevkit" / "VOC2007" / "Annotations").iterdir():
        f.unlink()
    (voc / "VOCdevkit" / "VOC2007" / "Annotations").rmdir()
    b = build_dataset("voc2007", "test", str(voc / "VOCdevkit" / "VOC2007"))
    np.testing.assert_array_equal(a.targets, b.targets)
    assert a.fingerprint() == b.fingerprint()


def test_voc_bad_input(voc):
    base = voc / "VOCdevkit" / "VOC2007"
    with pytest.raises(LayoverError, match="image set file not found: .*trainval.txt"):
        build_dataset("voc2007", "trainval", str(voc))
    (base / "Annotations" / "000007.xml").write_text(voc_xml("000007", [("car", 0)])[:60])
    with pytest.raises(LayoverError, match="000007.xml is not valid XML"):
        build_dataset("voc2007", "test", str(voc))
    (base / "Annotations" / "000007.xml").write_text(voc_xml("000007", [("unicorn", 0)]))
    with pytest.raises(LayoverError, match="000007.xml: label 'unicorn' is not in the class list"):
        build_dataset("voc2007", "test", str(voc))
    (base / "ImageSets" / "Main" / "cat_test.txt").write_text("000005 1\n000099 1\n")
    with pytest.raises(LayoverError, match=r"cat_test.txt:2: expected"):
        build_dataset("voc2007", "test", str(voc), source="imagesets")
    with pytest.raises(LayoverError, match="no VOC 2007 data under"):
        build_dataset("voc2007", "test", str(voc / "nowhere"))


# ---------------------------------------------------------------- folder (CSV / JSON lines)

def test_folder_csv_per_split_with_inferred_classes(tmp_path):
    for name in ("a.png", "b.png", "sub/c.png"):
        image(tmp_path / name)
    (tmp_path / "train.csv").write_text("path,labels\na.png,dog;frisbee\nsub/c.png,\n")
    (tmp_path / "val.csv").write_text("path,labels,ignore\nb.png,cat,dog\n")
    train = build_dataset("folder", "train", str(tmp_path))
    val = build_dataset("folder", "val", str(tmp_path))
    assert train.classes == val.classes == ["cat", "dog", "frisbee"]  # union over both files
    np.testing.assert_array_equal(train.targets, [[0, 1, 1], [0, 0, 0]])
    np.testing.assert_array_equal(val.targets, [[1, -1, 0]])


def test_folder_jsonl_with_split_field_and_class_list(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        image(tmp_path / "photos" / name, fmt="JPEG")
    rows = [{"path": "photos/a.jpg", "labels": ["beach"], "split": "train"},
            {"path": "photos/b.jpg", "labels": ["sea", "beach"], "split": "val"},
            {"path": str(tmp_path / "photos/c.jpg"), "labels": [], "split": "train"}]
    (tmp_path / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "classes.txt").write_text("sea\nbeach\nforest\n")
    train = build_dataset("folder", "train", str(tmp_path))
    assert train.classes == ["sea", "beach", "forest"]
    np.testing.assert_array_equal(train.targets, [[0, 1, 0], [0, 0, 0]])
    np.testing.assert_array_equal(build_dataset("folder", "val", str(tmp_path)).targets, [[1, 1, 0]])
    with pytest.raises(LayoverError, match="split 'test' is empty"):
        build_dataset("folder", "test", str(tmp_path))


@pytest.mark.parametrize("files, message", [
    ({"train.csv": "file,tags\na.png,x\n"}, "header must have 'path' and 'labels'"),
    ({"train.jsonl": '{"path": "a.png", "labels": ["x"]}\n{"path": "a.png", "lab'}, r"train.jsonl:2: not valid JSON"),
    ({"train.jsonl": '{"path": "a.png"}\n'}, "expected an object with 'path'"),
    ({"train.csv": "path,labels\na.png,x;y\n", "classes.txt": "x\n"}, r"train.csv \(a.png\): label 'y' is not in"),
    ({"labels.csv": "path,labels\na.png,x\n"}, "no 'split' column"),
    ({"val.csv": "path,labels\na.png,x\n"}, "no label file for split 'train'"),
    ({"train.csv": "path,labels\nmissing.png,x\n"}, "1 of 1 images .* do not exist, e.g. .*missing.png .*none exists"),
])
def test_folder_bad_input(tmp_path, files, message):
    image(tmp_path / "a.png")
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(LayoverError, match=message):
        build_dataset("folder", "train", str(tmp_path))


def test_folder_label_files_with_a_bom_are_read(tmp_path):
    """Spreadsheet programs save UTF-8 with a byte-order mark; the header is still 'path,labels'."""
    image(tmp_path / "a.png")
    (tmp_path / "train.csv").write_bytes("\ufeffpath,labels\na.png,café\n".encode("utf-8"))
    (tmp_path / "classes.txt").write_bytes("\ufeffcafé\n".encode("utf-8"))
    ds = build_dataset("folder", "train", str(tmp_path))
    assert ds.classes == ["café"] and ds.targets.tolist() == [[1]]


def test_folder_label_file_in_latin1_names_the_line(tmp_path):
    image(tmp_path / "a.png")
    (tmp_path / "train.csv").write_bytes("path,labels\na.png,caf\xe9\n".encode("latin-1"))
    with pytest.raises(LayoverError, match=r"train.csv:2: not UTF-8 text \(byte 0xe9\)"):
        build_dataset("folder", "train", str(tmp_path))


def test_unreadable_images_are_skipped_with_their_path(tmp_path):
    image(tmp_path / "good.png")
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    image(tmp_path / "full.jpg", size=(64, 64), fmt="JPEG")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:200])  # truncated JPEG
    (tmp_path / "train.csv").write_text("path,labels\ngood.png,a\nbroken.png,a\ncut.jpg,b\n")
    ds = build_dataset("folder", "train", str(tmp_path))
    pre = Preprocess(image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3)
    batches = list(image_loader(ds, pre, 3))
    x, y, idx, bad = batches[0]
    assert idx.tolist() == [0] and y.tolist() == [[1.0, 0.0]]
    report = skipped_report(ds, bad)
    assert [r["path"] for r in report] == [str(tmp_path / "broken.png"), str(tmp_path / "cut.jpg")]
    assert all("cannot read image" in r["reason"] for r in report)


def test_unknown_data_set_name():
    with pytest.raises(LayoverError, match="unknown data set 'imagenet'"):
        build_dataset("imagenet", "train", "/tmp")
