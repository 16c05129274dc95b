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
