"""The ``skrecon`` command line.

Three subcommands::

    skrecon demo         reconstruct a digits batch from one simulated gradient
    skrecon make-query   write a simulated gradient query to an .npz file
    skrecon reconstruct  reconstruct the batch from a query read from an .npz file

``python -m skrecon`` is the same program. ``make-query`` and
``reconstruct`` chain::

    skrecon make-query --batch-size 8 --output query.npz
    skrecon reconstruct query.npz --output reconstruction.npz --plot figure.png

``demo`` and ``reconstruct`` show a progress bar on stderr (stages, samples
found) once a reconstruction has run for a few seconds, when stderr is a
terminal (a log gets none); ``--no-progress`` turns it off. ``--plot`` draws the demo's figure: each true sample (the
query's ``samples``, when present) above its matched reconstruction.

Files are NumPy ``.npz`` archives read with ``allow_pickle=False``: a query
holds ``grad`` ``(n_neurons, n_inputs[+1])`` and ``weights`` (same shape),
optionally ``output_weights`` ``(n_neurons, n_outputs)`` or ``(n_neurons,)``
(all ones when absent) and the ground truth ``samples``. ``make-query`` also
stores two small metadata entries, ``activation`` (a string) and ``bias`` (a
boolean: whether the last column is the bias), which ``reconstruct`` uses
when ``--activation`` / ``--bias`` are not given.

Exit status
-----------
0
    Success.
1
    ``demo`` only: the reconstruction is not exact, i.e. the worst relative
    error of a matched sample exceeds ``1e-6`` (or a sample was not
    recovered at all). The reason is printed.
2
    Invalid arguments or input: a bad option value, an unreadable file, a
    missing key, an array that would need pickle, or a query the
    reconstructor rejects (its ``ValueError`` message is printed, without a
    traceback).
"""

import argparse
import os
import sys
import time
import warnings
import zipfile

import numpy as np

from ._progress import ProgressLine

__all__ = ["main"]

#: The largest relative error ``demo`` still calls an exact reconstruction.
DEMO_TOLERANCE = 1e-6

_PROG = "skrecon"
_IMAGE_SHAPE = (8, 8)


class _UsageError(Exception):
    """An input problem: printed as ``error: ...`` and exit status 2."""


# --------------------------------------------------------------------------
# argument types
# --------------------------------------------------------------------------

def _positive_int(text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _batch_size(text):
    if text == "auto":
        return "auto"
    try:
        return _positive_int(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto' or a positive integer, got {text!r}"
        )


def _activation_names():
    from .activations import ACTIVATIONS

    return sorted(name for name in ACTIVATIONS if name != "identity")


# --------------------------------------------------------------------------
# small helpers
# --------------------------------------------------------------------------

def _err(message):
    print(f"{_PROG}: error: {message}", file=sys.stderr)


#: Seconds of work after which the progress bar appears.
PROGRESS_DELAY = 2.0
#: Whether the progress bar is off; ``None``: off when stderr is not a
#: terminal (a log file gets no bar), as tqdm decides.
PROGRESS_DISABLE = None


def _fit(estimator, grad, weights, output_weights, *, progress=True):
    """Fit, timing it and collecting warnings; return (seconds, warnings).

    With ``progress``, a progress bar on stderr follows the reconstructor's
    stages and the samples it finds (shown after a few seconds only).
    """
    runner = getattr(estimator, "_fit", None) if progress else None
    bar = (ProgressLine(delay=PROGRESS_DELAY, disable=PROGRESS_DISABLE)
           if runner is not None else None)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        start = time.perf_counter()
        try:
            if runner is None:
                estimator.fit(grad, weights=weights, output_weights=output_weights)
            else:
                estimator._validate_params()  # what fit's decorator does
                runner(grad, weights, output_weights, progress=bar)
        except ValueError as exc:
            message = str(exc)
            if "Did you mean bias=True?" in message:
                message += " (On the command line: reconstruct --bias.)"
            raise _UsageError(f"the reconstruction was rejected: {message}") from exc
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - start
    return elapsed, caught


def _report_warnings(caught):
    """One line per warning category on stderr: count and first message."""
    groups = {}
    for w in caught:
        groups.setdefault(w.category.__name__, []).append(str(w.message))
    for name, messages in groups.items():
        first = messages[0].splitlines()[0] if messages[0] else ""
        count = f" (x{len(messages)})" if len(messages) > 1 else ""
        print(f"warning: {name}{count}: {first}", file=sys.stderr)


def _fmt(value, spec):
    if np.isnan(value):
        return "n/a"
    if np.isinf(value):
        return "inf"
    return format(value, spec)


def _save_npz(path, arrays):
    """Write an uncompressed .npz to exactly ``path`` (no suffix added)."""
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise _UsageError(
            f"cannot write {path!r}: directory {directory!r} does not exist"
        )
    try:
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)
    except OSError as exc:
        raise _UsageError(f"cannot write {path!r}: {exc}") from exc


def _load_query(path):
    """Read ``grad``, ``weights``, optional entries from an .npz, no pickle."""
    if not os.path.isfile(path):
        raise _UsageError(f"input file {path!r} does not exist")
    with open(path, "rb") as handle:
        npy = handle.read(6) == b"\x93NUMPY"
    if not npy and not zipfile.is_zipfile(path):
        # (np.load takes any other file for a pickle and says so)
        raise _UsageError(
            f"{path!r} is not an .npz archive (a zip of arrays, as numpy.savez "
            "writes) with keys 'grad' and 'weights'")
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise _UsageError(f"cannot read {path!r} as an .npz file: {exc}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _UsageError(
            f"{path!r} is a single .npy array, not an .npz archive with keys "
            "'grad' and 'weights' (write one with numpy.savez)"
        )
    with archive:
        keys = set(archive.files)
        for key in ("grad", "weights"):
            if key not in keys:
                raise _UsageError(
                    f"{path!r} has no key {key!r} (it has: "
                    f"{', '.join(sorted(keys)) or 'no arrays'}); a query needs "
                    "'grad' and 'weights', optionally 'output_weights'"
                )
        out = {}
        for key in ("grad", "weights", "output_weights", "samples", "activation",
                    "bias"):
            if key not in keys:
                continue
            try:
                out[key] = archive[key]
            except ValueError as exc:
                raise _UsageError(
                    f"cannot read key {key!r} of {path!r}: {exc} (skrecon never "
                    "loads pickled or object arrays; store plain numeric arrays)"
                ) from exc
            except (OSError, EOFError, zipfile.BadZipFile) as exc:
                raise _UsageError(
                    f"cannot read key {key!r} of {path!r}: {exc}"
                ) from exc
            if out[key].dtype.kind == "c":
                raise _UsageError(
                    f"key {key!r} of {path!r} is complex ({out[key].dtype}): a "
                    "gradient query holds real numbers")
    return out


def _scalar_entry(data, key, kind, path, default):
    """A 0-d metadata entry (``kind`` "U": str, "b": bool), else ``default``."""
    if key not in data:
        return default
    value = data[key]
    if value.ndim != 0 or value.dtype.kind != kind:
        what = "a string" if kind == "U" else "a boolean"
        raise _UsageError(
            f"key {key!r} of {path!r} must be {what} scalar, got an array of "
            f"dtype {value.dtype} and shape {value.shape}"
        )
    return value.item()


# --------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------

def _digits_query(args):
    """The embedded default data: a digits batch and its simulated query."""
    from .clients import make_gradient_query
    from .datasets import load_digits_batch

    try:
        batch, labels = load_digits_batch(args.batch_size, random_state=args.seed)
        query = make_gradient_query(
            batch, n_neurons=args.width, activation=args.activation,
            bias="gaussian", random_state=args.seed,
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from exc
    return batch, labels, query


def _demo(args):
    _check_figure_path(args.output, "--output")
    """``skrecon demo``: simulate a query on digits, reconstruct, report."""
    from .metrics import reconstruction_report
    from .reconstructor import GradientReconstructor

    batch, labels, query = _digits_query(args)
    n, d = batch.shape
    print("skrecon demo: reconstruct a private batch from one gradient query")
    print(f"  batch     : {n} handwritten digits (8 x 8 pixels in [0, 1], "
          f"scikit-learn's digits), seed {args.seed}")
    print(f"  network   : {d} -> {args.width} ({args.activation}, Gaussian bias) "
          "-> 1 output, squared loss, random weights")
    print(f"  gradient  : first layer dL/dW and dL/db, shape "
          f"{query.grad.shape[0]} x {query.grad.shape[1]}")
    print(f"  attack    : GradientReconstructor(activation={args.activation!r}, "
          f"bias=True, n_init={args.n_init}, random_state={args.seed})")
    sys.stdout.flush()

    rec = GradientReconstructor(
        activation=args.activation, bias=True, n_init=args.n_init,
        random_state=args.seed,
    )
    elapsed, caught = _fit(rec, query.grad, query.weights, query.output_weights,
                           progress=not args.no_progress)
    _report_warnings(caught)

    report = reconstruction_report(
        batch, rec.samples_, data_range=1.0, image_shape=_IMAGE_SHAPE
    )
    print()
    print(f"{'sample':>6}  {'label':>5}  {'match':>5}  {'cosine':>10}  "
          f"{'rel. error':>10}  {'PSNR [dB]':>9}")
    for i in range(n):
        j = int(report.permutation[i])
        print(f"{i:>6}  {int(labels[i]):>5}  {j if j >= 0 else '-':>5}  "
              f"{_fmt(report.cosine[i], '.8f'):>10}  "
              f"{_fmt(report.relative_error[i], '.2e'):>10}  "
              f"{_fmt(report.psnr[i], '.1f'):>9}")
    print()
    errors = report.relative_error
    worst = float(np.max(errors)) if not np.any(np.isnan(errors)) else np.nan
    print(f"worst relative error : {_fmt(worst, '.3g')}")
    print(f"gradient residual    : {rec.gradient_residual_:.3g}")
    print(f"batch size found     : {rec.batch_size_} (true {n})")
    print(f"reconstruction time  : {elapsed:.2f} s")

    if not args.no_figure:
        title = _figure_title(query.grad.shape[0], args.activation, True, n)
        if _write_figure(args.output, batch, rec.samples_, _IMAGE_SHAPE, title,
                         permutation=report.permutation, labels=labels):
            print(f"figure: {args.output}")

    n_missed = int(np.sum(report.permutation < 0))
    if n_missed:
        print(f"FAILED: {n_missed} of {n} samples were not recovered "
              f"(batch size found {rec.batch_size_}, true {n}).")
        return 1
    if not worst <= DEMO_TOLERANCE:
        print(f"FAILED: the worst relative error {worst:.3g} exceeds "
              f"{DEMO_TOLERANCE:g}; the reconstruction is not exact.")
        return 1
    print(f"OK: every sample recovered to relative error <= {DEMO_TOLERANCE:g}.")
    return 0


def _figure_title(width, activation, bias, batch_size):
    """The setup, for a figure's title."""
    return (f"{width} {activation} neurons, "
            f"{'with' if bias else 'no'} bias, batch of {batch_size}")


def _check_figure_path(path, option):
    """A usage error, before any fit, when matplotlib cannot write the
    format that ``path``'s extension names (nothing to check without
    matplotlib: :func:`_write_figure` then only notes it)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return
    formats = Figure().canvas.get_supported_filetypes()
    extension = os.path.splitext(path)[1].lstrip(".").lower()
    if extension not in formats:
        raise _UsageError(
            f"{option} {path!r}: matplotlib cannot write "
            f"{'.' + extension if extension else 'a file without an extension'}; "
            f"use one of {', '.join('.' + k for k in sorted(formats))}")


def _write_figure(path, batch, samples, image_shape, title, **kwargs):
    """Draw :func:`skrecon.plotting.plot_reconstruction` to ``path``;
    ``False`` (and a note) without matplotlib."""
    from .plotting import plot_reconstruction

    try:
        fig = plot_reconstruction(batch, samples, image_shape=image_shape,
                                  title=title, colorbar=True, **kwargs)
    except ImportError:
        print('note: matplotlib is not installed, no figure written '
              '(pip install "skrecon[plot]")')
        return False
    except ValueError as exc:
        raise _UsageError(f"cannot draw the figure: {exc}") from exc
    try:
        fig.savefig(path, dpi=100)
    except (OSError, ValueError) as exc:
        raise _UsageError(f"cannot write {path!r}: {exc}") from exc
    return True


def _image_shape(args, n_features):
    """``--image-shape``, else a square (or square RGB) image, else an error."""
    if args.image_shape is not None:
        return tuple(args.image_shape)
    side = int(round(np.sqrt(n_features)))
    if side * side == n_features:
        return side, side
    side = int(round(np.sqrt(n_features / 3)))
    if 3 * side * side == n_features:
        return side, side, 3
    raise _UsageError(
        f"--plot needs the image shape of the {n_features} features (not a square "
        "or a square RGB image): pass --image-shape H W [C]")


def _make_query(args):
    """``skrecon make-query``: write a simulated query on digits to an .npz."""
    batch, _, query = _digits_query(args)
    _save_npz(args.output, {
        "grad": query.grad,
        "weights": query.weights,
        "output_weights": query.output_weights,
        "samples": query.batch,
        "activation": np.array(args.activation),
        "bias": np.array(True),
    })
    print(f"wrote {args.output}: gradient query of {batch.shape[0]} digits, "
          f"{args.width} {args.activation} neurons with Gaussian bias, grad shape "
          f"{query.grad.shape[0]} x {query.grad.shape[1]} (last column: bias)")
    return 0


def _reconstruct(args):
    """``skrecon reconstruct``: read a query, reconstruct, write an .npz."""
    from .reconstructor import GradientReconstructor

    data = _load_query(args.input)
    activation = args.activation
    if activation is None:
        activation = _scalar_entry(data, "activation", "U", args.input, "tanh")
    bias = args.bias
    if bias is None:
        bias = _scalar_entry(data, "bias", "b", args.input, False)
    output = args.output
    if output is None:
        root, _ = os.path.splitext(args.input)
        output = root + "_reconstruction.npz"
    if os.path.abspath(output) == os.path.abspath(args.input):
        raise _UsageError(
            f"--output {output!r} is the query file itself: writing the "
            "reconstruction there would replace the query's grad and weights. "
            "Name another file.")
    if args.plot is not None:
        _check_figure_path(args.plot, "--plot")

    rec = GradientReconstructor(
        activation=activation, bias=bias, batch_size=args.batch_size,
        n_init=args.n_init, random_state=args.seed,
    )
    elapsed, caught = _fit(rec, data["grad"], data["weights"],
                           data.get("output_weights"), progress=not args.no_progress)
    _report_warnings(caught)

    arrays = {
        "samples": rec.samples_,
        "sample_coefficients": rec.sample_coefficients_,
        "found": rec.found_,
        "gradient_residual": np.array(rec.gradient_residual_),
        "sign_identified": rec.sign_identified_,
        "scale_identified": rec.scale_identified_,
    }
    if rec.labels_ is not None:
        arrays["labels"] = rec.labels_
    _save_npz(output, arrays)

    check = ""
    truth = data.get("samples")
    if truth is not None and (truth.ndim != 2 or truth.shape[1] != rec.samples_.shape[1]):
        check = (f"; not compared with 'samples' (shape {truth.shape}, not "
                 f"(n, {rec.samples_.shape[1]}))")
        truth = None
    elif truth is not None:
        from .metrics import relative_error

        try:
            errors, _ = relative_error(truth, rec.samples_)
        except ValueError as exc:  # e.g. a stored sample of zero norm
            check = f"; not compared with 'samples' ({exc})"
        else:
            worst = float(np.max(errors)) if not np.any(np.isnan(errors)) else np.nan
            check = f"; worst relative error vs 'samples' {_fmt(worst, '.3g')}"
    grad_shape = data["grad"].shape
    print(f"reconstructed {rec.batch_size_} samples x {rec.samples_.shape[1]} "
          f"features from grad {' x '.join(map(str, grad_shape))} "
          f"({activation}, bias={bias}) in {elapsed:.2f} s; gradient residual "
          f"{rec.gradient_residual_:.3g}{check}; wrote {output}")
    if args.plot is not None:
        known = truth is not None and truth.shape[1:] == rec.samples_.shape[1:]
        title = _figure_title(grad_shape[0], activation, bias, rec.batch_size_)
        if _write_figure(args.plot, truth if known else None, rec.samples_,
                         _image_shape(args, rec.samples_.shape[1]), title):
            print(f"figure: {args.plot}" + ("" if known else
                  " (no 'samples' in the query: reconstructions only)"))
    return 0


# --------------------------------------------------------------------------
# parser and entry point
# --------------------------------------------------------------------------

def _reconstructor_defaults():
    """The reconstructor's parameter defaults: the help states them, never
    a copy that could drift."""
    from .reconstructor import GradientReconstructor

    estimator = GradientReconstructor()
    return estimator.get_params() if hasattr(estimator, "get_params") else {}


def _build_parser():
    names = _activation_names()
    defaults = _reconstructor_defaults()
    n_init = defaults.get("n_init")
    n_init_help = (f"starts per search round of the reconstructor (default: "
                   f"{n_init})")
    parser = argparse.ArgumentParser(
        prog=_PROG,
        description="Reconstruct a federated-learning client's private batch from "
                    "one first-layer gradient (tensor method + Levenberg-Marquardt "
                    "refinement).",
        epilog="Exit status: 0 success; 1 demo reconstruction not exact "
               f"(worst relative error > {DEMO_TOLERANCE:g}); 2 invalid arguments "
               "or input.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = sub.add_parser(
        "demo", help="reconstruct a digits batch from a simulated gradient",
        description="Draw a batch of handwritten digits (scikit-learn's, pixels in "
                    "[0, 1]), compute the gradient of a random 2-layer network "
                    "(Gaussian first-layer weights and bias, one output, squared "
                    "loss), reconstruct the batch from it and report per-sample "
                    "errors. Exits with status 1 if the worst relative error "
                    f"exceeds {DEMO_TOLERANCE:g}.",
    )
    demo.add_argument("--batch-size", type=_positive_int, default=8,
                      help="number of digits in the batch (default: 8)")
    demo.add_argument("--width", type=_positive_int, default=20000,
                      help="neurons in the first layer (default: 20000)")
    demo.add_argument("--activation", choices=names, default="tanh",
                      help="first-layer activation (default: tanh)")
    demo.add_argument("--seed", type=int, default=0,
                      help="seed of the batch, the network and the searches "
                           "(default: 0)")
    demo.add_argument("--n-init", type=_positive_int, default=n_init,
                      help=n_init_help)
    demo.add_argument("--output", default="skrecon_demo.png",
                      help="PNG figure to write (default: skrecon_demo.png)")
    demo.add_argument("--no-figure", action="store_true",
                      help="do not draw or write the figure")
    demo.add_argument("--no-progress", action="store_true",
                      help="no progress bar (it appears on stderr after "
                           f"{PROGRESS_DELAY:g} s)")
    demo.set_defaults(func=_demo)

    make = sub.add_parser(
        "make-query", help="write a simulated gradient query (.npz)",
        description="Compute the gradient of a random 2-layer network (Gaussian "
                    "weights and bias, one output, squared loss) on a batch of "
                    "digits and write an .npz with keys grad, weights, "
                    "output_weights, samples (the ground truth), activation and "
                    "bias, ready for 'skrecon reconstruct'.",
    )
    make.add_argument("--batch-size", type=_positive_int, default=8,
                      help="number of digits in the batch (default: 8)")
    make.add_argument("--width", type=_positive_int, default=20000,
                      help="neurons in the first layer (default: 20000)")
    make.add_argument("--activation", choices=names, default="tanh",
                      help="first-layer activation (default: tanh)")
    make.add_argument("--seed", type=int, default=0,
                      help="seed of the batch and the network (default: 0)")
    make.add_argument("--output", default="query.npz",
                      help="file to write (default: query.npz)")
    make.set_defaults(func=_make_query)

    recon = sub.add_parser(
        "reconstruct", help="reconstruct a batch from a query (.npz)",
        description="Read a gradient query from an .npz file (keys grad and "
                    "weights, optionally output_weights; never pickles), "
                    "reconstruct the batch and write an .npz with samples, "
                    "sample_coefficients, found, gradient_residual, "
                    "sign_identified, scale_identified (the estimator's "
                    "attributes of these names) and labels when identifiable.",
    )
    recon.add_argument("input", metavar="INPUT.npz", help="the query file")
    recon.add_argument("--output", metavar="OUT.npz", default=None,
                       help="file to write (default: INPUT_reconstruction.npz)")
    recon.add_argument("--activation", choices=names, default=None,
                       help="first-layer activation (default: the file's "
                            "'activation' entry, else tanh)")
    recon.add_argument("--bias", action=argparse.BooleanOptionalAction,
                       default=None,
                       help="whether the last column of grad and weights is the "
                            "first layer's bias (default: the file's 'bias' entry, "
                            "else no bias)")
    recon.add_argument("--batch-size", type=_batch_size, default="auto",
                       help="'auto' (from the gradient's rank) or the number of "
                            "samples (default: auto)")
    recon.add_argument("--seed", type=int, default=0,
                       help="seed of the searches' random starts (default: 0)")
    recon.add_argument("--n-init", type=_positive_int, default=n_init,
                       help=n_init_help)
    recon.add_argument("--plot", metavar="OUT.png", default=None,
                       help="also draw the demo's figure to OUT.png: each true "
                            "sample (key 'samples' of the query, if any) above "
                            "its matched reconstruction")
    recon.add_argument("--image-shape", metavar="N", type=_positive_int, nargs="+",
                       default=None,
                       help="height width [channels] of a sample for --plot "
                            "(default: square, or square RGB)")
    recon.add_argument("--no-progress", action="store_true",
                       help="no progress bar (it appears on stderr after "
                            f"{PROGRESS_DELAY:g} s)")
    recon.set_defaults(func=_reconstruct)
    return parser


def main(argv=None):
    """Run the ``skrecon`` command line.

    Parameters
    ----------
    argv : list of str, default=None
        The arguments after the program name; ``None`` reads ``sys.argv[1:]``.

    Returns
    -------
    status : int
        The exit status: 0 success, 1 the demo's reconstruction is not exact
        (worst relative error above ``1e-6``), 2 invalid arguments or input.
        ``--help`` returns 0. Errors are printed to stderr, without a
        traceback.

    See Also
    --------
    skrecon.clients.make_gradient_query : What ``make-query`` computes.
    skrecon.GradientReconstructor : What ``reconstruct`` and ``demo`` fit.

    Examples
    --------
    The shell commands ``skrecon make-query`` and ``skrecon reconstruct``,
    from Python:

    >>> import os, tempfile
    >>> from skrecon.cli import main
    >>> path = os.path.join(tempfile.mkdtemp(), "query.npz")
    >>> main(["make-query", "--batch-size", "2", "--width", "500", "--output", path])
    wrote ...query.npz: gradient query of 2 digits, 500 tanh neurons ...
    0
    >>> main(["reconstruct", path])
    reconstructed 2 samples x 64 features from grad 500 x 65 ...
    0
    >>> import shutil
    >>> shutil.rmtree(os.path.dirname(path))  # the query and its reconstruction
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already printed
        return exc.code if isinstance(exc.code, int) else 2
    try:
        return args.func(args)
    except _UsageError as exc:
        _err(str(exc))
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
