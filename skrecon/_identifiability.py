"""What the gradient identifies of each recovered sample, and the warnings.

Plain functions of host arrays, called by the functional core
(:func:`skrecon._batch.reconstruct_batch`) once the search is done: the
samples in input coordinates and their canonical order, the sign and norm
conventions where the gradient cannot tell them (:ref:`theory-f3`), the
samples that an affine stretch of the activation leaves unresolved, the rows
that count as found, each sample's weight in the moment tensor, and the
verdict on the fit. They issue no warning: they return the messages, in
order, and the estimator issues them.
"""

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import Bunch

from ._array_api import to_host
from .exceptions import IdentifiabilityWarning
from .refine import is_piecewise_linear

__all__ = ["explains_gradient", "has_even_derivative", "sign_and_scale",
           "unresolved_samples",
           "moment_weights", "identify", "constant_column_messages", "label_messages",
           "verdict_warnings"]


def has_even_derivative(activation):
    """Whether ``sigma'`` is even (its declared flag, or checked on a grid)."""
    if activation.even_derivative is not None:
        return bool(activation.even_derivative)
    t = np.linspace(0.05, 4.0, 40)
    d = activation.derivative(t, 1)
    return bool(np.allclose(d, activation.derivative(-t, 1), rtol=1e-9, atol=1e-12))


def sign_and_scale(samples, U, activation, bias):
    """The conventions where the gradient cannot tell sign or norm.

    Without a bias, an even ``sigma'`` gives ``(x_i, u_i)`` and
    ``(-x_i, -u_i)`` the same gradient (each sample is returned with a
    non-negative coordinate sum), and a scale-free ``sigma'`` gives
    ``(x_i, u_i)`` and ``(c x_i, u_i / c)`` the same gradient (unit norm);
    each with the text of an :class:`~skrecon.exceptions.IdentifiabilityWarning`.

    Returns ``(samples, U, sign_identified, scale_identified, messages)``,
    the flags bool ``(B,)``.
    """
    n = samples.shape[0]
    messages = []
    even = has_even_derivative(activation)
    sign_ok = np.full(n, bool(bias) or not even)
    scale_ok = np.full(n, bool(bias) or not activation.scale_free)
    if not bias and even:
        flip = np.where(samples.sum(axis=1) < 0, -1.0, 1.0)
        samples, U = samples * flip[:, None], U * flip[:, None]
        messages.append(
            f"The sign of each sample is not identifiable: activation "
            f"{activation.name!r} has an even derivative and the first layer "
            "has no bias, so (x_i, u_i) and (-x_i, -u_i) give the same "
            "gradient. Samples are returned with non-negative coordinate sums; "
            "sign_identified_ is False.")
    if not bias and activation.scale_free:
        norms = np.linalg.norm(samples, axis=1)
        samples, U = samples / norms[:, None], U * norms[:, None]
        messages.append(
            f"The norm of each sample is not identifiable: activation "
            f"{activation.name!r} has a scale-free derivative and the first "
            "layer has no bias, so (x_i, u_i) and (c x_i, u_i / c) give the "
            "same gradient. Samples are returned with unit norm; "
            "scale_identified_ is False.")
    return samples, U, sign_ok, scale_ok, messages


def unresolved_samples(activation, samples, W, precision):
    """Samples the gradient resolves no better than ``precision`` (without a
    bias): ``(norm, sample, messages)``, the flags bool ``(B,)``, with the
    warnings' texts.

    Without a bias a sample shows only through the shape of ``sigma'(t)``,
    ``t = W x_i`` over the neurons. Where ``sigma'`` is affine in ``t`` on
    the sample to within ``precision`` (the reconstructor passes 1000 x the
    gradient's eps, or 10 x its noise level) its term is a quadratic form
    that any rotation of the samples reproduces: neither its direction nor
    its norm is resolved (softplus at 0.03 of unit scale in float32 came
    back at cosines down to 0.75, every row flagged found). Its norm alone
    is unresolved where scaling it, ``t sigma''(t)`` against ``sigma'(t)``,
    changes the gradient by less (a float32 tanh sample at 1e-3 of the
    others' scale came back 4.8 times too long).
    """
    t = W @ samples.T  # (m, B) pre-activations
    slope = activation.derivative(t, 1)
    centred_t = t - t.mean(axis=0)
    centred_s = slope - slope.mean(axis=0)
    with np.errstate(all="ignore"):
        beta = np.sum(centred_t * centred_s, axis=0) / np.sum(centred_t**2, axis=0)
        size = np.linalg.norm(slope, axis=0)
        affine = np.linalg.norm(centred_s - np.nan_to_num(beta) * centred_t,
                                axis=0) / size
        curvature = np.linalg.norm(t * activation.derivative(t, 2), axis=0) / size
    # (sigma' = 0 on every neuron: no verdict)
    affine, curvature = (np.nan_to_num(r, nan=np.inf) for r in (affine, curvature))
    sample = affine < precision
    norm = sample | (curvature < precision)
    messages = []
    if np.any(sample):
        messages.append(
            f"Sample(s) {np.flatnonzero(sample).tolist()} are not resolved: "
            f"activation {activation.name!r} is affine on their pre-activations "
            f"to within the gradient's precision (relative departure "
            f"{affine[sample].min():.2g} < {precision:.2g}), and without a bias "
            "an affine slope leaves their direction and norm undetermined "
            "(found_ and scale_identified_ are False for them).")
    if np.any(norm & ~sample):
        weak = norm & ~sample
        messages.append(
            f"The norm of sample(s) {np.flatnonzero(weak).tolist()} is not "
            f"resolved: their pre-activations are so small that activation "
            f"{activation.name!r} is linear on them to within the gradient's "
            f"precision (curvature ratio {curvature[weak].min():.2g} < "
            f"{precision:.2g}), and without a bias only the curvature fixes "
            "a norm. Their directions stand; their norms may be far off "
            "(scale_identified_ is False for them).")
    return norm, sample, messages


def moment_weights(activation, samples, proj, *, order, bias, bias_std, bias_mean):
    """Each recovered sample's weight in the moment tensor,
    ``mu_order(tau_i) tau_i^(order - 1)`` (host ``(B,)``), and the warning's
    text for those where it nearly vanishes (the tensor step cannot see
    them): ``(weights, messages)``."""
    x_aug = np.hstack([samples, np.ones((len(samples), 1))]) if bias else samples
    scaled = x_aug * proj.column_scale
    n_in = proj.hermite_basis.shape[0]
    tau = np.linalg.norm(scaled[:, :n_in], axis=1)
    if bias_std > 0:
        tau = np.sqrt(tau**2 + bias_std**2)
    tau = np.maximum(tau, 1e-12)
    weights = activation.mu(order, tau, bias_mean) * tau ** (order - 1)
    scale = np.max(np.abs(activation.mu(1, tau, bias_mean)))
    small = np.flatnonzero(np.abs(weights) < 1e-3 * scale)
    messages = []
    if small.size:
        messages.append(
            f"mu_{order} nearly vanishes at the recovered norm of sample(s) "
            f"{small.tolist()} (activation {activation.name!r}): their weight "
            "in the moment tensor is ~0, so the tensor step cannot see them; "
            "check them against gradient_residual_.")
    return weights, messages


def identify(V, U, found, misfits, proj, span, activation, W, *, bias, samples=None):
    """The samples in input coordinates and what the gradient identifies of
    each.

    Parameters
    ----------
    V, U : ndarray of shape (B, B) and (B, K)
        Samples in span coordinates and their signals (host), from the search.
    found, misfits : ndarray of shape (B,)
        The search's verdict per sample, and its column-space misfit.
    proj : _Projection
        The query in span coordinates (its bases and column scale).
    span : Span
        The span (precision, noise level, the batch size its spectrum shows,
        full column rank).
    activation : Activation
    W : array of shape (n_neurons, n_cols)
        The first-layer weights (read without a bias, for a smooth
        activation, to tell which samples the activation resolves).
    bias : bool
    samples : ndarray of shape (B, n_inputs) or None
        The samples in input coordinates where a fit there refined them
        (they then stand for the rows of ``V``).

    Returns
    -------
    identified : Bunch
        ``samples`` ``(B, n_inputs)``, ``U`` and ``V`` (the search's span
        coordinates) in a canonical order
        (decreasing projection on a fixed pseudo-random direction, so that
        it depends neither on the search nor on the library);
        ``sign_identified``, ``scale_identified``, ``found``, ``unresolved``
        (bool ``(B,)``), ``misfits``, ``below_spectrum`` (fewer samples
        than the spectrum shows: no row is a sample) and ``messages``, the
        :class:`~skrecon.exceptions.IdentifiabilityWarning` texts in order.
    """
    n = V.shape[0]
    if samples is None:
        x_aug = (V @ to_host(proj.scaled_basis).T) / proj.column_scale
        samples = x_aug[:, :-1] / x_aug[:, -1:] if bias else x_aug
    samples, U, sign_ok, scale_ok, messages = sign_and_scale(samples, U, activation, bias)
    if not bias:
        messages += constant_column_messages(samples)
    # a canonical order: by the projection on a fixed direction, so that
    # it does not depend on which search (or which library) found them
    direction = np.random.default_rng(0).standard_normal(samples.shape[1])
    order = np.argsort(-(samples @ direction), kind="stable")
    samples, U = samples[order], U[order]
    found, misfits = found[order], misfits[order]
    unresolved = np.zeros(n, dtype=bool)
    if not bias and not activation.scale_free:
        precision = max(1e3 * np.finfo(span.precision).eps, 10 * span.noise_level)
        norm_weak, unresolved, more = unresolved_samples(activation, samples, to_host(W),
                                                         precision)
        messages += more
        scale_ok &= ~norm_weak
        found = found & ~unresolved
    shown = span.shown_batch_size or n
    below_spectrum = shown > n
    if below_spectrum:
        # fewer samples than the spectrum shows: none is a sample of this
        # gradient, whatever its misfit in the truncated span (errors up
        # to 0.12 at 6 of 8 digits, all flagged found; the
        # BatchSizeWarning says so)
        found = np.zeros_like(found)
    if span.full_column_rank:
        # a gradient of full column rank without a white-noise bulk: the
        # batch may have as many samples as columns, or more, and then
        # no row is a sample of it, whatever its misfit (d = 8, B = 12:
        # two of three rows flagged found, both wrong; the warnings say so)
        found = np.zeros_like(found)
    return Bunch(samples=samples, U=U, V=V[order], order=order, sign_identified=sign_ok,
                 scale_identified=scale_ok,
                 found=found, misfits=misfits, unresolved=unresolved,
                 below_spectrum=below_spectrum, messages=messages)


def constant_column_messages(samples):
    """With ``bias=False``, a last coordinate of the same magnitude in every
    recovered sample is the bias input: say so. (A bias spread like the
    weights, as PyTorch's default init draws it, passes the check before the
    fit; the samples then come back with a constant extra column.)"""
    if samples.shape[0] < 2 or samples.shape[1] < 2:
        return []
    last = np.abs(samples[:, -1])
    scale = np.max(np.abs(samples))
    if last.min() > 1e-3 * scale and np.ptp(last) <= 1e-6 * last.max():
        return [
            f"The last coordinate of every recovered sample has the same "
            f"magnitude ({last.max():.6g}, relative spread "
            f"{np.ptp(last) / last.max():.1g}): it looks like the constant input "
            "of the first layer's bias, which bias=False reads as a feature. Did "
            "you mean bias=True? (From a GradientQuery q: GradientReconstructor("
            "**q.estimator_params).fit(q.grad, **q.fit_params).)"]
    return []


def label_messages(loss, loss_, labels, n_unlike, n_ambiguous, n, K):
    """The warnings about the labels read off ``n`` signals of ``K``
    outputs (:func:`skrecon._labels.infer_labels`: ``labels``, the loss
    inferred ``loss_``, the rows unlike cross-entropy and the ambiguous
    ones), for the estimator's ``loss``."""
    messages = []
    if labels is None and loss == "auto" and K >= 3 and n:
        messages.append(
            f"labels_ is None: {n_unlike} of {n} recovered signals do not "
            "look like softmax cross-entropy (coordinates summing to ~0, one of "
            "them carrying half of their absolute sum). Either the loss is not "
            "cross-entropy (pass loss='squared' to say so), or the net is "
            "deeper than two layers, whose first-layer signals are not the "
            "output's: read the labels through the output layer with "
            "skrecon.torch.labels_from_output_layer(model, rec.samples_). "
            "loss='cross_entropy' reads guesses anyway.")
    if labels is not None and n_unlike:
        messages.append(
            f"{n_unlike} of {n} recovered signals do not look like "
            "softmax cross-entropy (coordinates summing to ~0, one of them "
            "carrying half of their absolute sum): their labels are guesses "
            "(the coordinate of odd sign, or of largest magnitude). Check "
            "loss, or gradient_residual_.")
    if labels is not None and n_ambiguous:
        messages.append(
            f"{n_ambiguous} of {n} samples are confidently misclassified "
            "by the model (two signal coordinates of equal magnitude) and "
            "their sign is not identified (no bias): their label is one of "
            "the two, a guess.")
    return messages


def _listing(values):
    """``"1.1e-06, 2.2e-06 and 3e-05"``: values for a message."""
    text = [f"{v:.2g}" for v in values]
    return text[0] if len(text) == 1 else ", ".join(text[:-1]) + " and " + text[-1]


def verdict_warnings(search, identified, span, activation, *, n_outputs,
                     gradient_residual, auto_batch_size, max_iter, needed_neurons):
    """The warnings on the fit as a whole, ``[(category, message), ...]`` in
    order: too few neurons to search; rows that fit the round-off but not
    the stated precision; samples not found (with the remedy that fits the
    cause); a polish that did not converge, or that stopped far above the
    noise level.

    ``search`` is the in-span result (:func:`skrecon._core.reconstruct_in_span`),
    ``identified`` that of :func:`identify`; ``needed_neurons`` the live
    neurons the search needs (:func:`skrecon._core.min_neurons`).
    """
    n = len(identified.found)
    found, unresolved, misfits, U = (identified.found, identified.unresolved,
                                     identified.misfits, identified.U)
    n_found = int(np.sum(found))
    if not search.identifiable:
        return [(IdentifiabilityWarning,
                 f"The layer has {search.n_live_neurons} neurons (with a nonzero output "
                 f"weight) for {n} samples with {n_outputs} output(s): the column-space "
                 f"search finds samples from about max(5 B, 2 (B + K)) = "
                 f"{needed_neurons} neurons (measured at trained weights, tanh: batches "
                 "of 16 / 32 / 48 exact from 72 / 144 / 240 neurons, none found at 64 / "
                 "128 / 224), so it was not run: samples_ holds guesses and found_ is "
                 f"all False. Query a layer of at least {needed_neurons} neurons, or a "
                 "smaller batch.")]
    out = []
    below_spectrum = identified.below_spectrum
    bounds = search.get("error_bounds")
    certified = bounds is not None
    weak = (~found & ~unresolved & (misfits < search.fit_accept)
            if (search.accept < search.fit_accept or certified) and not below_spectrum
            else np.zeros(n, dtype=bool))
    precision = np.dtype(span.precision)
    if np.any(weak) and certified:
        bounds = bounds[identified.order]
        share = np.linalg.norm(U, axis=1) / max(np.max(np.linalg.norm(U, axis=1)),
                                                np.finfo(float).tiny)
        rows = np.flatnonzero(weak)
        out.append((IdentifiabilityWarning,
            f"Rows {rows.tolist()} of samples_ fit the {precision.name} gradient to "
            "its round-off, but the gradient does not pin them: their first-order "
            "error bounds (the step still to go and five standard errors, along the "
            "directions their column-space misfit barely sees) are "
            f"{_listing(bounds[rows])} and do not bound their errors by "
            f"{search.stated_precision:.0e}".replace("e-0", "e-")
            + " (found_ is False there). Such a direction is "
            "the difference of near-duplicate samples, which the gradient barely "
            "separates (a row can then be a blend of two: 16 digits with 4 "
            "near-duplicates 1e-4 apart gave rows 2e-5 to 1e-4 off), or the "
            "row's signal is at the round-off of the others' (here "
            f"{_listing(share[rows])} of the largest one's)."))
    elif np.any(weak):
        share = np.linalg.norm(U, axis=1) / max(np.max(np.linalg.norm(U, axis=1)),
                                                np.finfo(float).tiny)
        rows = np.flatnonzero(weak)
        single = precision == np.float32
        out.append((IdentifiabilityWarning,
            f"Rows {rows.tolist()} of samples_ fit the {precision.name} gradient to "
            "its round-off, but their misfits"
            + (" (ReLU-type: five times their standard errors)"
               if search.get("slopes") is not None else "")
            + " do not bound their errors by "
            f"{search.stated_precision:.0e}".replace("e-0", "e-") + " (found_ is False there"
            + ("; such float32 rows were measured at 5e-5 to 2e-2). " if single
               else "). ")
            + f"Their per-sample signals are {_listing(share[rows])} of the "
            "largest one's: a sample the model already fits almost perfectly "
            "(softmax close to its one-hot label) sends almost no gradient, and "
            "its share sits at the round-off of the others'"
            + ("; a float32 parameter update (theta - theta') / lr carries more "
               "round-off still. A float64 model's gradient recovers them."
               if single else ".")))
    shown = span.shown_batch_size or n
    residual = f"{gradient_residual:.3g}"
    if (n_found < min(n, shown)
            and not below_spectrum and np.any(~found & ~unresolved & ~weak)):
        # (rows the activation cannot resolve, or whose signal is at the
        # round-off, were warned about above)
        missing = np.flatnonzero(~found & ~unresolved & ~weak).tolist()
        if search.n_searched_found == n and is_piecewise_linear(activation):
            # every search succeeded; the exact finish did not confirm them
            out.append((ConvergenceWarning,
                f"The searches found all {n} samples, but the pattern iteration "
                f"of the piecewise-linear activation did not fit the gradient "
                f"to its noise level (relative gradient residual "
                f"{residual}): the samples are approximate, "
                "and found_ is False for all of them. More starts do not help; "
                "a less noisy gradient or a wider layer does."))
        elif span.full_column_rank:
            out.append((ConvergenceWarning,
                f"No row of samples_ is flagged found (relative gradient "
                f"residual {residual}): the gradient has full "
                "column rank (see the BatchSizeWarning), so the batch may have "
                "at least as many samples as the gradient's columns, and then "
                "neither more starts nor a wider layer can recover it."))
        else:
            dependent = ""
            if auto_batch_size and span.noise_level < 1e-8:
                # an exact gradient's rank is the batch's rank, which is
                # the batch size only for linearly independent samples
                dependent = (
                    f" The gradient's spectrum falls to round-off after {n} "
                    f"values: if the batch has more than {n} samples, they are "
                    f"linearly dependent (of rank {n}, e.g. images with pixels "
                    "blank in every sample), no sample satisfies the "
                    "column-space condition, and neither more starts nor a "
                    "wider layer recovers them; given the batch size, "
                    "skrecon.overcomplete.reconstruct_overcomplete reaches "
                    "batches a few samples beyond the rank.")
            if n_found == 0 and search.n_starts >= n:
                # the layer is wide enough (the branch above): searches, at
                # least one a sample, that find no sample at all point at the
                # model, not at width or starts
                # (a wrong activation: 0 of 8 digits in 48 searches, residual
                # 0.2-0.7, for sigmoid, GELU, ReLU or softplus on tanh)
                activation_name = getattr(activation, "name", activation)
                single = np.dtype(span.precision) == np.float32
                cause = ("most likely the model does not match the gradient, or "
                         "float32 round-off hides the samples (float32 batches of a "
                         "ReLU-type layer: 8 of 8 found at a Gaussian query, none of "
                         "32 in a tester's run; the same gradient in float64 gives "
                         "32 of 32)" if single and activation.scale_free else
                         "most likely the model does not match the gradient")
                out.append((ConvergenceWarning,
                    f"None of {n} samples was found in {search.n_starts} searches "
                    f"(relative gradient residual {residual}), "
                    f"although {search.n_live_neurons} neurons are enough for "
                    f"{n} samples: {cause}. "
                    f"Check activation (here {activation_name!r}), bias and "
                    "output_weights (and loss); only when they are right can more "
                    "starts (max_starts) help." + dependent + " samples_ are best "
                    "guesses (found_ is all False)."))
            else:
                out.append((ConvergenceWarning,
                    f"Only {n_found} of {n} samples were found in "
                    f"{search.n_starts} searches (relative gradient residual "
                    f"{residual}); rows {missing} of samples_ are "
                    "best guesses (found_ is False there). Increase max_starts (with "
                    "init='auto' or 'random': init='tensor' tries the tensor's factors "
                    "only), or query a wider layer." + dependent))
    elif search.refinement.status == 0:
        # (a polish that stops without descent is judged by its residual
        # below: at the noise level it is the least-squares fit of a noisy
        # gradient -- 4 digits at 1e-8 relative noise stopped so at 1.0e-8
        # with one BLAS thread on the Nehalem kernel)
        out.append((ConvergenceWarning,
            f"The joint polish did not converge in {max_iter} iterations "
            f"(relative gradient residual {residual}); increase max_iter."))
    elif not explains_gradient(gradient_residual, span.noise_level):
        out.append((ConvergenceWarning,
            f"The refinement stopped at a relative gradient residual of "
            f"{residual}, far above the gradient's estimated "
            f"noise level {span.noise_level:.3g}: the batch does not "
            "explain the gradient (a local minimum, a wrong batch size, or a "
            "model that does not match the query). Try a larger max_starts, pass "
            "batch_size, or check activation, bias and output_weights."
            + (" No row is certified: each passed its own check, but together "
               "they do not explain the gradient (near-duplicate samples can pass "
               "one by one); found_ is all False." if n_found == n else "")))
    return out


def explains_gradient(gradient_residual, noise_level):
    """Whether a batch's relative gradient residual is at the noise level:
    a batch whose every row is exact explains its gradient to it, so rows
    that leave more cannot all be certified."""
    return gradient_residual <= max(1e-6, 30 * noise_level)
