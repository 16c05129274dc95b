"""Datasets and batching for the method.

Every dataset subclasses `InstanceDataset` (``ids``, ``len``, ``ds[i] -> Sample``,
``subset(ids)``, ``stats(i)``): `SyntheticShapes` (the embedded default), `VOCInstances`,
`SBDInstances` and `COCOInstances`; `paper_splits` builds the study's VOC+SBD splits.
"""
from basis.data.base import DataError, ImageStats, InstanceDataset, image_id_from_name
from basis.data.coco import COCOInstances, write_coco
from basis.data.sbd import SBDInstances
from basis.data.splits import TEST_ID_OFFSET, describe_splits, paper_splits, synthetic_splits
from basis.data.synthetic import SyntheticConfig, SyntheticShapes, collate
from basis.data.transforms import DropEmpty, SampleTransform, eval_transform, train_transform
from basis.data.voc import VOC_CLASSES, VOCInstances, write_voc

__all__ = ["DataError", "ImageStats", "InstanceDataset", "image_id_from_name",
           "SyntheticConfig", "SyntheticShapes", "collate", "synthetic_splits",
           "TEST_ID_OFFSET", "VOCInstances", "VOC_CLASSES", "write_voc", "SBDInstances",
           "COCOInstances", "write_coco", "paper_splits", "describe_splits",
           "SampleTransform", "DropEmpty", "train_transform", "eval_transform"]
