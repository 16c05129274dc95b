import pytest

from jobs.config import Arm, ConfigError, SweepConfig, TrialConfig

DEMO = "configs/demo.yaml"


def test_demo_config_loads_and_flattens():
    cfg = SweepConfig.load(DEMO)
    assert cfg.n_trials() == len(cfg.arms()) * len(cfg.study.N) * len(cfg.study.seed)
    assert cfg.arms()[0] == Arm(mode="random", beta=None, pool_fraction=None, variant=None)
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
                                "n_init": 20, "pool_fraction": None, "variant": None}
    assert TrialConfig(40, 0.3, 1, "predicted", 20, 0.5).key == "predicted-b0.30-N40-s1-f0.50"
    assert TrialConfig(40, None, 0, "random", 20).key == "random-bnone-N40-s0"


def test_segment_axis_and_its_checks():
    raw = {"name": "t", "data": {"n_pool": 100, "n_additional": 50},
           "study": {"segment": True, "pool_fractions": [1.0, 0.5]}}
    cfg = SweepConfig.from_dict(raw)
    assert cfg.n_trials() == len(cfg.arms()) * len(cfg.study.N) == 2 * 3 * 2
    assert {t.pool_fraction for t in cfg.trials()} == {1.0, 0.5}
    with pytest.raises(ConfigError, match="n_additional"):
        SweepConfig.from_dict({**raw, "data": {"n_pool": 100}})
    with pytest.raises(ConfigError, match="pool_fractions"):
        SweepConfig.from_dict({**raw, "study": {"segment": True, "pool_fractions": [0]}})


def test_segment_modes_and_betas_limit_the_segmenting_arms():
    raw = {"name": "t", "data": {"n_pool": 100, "n_additional": 50},
           "study": {"segment": True, "modes": ["predicted", "oracle"], "beta": [0.3, 0.6],
                     "segment_modes": ["random", "predicted"], "segment_betas": [0.6]}}
    cfg = SweepConfig.from_dict(raw)
    seg = {(t.mode, t.beta) for t in cfg.trials() if t.pool_fraction is not None}
    assert seg == {("random", None), ("predicted", 0.6)}
    plain = {(t.mode, t.beta) for t in cfg.trials() if t.pool_fraction is None}
    assert plain == {("predicted", 0.3), ("oracle", 0.3), ("oracle", 0.6)}
    with pytest.raises(ConfigError, match="segment_betas"):
        SweepConfig.from_dict({**raw, "study": {**raw["study"], "segment_betas": [0.5]}})
    with pytest.raises(ConfigError, match="segment_modes"):
        SweepConfig.from_dict({**raw, "study": {**raw["study"], "segment_modes": ["best"]}})
    with pytest.raises(ConfigError, match="leave no arm"):
        SweepConfig.from_dict({**raw, "study": {**raw["study"], "random_baseline": False,
                                                "segment_modes": ["random"]}})


def test_table2_schedules_add_random_trials_with_their_own_settings():
    raw = {"name": "t", "train": {"iou_schedule": "freeze"}, "loss": {"iou_target": "sqrt"},
           "study": {"N": [40], "seed": [0, 1],
                     "schedules": [{"iou_schedule": "joint", "iou_target": "identity"},
                                   {"iou_target": "identity"}]}}
    cfg = SweepConfig.from_dict(raw)
    variants = [t for t in cfg.trials() if t.variant]
    assert sorted({t.variant for t in variants}) == ["freeze+identity", "joint+identity"]
    assert {(t.mode, t.beta, t.pool_fraction) for t in variants} == {("random", None, None)}
    assert len(variants) == 2 * 2
    assert "random-bnone-N40-s0-joint+identity" in {t.key for t in variants}
    assert cfg.schedule() == {"iou_schedule": "freeze", "iou_target": "sqrt"}
    joint = cfg.with_schedule({"iou_schedule": "joint", "iou_target": "identity"})
    assert joint.flat()["train.iou_schedule"] == "joint"
    assert joint.flat()["loss.iou_target"] == "identity"
    assert cfg.flat()["train.iou_schedule"] == "freeze"          # the sweep's own is untouched
    for bad, match in [([{"iou_schedule": "later"}], "iou_schedule"),
                       ([{"lr": 1}], "unknown key"),
                       ([{"iou_target": "sqrt"}], "repeats"),
                       (["joint"], "mapping")]:
        with pytest.raises(ConfigError, match=match):
            SweepConfig.from_dict({**raw, "study": {**raw["study"], "schedules": bad}})


def test_strategies_add_one_mode_per_baseline_band_per_beta():
    cfg = _with(N=[40], beta=[0.3, 0.6], random_baseline=False,
                strategies=["lowest", "band", "entropy", "coreset"])
    arms = [(a.mode, a.beta) for a in cfg.arms()]
    assert arms == [("predicted", 0.3), ("predicted", 0.6), ("lowest", None),
                    ("band", 0.3), ("band", 0.6), ("entropy", None), ("coreset", None)]
    keys = [t.key for t in cfg.trials()]
    assert "entropy-bnone-N40-s0" in keys and "band-b0.60-N40-s0" in keys
    assert _with(modes=[], random_baseline=False, strategies=["coreset"]).n_trials() == 2


@pytest.mark.parametrize("study,message", [
    ({"strategies": ["uncertainty"]}, "study.strategies has ['uncertainty']; allowed: band, "
     "lowest, highest, stratified, entropy, least_confidence, mask_entropy, coreset"),
    ({"strategies": ["random"]}, "study.strategies has ['random']"),
    ({"strategies": ["lowest", "lowest"]}, "study.strategies repeats"),
    ({"strategies": ["band"], "beta": []}, "band selects around β"),
])
def test_bad_strategies_are_one_config_error(study, message):
    with pytest.raises(ConfigError) as err:
        _with(**study)
    assert message in str(err.value) and "\n" not in str(err.value)
