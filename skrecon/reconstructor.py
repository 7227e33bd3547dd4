"""GradientReconstructor: the batch from one gradient query."""

import warnings
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import _check_sample_weight, check_is_fitted

from ._array_api import (frobenius_norm, from_host, get_namespace, host_state,
                         namespace_name, namespace_name_of, to_host)
from ._validation import (_ROUTING_HINT, check_coefficients, check_fitted_namespace,
                          check_query, float_dtype_of, transform_namespace)
from .activations import Activation, get_activation
from ._core import min_neurons, reconstruct_in_span
from .refine import is_piecewise_linear
from ._progress import ProgressLine
from ._threads import blas_threads
from .moments import MomentTensorTransformer
from ._streaming import NeuronStream
from ._identifiability import moment_weights, sign_and_scale, unresolved_samples
from ._labels import infer_labels
from .blind import cocktail_party
from .exceptions import BlindFitWarning, IdentifiabilityWarning

__all__ = ["GradientReconstructor", "IdentifiabilityWarning"]

# gradients with at most this many columns are reconstructed with one BLAS
# thread (see GradientReconstructor._fit)
_ONE_THREAD_MAX_COLUMNS = 512
# entries per block of rows of the gradient residual (2048 rows of 1024
# columns; a 2048-row block of 12 289 columns took 0.35 GiB)
_RESIDUAL_ENTRIES = 2048 * 1024




class GradientReconstructor(TransformerMixin, BaseEstimator):
    """Reconstruct a client's training batch from one first-layer gradient.

    The span of the gradient gives the batch's size and coordinates; each
    sample is then found alone by the column-space search (some vector of
    ``diag(sigma'(Omega v + b)) A`` lies in the gradient's column space
    exactly at the samples), with deflation so that every search finds a
    new one, started from the factors of the Hermite moment tensor of Wang,
    Lee & Lei (2023) and from random directions. A Levenberg-Marquardt
    polish of the exact gradient model
    ``g_j = sum_i (a_j . u_i) sigma'(w_j . x_i + b_j) x_i`` finishes the
    batch: an exact gradient gives it back to round-off.

    Parameters
    ----------
    activation : str or Activation, default="tanh"
        The first layer's activation (see :mod:`skrecon.activations`).
    bias : bool, default=False
        Whether the last column of the gradient and of ``weights`` is the
        first layer's bias. Whether that bias is constant or Gaussian is read
        off the weights.
    batch_size : "auto" or int, default="auto"
        Number of samples in the batch; ``"auto"`` reads it off the
        singular values of the gradient.
    moments : MomentTensorTransformer or None, default=None
        The moment step, with its hyper-parameters (``moments__order`` ...).
        ``None`` means ``MomentTensorTransformer()``. Its ``activation``,
        ``bias`` and ``n_components`` are set from this estimator's.
    loss : {"auto", "squared", "cross_entropy"} or None, default="auto"
        What the per-sample signals mean. ``"auto"`` reads labels when most
        signals of the rows found look like softmax cross-entropy ones (at
        least 3 outputs, coordinates summing to ~0, one of them carrying
        half of their absolute sum: a trained net's near one-hot signals
        too) and records what it inferred in ``loss_`` (a warning counts
        the rows that do not look like it, and says why when it reads
        none); ``"cross_entropy"`` always reads them (a warning counts the
        signals that do not look like it); ``"squared"`` and ``None`` read
        none.
    init : {"auto", "tensor", "random"}, default="auto"
        Starts of the per-sample searches. ``"tensor"``: the factors of the
        moment tensor (one Jennrich + CP-ALS decomposition; the paper's
        estimate), then no more: beyond about 16 samples they leave samples
        missing (32 digits: 31 of 32 found, in 45 s against 0.6 s for
        ``"auto"``). ``"random"``: random directions only (the
        moment tensor is not computed). ``"auto"``: for ReLU and leaky ReLU
        with one output, first the samples read off differences
        of neighbouring neurons' gradient rows; the tensor's factors for
        batches of at most 16 samples (beyond, Jennrich's starts are poor
        and the tensor costly) — first on a noisy gradient, and on an exact
        one only if ``batch_size`` random starts leave samples missing (it
        is then usually not computed); random directions until every
        sample is found. On a noisy gradient a search that leaves samples
        missing is run again from scratch, up to four times, and the
        best-fitting attempt kept.
    n_init : int, default=1
        Starts per round: independent searches run together (in parallel
        with ``n_jobs``) against the same deflated column space; the samples
        they find are deflated before the next round. The default, one,
        deflates every sample before the next search, so that each start
        can only find a new one (measured on digits, B = 32: 32 starts and
        1.2 s, against 46 starts and 1.5 s in rounds of 8); more per round
        let ``n_jobs`` search them in parallel.
    max_starts : int or None, default=None
        Bound on the starts searched in all; ``None``: ``4 * batch_size +
        16``.
    n_jobs : int or None, default=None
        Number of jobs for the searches of a round (joblib).
    max_iter : int, default=200
        Maximum Levenberg-Marquardt steps of the joint polish.
    tol : float, default=1e-13
        Relative residual at which the joint polish stops.
    random_state : int, RandomState instance or None, default=None
        Seeds every random step (the row subset, the tensor's slices, the
        random starts). Results depend on it alone, not on ``n_jobs`` or
        the joblib backend.
    verbose : int, default=0
        ``1``: one progress line on stderr that updates through the stages
        (span, samples found by the search, steps of the joint polish);
        ``2``: one printed line per stage and per sample found instead;
        ``3``: also one line per step of the joint polish.

    Attributes
    ----------
    samples_ : array of shape (batch_size, n_inputs)
        The reconstructed batch (bias column removed), in the input's
        units and dtype, in a canonical order (decreasing projection on a
        fixed pseudo-random direction) that does not depend on the search
        that found them. Every array attribute lives in the array namespace
        and on the device of the gradient passed to :meth:`fit` (NumPy,
        CuPy, ...; see Notes).
    sample_coefficients_ : ndarray of shape (batch_size, n_outputs)
        Per-sample back-propagated signals ``u_i`` (:ref:`theory-model`).
    labels_ : ndarray of shape (batch_size,) or None
        With softmax cross-entropy (``loss="cross_entropy"``, or inferred by
        ``loss="auto"``) and at least 3 outputs, the label of each sample:
        the coordinate of ``u_i`` whose sign differs from all others.
        ``None`` otherwise: a squared loss's signals are residuals, not
        labels, with fewer than 3 outputs the odd coordinate is not defined,
        and a blind fit (no ``weights``) has no signals; with ``loss="auto"``
        and at least 3 outputs a warning says why. At trained weights the
        softmax is near one-hot and every coordinate but the label's may be
        below the signals' round-off: the label is read as the coordinate
        carrying half of ``||u_i||_1`` (:ref:`theory-requirements`). This reads the
        labels off the first layer's signals, which
        are the output's only in a two-layer net; for a deeper net use the
        output layer's gradient
        (:func:`skrecon.torch.labels_from_output_layer`).
    batch_size_ : int
        Number of samples reconstructed: ``batch_size``, or the number read
        off the singular values, or the gradient's rank if smaller.
    gradient_residual_ : float
        ``||X - X_hat||_F / ||X||_F`` of the fitted model (dimensionless):
        ~1e-14 for an exact float64 gradient, the noise level for a noisy one.
    sign_identified_, scale_identified_ : ndarray of bool, shape (batch_size,)
        Whether each sample's sign and norm are identifiable from the
        gradient (:ref:`theory-identifiability`): without a bias, the sign
        for an activation with an even derivative, the norm for a
        scale-free one, and the norm of a sample on which a smooth
        activation is linear to within the gradient's precision (where it
        is even affine there, ``found_`` is False too).
    n_iter_ : int
        Levenberg-Marquardt steps of the joint polish.
    converged_ : bool
        Whether every sample was found and the polish met a stopping
        tolerance.
    moments_ : MomentTensorTransformer
        The fitted moment step (span, noise level); its ``moment_tensor_``
        is ``None`` when the starts did not use the tensor.
    order_ : int
        Order of the moment tensor used.
    refinement_ : RefinementResult
        The joint polish's outcome (residual in span coordinates,
        iterations, stopping status; ``n_iter`` 0 where the searches were
        already exact); its ``V`` and ``U`` are host NumPy arrays in span
        coordinates, in the search's own sample order.
    found_ : ndarray of bool, shape (batch_size,)
        Whether each row of ``samples_`` was found: its column-space misfit
        on all neurons is below the (noise-aware) acceptance level. For a
        float32 gradient exact to its round-off (a float32 model's), only
        rows whose misfit bounds their relative error by 1e-4; the rows that
        fit the round-off but not that precision (a sample the model already
        fits almost perfectly sends almost no gradient) are named in an
        :class:`IdentifiabilityWarning`. A row
        that was not found is a best guess (a warning says how many). On a
        noisy gradient a found row fits the gradient to its noise level, which
        does not bound its error: eight digits, 20 000 neurons, relative noise
        1e-2 gave errors up to 0.033 on found rows, 3e-2 up to 0.87 (with
        ``batch_size=8`` given, where a ``BatchSizeWarning`` said that the
        weakest samples are at the noise floor).
    n_found_ : int
        ``found_.sum()``.
    sample_misfits_ : ndarray of shape (batch_size,)
        Each sample's column-space misfit ``phi`` (dimensionless, in
        ``[0, 1]``): ~1e-25 for an exact float64 gradient; for a noisy one
        up to about ``(kappa * noise)**2``, ``kappa`` the span's conditioning
        (eight digits at relative noise 1e-3 and 1e-2: up to 50-100 times the
        squared noise; the acceptance level is ``(3 kappa noise_level_)**2``,
        see the user guide).
    n_starts_ : int
        Searches started.
    solver_ : str
        ``"column_space_search"``, or ``"cocktail_party"`` for a blind fit
        (no ``weights``: :func:`skrecon.blind.cocktail_party`, an
        approximate estimate that sets only ``samples_``, ``batch_size_``,
        the identifiability flags, ``labels_`` (``None``), ``loss_``,
        ``n_iter_`` (FastICA iterations), ``converged_`` and ``solver_``).
    loss_ : {"cross_entropy", "squared"} or None
        The loss whose signals were read: ``"cross_entropy"`` when given or
        inferred by ``loss="auto"``, ``"squared"`` when given, ``None`` when
        ``"auto"`` found no cross-entropy signals (or a blind fit).
    moment_weights_ : ndarray of shape (batch_size,)
        ``mu_order(tau_i) tau_i**(order - 1)``: each recovered sample's
        weight in the moment tensor, at its recovered norm ``tau_i``.
    n_features_in_ : int
        Number of columns of the gradient seen in :meth:`fit`.
    n_neurons_seen_ : int
        Neurons (gradient rows) received by :meth:`partial_fit` since the
        stream started; only :meth:`partial_fit` sets it (:meth:`fit`
        removes it).

    See Also
    --------
    MomentTensorTransformer : The moment step alone.
    skrecon.clients.make_gradient_query : A client's gradient at a random query.

    Notes
    -----
    The inputs may be arrays of any Array API library (read with
    ``array_api_compat``): with CuPy arrays the steps that grow with the
    neurons or the inputs (SVD, moment tensor, the refinement's products)
    run on the GPU, the ``B``-sized ones (Jennrich, CP-ALS, the damped
    normal equations) on the host, and the fitted arrays stay on the
    gradient's device. ``X``, ``weights`` and ``output_weights``, and later
    the arguments of :meth:`score` and :meth:`transform`, must come from the
    fit's library and device (``ValueError`` otherwise). A pickled
    estimator holds NumPy copies of its fitted arrays. Computation is in
    float64; float32 input gives float32 fitted arrays, and ``transform``
    and ``inverse_transform`` return their input's float dtype.

    References
    ----------
    .. [1] Z. Wang, J. D. Lee, Q. Lei, "Reconstructing Training Data from
       Model Gradient, Provably", AISTATS 2023, PMLR 206:6595-6612.

    Examples
    --------
    >>> from skrecon import GradientReconstructor
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_digits_batch
    >>> from skrecon.metrics import relative_error
    >>> batch, _ = load_digits_batch(4, random_state=0)
    >>> q = make_gradient_query(batch, n_neurons=2000, bias="gaussian", random_state=0)
    >>> rec = GradientReconstructor(bias=True, random_state=0)
    >>> rec.fit(q.grad, weights=q.weights, output_weights=q.output_weights)
    GradientReconstructor(bias=True, random_state=0)
    >>> rec.samples_.shape, rec.batch_size_
    ((4, 64), 4)
    >>> errors, permutation = relative_error(batch, rec.samples_)
    >>> bool(errors.max() < 1e-8), bool(rec.sign_identified_.all())
    (True, True)
    """

    _parameter_constraints = {
        "activation": [str, Activation],
        "bias": ["boolean"],
        "batch_size": [StrOptions({"auto"}), Interval(Integral, 1, None, closed="left")],
        "moments": [HasMethods(["fit", "transform"]), None],
        "loss": [StrOptions({"auto", "squared", "cross_entropy"}), None],
        "init": [StrOptions({"auto", "tensor", "random"})],
        "n_init": [Interval(Integral, 1, None, closed="left")],
        "max_starts": [Interval(Integral, 1, None, closed="left"), None],
        # joblib's convention: a positive count, or -1 for all CPUs, -2 for
        # all but one, ...; 0 has no meaning
        "n_jobs": [Interval(Integral, 1, None, closed="left"),
                   Interval(Integral, None, -1, closed="right"), None],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="left")],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
    }

    def __init__(self, *, activation="tanh", bias=False, batch_size="auto", moments=None,
                 loss="auto", init="auto", n_init=1, max_starts=None, n_jobs=None,
                 max_iter=200, tol=1e-13, random_state=None, verbose=0):
        self.activation = activation
        self.bias = bias
        self.batch_size = batch_size
        self.moments = moments
        self.loss = loss
        self.init = init
        self.n_init = n_init
        self.max_starts = max_starts
        self.n_jobs = n_jobs
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state
        self.verbose = verbose

    __metadata_request__fit = {"weights": True, "output_weights": True}
    __metadata_request__partial_fit = {"weights": True, "output_weights": True}
    # sample_weight requested too: Pipeline.score with routing passes
    # sample_weight=None, which the router rejects for a score without it
    # (scikit-learn 1.9), and every search over a defence scored NaN
    __metadata_request__score = {"weights": True, "output_weights": True,
                                 "sample_weight": True}

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, *, weights=None, output_weights=None):
        """Reconstruct the batch from a gradient query.

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_inputs) or (n_neurons, n_inputs + 1)
            The first layer's gradient, one row per neuron; with
            ``bias=True`` the bias gradient is the last column. Any global
            scale (learning rate, mean or sum reduction) is irrelevant.
        y : None
            Ignored (there is no target: the batch is what is estimated).
        weights : array-like of the shape of ``X``, default=None
            The first-layer weights at which the gradient was taken (bias
            last when ``bias=True``), Gaussian as the server drew them.
            ``None``: a blind estimate (the Cocktail Party Attack,
            :func:`skrecon.blind.cocktail_party`), approximate, with a
            :class:`~skrecon.exceptions.BlindFitWarning`; ``solver_`` says which
            ran.
        output_weights : array-like of shape (n_neurons, n_outputs) or (n_neurons,), default=None
            Each neuron's outgoing weights; ``None`` means all ones. Needs
            ``weights``.

        Returns
        -------
        self : GradientReconstructor

        Raises
        ------
        ValueError
            If an argument holds NaN or inf, shapes do not match, the last
            column of ``weights`` looks like a bias but ``bias=False``, the
            gradient is zero, the activation is linear, the requested moment
            order vanishes for the activation, or ``output_weights`` comes
            without ``weights``.
        TypeError
            If ``X`` is a ``torch.nn.Module`` rather than its gradient (use
            :func:`skrecon.torch.first_layer_query`).

        Examples
        --------
        >>> from skrecon import GradientReconstructor
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(3, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=1000, random_state=0)
        >>> rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
        >>> rec.batch_size_, bool(rec.gradient_residual_ < 1e-10)
        (3, True)
        """
        # a fit starts over: the chunks partial_fit received are dropped
        self._stream = None
        self.__dict__.pop("n_neurons_seen_", None)
        if weights is None:
            return self._fit_blind(X, output_weights)
        if self.verbose == 1:
            line = ProgressLine()
            try:
                return self._fit(X, weights, output_weights, progress=line)
            finally:
                line.close()
        return self._fit(X, weights, output_weights)

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y=None, *, weights=None, output_weights=None,
                    reconstruct=True):
        """Receive the gradient query in chunks of neurons, and reconstruct.

        For a layer too wide to hold at once: each call passes some of its
        neurons (rows of the gradient, of the weights and of the output
        weights). The span of the whole gradient and its spectrum are
        updated incrementally, and a uniform random sample of at most 8 192
        neurons is kept for the search: memory does not grow with the
        neurons received (see Notes). The first call starts the stream
        (so does the first call after :meth:`fit`); later calls must bring
        the same columns and outputs.

        Parameters
        ----------
        X : array-like of shape (n_chunk, n_inputs) or (n_chunk, n_inputs + 1)
            The gradient's rows of this chunk of neurons (bias gradient last
            when ``bias=True``), in any order across calls.
        y : None
            Ignored.
        weights : array-like of the shape of ``X``, default=None
            The first-layer weights of these neurons. ``None`` (for every
            chunk): the blind estimate of :meth:`fit` on the kept neurons.
        output_weights : array-like of shape (n_chunk, n_outputs) or (n_chunk,), default=None
            Their outgoing weights; ``None`` means all ones.
        reconstruct : bool, default=True
            Whether to reconstruct the batch from every neuron received so
            far (the search, the polish and the fitted attributes), or only
            to take the chunk in: pass ``False`` for all chunks but the last
            to run the search once.

        Returns
        -------
        self : GradientReconstructor

        Raises
        ------
        ValueError
            On the errors of :meth:`fit` for the chunk; if a chunk has other
            columns than the first (scikit-learn's message) or other outputs,
            or comes with weights where the first came without (or the
            reverse).

        Notes
        -----
        The span comes from an incremental singular value decomposition of
        the gradient (its directions above round-off, and 16 below, which
        show the round-off floor; at most 1 024 directions, beyond which a
        noisy gradient's spectrum is truncated with a
        :class:`~skrecon.exceptions.BatchSizeWarning`). Everything after the
        span runs on the kept neurons: ``gradient_residual_`` is theirs.
        Computation is on the host; attributes are NumPy arrays. Memory: the
        kept neurons' rows in the input's dtype, their float64 copies while
        reconstructing, and ``O(n_inputs x 1 024)``.

        Examples
        --------
        >>> import numpy as np
        >>> from skrecon import GradientReconstructor
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> from skrecon.metrics import relative_error
        >>> batch, _ = load_digits_batch(4, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=2000, random_state=0)
        >>> rec = GradientReconstructor(bias=True, random_state=0)
        >>> chunks = np.array_split(np.arange(2000), 4)
        >>> for k, rows in enumerate(chunks):
        ...     rec = rec.partial_fit(q.grad[rows], weights=q.weights[rows],
        ...                           output_weights=q.output_weights[rows],
        ...                           reconstruct=k == len(chunks) - 1)
        >>> rec.n_neurons_seen_, rec.batch_size_
        (2000, 4)
        >>> errors, _ = relative_error(batch, rec.samples_)
        >>> bool(errors.max() < 1e-8)
        True
        """
        if weights is None and output_weights is not None:
            return self._fit_blind(X, output_weights)  # (raises: no weights)
        first = getattr(self, "_stream", None) is None
        X_chunk, W_chunk, A_chunk = check_query(self, X, weights, output_weights,
                                                reset=first, require_weights=False)
        if first:
            seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
            self._stream = NeuronStream(X_chunk.shape[1], random_state=seed)
        self._stream.update(*(None if a is None else to_host(a)
                              for a in (X_chunk, W_chunk, A_chunk)), float_dtype_of(X))
        self.n_neurons_seen_ = self._stream.n_seen
        del X_chunk, W_chunk, A_chunk  # (float64 copies of the chunk)
        if reconstruct and self._stream.blind:
            self._fit_blind(self._stream.rows()[0], None)
        elif reconstruct:
            self._fit(*self._stream.rows(), span=self._stream.spectrum())
        return self

    def _fit(self, X, weights, output_weights, progress=None, span=None):
        """:meth:`fit`, with ``progress(stage, done, total)`` called at each
        stage and search round (the command line's progress bar); ``span``:
        the span of a streamed gradient (:meth:`partial_fit`), whose rows
        ``X`` holds a subset of."""
        X_checked, W, A = check_query(self, X, weights, output_weights, reset=True)
        xp, device = get_namespace(X_checked)
        if not bool(xp.any(X_checked != 0)):
            raise ValueError(
                "The gradient X is zero everywhere: it carries no information "
                "about the batch (was the loss already minimal, or the wrong "
                "layer's gradient passed?)."
            )
        activation = get_activation(self.activation)
        _check_activation_namespace(activation, xp, device)
        moments = (MomentTensorTransformer() if self.moments is None
                   else clone(self.moments))
        moments.set_params(activation=activation, bias=self.bias,
                           n_components=self.batch_size)
        # moments._fit_checked bypasses moments.fit's validation: validate its
        # parameters (moments__order, ...) here, with scikit-learn's error.
        moments._validate_params()
        moments._streamed_span = span
        # One BLAS thread for a gradient of few columns: its products are
        # thin (m x B, m x d with small d), where threads cost more than they
        # give (measured: B = 8 digits, 0.95 s with two threads, 0.4 s with
        # one); wide gradients (image patches) keep the machine's threads.
        limits = 1 if X_checked.shape[1] <= _ONE_THREAD_MAX_COLUMNS else None
        with blas_threads(limits):
            return self._reconstruct(X_checked, W, A, activation, moments, progress)

    def _reconstruct(self, X_checked, W, A, activation, moments, progress):
        """The span, the functional core, the fitted attributes."""
        # the query is validated: the moment step takes it with the input's
        # dtype (for its attributes); the moment tensor now for init="tensor",
        # for "auto" when the core's starts need it
        proj = moments._fit_checked(X_checked, W, A, tensor=self.init == "tensor",
                                    input_dtype=self._input_dtype)
        self.moments_ = moments
        self.order_ = moments.order_
        n = moments.n_components_

        rng = check_random_state(self.random_state)
        # one seed, drawn from random_state, feeds every random step
        seed = int(rng.randint(np.iinfo(np.int32).max))
        say = print if self.verbose >= 2 else (lambda *args: None)
        say(f"span: batch size {n}, spectral gap {moments.spectral_gap_:.3g}, "
            f"noise level {moments.noise_level_:.2e}, order {moments.order_}")
        if progress is not None:
            progress("span", 1, 1)
        # the core is B-sized (products of m x B matrices, B x B solves):
        # one BLAS thread, also for wide gradients, whose span took the
        # machine's threads (two threads on 64 x 64 SVDs: 50 times slower on
        # a loaded two-core machine)
        with blas_threads(1):
            result = reconstruct_in_span(
                proj, activation, n_samples=n, init=self.init, moments=moments,
                n_init=self.n_init, max_starts=self.max_starts, max_iter=self.max_iter,
                tol=self.tol, precision=moments._precision,
                noise_level=moments.noise_level_, n_resolved=moments._shown_batch_size,
                random_state=np.random.default_rng(seed),
                n_jobs=self.n_jobs, verbose=max(self.verbose - 1, 0), progress=progress)
        self._store_result(result, proj, activation, X_checked, W, A)
        return self

    def _store_result(self, result, proj, activation, X, W, A):
        """Samples in input coordinates, identifiability, diagnostics.

        ``B``-sized work on the host; the fitted arrays are stored in the
        input's namespace, on its device.
        """
        V, U = result.V, result.U
        n = V.shape[0]
        x_aug = (V @ to_host(proj.scaled_basis).T) / proj.column_scale
        samples = x_aug[:, :-1] / x_aug[:, -1:] if self.bias else x_aug
        samples, U, sign_ok, scale_ok = sign_and_scale(samples, U, activation,
                                                       self.bias)
        if not self.bias:
            _warn_constant_column(samples)
        # a canonical order: by the projection on a fixed direction, so that
        # it does not depend on which search (or which library) found them
        direction = np.random.default_rng(0).standard_normal(samples.shape[1])
        order = np.argsort(-(samples @ direction), kind="stable")
        samples, U = samples[order], U[order]
        found, misfits = result.found[order], result.misfits[order]
        unresolved = np.zeros(n, dtype=bool)
        if not self.bias and not activation.scale_free:
            precision = max(1e3 * np.finfo(self.moments_._precision).eps,
                            10 * self.moments_.noise_level_)
            norm_weak, unresolved = unresolved_samples(activation, samples, to_host(W),
                                                       precision)
            scale_ok &= ~norm_weak
            found = found & ~unresolved
        shown = self.moments_._shown_batch_size or n
        below_spectrum = shown > n
        if below_spectrum:
            # fewer samples than the spectrum shows: none is a sample of this
            # gradient, whatever its misfit in the truncated span (errors up
            # to 0.12 at 6 of 8 digits, all flagged found; the
            # BatchSizeWarning says so)
            found = np.zeros_like(found)
        if self.moments_._full_column_rank:
            # a gradient of full column rank without a white-noise bulk: the
            # batch may have as many samples as columns, or more, and then
            # no row is a sample of it, whatever its misfit (d = 8, B = 12:
            # two of three rows flagged found, both wrong; the warnings say so)
            found = np.zeros_like(found)
        xp, device = get_namespace(X)
        dtype = getattr(xp, self._input_dtype.name)
        self.samples_ = from_host(samples, xp, device, dtype=dtype)
        self.sample_coefficients_ = from_host(U, xp, device, dtype=dtype)
        self.batch_size_ = n
        self.sign_identified_ = from_host(sign_ok, xp, device, dtype=xp.bool)
        self.scale_identified_ = from_host(scale_ok, xp, device, dtype=xp.bool)
        self.found_ = from_host(found, xp, device, dtype=xp.bool)
        self.n_found_ = int(np.sum(found))
        self.sample_misfits_ = from_host(misfits, xp, device, dtype=dtype)
        self.n_starts_ = int(result.n_starts)
        self.solver_ = "column_space_search"
        refinement = result.refinement
        self.n_iter_ = refinement.n_iter
        self.converged_ = bool(refinement.converged) and self.n_found_ == n
        self.refinement_ = refinement
        labels = self._labels(U, sign_ok, found)
        self.labels_ = (None if labels is None
                        else from_host(labels, xp, device, dtype=xp.int64))
        self.gradient_residual_ = self._gradient_residual(X, W, A)
        weights = moment_weights(activation, samples, proj, order=self.order_,
                                 bias=self.bias, bias_std=self.moments_.bias_std_,
                                 bias_mean=self.moments_.bias_mean_)
        self.moment_weights_ = from_host(weights, xp, device, dtype=dtype)
        if not result.identifiable:
            m, K = result.n_live_neurons, proj.A.shape[1]
            warnings.warn(
                f"The layer has {m} neurons (with a nonzero output weight) for {n} "
                f"samples with {K} output(s): the column-space search finds samples "
                f"from about max(5 B, 2 (B + K)) = {min_neurons(n, K)} neurons "
                "(measured at trained weights, tanh: batches of 16 / 32 / 48 exact "
                "from 72 / 144 / 240 neurons, none found at 64 / 128 / 224), so it was "
                "not run: "
                "samples_ holds guesses and found_ is all False. Query a layer of at "
                f"least {min_neurons(n, K)} neurons, or a smaller batch.",
                IdentifiabilityWarning)
            return  # (nothing was searched: the other verdicts do not apply)
        weak = (~found & ~unresolved & (misfits < result.fit_accept)
                if result.accept < result.fit_accept and not below_spectrum
                else np.zeros(n, dtype=bool))
        if np.any(weak):
            share = np.linalg.norm(U, axis=1) / max(np.max(np.linalg.norm(U, axis=1)),
                                                    np.finfo(float).tiny)
            rows = np.flatnonzero(weak)
            single = np.dtype(self.moments_._precision) == np.float32
            warnings.warn(
                f"Rows {rows.tolist()} of samples_ fit the "
                f"{np.dtype(self.moments_._precision).name} gradient to its "
                "round-off, but their misfits do not bound their errors by "
                f"{result.stated_precision:.0e}".replace("e-0", "e-") + " (found_ is False there"
                + ("; such float32 rows were measured at 5e-5 to 2e-2). " if single
                   else "). ")
                + f"Their per-sample signals are {_listing(share[rows])} of the "
                "largest one's: a sample the model already fits almost perfectly "
                "(softmax close to its one-hot label) sends almost no gradient, and "
                "its share sits at the round-off of the others'"
                + ("; a float32 parameter update (theta - theta') / lr carries more "
                   "round-off still. A float64 model's gradient recovers them."
                   if single else "."), IdentifiabilityWarning)
        if (self.n_found_ < min(n, shown)
                and not below_spectrum and np.any(~found & ~unresolved & ~weak)):
            # (rows the activation cannot resolve, or whose signal is at the
            # round-off, were warned about above)
            missing = np.flatnonzero(~found & ~unresolved & ~weak).tolist()
            if result.n_searched_found == n and is_piecewise_linear(activation):
                # every search succeeded; the exact finish did not confirm them
                warnings.warn(
                    f"The searches found all {n} samples, but the pattern iteration "
                    f"of the piecewise-linear activation did not fit the gradient "
                    f"to its noise level (relative gradient residual "
                    f"{self.gradient_residual_:.3g}): the samples are approximate, "
                    "and found_ is False for all of them. More starts do not help; "
                    "a less noisy gradient or a wider layer does.", ConvergenceWarning)
            elif self.moments_._full_column_rank:
                warnings.warn(
                    f"No row of samples_ is flagged found (relative gradient "
                    f"residual {self.gradient_residual_:.3g}): the gradient has full "
                    "column rank (see the BatchSizeWarning), so the batch may have "
                    "at least as many samples as the gradient's columns, and then "
                    "neither more starts nor a wider layer can recover it.",
                    ConvergenceWarning)
            else:
                dependent = ""
                if self.batch_size == "auto" and self.moments_.noise_level_ < 1e-8:
                    # an exact gradient's rank is the batch's rank, which is
                    # the batch size only for linearly independent samples
                    dependent = (
                        f" The gradient's spectrum falls to round-off after {n} "
                        f"values: if the batch has more than {n} samples, they are "
                        f"linearly dependent (of rank {n}, e.g. images with pixels "
                        "blank in every sample), no sample satisfies the "
                        "column-space condition, and neither more starts nor a "
                        "wider layer recovers them.")
                if self.n_found_ == 0 and self.n_starts_ >= n:
                    # the layer is wide enough (the branch above): searches, at
                    # least one a sample, that find no sample at all point at the
                    # model, not at width or starts
                    # (a wrong activation: 0 of 8 digits in 48 searches, residual
                    # 0.2-0.7, for sigmoid, GELU, ReLU or softplus on tanh)
                    activation_name = getattr(activation, "name", activation)
                    warnings.warn(
                        f"None of {n} samples was found in {self.n_starts_} searches "
                        f"(relative gradient residual {self.gradient_residual_:.3g}), "
                        f"although {result.n_live_neurons} neurons are enough for "
                        f"{n} samples: most likely the model does not match the gradient. Check "
                        f"activation (here {activation_name!r}), bias and "
                        "output_weights (and loss); only when they are right can more "
                        "starts (max_starts) help." + dependent + " samples_ are best "
                        "guesses (found_ is all False).", ConvergenceWarning)
                else:
                    warnings.warn(
                        f"Only {self.n_found_} of {n} samples were found in "
                        f"{self.n_starts_} searches (relative gradient residual "
                        f"{self.gradient_residual_:.3g}); rows {missing} of samples_ are "
                        "best guesses (found_ is False there). Increase max_starts (with "
                        "init='auto' or 'random': init='tensor' tries the tensor's factors "
                        "only), or query a wider layer." + dependent, ConvergenceWarning)
        elif refinement.status == 0:
            # (a polish that stops without descent is judged by its residual
            # below: at the noise level it is the least-squares fit of a noisy
            # gradient -- 4 digits at 1e-8 relative noise stopped so at 1.0e-8
            # with one BLAS thread on the Nehalem kernel)
            warnings.warn(
                f"The joint polish did not converge in {self.max_iter} iterations "
                f"(relative gradient residual {self.gradient_residual_:.3g}); "
                "increase max_iter.", ConvergenceWarning)
        elif self.gradient_residual_ > max(1e-6, 30 * self.moments_.noise_level_):
            warnings.warn(
                f"The refinement stopped at a relative gradient residual of "
                f"{self.gradient_residual_:.3g}, far above the gradient's estimated "
                f"noise level {self.moments_.noise_level_:.3g}: the batch does not "
                "explain the gradient (a local minimum, a wrong batch size, or a "
                "model that does not match the query). Try a larger max_starts, pass "
                "batch_size, or check activation, bias and output_weights.",
                ConvergenceWarning)

    def _labels(self, U, sign_known, found):
        """Labels from the host signals ``U`` (B, K), or ``None`` (with a
        warning saying why, where cross-entropy labels could have been
        read); sets ``loss_``. ``sign_known``: the rows whose sign the first
        layer identifies (they share the gradient's global scale); ``found``:
        the rows ``loss="auto"`` decides on."""
        labels, self.loss_, n_unlike, n_ambiguous = infer_labels(U, self.loss, sign_known,
                                                                 found)
        K = U.shape[1]
        if self.verbose >= 2 and self.loss == "auto":
            print("[GradientReconstructor] loss='auto': inferred "
                  + ("softmax cross-entropy, labels read off the signals"
                     if self.loss_ == "cross_entropy" else
                     f"no cross-entropy ({n_unlike} of {len(U)} signals unlike it"
                     f"{', fewer than 3 outputs' if K < 3 else ''}); "
                     "labels_ is None"))
        if labels is None and self.loss == "auto" and K >= 3 and len(U):
            warnings.warn(
                f"labels_ is None: {n_unlike} of {len(U)} recovered signals do not "
                "look like softmax cross-entropy (coordinates summing to ~0, one of "
                "them carrying half of their absolute sum). Either the loss is not "
                "cross-entropy (pass loss='squared' to say so), or the net is "
                "deeper than two layers, whose first-layer signals are not the "
                "output's: read the labels through the output layer with "
                "skrecon.torch.labels_from_output_layer(model, rec.samples_). "
                "loss='cross_entropy' reads guesses anyway.", IdentifiabilityWarning)
        if labels is not None and n_unlike:
            warnings.warn(
                f"{n_unlike} of {len(U)} recovered signals do not look like "
                "softmax cross-entropy (coordinates summing to ~0, one of them "
                "carrying half of their absolute sum): their labels are guesses "
                "(the coordinate of odd sign, or of largest magnitude). Check "
                "loss, or gradient_residual_.", IdentifiabilityWarning)
        if labels is not None and n_ambiguous:
            warnings.warn(
                f"{n_ambiguous} of {len(U)} samples are confidently misclassified "
                "by the model (two signal coordinates of equal magnitude) and "
                "their sign is not identified (no bias): their label is one of "
                "the two, a guess.", IdentifiabilityWarning)
        return labels

    def _augmented(self, samples):
        """``[samples, 1]`` with a bias, else ``samples`` (their namespace)."""
        if not self.bias:
            return samples
        xp, device = get_namespace(samples)
        ones = xp.ones((samples.shape[0], 1), dtype=samples.dtype, device=device)
        return xp.concat([samples, ones], axis=1)

    def _gradient_residual(self, X, W, A):
        """``||X - model|| / ||X||``, block of rows by block of rows: no
        ``(m, n)`` temporary (the blocks stay in cache)."""
        xp, _ = get_namespace(X)
        norm, m = 0.0, X.shape[0]
        step = max(1, _RESIDUAL_ENTRIES // X.shape[1])
        for start in range(0, m, step):
            rows = slice(start, min(start + step, m))
            block = frobenius_norm(X[rows, :] - self._model_gradient(W[rows, :], A[rows, :]),
                                   xp)
            norm = float(np.hypot(norm, block))
        return norm / frobenius_norm(X, xp)

    def _model_gradient(self, W, A):
        """Gradient predicted by the fitted batch at weights ``W`` (float64)."""
        xp, _ = get_namespace(self.samples_)
        activation = get_activation(self.activation)
        x_aug = self._augmented(xp.astype(self.samples_, xp.float64))
        s1 = activation.derivative(W @ x_aug.T, 1)  # (m, B)
        U = xp.astype(self.sample_coefficients_, xp.float64)
        return ((A @ U.T) * s1) @ x_aug

    def transform(self, X):
        """Least-squares coefficients of gradient rows on the recovered samples.

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_features_in)
            Gradient rows (any neurons, not only those fitted).

        Returns
        -------
        coefficients : ndarray of shape (n_neurons, batch_size)
            ``C`` minimising ``||X - C S||_F`` with ``S`` the samples
            (bias-augmented when ``bias=True``); for an exact gradient
            ``C[j, i] = (a_j . u_i) sigma'(w_j . x_i + b_j)``.

        Raises
        ------
        ValueError
            If ``X`` has NaN or inf, or not ``n_features_in_`` columns.

        Examples
        --------
        >>> import numpy as np
        >>> from skrecon import GradientReconstructor
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(3, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=1000, random_state=0)
        >>> rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
        >>> coef = rec.transform(q.grad)
        >>> coef.shape
        (1000, 3)
        >>> bool(np.allclose(rec.inverse_transform(coef), q.grad))
        True
        """
        check_is_fitted(self, "samples_")
        xp, out_dtype = transform_namespace(self, X, self.samples_)
        X = check_query(self, X, None, None, reset=False)[0]
        S = self._augmented(xp.astype(self.samples_, xp.float64))
        # least squares X ~ C S through the pseudo-inverse of the (B, n) samples
        return xp.astype(X @ xp.linalg.pinv(S), out_dtype)

    def inverse_transform(self, X):
        """Gradient rows from coefficients on the recovered samples.

        Parameters
        ----------
        X : array-like of shape (n_neurons, batch_size)
            Coefficients, as returned by :meth:`transform`.

        Returns
        -------
        X_original : ndarray of shape (n_neurons, n_features_in)
            ``X @ S``, ``S`` the (bias-augmented) samples.

        Raises
        ------
        ValueError
            If ``X`` has NaN or inf, or not ``batch_size_`` columns.

        Examples
        --------
        >>> import numpy as np
        >>> from skrecon import GradientReconstructor
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(2, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=1000, random_state=0)
        >>> rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad, **q.fit_params)
        >>> rec.inverse_transform(np.eye(2)).shape  # the samples, bias column last
        (2, 65)
        """
        check_is_fitted(self, "samples_")
        X, xp, out_dtype = check_coefficients(self, X, self.batch_size_, self.samples_)
        return xp.astype(X @ self._augmented(xp.astype(self.samples_, xp.float64)),
                         out_dtype)

    def score(self, X, y=None, *, weights=None, output_weights=None, sample_weight=None):
        """Held-out R^2 of the gradient predicted by the recovered batch.

        ``1 - ||X - X_hat||_F^2 / ||X - mean(X)||_F^2`` over the whole
        matrix (each neuron's row weighted by ``sample_weight``), ``X_hat``
        the exact gradient model at ``weights`` with the fitted samples and
        signals. After a blind fit (``solver_`` is
        ``"cocktail_party"``: no signals, no model) ``X_hat`` is the
        projection of ``X`` on the span of the recovered samples, and
        ``weights`` and ``output_weights`` are not used.

        Parameters
        ----------
        X : array-like of shape (n_neurons, n_features_in)
            Gradient rows of held-out neurons of the same query.
        y : None
            Ignored.
        weights : array-like of the shape of ``X``
            The held-out neurons' first-layer weights.
        output_weights : array-like of shape (n_neurons, n_outputs) or (n_neurons,), default=None
            The held-out neurons' output weights; ``None`` means all ones.
        sample_weight : array-like of shape (n_neurons,), default=None
            Non-negative weight of each neuron's row in the sums of squares
            and in the mean (``None``: all equal), as in scikit-learn's
            ``r2_score``. Requested by default, so that ``Pipeline.score``
            routes it (and its ``None``) here.

        Returns
        -------
        score : float
            R^2 (dimensionless, at most 1; 1 for an exact reconstruction).
            Where ``X`` has no variance to explain (a single neuron), 1.0
            for a fit exact to round-off and 0.0 otherwise, as
            scikit-learn's ``r2_score(force_finite=True)``.

        Raises
        ------
        ValueError
            If ``weights`` is missing (enable metadata routing inside a
            search), an argument holds NaN or inf, or shapes do not match.

        Examples
        --------
        >>> from skrecon import GradientReconstructor
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(3, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=1500, random_state=0)
        >>> train, test = slice(0, 1000), slice(1000, None)
        >>> rec = GradientReconstructor(bias=True, random_state=0).fit(
        ...     q.grad[train], weights=q.weights[train], output_weights=q.output_weights[train])
        >>> round(rec.score(q.grad[test], weights=q.weights[test],
        ...                 output_weights=q.output_weights[test]), 8)
        1.0
        """
        check_is_fitted(self, "samples_")
        xp, _ = check_fitted_namespace(self, X, self.samples_)
        if getattr(self, "solver_", None) == "cocktail_party":
            # a blind fit has no signals, hence no gradient model: the
            # fraction of X's variance in the span of the recovered samples
            X = check_query(self, X, None, None, reset=False)[0]
            return _r2(X - self.inverse_transform(self.transform(X)), X, xp,
                       self._row_weights(sample_weight, X, xp))
        if weights is None:
            raise ValueError(
                "GradientReconstructor.score needs the held-out neurons' "
                "weights: call score(X, weights=W). " + _ROUTING_HINT)
        X, W, A = check_query(self, X, weights, output_weights, reset=False)
        if A.shape[1] != self.sample_coefficients_.shape[1]:
            raise ValueError(
                f"output_weights has {A.shape[1]} columns but the estimator was "
                f"fitted with {self.sample_coefficients_.shape[1]} outputs.")
        return _r2(X - self._model_gradient(W, A), X, xp,
                   self._row_weights(sample_weight, X, xp))

    @staticmethod
    def _row_weights(sample_weight, X, xp):
        """``sample_weight`` checked (one finite non-negative value per
        row), as a column of ``X``'s namespace and device; ``None`` stays."""
        if sample_weight is None:
            return None
        if not isinstance(sample_weight, Real):  # (a number weighs all rows alike)
            sample_weight = to_host(sample_weight)
        w = _check_sample_weight(sample_weight, np.empty((X.shape[0], 0)),
                                 dtype=np.float64, ensure_non_negative=True)
        return from_host(w[:, None], xp, get_namespace(X)[1], dtype=X.dtype)

    def __getstate__(self):
        # fitted arrays are pickled as NumPy arrays: an estimator fitted on
        # CuPy loads on a machine without a GPU
        return host_state(super().__getstate__())

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = False
        tags.requires_fit = True
        tags.target_tags.required = False
        tags.array_api_support = True
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags

    # fitted attributes that only a fit with weights sets: a blind refit
    # removes them, so that none of a former fit's values is left behind
    _WEIGHTED_ONLY = (
        "sample_coefficients_", "gradient_residual_", "moments_", "order_",
        "refinement_", "found_", "n_found_", "sample_misfits_", "n_starts_",
        "moment_weights_")

    # parameters of the exact reconstruction that the blind estimate ignores
    _EXACT_ONLY_PARAMS = ("activation", "moments", "loss", "init", "max_starts",
                          "n_jobs", "max_iter", "tol")

    def _fit_blind(self, X, output_weights):
        """:meth:`fit` without weights: the Cocktail Party Attack."""
        if output_weights is not None:
            raise ValueError(
                "output_weights was given without weights: the blind estimate "
                "(fit without weights) uses neither. Pass weights=W too for the "
                "exact reconstruction, or drop output_weights.")
        X_checked = check_query(self, X, None, None, reset=True,
                                require_weights=False)[0]
        xp, device = get_namespace(X_checked)
        params, defaults = (self.get_params(deep=False),
                            type(self)().get_params(deep=False))
        # parameters set away from their defaults (an object counts as set)
        unused = [name for name in self._EXACT_ONLY_PARAMS
                  if params[name] is not defaults[name]
                  and not (isinstance(params[name], (str, Real))
                           and params[name] == defaults[name])]
        warnings.warn(
            f"{type(self).__name__}.fit got no weights: it ran the blind Cocktail "
            "Party Attack (FastICA on the gradient rows, Kariyappa et al., ICML "
            "2023), which needs no Gaussian weights but is approximate: it "
            "assumes independent, non-Gaussian samples, recovers no labels, and "
            + ("fixes scale and sign by the bias column." if self.bias else
               "without a bias identifies neither sign nor scale.")
            + " Pass weights=W (the first-layer weights the server chose) for "
            "the exact reconstruction. " + _ROUTING_HINT
            + (f" It used bias, batch_size, n_init (FastICA runs) and "
               f"random_state; {', '.join(unused)} apply to the exact "
               "reconstruction only and were not used." if unused else ""),
            BlindFitWarning)
        if self.verbose >= 2:
            print("[GradientReconstructor] no weights: blind estimate "
                  "(cocktail_party, FastICA)")
        # max_iter bounds the refinement's steps, not FastICA's: its default
        result = cocktail_party(to_host(X_checked), bias=self.bias,
                                batch_size=self.batch_size, n_init=self.n_init,
                                random_state=self.random_state)
        if self.verbose >= 2:
            print(f"[GradientReconstructor] separated {result.batch_size} samples "
                  f"in {result.n_iter} FastICA iterations")
        for name in self._WEIGHTED_ONLY:
            self.__dict__.pop(name, None)
        dtype = getattr(xp, self._input_dtype.name)
        self.samples_ = from_host(result.samples, xp, device, dtype=dtype)
        self.batch_size_ = result.batch_size
        self.sign_identified_ = from_host(result.sign_identified, xp, device,
                                          dtype=xp.bool)
        self.scale_identified_ = from_host(result.scale_identified, xp, device,
                                           dtype=xp.bool)
        self.labels_ = None
        self.loss_ = None
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        self.solver_ = "cocktail_party"
        return self


def _check_activation_namespace(activation, xp, device):
    """Evaluate ``sigma'`` and ``sigma''`` on three points of the input's
    namespace: an activation that cannot run there fails before any work."""
    probe = from_host([-1.0, 0.0, 1.0], xp, device)
    lib = namespace_name(xp)
    hint = (" A custom activation must evaluate in its argument's namespace (e.g. "
            "with array_api_compat.array_namespace(t)): the host calls it on NumPy "
            "arrays, the refinement on the input's.")
    try:
        values = [activation.derivative(probe, order) for order in (1, 2)]
    except Exception as exc:
        raise TypeError(
            f"Activation {activation.name!r} cannot be evaluated on {lib} arrays: "
            f"{exc}{hint}") from exc
    for value in values:
        if namespace_name_of(value) != lib or getattr(value, "shape", None) != (3,):
            raise TypeError(
                f"Activation {activation.name!r} returned a {type(value).__name__} "
                f"for {lib} input, not a {lib} array of the input's shape.{hint}")


def _listing(values):
    """``"1.1e-06, 2.2e-06 and 3e-05"``: values for a message."""
    text = [f"{v:.2g}" for v in values]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def _warn_constant_column(samples):
    """With ``bias=False``, a last coordinate of the same magnitude in every
    recovered sample is the bias input: say so. (A bias spread like the
    weights, as PyTorch's default init draws it, passes the check before the
    fit; the samples then come back with a constant extra column.)"""
    if samples.shape[0] < 2 or samples.shape[1] < 2:
        return
    last = np.abs(samples[:, -1])
    scale = np.max(np.abs(samples))
    if last.min() > 1e-3 * scale and np.ptp(last) <= 1e-6 * last.max():
        warnings.warn(
            f"The last coordinate of every recovered sample has the same "
            f"magnitude ({last.max():.6g}, relative spread "
            f"{np.ptp(last) / last.max():.1g}): it looks like the constant input "
            "of the first layer's bias, which bias=False reads as a feature. Did "
            "you mean bias=True? (From a GradientQuery q: GradientReconstructor("
            "**q.estimator_params).fit(q.grad, **q.fit_params).)",
            IdentifiabilityWarning)


def _r2(residual, X, xp, row_weights=None):
    """``1 - ||residual||^2 / ||X - mean(X)||^2`` (norms that neither
    underflow nor overflow), rows weighted by ``row_weights`` (a column, or
    ``None``); with no variance to explain (one neuron) 1.0 for a fit exact
    to round-off (residual below 1e-12 of ``||X||``) and 0.0 otherwise, as
    scikit-learn's ``r2_score(force_finite=True)`` does for exact
    predictions."""
    if row_weights is None:
        mean = xp.mean(X, axis=0)
    else:
        mean = xp.sum(row_weights * X, axis=0) / xp.sum(row_weights)
        root = xp.sqrt(row_weights)
        residual, X = residual * root, X * root
        mean = mean * root
    residual_norm = frobenius_norm(residual, xp)
    total = frobenius_norm(X - mean, xp)
    if total == 0:
        return 1.0 if residual_norm <= 1e-12 * frobenius_norm(X, xp) else 0.0
    ratio = residual_norm / total
    return 1.0 - ratio * ratio if ratio < 1e150 else -np.inf
