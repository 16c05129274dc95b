import pytest

from jobs.config import ConfigError, SweepConfig, TrialConfig

DEMO = "configs/demo.yaml"


def test_demo_config_loads_and_flattens():
    cfg = SweepConfig.load(DEMO)
    assert cfg.n_trials() == len(cfg.arms()) * len(cfg.study.N) * len(cfg.study.seed)
    assert cfg.arms()[0] == {"mode": "random", "beta": None}
    flat = cfg.flat()
    assert flat["model.n_classes"] == 6  # taken from the data
    assert {"train.epochs", "loss.iou_target", "data.n_pool"} <= set(flat)
    assert cfg.fingerprint() == SweepConfig.load(DEMO).fingerprint()


def _with(**study):
    raw = {"name": "t", "data": {"n_pool": 100, "n_test": 10}, "study": study}
    return SweepConfig.from_dict(raw)


@pytest.mark.parametrize("study,field", [
    ({"beta": [0.3, 1.5]}, "study.beta"),
    ({"N": [40, 500]}, "study.N"),
    ({"modes": ["oracel"]}, "study.modes"),
    ({"n_init": 0}, "study.n_init"),
    ({"seeds": [0]}, "seeds"),
])
def test_bad_study_names_the_field(study, field):
    with pytest.raises(ConfigError, match=field):
        _with(**study)


@pytest.mark.parametrize("raw,field", [
    ({"name": "t", "model": {"hiddn": 32}}, "hiddn"),
    ({"name": "t", "train": {"iou_schedule": "later"}}, "iou_schedule"),
    ({"name": "t", "model": {"n_classes": 3}}, "model.n_classes"),
    ({"name": "t", "datta": {}}, "datta"),
])
def test_bad_sections_name_the_field(raw, field):
    with pytest.raises(ConfigError, match=field):
        SweepConfig.from_dict(raw)


def test_trial_key_and_flat_dict():
    t = TrialConfig(N=40, beta=0.3, seed=1, mode="predicted", n_init=20)
    assert t.key == "predicted-b0.30-N40-s1"
    assert t.to_flat_dict() == {"N": 40, "beta": 0.3, "seed": 1, "mode": "predicted",
                                "n_init": 20, "pool_fraction": None}
    assert TrialConfig(40, 0.3, 1, "predicted", 20, 0.5).key == "predicted-b0.30-N40-s1-f0.50"
    assert TrialConfig(40, None, 0, "random", 20).key == "random-bnone-N40-s0"


def test_segment_axis_and_its_checks():
    raw = {"name": "t", "data": {"n_pool": 100, "n_additional": 50},
           "study": {"segment": True, "pool_fractions": [1.0, 0.5]}}
    cfg = SweepConfig.from_dict(raw)
    assert cfg.n_trials() == 2 * len(cfg.arms()) * len(cfg.study.N)
    assert {t.pool_fraction for t in cfg.trials()} == {1.0, 0.5}
    with pytest.raises(ConfigError, match="n_additional"):
        SweepConfig.from_dict({**raw, "data": {"n_pool": 100}})
    with pytest.raises(ConfigError, match="pool_fractions"):
        SweepConfig.from_dict({**raw, "study": {"segment": True, "pool_fractions": [0]}})
