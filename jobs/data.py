"""Which images a sweep uses: the data section of a config → `basis` datasets.

Three kinds: ``synthetic`` (the embedded default), ``voc_sbd`` (the paper's VOC 2012
train / SBD additional / VOC 2012 val splits) and ``coco`` (a user's COCO-format JSON
files). Real images are resized to ``data.image_size`` (RSIS: 256).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from jobs.config import DATA_KINDS, ConfigError, DataConfig, SweepConfig


def splits(data: DataConfig) -> dict[str, Any]:
    """``{"pool", "test", "additional"}`` datasets of a data config (``additional`` may
    be None). Opening a real dataset reads its file lists only, not the images."""
    if data.kind == "synthetic":
        from basis.data.splits import synthetic_additional, synthetic_splits

        pool, test = synthetic_splits(data.synthetic, data.data_seed, data.n_pool, data.n_test)
        extra = (synthetic_additional(data.synthetic, data.data_seed, data.n_additional)
                 if data.n_additional else None)
        return {"pool": pool, "test": test, "additional": extra}
    from basis.data.transforms import eval_transform

    resize = eval_transform(int(data.image_size))
    if data.kind == "voc_sbd":
        from basis.data.splits import paper_splits

        got = paper_splits(data.voc_root, data.sbd_root)
        out = {"pool": got["strong"], "test": got["test"], "additional": got["additional"]}
    elif data.kind == "coco":
        from basis.data.coco import COCOInstances

        out = {"pool": COCOInstances(data.coco_train, data.image_root),
               "test": COCOInstances(data.coco_test, data.image_root),
               "additional": (COCOInstances(data.coco_additional, data.image_root)
                              if data.coco_additional else None)}
    else:
        raise ConfigError(f"data.kind={data.kind!r}; allowed: {', '.join(DATA_KINDS)}")
    for ds in out.values():
        if ds is not None:
            ds.transform = resize
    return out


def resolved(cfg: SweepConfig) -> SweepConfig:
    """The config with a real dataset's split sizes read from disk, re-validated (so N
    larger than the pool is caught before anything is submitted); synthetic: itself."""
    if cfg.data.kind == "synthetic":
        return cfg
    sizes = resolve_sizes(cfg.data)
    out = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **sizes,
                                                            sizes_from_disk=True))
    out.validate()
    return out


def check_images(data: DataConfig) -> None:
    """Read every image and annotation of a real dataset (`basis data check`) and refuse
    the sweep on the first problems, each naming its file. Turn off with
    ``data.check_images: false`` once a dataset is known good."""
    from basis.data.check import check

    if data.kind == "voc_sbd":
        targets = [(data.voc_root, "voc", None), (data.sbd_root, "sbd", None)]
    else:
        targets = [(getattr(data, k), "coco", data.image_root)
                   for k in ("coco_train", "coco_test", "coco_additional") if getattr(data, k)]
    for path, fmt, images in targets:
        report = check(path, fmt, images, max_errors=5)
        if report["n_errors"]:
            shown = "; ".join(report["errors"])
            raise ConfigError(f"data ({data.kind}): {report['n_errors']} bad image(s) in "
                              f"{path}: {shown} (run `basis data check {path}`)")


def resolve_sizes(data: DataConfig) -> dict[str, int]:
    """The split sizes of a real dataset as found on disk (never assumed).

    Raises:
        ConfigError: a path is missing or a split cannot be opened (the reader's
            message names the file).
    """
    from basis.data.base import DataError

    try:
        got = splits(data)
        if data.check_images:
            check_images(data)
    except (DataError, FileNotFoundError, OSError) as err:
        raise ConfigError(f"data ({data.kind}): {err}") from err
    return {"n_pool": len(got["pool"]), "n_test": len(got["test"]),
            "n_additional": len(got["additional"]) if got["additional"] is not None else 0}
