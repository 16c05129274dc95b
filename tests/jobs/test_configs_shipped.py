"""Every shipped sweep config validates (real-data ones with their paths pointed at a
fixture), so a typo in configs/ fails here, not on a cluster."""
from pathlib import Path

import pytest
import yaml

from jobs.config import SweepConfig

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(ROOT)))
def test_config_validates(path, tmp_path):
    raw = yaml.safe_load(path.read_text())
    data = raw.get("data", {})
    for key in ("voc_root", "sbd_root", "coco_train", "coco_test"):
        if data.get(key):
            data[key] = str(tmp_path)        # the paths are site-specific
    cfg = SweepConfig.from_dict(raw)
    assert cfg.n_trials() >= 1


def test_paper_grids_match_the_paper():
    raw = yaml.safe_load((ROOT / "configs/paper/table3_oracle.yaml").read_text())
    s = raw["study"]
    assert s["N"] == [200, 400, 800] and s["n_init"] == 100 and len(s["seed"]) == 5
    assert s["beta"] == [round(0.1 * i, 1) for i in range(11)]


def test_paper_configs_warn_without_weights_and_refuse_a_missing_file(tmp_path):
    from jobs.config import ConfigError

    raw = yaml.safe_load((ROOT / "configs/paper/table4_predicted.yaml").read_text())
    raw["data"].update(voc_root=str(tmp_path), sbd_root=str(tmp_path))
    warnings = SweepConfig.from_dict(raw).warnings()
    assert len(warnings) == 1 and "random weights" in warnings[0]
    weights = tmp_path / "resnet101-63fe2227.pth"
    weights.write_bytes(b"")
    raw["model"]["encoder_weights"] = str(weights)
    assert "1e-6" in SweepConfig.from_dict(raw).warnings()[0]     # lr_encoder still 1e-3
    raw["train"]["lr_encoder"] = 1e-6
    assert SweepConfig.from_dict(raw).warnings() == []
    raw["model"]["encoder_weights"] = str(tmp_path / "missing.pth")
    with pytest.raises(ConfigError, match="missing.pth does not exist"):
        SweepConfig.from_dict(raw)
    raw["model"]["encoder_weights"] = "pretrain"       # synthetic pretraining: synthetic only
    with pytest.raises(ConfigError, match="needs data.kind synthetic"):
        SweepConfig.from_dict(raw)
