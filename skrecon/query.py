"""The gradient query: what a client returns and what the server knows.

:class:`GradientQuery` is skrecon's one query type. The simulated client
(:func:`skrecon.clients.make_gradient_query`) builds it with its private
ground truth; the adapters (:func:`skrecon.torch.first_layer_query`,
:func:`skrecon.flower.update_query`) read it off a model. The reconstructor
takes it in one line: ``GradientReconstructor(**q.estimator_params).fit(q.grad,
**q.fit_params)``. (It is also importable as ``skrecon.clients.GradientQuery``.)
"""

from dataclasses import dataclass

import numpy as np

from ._mlp import forward, per_sample_loss, reduce_loss

__all__ = ["GradientQuery"]


@dataclass(frozen=True, eq=False)
class GradientQuery:
    """One gradient query: what a client returns and what the server knows.

    The one query type of skrecon: :func:`make_gradient_query` builds it for
    a simulated client, :func:`skrecon.torch.first_layer_query` reads it off
    a PyTorch model. ``grad``, ``weights`` and ``output_weights`` are the
    inputs of the reconstructor, and ``bias`` and ``activation`` its
    parameters: ``GradientReconstructor(**q.estimator_params).fit(q.grad,
    **q.fit_params)``; ``batch`` and ``targets`` are the private ground truth, known
    only for a simulated query (``None`` for one read off a model, as are
    ``loss``, ``reduction``, ``layers``, ``gradients`` and ``signals``).

    Attributes
    ----------
    grad : ndarray of shape (n_neurons, n_inputs) or (n_neurons, n_inputs + 1)
        ``dL/dW`` of the first layer; when the first layer has a bias
        (``bias`` ``"zero"`` or ``"gaussian"``) ``dL/db`` is the last column.
    weights : ndarray, same shape as ``grad``
        The first layer's ``W``, with ``b`` as the last column when there is a
        bias.
    output_weights : ndarray of shape (n_neurons, n_next)
        Transpose of the next layer's weight matrix (``n_next = n_outputs``
        for a 2-layer net, the first hidden width otherwise).
    activation : str, Activation or None
        The first layer's activation, as given (read off a PyTorch model:
        the skrecon name of its activation module, ``None`` when there is
        none to read).
    bias : {"none", "zero", "gaussian"}
        The first layer's bias mode (read off a PyTorch model: ``"none"``
        without a bias, ``"zero"`` when every bias is 0, else
        ``"gaussian"``, which :func:`skrecon.torch.gaussian_reinit_` draws).
    loss : {"squared", "cross_entropy"} or None
    reduction : {"mean", "sum"} or None
    targets : ndarray
        The targets used: floats ``(B,)`` or ``(B, K)`` (squared loss), or
        int64 labels ``(B,)`` (cross-entropy).
    batch : ndarray of shape (B, n_inputs)
        A copy of the private batch, in the query's dtype.
    layers : list of dict
        Every layer in order, ``{"weight": (out, in), "bias": (out,) or None,
        "activation": name, Activation or None}``; the last one is the linear
        output layer.
    gradients : list of dict
        ``{"weight": dL/dweight, "bias": dL/dbias or None}``, one per layer:
        the full-model gradient (with DP, the privatised one).
    signals : ndarray of shape (B, n_next)
        Per-sample signals ``u_i = dL/dz_2`` at the second layer's
        pre-activation (``1/B`` and, with DP, the clipping factor included;
        noise excluded), so that without noise
        ``grad[j, :d] = sum_i (output_weights[j] @ signals[i]) *
        act'(w_j . x_i + b_j) * x_i`` exactly.
    weight_std, bias_std : float
        Standard deviations of the first layer's weights and (Gaussian) bias;
        ``bias_std`` is 0.0 unless ``bias="gaussian"``.
    dp_clip_norm : float or None
        The client's per-example clipping norm (DP-SGD), ``None`` without
        clipping.
    dp_noise_multiplier : float
        The client's DP-SGD noise multiplier (noise std over
        ``dp_clip_norm``), 0.0 without noise.
    layer_names : tuple of (str, str) or None
        Read off a PyTorch model: the module names of the first layer and of
        the next ``nn.Linear`` (``("0", "2")`` in an ``nn.Sequential``).
    noise_std : ndarray of the shape of ``grad``, or None
        The known standard deviation of each entry of ``grad``'s error
        (float64, the gradient's units): the round-off of a parameter
        update, set by :func:`skrecon.flower.update_query`; in
        ``fit_params`` when not ``None``.

    See Also
    --------
    make_gradient_query : Builds a query.
    skrecon.GradientReconstructor : Reconstructs ``batch`` from ``grad``.

    Examples
    --------
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_digits_batch
    >>> batch, _ = load_digits_batch(2, random_state=0)
    >>> q = make_gradient_query(batch, n_neurons=100, bias="gaussian", random_state=0)
    >>> q.grad.shape, q.weights.shape, q.output_weights.shape
    ((100, 65), (100, 65), (100, 1))
    >>> q.batch_size, q.n_neurons, q.has_bias
    (2, 100, True)
    >>> sorted(q.fit_params), q.estimator_params
    (['output_weights', 'weights'], {'bias': True, 'activation': 'tanh'})
    """

    grad: np.ndarray
    weights: np.ndarray
    output_weights: np.ndarray
    activation: object = None
    bias: str = "none"
    loss: str = None
    reduction: str = None
    targets: np.ndarray = None
    batch: np.ndarray = None
    layers: list = None
    gradients: list = None
    signals: np.ndarray = None
    weight_std: float = None
    bias_std: float = 0.0
    dp_clip_norm: float = None
    dp_noise_multiplier: float = 0.0
    layer_names: tuple = None
    noise_std: np.ndarray = None

    @property
    def batch_size(self):
        """Number of private samples ``B`` (int), ``None`` when the batch is
        unknown (a query read off a model)."""
        return None if self.batch is None else self.batch.shape[0]

    @property
    def n_neurons(self):
        """Number of first-layer neurons ``m`` (int)."""
        return self.grad.shape[0]

    @property
    def has_bias(self):
        """Whether ``grad`` and ``weights`` carry a bias column (bool)."""
        return self.bias != "none"

    @property
    def fit_params(self):
        """The reconstructor's fit metadata (dict).

        ``{"weights": ..., "output_weights": ...}``, and ``"noise_std"``
        where it is known (a parameter update's round-off), so that
        ``rec.fit(q.grad, **q.fit_params)`` passes them all.
        """
        params = {"weights": self.weights, "output_weights": self.output_weights}
        if self.noise_std is not None:
            params["noise_std"] = self.noise_std
        return params

    @property
    def estimator_params(self):
        """What the query knows of the reconstructor's parameters (dict).

        ``{"bias": has_bias}``, and ``"activation"`` when it is known, so
        that one line goes from a query to a fit:
        ``GradientReconstructor(**q.estimator_params).fit(q.grad,
        **q.fit_params)``. Other parameters (``random_state``,
        ``batch_size``, ...) can be given beside it.
        """
        params = {"bias": self.has_bias}
        if self.activation is not None:
            params["activation"] = self.activation
        return params

    def loss_value(self, batch=None, layers=None):
        """The loss ``L`` by a forward pass (no DP: clipping has no loss).

        Parameters
        ----------
        batch : ndarray of shape (B, n_inputs), default=None
            Defaults to ``self.batch``.
        layers : list of dict, default=None
            Same structure as ``self.layers``; defaults to it. Handy for
            finite differences: copy, perturb one entry, evaluate.

        Returns
        -------
        loss : float
            The client's loss on ``batch`` with ``layers``, with the query's
            loss and reduction.

        Raises
        ------
        ValueError
            If ``batch`` does not have the query's number of samples, or the
            query was read off a model (no targets to evaluate the loss).

        Examples
        --------
        >>> from skrecon.clients import make_gradient_query
        >>> from skrecon.datasets import load_digits_batch
        >>> batch, _ = load_digits_batch(2, random_state=0)
        >>> q = make_gradient_query(batch, n_neurons=100, random_state=0)
        >>> loss = q.loss_value()
        >>> bool(loss >= 0), bool(q.loss_value(batch=batch[::-1] * 0.5) != loss)
        (True, True)
        """
        if self.targets is None:
            raise ValueError(
                "This query was read off a model: its targets and loss are the "
                "client's, unknown here, so the loss cannot be evaluated.")
        batch = self.batch if batch is None else np.asarray(batch)
        layers = self.layers if layers is None else layers
        if batch.ndim != 2 or batch.shape[0] != self.batch.shape[0]:
            raise ValueError(
                f"batch must have shape ({self.batch.shape[0]}, n_inputs), got "
                f"{batch.shape}."
            )
        _, _, output = forward(batch, layers)
        targets = self.targets
        if self.loss == "squared":
            targets = targets.reshape(output.shape)
        losses, _ = per_sample_loss(output, targets, self.loss)
        return float(reduce_loss(losses, self.reduction))

    def __repr__(self):
        if self.layers is None:
            return (
                f"GradientQuery(n_neurons={self.n_neurons}, grad shape "
                f"{self.grad.shape}, layers={self.layer_names}, activation="
                f"{getattr(self.activation, 'name', self.activation)!r}, bias="
                f"{self.bias!r}, dtype={self.grad.dtype})")
        shapes = ", ".join(
            f"{layer['weight'].shape[0]}" for layer in self.layers
        )
        return (
            f"GradientQuery(batch_size={self.batch_size}, n_inputs="
            f"{self.batch.shape[1]}, widths=[{shapes}], activation="
            f"{getattr(self.activation, 'name', self.activation)!r}, bias="
            f"{self.bias!r}, loss={self.loss!r}, reduction={self.reduction!r}, "
            f"dtype={self.grad.dtype})"
        )
