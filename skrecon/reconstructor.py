"""GradientReconstructor: the batch from one gradient query."""

import warnings
from functools import partial
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin, _fit_context, clone
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._array_api import from_host, get_namespace, host_state, to_host
from ._validation import (ROUTING_HINT, check_activation_namespace,
                          check_coefficients, check_fitted_namespace, check_query,
                          check_row_weights, float_dtype_of, transform_namespace)
from .activations import Activation, get_activation
from ._batch import augmented, model_gradient, r2_of_residual, reconstruct_batch
from ._progress import ProgressLine
from ._roundoff import check_noise_std, is_known_roundoff
from ._threads import blas_threads
from .moments import MomentTensorTransformer
from ._streaming import NeuronStream
from .blind import cocktail_party
from .exceptions import BlindFitWarning, IdentifiabilityWarning

__all__ = ["GradientReconstructor", "IdentifiabilityWarning"]

# gradients with at most this many columns are reconstructed with one BLAS
# thread (see GradientReconstructor._fit)
_ONE_THREAD_MAX_COLUMNS = 512




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
        gradient exact to its round-off (float64: the stated precision is a
        relative error of 1e-6; float32, a float32 model's: 1e-4), only rows
        whose first-order error bound is within that precision: the
        Gauss-Newton step still to go plus five standard errors along the
        singular directions of the Jacobian of the row's misfit (smooth
        activations; a ReLU-type float32 row: five standard errors of its
        fit in input coordinates). The rows that fit the round-off but are
        not pinned to that precision -- near-duplicate samples the gradient
        barely separates (a row can be a blend of two: 16 digits with 4
        near-duplicates 1e-4 apart gave rows 2e-5 to 1e-4 off, misfits below
        1e-16), or a sample the model already fits almost perfectly, which
        sends almost no gradient -- are named in an
        :class:`IdentifiabilityWarning`. With a ReLU-type activation and one
        output, samples that share the activation pattern on every neuron
        give exactly the gradient of one sample (their signal-weighted
        mean) and are read as one: the gradient cannot tell, and such a row
        is flagged found (8 digits and a near-duplicate 1e-3 apart: 8
        samples read, one row 4e-4 off). A row
        that was not found is a best guess (a warning says how many). On a
        noisy gradient a found row fits the gradient to its noise level, which
        does not bound its error: eight digits, 20 000 neurons, relative noise
        1e-2 gave errors up to 0.033 on found rows, 3e-2 up to 0.87 (with
        ``batch_size=8`` given, where a ``BatchSizeWarning`` said that the
        weakest samples are at the noise floor). The blind estimate (a fit
        without weights) is approximate and certifies no row: all False.
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

    __metadata_request__fit = {"weights": True, "output_weights": True, "noise_std": True}
    __metadata_request__partial_fit = {"weights": True, "output_weights": True}
    # sample_weight requested too: Pipeline.score with routing passes
    # sample_weight=None, which the router rejects for a score without it
    # (scikit-learn 1.9), and every search over a defence scored NaN
    __metadata_request__score = {"weights": True, "output_weights": True,
                                 "sample_weight": True}

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, *, weights=None, output_weights=None, noise_std=None):
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
        noise_std : float or array-like of the shape of ``X``, default=None
            The known standard deviation of each gradient entry's error, in
            the gradient's units: the round-off of a parameter update
            ``(θ - θ') / lr``, which :func:`skrecon.flower.update_query` puts
            in ``fit_params`` (``eps |θ| / lr``, far above a gradient's own
            round-off). The batch size is then the number of singular values
            above that noise's floor, and where the gradient's noise is that
            round-off, ``found_`` holds rows to the dtype's per-row
            precision. Needs ``weights``. ``None``: both are read off the
            spectrum alone.

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
            if noise_std is not None:
                raise ValueError(
                    "noise_std was given without weights: the blind fit does not "
                    "use it. Pass weights=W too, or drop noise_std.")
            return self._fit_blind(X, output_weights)
        if self.verbose == 1:
            line = ProgressLine()
            try:
                return self._fit(X, weights, output_weights, progress=line,
                                 noise_std=noise_std)
            finally:
                line.close()
        return self._fit(X, weights, output_weights, noise_std=noise_std)

    @_fit_context(prefer_skip_nested_validation=False)
    def partial_fit(self, X, y=None, *, weights=None, output_weights=None,
                    reconstruct=True, noise_std=None):
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
        noise_std : None, default=None
            Not supported when streaming: the known round-off of a
            parameter update (``skrecon.flower.update_query``'s
            ``fit_params``) bounds the spectrum of the whole gradient, which
            the stream does not keep. Any other value raises; fit the whole
            gradient with :meth:`fit` (``noise_std=``), or pass ``batch_size``.

        Returns
        -------
        self : GradientReconstructor

        Raises
        ------
        ValueError
            On the errors of :meth:`fit` for the chunk; if a chunk has other
            columns than the first (scikit-learn's message) or other outputs,
            or comes with weights where the first came without (or the
            reverse); if ``noise_std`` is given.

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
        if noise_std is not None:
            raise ValueError(
                "partial_fit does not take noise_std: the known round-off of a "
                "parameter update bounds the spectrum of the whole gradient, which "
                "a stream of chunks does not keep. Fit the whole gradient with "
                "fit(X, weights=..., output_weights=..., noise_std=...), or stream "
                "without noise_std and pass batch_size if you know it.")
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

    def _fit(self, X, weights, output_weights, progress=None, noise_std=None,
             span=None):
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
        check_activation_namespace(activation, xp, device)
        moments = (MomentTensorTransformer() if self.moments is None
                   else clone(self.moments))
        moments.set_params(activation=activation, bias=self.bias,
                           n_components=self.batch_size)
        # moments._fit_checked bypasses moments.fit's validation: validate its
        # parameters (moments__order, ...) here, with scikit-learn's error.
        moments._validate_params()
        # One BLAS thread for a gradient of few columns: its products are
        # thin (m x B, m x d with small d), where threads cost more than they
        # give (measured: B = 8 digits, 0.95 s with two threads, 0.4 s with
        # one); wide gradients (image patches) keep the machine's threads.
        limits = 1 if X_checked.shape[1] <= _ONE_THREAD_MAX_COLUMNS else None
        with blas_threads(limits):
            return self._reconstruct(X_checked, W, A, activation, moments, progress,
                                     check_noise_std(noise_std, X_checked.shape), span)

    def _reconstruct(self, X_checked, W, A, activation, moments, progress,
                     noise_std=None, streamed=None):
        """The span, the functional core, the fitted attributes."""
        # the query is validated: the moment step takes it with the input's
        # dtype (for its attributes); the moment tensor now for init="tensor",
        # for "auto" when the core's starts need it
        proj, span = moments._fit_checked(X_checked, W, A, tensor=self.init == "tensor",
                                          input_dtype=self._input_dtype,
                                          noise_std=noise_std, streamed=streamed)
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
        result = reconstruct_batch(
            X_checked, W, A, proj, span, activation, bias=self.bias, order=moments.order_,
            bias_std=moments.bias_std_, input_dtype=self._input_dtype, loss=self.loss,
            auto_batch_size=self.batch_size == "auto", init=self.init,
            moment_tensor=partial(moments._tensor_for_starts, proj), n_init=self.n_init,
            max_starts=self.max_starts, max_iter=self.max_iter, tol=self.tol,
            random_state=np.random.default_rng(seed), n_jobs=self.n_jobs,
            verbose=max(self.verbose - 1, 0), progress=progress,
            known_roundoff=is_known_roundoff(noise_std, span.singular_values, n,
                                             span.noise_level))
        self.samples_ = result.samples
        self.sample_coefficients_ = result.signals
        self.batch_size_ = result.batch_size
        self.sign_identified_ = result.sign_identified
        self.scale_identified_ = result.scale_identified
        self.found_ = result.found
        self.n_found_ = result.n_found
        self.sample_misfits_ = result.misfits
        self.n_starts_ = result.n_starts
        self.solver_ = "column_space_search"
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        self.refinement_ = result.refinement
        self.labels_ = result.labels
        self.loss_ = result.loss
        self.gradient_residual_ = result.gradient_residual
        self.moment_weights_ = result.moment_weights
        for category, message in result.warnings:
            warnings.warn(message, category)
        return self

    def _augmented(self, samples):
        """``[samples, 1]`` with a bias, else ``samples`` (their namespace)."""
        return augmented(samples, self.bias)

    def _model_gradient(self, W, A):
        """Gradient predicted by the fitted batch at weights ``W`` (float64)."""
        return model_gradient(self.samples_, self.sample_coefficients_, W, A,
                              get_activation(self.activation), self.bias)

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
            return r2_of_residual(X - self.inverse_transform(self.transform(X)), X, xp,
                       check_row_weights(sample_weight, X, xp))
        if weights is None:
            raise ValueError(
                "GradientReconstructor.score needs the held-out neurons' "
                "weights: call score(X, weights=W). " + ROUTING_HINT)
        X, W, A = check_query(self, X, weights, output_weights, reset=False)
        if A.shape[1] != self.sample_coefficients_.shape[1]:
            raise ValueError(
                f"output_weights has {A.shape[1]} columns but the estimator was "
                f"fitted with {self.sample_coefficients_.shape[1]} outputs.")
        return r2_of_residual(X - self._model_gradient(W, A), X, xp,
                   check_row_weights(sample_weight, X, xp))

    def __getstate__(self):
        # fitted arrays are pickled as NumPy arrays: an estimator fitted on
        # CuPy loads on a machine without a GPU
        return host_state(super().__getstate__())

    def __sklearn_is_fitted__(self):
        # fitted once a batch was reconstructed: partial_fit(reconstruct=False)
        # sets n_neurons_seen_ and nothing else to use
        return hasattr(self, "samples_")

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
        "refinement_", "sample_misfits_", "n_starts_",
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
            "the exact reconstruction. " + ROUTING_HINT
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
        # the blind estimate is approximate: it certifies no row
        self.found_ = from_host(np.zeros(result.batch_size, dtype=bool), xp, device,
                                dtype=xp.bool)
        self.n_found_ = 0
        self.n_iter_ = result.n_iter
        self.converged_ = result.converged
        self.solver_ = "cocktail_party"
        return self
