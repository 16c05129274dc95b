"""Which images a sweep uses: the data section of a config → `basis` datasets.

Three kinds: ``synthetic`` (the embedded default), ``voc_sbd`` (the paper's VOC 2012
train / SBD additional / VOC 2012 val splits) and ``coco`` (a user's COCO-format JSON
files). Real images are resized to ``data.image_size`` (RSIS: 256).
"""
from __future__ import annotations

from typing import Any, Mapping

from jobs.config import ConfigError, build

KINDS = ("synthetic", "voc_sbd", "coco")


def splits(data: Mapping[str, Any]) -> dict[str, Any]:
    """``{"pool", "test", "additional"}`` datasets of a data spec (``additional`` may be
    None). Opening a real dataset reads its file lists only, not the images."""
    kind = data["kind"]
    if kind == "synthetic":
        from basis.data.splits import synthetic_additional, synthetic_splits

        cfg = build("data", data.get("synthetic") or {})
        pool, test = synthetic_splits(cfg, data["data_seed"], data["n_pool"], data["n_test"])
        extra = (synthetic_additional(cfg, data["data_seed"], data["n_additional"])
                 if data.get("n_additional") else None)
        return {"pool": pool, "test": test, "additional": extra}
    from basis.data.transforms import eval_transform

    resize = eval_transform(int(data["image_size"]))
    if kind == "voc_sbd":
        from basis.data.splits import paper_splits

        got = paper_splits(data["voc_root"], data["sbd_root"])
        out = {"pool": got["strong"], "test": got["test"], "additional": got["additional"]}
    elif kind == "coco":
        from basis.data.coco import COCOInstances

        out = {"pool": COCOInstances(data["coco_train"], data.get("image_root")),
               "test": COCOInstances(data["coco_test"], data.get("image_root")),
               "additional": (COCOInstances(data["coco_additional"], data.get("image_root"))
                              if data.get("coco_additional") else None)}
    else:
        raise ConfigError(f"data.kind={kind!r}; allowed: {', '.join(KINDS)}")
    for ds in out.values():
        if ds is not None:
            ds.transform = resize
    return out


def n_classes(data: Mapping[str, Any]) -> int:
    """Classes the model predicts: the synthetic config's, VOC's 20, or the COCO file's."""
    if data["kind"] == "synthetic":
        return int(build("data", data.get("synthetic") or {}).n_classes)
    if data["kind"] == "voc_sbd":
        return 20
    from basis.data.coco import COCOInstances

    return len(COCOInstances(data["coco_train"], data.get("image_root")).category_ids)


def check_images(data: Mapping[str, Any]) -> None:
    """Read every image and annotation of a real dataset (`basis data check`) and refuse
    the sweep on the first problems, each naming its file. Turn off with
    ``data.check_images: false`` once a dataset is known good."""
    from basis.data.check import check

    if data["kind"] == "voc_sbd":
        targets = [(data["voc_root"], "voc", None), (data["sbd_root"], "sbd", None)]
    else:
        targets = [(data[k], "coco", data.get("image_root"))
                   for k in ("coco_train", "coco_test", "coco_additional") if data.get(k)]
    for path, fmt, images in targets:
        report = check(path, fmt, images, max_errors=5)
        if report["n_errors"]:
            shown = "; ".join(report["errors"])
            raise ConfigError(f"data ({data['kind']}): {report['n_errors']} bad image(s) in "
                              f"{path}: {shown} (run `basis data check {path}`)")


def resolve_sizes(data: Mapping[str, Any]) -> dict[str, int]:
    """The split sizes of a real dataset as found on disk (never assumed).

    Raises:
        ConfigError: a path is missing or a split cannot be opened (the reader's
            message names the file).
    """
    from basis.data.base import DataError

    try:
        got = splits(data)
        if data.get("check_images", True):
            check_images(data)
    except (DataError, FileNotFoundError, OSError) as err:
        raise ConfigError(f"data ({data['kind']}): {err}") from err
    return {"n_pool": len(got["pool"]), "n_test": len(got["test"]),
            "n_additional": len(got["additional"]) if got["additional"] is not None else 0}
