"""Tests for the ``skrecon`` command line (skrecon.cli, python -m skrecon)."""

import subprocess
import sys

import numpy as np
import pytest

import skrecon.reconstructor
from skrecon.cli import main
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import relative_error

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
FAST = ["--batch-size", "2", "--width", "5000"]


def _table_rows(out):
    """The demo's per-sample rows, split into columns."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if "rel. error" in line)
    rows = []
    for line in lines[start + 1:]:
        if not line.strip():
            break
        rows.append(line.split())
    return rows


class _InexactReconstructor:
    """Stands in for GradientReconstructor: a wrong, fast answer."""

    def __init__(self, **params):
        self.params = params

    def fit(self, X, y=None, *, weights=None, output_weights=None):
        self.samples_ = np.random.default_rng(0).uniform(size=(2, 64))
        self.gradient_residual_ = 0.5
        self.batch_size_ = 2
        return self


# ------------------------------------------------------------------- demo


def test_demo_without_figure(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["demo", *FAST, "--no-figure"]) == 0
    out = capsys.readouterr().out
    rows = _table_rows(out)
    assert len(rows) == 2
    assert sorted(int(r[0]) for r in rows) == [0, 1]
    for sample, label, match, cosine, error, psnr in rows:
        assert float(error) <= 1e-6
        assert float(cosine) == pytest.approx(1.0)
        assert float(psnr) > 100
    assert "batch size found     : 2 (true 2)" in out
    assert "gradient residual" in out and "reconstruction time" in out
    assert "shape 5000 x 65" in out
    assert "figure:" not in out
    assert list(tmp_path.iterdir()) == []


def test_demo_writes_png(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    path = tmp_path / "demo.png"
    assert main(["demo", *FAST, "--output", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"figure: {path}" in out
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_demo_inexact_reconstruction_exits_1(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(skrecon.reconstructor, "GradientReconstructor",
                        _InexactReconstructor)
    assert main(["demo", *FAST, "--no-figure"]) == 1
    out = capsys.readouterr().out
    assert "FAILED" in out and "exceeds 1e-06" in out


def test_demo_without_matplotlib_skips_figure(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(skrecon.reconstructor, "GradientReconstructor",
                        _InexactReconstructor)
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    path = tmp_path / "demo.png"
    main(["demo", *FAST, "--output", str(path)])
    out = capsys.readouterr().out
    assert "matplotlib is not installed" in out
    assert not path.exists()


# ---------------------------------------------------- make-query / reconstruct


def test_make_query_then_reconstruct(capsys, tmp_path):
    query = tmp_path / "query.npz"
    result = tmp_path / "result.npz"
    assert main(["make-query", "--batch-size", "2", "--width", "5000",
                 "--seed", "0", "--output", str(query)]) == 0
    with np.load(query, allow_pickle=False) as data:
        assert {"grad", "weights", "output_weights", "samples"} <= set(data.files)
        samples = data["samples"]
        assert data["grad"].shape == data["weights"].shape == (5000, 65)
    assert main(["reconstruct", str(query), "--output", str(result)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 2 and out[-1].startswith("reconstructed 2 samples")
    with np.load(result, allow_pickle=False) as data:
        assert {"samples", "sample_coefficients", "found", "gradient_residual",
                "sign_identified", "scale_identified"} <= set(data.files)
        assert data["found"].dtype == bool and data["found"].tolist() == [True, True]
        errors, permutation = relative_error(samples, data["samples"])
        assert sorted(permutation) == [0, 1]
        assert np.all(errors <= 1e-6)
        assert float(data["gradient_residual"]) < 1e-6
        assert data["sign_identified"].all() and data["scale_identified"].all()


def test_reconstruct_missing_key_exits_2(capsys, tmp_path):
    path = tmp_path / "q.npz"
    np.savez(path, grad=np.ones((10, 4)))
    assert main(["reconstruct", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'weights'" in err
    assert "Traceback" not in err


def test_reconstruct_refuses_pickled_arrays(capsys, tmp_path):
    path = tmp_path / "q.npz"
    np.savez(path, grad=np.array([{"a": 1}, None], dtype=object),
             weights=np.ones((2, 4)))
    assert main(["reconstruct", str(path)]) == 2
    err = capsys.readouterr().err
    assert "'grad'" in err and "pickle" in err.lower()
    assert "Traceback" not in err
    assert not (tmp_path / "q_reconstruction.npz").exists()


@pytest.mark.parametrize("content", [b"not an archive", b""])
def test_reconstruct_unreadable_file_exits_2(capsys, tmp_path, content):
    path = tmp_path / "q.npz"
    path.write_bytes(content)
    assert main(["reconstruct", str(path)]) == 2
    # (numpy's own message took any such file for pickled data)
    assert (f"skrecon: error: {str(path)!r} is not an .npz archive (a zip of arrays, "
            "as numpy.savez writes)") in capsys.readouterr().err


def test_reconstruct_rejected_query_exits_2(capsys, tmp_path):
    path = tmp_path / "q.npz"
    np.savez(path, grad=np.ones((10, 4)), weights=np.ones((10, 3)))
    assert main(["reconstruct", str(path)]) == 2
    err = capsys.readouterr().err
    assert "shape" in err and "Traceback" not in err


def test_a_forgotten_bias_names_the_flag(capsys, tmp_path):
    """A file without its 'bias' entry whose last column is the bias: the
    error names --bias, not only the Python parameter (new-user report)."""
    batch, _ = load_digits_batch(2, random_state=0)
    q = make_gradient_query(batch, n_neurons=500, random_state=0)
    path = tmp_path / "q.npz"
    np.savez(path, grad=q.grad, weights=q.weights)
    assert main(["reconstruct", str(path)]) == 2
    err = capsys.readouterr().err
    assert "Did you mean bias=True?" in err
    assert err.rstrip().endswith("(On the command line: reconstruct --bias.)")


@pytest.mark.parametrize(
    "argv",
    [
        ["reconstruct", "does-not-exist.npz"],
        ["reconstruct", "q.npz", "--batch-size", "zero"],
        ["demo", "--width", "0"],
        ["demo", "--activation", "nope"],
        ["frobnicate"],
        [],
    ],
)
def test_usage_errors_exit_2(argv, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert capsys.readouterr().err


def test_help_exits_0(capsys):
    assert main(["--help"]) == 0
    assert "reconstruct" in capsys.readouterr().out


def test_python_dash_m_help():
    proc = subprocess.run(
        [sys.executable, "-m", "skrecon", "--help"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: skrecon")
    for command in ("demo", "make-query", "reconstruct"):
        assert command in proc.stdout


# ------------------------------------------- defaults, figure, progress bar


@pytest.mark.parametrize("command", ["demo", "reconstruct"])
def test_help_states_the_estimators_n_init(command, capsys):
    from skrecon import GradientReconstructor

    n_init = GradientReconstructor().get_params()["n_init"]
    assert main([command, "--help"]) == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert (f"--n-init N_INIT starts per search round of the reconstructor "
            f"(default: {n_init})") in help_text


@pytest.fixture
def small_query(tmp_path):
    path = tmp_path / "query.npz"
    assert main(["make-query", "--batch-size", "2", "--width", "3000",
                 "--output", str(path)]) == 0
    return path


def _capture_figures(monkeypatch):
    """Record every figure the CLI draws."""
    import skrecon.plotting

    drawn, original = [], skrecon.plotting.plot_reconstruction

    def recording(*args, **kwargs):
        drawn.append(original(*args, **kwargs))
        return drawn[-1]

    monkeypatch.setattr(skrecon.plotting, "plot_reconstruction", recording)
    return drawn


def test_reconstruct_plot_draws_the_demo_figure(small_query, capsys, monkeypatch):
    from skrecon.plotting import CAPTION

    drawn = _capture_figures(monkeypatch)
    png = small_query.parent / "out.png"
    assert main(["reconstruct", str(small_query), "--plot", str(png)]) == 0
    assert f"figure: {png}" in capsys.readouterr().out
    assert png.read_bytes()[:8] == PNG_MAGIC
    fig, = drawn
    assert fig.get_suptitle() == "3000 tanh neurons, with bias, batch of 2"
    assert len(fig.axes) == 2 * 2 + 1  # true, reconstructed, one colour bar
    assert fig.axes[-1].get_ylabel() == "pixel value"
    assert fig._supxlabel.get_text() == CAPTION
    assert CAPTION.startswith("rec. j: row j of the reconstruction")


def test_reconstruct_plot_without_truth_draws_the_reconstructions(
        small_query, capsys, monkeypatch):
    with np.load(small_query) as data:
        arrays = {k: data[k] for k in data.files if k != "samples"}
    np.savez(small_query, **arrays)
    drawn = _capture_figures(monkeypatch)
    png = small_query.parent / "out.png"
    assert main(["reconstruct", str(small_query), "--plot", str(png)]) == 0
    assert ("(no 'samples' in the query: reconstructions only)"
            in capsys.readouterr().out)
    fig, = drawn
    assert [ax.get_title() for ax in fig.axes[:2]] == ["rec. 0", "rec. 1"]


def test_reconstruct_plot_needs_an_image_shape(tmp_path, capsys):
    from skrecon.clients import make_gradient_query

    batch = np.random.default_rng(0).uniform(size=(2, 10))
    q = make_gradient_query(batch, n_neurons=500, random_state=0)
    path = tmp_path / "q.npz"
    np.savez(path, grad=q.grad, weights=q.weights, output_weights=q.output_weights,
             bias=np.array(True))
    assert main(["reconstruct", str(path), "--plot", str(tmp_path / "f.png")]) == 2
    assert ("--plot needs the image shape of the 10 features (not a square or a "
            "square RGB image): pass --image-shape H W [C]") in capsys.readouterr().err
    assert main(["reconstruct", str(path), "--plot", str(tmp_path / "f.png"),
                 "--image-shape", "2", "5"]) == 0


def test_progress_bar_follows_stages_and_samples(small_query, capsys, monkeypatch):
    import skrecon.cli

    monkeypatch.setattr(skrecon.cli, "PROGRESS_DELAY", 0.0)  # show it at once
    monkeypatch.setattr(skrecon.cli, "PROGRESS_DISABLE", False)  # on a captured stderr
    assert main(["reconstruct", str(small_query)]) == 0
    err = capsys.readouterr().err
    assert "search (samples found): 2/2" in err
    assert main(["reconstruct", str(small_query), "--no-progress"]) == 0
    assert "samples found" not in capsys.readouterr().err


def test_reconstruct_refuses_to_overwrite_its_query(small_query, capsys):
    # --output equal to the input replaced the query's grad and weights
    before = set(np.load(small_query))
    assert main(["reconstruct", str(small_query), "--output", str(small_query),
                 "--no-progress"]) == 2
    assert "is the query file itself" in capsys.readouterr().err
    assert set(np.load(small_query)) == before


@pytest.mark.parametrize("command", ["reconstruct", "demo"])
def test_an_unknown_figure_format_is_a_usage_error(command, small_query, tmp_path, capsys):
    # matplotlib's ValueError escaped as a traceback with exit status 1 (the
    # demo's "not exact" status), after the fit
    argv = (["reconstruct", str(small_query), "--plot", str(tmp_path / "f.txt")]
            if command == "reconstruct" else
            ["demo", *FAST, "--output", str(tmp_path / "f.txt")])
    assert main(argv + ["--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "matplotlib cannot write .txt; use one of" in err and ".png" in err
    assert "Traceback" not in err


def test_reconstruct_complex_and_misshapen_entries(small_query, tmp_path, capsys):
    data = dict(np.load(small_query))
    bad = tmp_path / "complex.npz"
    np.savez(bad, **dict(data, grad=data["grad"].astype(complex)))
    assert main(["reconstruct", str(bad), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "key 'grad' of" in err and "is complex (complex128)" in err
    assert len(err.splitlines()) == 1  # (not the whole array)
    odd = tmp_path / "odd.npz"
    np.savez(odd, **dict(data, samples=np.ones((3, 10))))
    assert main(["reconstruct", str(odd), "--no-progress"]) == 0
    assert "not compared with 'samples' (shape (3, 10), not (n, 64))" in \
        capsys.readouterr().out
