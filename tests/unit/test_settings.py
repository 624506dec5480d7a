import pytest

from ranker_svc.settings import RankerSettings
from recsys.rpc.config import load_settings


def test_precedence_defaults_file_env_flags(tmp_path, monkeypatch):
    cfg = tmp_path / "recsys.yaml"
    cfg.write_text("port: 6000\nranker_svc:\n  diversity_lambda: 0.5\n  n_candidates: 200\n"
                   "feature_svc:\n  storage: redis://x\n")
    monkeypatch.setenv("RECSYS_N_CANDIDATES", "250")
    s = load_settings(RankerSettings, ["--config", str(cfg), "--port", "7000", "--bundle", "a", "--bundle", "b"],
                      "ranker_svc")
    assert s.port == 7000                  # flag beats file
    assert s.diversity_lambda == 0.5       # service section of the file
    assert s.n_candidates == 250           # env beats file
    assert s.bundle == ["a", "b"]
    assert s.metrics_port == 9101          # default


def test_env_list_and_bool(monkeypatch):
    from feature_svc.settings import FeatureSettings

    monkeypatch.setenv("RECSYS_BUNDLE", "x,y")
    assert load_settings(RankerSettings, [], "ranker_svc").bundle == ["x", "y"]
    monkeypatch.setenv("RECSYS_LOAD_BUNDLE", "false")
    assert load_settings(FeatureSettings, [], "feature_svc").load_bundle is False
    assert load_settings(FeatureSettings, ["--load-bundle"], "feature_svc").load_bundle is True


def test_bad_values_name_the_setting(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RECSYS_PORT", "not-a-port")
    with pytest.raises(SystemExit):
        load_settings(RankerSettings, [], "ranker_svc")
    assert "port" in capsys.readouterr().err
    monkeypatch.delenv("RECSYS_PORT")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("no_such_setting: 1\n")
    with pytest.raises(SystemExit):
        load_settings(RankerSettings, ["--config", str(cfg)], "ranker_svc")
    assert "no_such_setting" in capsys.readouterr().err


def test_ranges_and_unknown_sections(tmp_path, capsys):
    with pytest.raises(SystemExit):
        load_settings(RankerSettings, ["--max-k", "0"], "ranker_svc")
    assert "max_k must be between" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        load_settings(RankerSettings, ["--diversity-lambda", "7"], "ranker_svc")
    assert "diversity_lambda" in capsys.readouterr().err
    cfg = tmp_path / "c.yaml"
    cfg.write_text("rankr_svc:\n  max_k: 5\n")
    with pytest.raises(SystemExit):
        load_settings(RankerSettings, ["--config", str(cfg)], "ranker_svc")
    assert "rankr_svc" in capsys.readouterr().err
