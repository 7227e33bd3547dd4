"""Every warning class of skrecon, in one place.

Each is a :class:`UserWarning` subclass, so ``warnings.simplefilter`` and
``pytest.warns`` can single it out; each message states the number that went
wrong and the remedy that fits its cause. The classes are also importable
from the modules that issue them (``skrecon.moments.BatchSizeWarning``, ...).
"""

__all__ = ["BatchSizeWarning", "BlindFitWarning", "IdentifiabilityWarning",
           "NonGaussianWeightsWarning", "UnknownActivationWarning"]

class BatchSizeWarning(UserWarning):
    """The batch size read off the gradient is uncertain or was reduced.

    Issued when the singular values show no clear gap (``s_B / s_B+1 < 10``:
    noise, or a batch larger than the gradient can identify), or when an
    explicit batch size exceeds the gradient's numerical rank.

    Examples
    --------
    >>> import numpy as np, warnings
    >>> from skrecon import MomentTensorTransformer
    >>> from skrecon.exceptions import BatchSizeWarning
    >>> rng = np.random.default_rng(0)
    >>> X, W = rng.standard_normal((500, 10)), rng.standard_normal((500, 10))
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = MomentTensorTransformer().fit(X, weights=W)
    >>> any(issubclass(w.category, BatchSizeWarning) for w in caught)
    True
    """

class NonGaussianWeightsWarning(UserWarning):
    """The first-layer weights do not look like i.i.d. Gaussian draws.

    The moment tensor rests on Stein's identity for Gaussian weights; with
    other weights it is biased (the refinement may still succeed).

    Examples
    --------
    >>> import numpy as np, warnings
    >>> from skrecon import MomentTensorTransformer
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_digits_batch
    >>> from skrecon.exceptions import NonGaussianWeightsWarning
    >>> batch, _ = load_digits_batch(2, random_state=0)
    >>> q = make_gradient_query(batch, n_neurons=2000, bias="none", random_state=0)
    >>> uniform = np.random.default_rng(0).uniform(-0.2, 0.2, size=q.weights.shape)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     _ = MomentTensorTransformer().fit(q.grad, weights=uniform)
    >>> any(issubclass(w.category, NonGaussianWeightsWarning) for w in caught)
    True
    """

class BlindFitWarning(UserWarning):
    """A fit ran without the query's weights: the result is a blind estimate.

    Issued by :meth:`skrecon.GradientReconstructor.fit` when ``weights`` is
    not given (it then runs :func:`cocktail_party`, whose samples are
    approximate) and by :meth:`skrecon.MomentTensorTransformer.fit` (which
    then computes the span only).

    Examples
    --------
    >>> import warnings
    >>> from skrecon import GradientReconstructor
    >>> from skrecon.exceptions import BlindFitWarning
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_digits_batch
    >>> batch, _ = load_digits_batch(2, random_state=0)
    >>> q = make_gradient_query(batch, n_neurons=50, random_state=0)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     rec = GradientReconstructor(bias=True, random_state=0).fit(q.grad)
    >>> any(issubclass(w.category, BlindFitWarning) for w in caught), rec.solver_
    (True, 'cocktail_party')
    """

class IdentifiabilityWarning(UserWarning):
    """Part of the batch (sign, norm, a sample) is not identifiable.

    Issued by :meth:`GradientReconstructor.fit` when the gradient cannot
    tell a sample's sign (even ``sigma'`` without a bias), its norm
    (scale-free ``sigma'`` without a bias), or when a sample's weight in the
    moment tensor vanishes. The fitted flags ``sign_identified_`` and
    ``scale_identified_`` say which samples are affected.

    Examples
    --------
    >>> import warnings
    >>> from skrecon import GradientReconstructor
    >>> from skrecon.clients import make_gradient_query
    >>> from skrecon.datasets import load_digits_batch
    >>> from skrecon.exceptions import IdentifiabilityWarning
    >>> batch, _ = load_digits_batch(2, random_state=0)
    >>> q = make_gradient_query(batch, n_neurons=1000, bias="none", random_state=0)
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     rec = GradientReconstructor(activation="tanh", random_state=0).fit(
    ...         q.grad, **q.fit_params)
    >>> any(issubclass(w.category, IdentifiabilityWarning) for w in caught)
    True
    >>> rec.sign_identified_
    array([False, False])
    """

class UnknownActivationWarning(UserWarning):
    """The activation of a model's first layer could not be identified.

    Issued by :func:`skrecon.torch.first_layer_query` (and so by
    :func:`skrecon.flower.update_query`) when neither an activation module
    between the first two ``nn.Linear`` layers nor the forward pass itself
    shows one of skrecon's activations. The query's ``activation`` is then
    ``None`` and ``q.estimator_params`` has no ``"activation"``: pass
    ``GradientReconstructor(activation=...)`` yourself, or the
    reconstructor's default (``"tanh"``) is used.

    Examples
    --------
    >>> import warnings
    >>> import pytest
    >>> torch = pytest.importorskip("torch")
    >>> from skrecon.exceptions import UnknownActivationWarning
    >>> from skrecon.torch import first_layer_query
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Hardtanh(),
    ...                             torch.nn.Linear(8, 2)).double()
    >>> model(torch.ones(3, 4, dtype=torch.float64)).sum().backward()
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     q = first_layer_query(model)
    >>> [w.category.__name__ for w in caught], q.activation
    (['UnknownActivationWarning'], None)
    """
