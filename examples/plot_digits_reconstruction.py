"""
=======================================================
Reconstructing eight handwritten digits from a gradient
=======================================================

A client holds a private batch of eight 8 x 8 images of handwritten digits.
The server sends it a two-layer network whose first layer has 20 000 tanh
neurons with Gaussian weights and a Gaussian bias, and receives the gradient
of the loss on the batch. This example shows that this one gradient gives
the batch back — exactly, up to floating-point round-off.

The steps follow :doc:`/theory`: the singular values of the gradient reveal
the batch size, a Hermite moment tensor decomposed by Jennrich's algorithm
gives approximate samples, a search of the gradient's column space started
from each of them finds the exact samples one at a time, and a
Levenberg-Marquardt fit of the exact gradient model polishes the batch.
"""

# %%
# The private batch
# -----------------
# :func:`skrecon.datasets.load_digits_batch` draws distinct images from
# scikit-learn's digits data set, with pixels scaled to [0, 1]; each image is
# one row of 64 pixels.
import matplotlib.pyplot as plt
import numpy as np

from skrecon import GradientReconstructor
from skrecon.clients import make_gradient_query
from skrecon.datasets import load_digits_batch
from skrecon.metrics import reconstruction_report

batch, labels = load_digits_batch(8, random_state=0)
print("batch:", batch.shape, "labels:", labels)

# %%
# One gradient query
# ------------------
# :func:`skrecon.clients.make_gradient_query` plays the server (it draws the
# network: 20 000 neurons, weights of standard deviation ``1/sqrt(64)``, a
# Gaussian bias) and the client (one exact forward and backward pass with a
# squared loss). The server observes the first layer's gradient ``q.grad``,
# one row per neuron with the bias gradient as the last column, and knows
# the weights it drew, ``q.weights`` and ``q.output_weights``.
q = make_gradient_query(batch, n_neurons=20000, bias="gaussian", random_state=0)
print(q)
print("gradient:", q.grad.shape, " weights:", q.weights.shape,
      " output weights:", q.output_weights.shape)

# %%
# Reconstruction
# --------------
# :class:`~skrecon.GradientReconstructor` needs to know the
# activation and that the last column is a bias; the weights are passed as
# fit metadata. The batch size is not given: it is read off the gradient.
rec = GradientReconstructor(activation="tanh", bias=True, random_state=0)
rec.fit(q.grad, **q.fit_params)

print("estimated batch size:", rec.batch_size_)
print(f"relative gradient residual of the fitted model: {rec.gradient_residual_:.1e}")

# %%
# The batch size is visible in the spectrum of the gradient: every gradient
# row is a combination of the eight samples (with the bias input appended),
# so the gradient has rank eight. Its ninth singular value is at the level
# of round-off.
sv = rec.moments_.singular_values_
fig, ax = plt.subplots(figsize=(5, 3))
ax.semilogy(np.arange(1, len(sv) + 1), sv / sv[0], "o-", ms=3)
ax.axvline(rec.batch_size_ + 0.5, color="C3", ls="--", label="estimated batch size")
ax.set_xlabel("index k")
ax.set_ylabel("singular value s_k / s_1")
ax.set_title("Spectrum of the first-layer gradient")
ax.legend()
fig.tight_layout()

# %%
# How good is it?
# ---------------
# The reconstruction comes back in an arbitrary order.
# :func:`skrecon.metrics.reconstruction_report` matches each true image to a
# reconstructed one (Hungarian algorithm on the cosine similarity) and
# reports per-image cosine similarity, relative error and PSNR. Pixels lie in
# [0, 1], so ``data_range=1.0``. A PSNR above 200 dB means the error is at
# the level of float64 round-off.
report = reconstruction_report(batch, rec.samples_, data_range=1.0)

print(" image  label   cosine   rel. error   PSNR (dB)")
for i in range(len(batch)):
    print(f"{i:6d} {labels[i]:6d} {report.cosine[i]:8.6f} "
          f"{report.relative_error[i]:12.2e} {report.psnr[i]:11.1f}")

# %%
# Originals and reconstructions
# -----------------------------
# Top row: the client's private images. Bottom row: what the server
# reconstructed from the gradient, matched to the originals.
reconstructed = rec.samples_[report.permutation]

fig, axes = plt.subplots(2, len(batch), figsize=(1.2 * len(batch), 2.9))
for i in range(len(batch)):
    for row, images in enumerate((batch, reconstructed)):
        ax = axes[row, i]
        ax.imshow(images[i].reshape(8, 8), cmap="gray_r", vmin=0.0, vmax=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[1, i].set_xlabel(f"{report.psnr[i]:.0f} dB", fontsize=8)
axes[0, 0].set_ylabel("original")
axes[1, 0].set_ylabel("recovered")
fig.suptitle("Eight private digits and their reconstruction from one gradient")
fig.tight_layout()
plt.show()

# %%
# What made this exact
# --------------------
# * The first layer has a **bias**: its gradient column carries the input
#   constant 1, which pins the scale and the sign of every sample. Without
#   a bias, tanh leaves the sign of each image undetermined
#   (``sign_identified_`` would be False).
# * The gradient is **exact**: the model ``g_j = sum_i (a_j . u_i)
#   tanh'(w_j . x_i + b_j) x_i`` holds to round-off, so each sample's
#   search, and the final Levenberg-Marquardt fit, drive the residual to
#   round-off too. With a noisy gradient (a defence) they return the
#   least-squares fit instead.
# * 20 000 neurons make the moment tensor accurate (its error shrinks like
#   ``1/sqrt(n_neurons)``), so its components are good starts. The searches
#   do not depend on them: from random directions alone (``init="random"``)
#   they find the same eight samples.
