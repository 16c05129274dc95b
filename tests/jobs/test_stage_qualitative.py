"""AnnotateStage's qualitative picture: written from the kept test predictions, and
never a reason for the stage to fail."""
from __future__ import annotations

import logging

import torch

from basis.data import SyntheticConfig, SyntheticShapes
from basis.infer import predict
from basis.models import RSIS, ModelConfig
from jobs.stages import AnnotateStage


def test_writes_png(tmp_path):
    data = SyntheticShapes(SyntheticConfig(image_size=32), seed=1, ids=range(2))
    torch.manual_seed(0)
    preds = predict(RSIS(ModelConfig(hidden=16)), data)
    AnnotateStage(None, tmp_path).save_qualitative(data, preds)
    assert (tmp_path / "qualitative.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_drawing_error_is_only_logged(tmp_path, caplog):
    with caplog.at_level(logging.WARNING, logger="jobs.stages"):
        AnnotateStage(None, tmp_path).save_qualitative([], [])  # empty → ValueError inside
    assert "qualitative picture" in caplog.text
    assert not (tmp_path / "qualitative.png").exists()
