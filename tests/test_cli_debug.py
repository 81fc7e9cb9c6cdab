"""``GPUDL_DEBUG=1``: the command line shows the full traceback instead of its one-line message."""
from gpudl import cli


def run(tmp_path, capsys):
    code = cli.main(["train", "mlp", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "out"),
                     "--no-progress"])
    return code, capsys.readouterr().err


def test_errors_are_one_line_by_default(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("GPUDL_DEBUG", raising=False)
    code, err = run(tmp_path, capsys)
    assert code == 1
    assert err.startswith("gpudl: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_gpudl_debug_shows_the_full_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("GPUDL_DEBUG", "1")
    code, err = run(tmp_path, capsys)
    assert code == 1
    assert err.startswith("Traceback (most recent call last):")
    assert "dataset-fashion-mnist" in err.splitlines()[-1]  # the same reason, as the last line
    assert 'File "' in err and "gpudl" in err
