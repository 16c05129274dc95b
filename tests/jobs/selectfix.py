"""A user's own data in the real file formats, for ``basis select``: PNG images, a
labelled COCO JSON (RLE masks, or polygons) and a pool COCO JSON whose images carry
IL+C counts. Images are drawn by `basis.data.synthetic` at 64 px."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from basis.data.coco import write_coco
from basis.data.synthetic import SyntheticConfig, SyntheticShapes

#: Non-contiguous COCO category ids, to check that the pool's own ids come back.
CATEGORIES = [{"id": 3, "name": "disc", "supercategory": "shape"},
              {"id": 7, "name": "box", "supercategory": "shape"},
              {"id": 11, "name": "wedge", "supercategory": "shape"}]
CONFIG = """\
image_size: 64
model: {backbone: resnet18, hidden: 16, max_steps: 4}
train: {epochs: 1, iou_epochs: 1, batch_size: 8, iou_passes: 2}
"""


def counts_of(data: dict[str, Any], image_id: int) -> dict[str, int]:
    """IL+C of one image of COCO data: category id (a str key) → instances."""
    out: dict[str, int] = {}
    for a in data["annotations"]:
        if a["image_id"] == image_id and not a.get("iscrowd", 0):
            out[str(a["category_id"])] = out.get(str(a["category_id"]), 0) + 1
    return out


def make(root: Path, n_labelled: int = 12, n_pool: int = 20, counts: bool = True,
         pool_masks: bool = False, seed: int = 0, mixed: bool = False,
         shared: bool = False) -> dict[str, Path]:
    """Write ``root/{labelled,pool}.json`` and ``root/images/*.png`` → their paths, the
    training config ``root/train.yaml`` and the pool with every mask,
    ``root/pool_truth.json``. Pool ids start at 500 (labelled ids at 0).

    Args:
        mixed: every third image is 48×80 instead of 64×64, and every fourth is a
            greyscale PNG (both are accepted and converted).
        shared: the pool also lists the file of labelled image 0, as id 900 (an image
            labelled already: never to be selected).
    """
    cfg = SyntheticConfig(image_size=64, n_classes=len(CATEGORIES), mean_objects=2.0,
                          max_objects=3)
    draw = SyntheticShapes(cfg, seed, list(range(n_labelled)) +
                           list(range(500, 500 + n_pool)))
    samples = [draw[i] for i in range(len(draw))]
    if mixed:
        from basis.data.transforms import resize

        samples = [resize((48, 80))(s) if k % 3 == 2 else s for k, s in enumerate(samples)]
    names = {s.image_id: f"img{s.image_id:04d}.png" for s in samples}
    root.mkdir(parents=True, exist_ok=True)
    labelled = write_coco(samples[:n_labelled], root / "labelled.json", CATEGORIES,
                          image_dir=root / "images", file_names=names)
    pool = write_coco(samples[n_labelled:], root / "pool.json", CATEGORIES,
                      image_dir=root / "images", file_names=names)
    for path in (labelled, pool):    # as a labelling tool writes them: relative to images/
        data = json.loads(path.read_text())
        for im in data["images"]:
            im["file_name"] = Path(im["file_name"]).name
        if path == pool:
            (root / "pool_truth.json").write_text(json.dumps(data))
            for im in data["images"]:
                if counts:
                    im["counts"] = counts_of(data, im["id"])
            if not pool_masks:
                data["annotations"] = []
            if shared:
                first = json.loads(labelled.read_text())["images"][0]
                data["images"].append({**first, "id": 900, "file_name": names[0],
                                       **({"counts": {}} if counts else {})})
        path.write_text(json.dumps(data))
    if mixed:
        from PIL import Image

        for k, s in enumerate(samples):
            if k % 4 == 3:
                file = root / "images" / names[s.image_id]
                Image.open(file).convert("L").save(file)
    (root / "train.yaml").write_text(CONFIG)
    return {"labelled": labelled, "pool": pool, "images": root / "images",
            "config": root / "train.yaml", "truth": root / "pool_truth.json"}


def annotate(preannotations: Path, truth: Path, out: Path, renumber: bool = False) -> Path:
    """What annotators return for a selection: the true masks of the selected images
    (taken from the full pool file ``truth``), as a labelling tool exports them — with
    the ids renumbered 1.. when ``renumber`` (CVAT does)."""
    pre = json.loads(preannotations.read_text())
    full = json.loads(truth.read_text())
    ids = [im["id"] for im in pre["images"]]
    new = {i: (k + 1 if renumber else i) for k, i in enumerate(ids)}
    images = [{**im, "id": new[im["id"]]} for im in pre["images"]]
    anns = [{**a, "id": k + 1, "image_id": new[a["image_id"]]}
            for k, a in enumerate(a for a in full["annotations"] if a["image_id"] in new)]
    out.write_text(json.dumps({"images": images, "annotations": anns,
                               "categories": pre["categories"]}))
    return out
