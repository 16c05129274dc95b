import pytest

from jobs.cli import main


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "basis sweep configs/demo.yaml" in out


def test_budget_prints_table1_and_paper_cells(capsys):
    assert main(["budget", "--N", "400", "800", "--additional", "9118"]) == 0
    out = capsys.readouterr().out
    assert "IL+C 22.22" in out and "Full 239.70" in out and "BB 38.10" in out
    # Table 6, mask-guided: annotation 1.38 / 2.39 days, segmentation 3.73 at N=400
    assert "N=400   closest: annotation network 1.38 days" in out
    assert "segmentation network 3.73 days" in out
    assert "N=800   closest: annotation network 2.39 days" in out


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    assert main(["tables", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("basis: error:") and len(err.strip().splitlines()) == 1
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    assert "not a sweep folder" in capsys.readouterr().err
    assert main(["sweep", "configs/demo.yaml", "--profile", "nope"]) == 2
    assert "profile 'nope' not found" in capsys.readouterr().err


def test_status_of_a_sweep_folder_without_results(tmp_path, capsys):
    import shutil

    shutil.copy("configs/demo.yaml", tmp_path / "config.yaml")
    assert main(["status", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "6 trials: 6 pending" in out


def test_status_calls_a_trial_running_while_its_event_log_is_open(tmp_path, capsys):
    import json
    import shutil

    shutil.copy("configs/demo.yaml", tmp_path / "config.yaml")
    log = tmp_path / "tracking" / "random-bnone-N40-s0.jsonl"
    log.parent.mkdir()
    log.write_text(json.dumps({"op": "open"}) + "\n")
    assert main(["status", str(tmp_path)]) == 0
    assert "6 trials: 5 pending, 1 running" in capsys.readouterr().out
    with open(log, "a") as fh:
        fh.write(json.dumps({"op": "end", "status": "KILLED"}) + "\n")
    assert main(["status", str(tmp_path)]) == 0
    assert "6 trials: 6 pending" in capsys.readouterr().out


def test_a_sweep_folder_of_an_older_layout_is_refused_in_one_line(tmp_path, capsys):
    import json
    import shutil

    from analysis.schema import LAYOUT_VERSION

    shutil.copy("configs/demo.yaml", tmp_path / "config.yaml")
    (tmp_path / "sweep.json").write_text(json.dumps({"name": "demo", "fingerprint": "x"}))
    assert main(["sweep", "--resume", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert f"folder layout 1, this one writes {LAYOUT_VERSION}" in err and "new --sweep-dir" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "sweep.json"]
    # the same refusal when a config is run into it
    assert main(["sweep", "configs/demo.yaml", "--sweep-dir", str(tmp_path)]) == 2
    assert "older basis" in capsys.readouterr().err
