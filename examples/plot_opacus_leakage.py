"""
=====================================================
DP-SGD with Opacus: how much leaks, against epsilon
=====================================================

An auditor protects an FL client with `Opacus <https://opacus.ai>`_: every
sample's gradient is clipped to norm ``C`` and Gaussian noise of std
``noise_multiplier * C`` is added to their sum (DP-SGD). How much of the
client's batch does one such update still give away, and at what privacy
guarantee?

:func:`skrecon.opacus.leakage_curve` plays the round for each noise
multiplier: the server draws a random first layer, the client takes one
DP-SGD step with Opacus's ``PrivacyEngine``, and skrecon attacks the update.
Next to the matched cosine, PSNR and label accuracy it reports Opacus's own
``epsilon`` (its RDP accountant, ``delta = 1e-5``), in the table schema of
every skrecon leakage curve (:func:`skrecon.evaluation.leakage_curve`):
the defence is Opacus's ``PrivacyEngine``, its ``strength`` the noise
multiplier. It needs Opacus (``pip install "skrecon[opacus]"``).
"""

# %%
# The client and the grid
# -----------------------
# Eight private digits, a two-layer tanh classifier of 2048 neurons in
# float64, Opacus's usual clipping norm ``C = 1`` and learning rate 0.1.
# The attack knows the batch size (a Flower client reports it); on a noisy
# gradient its searches cannot reach a zero misfit, so it is bounded (8
# searches of 20 iterations at most) to keep the grid quick.
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from skrecon import GradientReconstructor
from skrecon.datasets import load_digits_batch
from skrecon.opacus import leakage_curve
from skrecon.plotting import plot_leakage_curve

batch, labels = load_digits_batch(8, random_state=0)
model = nn.Sequential(nn.Linear(64, 2048), nn.Tanh(), nn.Linear(2048, 10)).double()
attack = GradientReconstructor(activation="tanh", bias=True, loss="cross_entropy",
                               batch_size=len(batch), n_init=1, max_starts=8,
                               max_iter=20)
noise_multipliers = [0.0, 0.01, 0.1, 1.0]
table = leakage_curve(model, batch, labels, noise_multipliers, max_grad_norm=1.0,
                      learning_rate=0.1, seeds=[0], reconstructor=attack,
                      data_range=1.0)

# %%
# The table
# ---------
# One line per noise multiplier: Opacus's epsilon, then the median over the
# eight samples of the matched cosine and PSNR, and the share of labels
# recovered. Without noise (clipping only) the batch comes back exactly:
# clipping multiplies each sample's back-propagated signal by a positive
# factor, which the reconstruction absorbs into the unknown signals.
print(f"{'sigma':>6} {'epsilon':>9} {'cosine':>7} {'PSNR dB':>8} {'labels':>7}")
summary = []
for sigma in noise_multipliers:
    rows = table["strength"] == sigma
    eps = table["epsilon"][rows][0]
    cosine = np.nanmedian(table["cosine"][rows])
    psnr = np.nanmedian(table["psnr"][rows])
    accuracy = np.nanmean(table["label_correct"][rows])
    summary.append((sigma, eps, cosine, psnr, accuracy))
    print(f"{sigma:>6} {eps:>9.4g} {cosine:>7.3f} {psnr:>8.1f} {accuracy:>7.0%}")

# %%
# Leakage against epsilon
# -----------------------
# Clipping alone (epsilon infinite) is drawn at the right edge. Already at
# ``sigma = 0.01`` -- an epsilon in the thousands, no privacy to speak of --
# the noise on the first layer's gradient is of the order of its signal
# (the noise is the same on each of the ``m (d + 1)`` entries, the clipped
# signal is not), and the reconstruction falls apart.
# :func:`~skrecon.plotting.plot_leakage_curve` draws the median matched
# cosine against epsilon (the band: its interquartile range over the eight
# samples), from the rows with noise; the share of labels recovered is
# drawn beside it from the summary above.
noisy = {key: column[table["strength"] > 0] for key, column in table.items()}
fig, ax = plt.subplots(figsize=(6, 3.8))
plot_leakage_curve(noisy, metric="cosine", x="epsilon", ax=ax,
                   label="median matched cosine")
drawn_eps, drawn_cosine = ax.lines[0].get_data()
finite = [s for s in summary if np.isfinite(s[1])]
eps = np.array([s[1] for s in finite])
ax.plot(eps, [s[4] for s in finite], "s--", color="C1", label="labels recovered")
right = eps.max() * 30
ax.plot([right], [summary[0][2]], "o", color="C0")
ax.plot([right], [summary[0][4]], "s", color="C1")
ax.annotate("clipping only\n(epsilon = inf)", (right, summary[0][2]),
            textcoords="offset points", xytext=(-40, -35), fontsize=8)
for e, c in zip(drawn_eps, drawn_cosine):
    sigma = noisy["strength"][noisy["epsilon"] == e][0]
    ax.annotate(f"sigma={sigma:g}", (e, c), textcoords="offset points",
                xytext=(4, 6), fontsize=8)
ax.set_xlabel("Opacus epsilon (RDP, delta = 1e-5), one step")
ax.set_ylabel("leakage")
ax.set_ylim(-0.1, 1.1)
ax.legend(loc="center left", fontsize=8)
ax.set_title("One DP-SGD update of 8 digits: leakage against epsilon")
fig.tight_layout()
plt.show()

# %%
# Notes
# -----
# * The accountant sees one step at sampling rate 1: the batch is the
#   client's whole local data set. Opacus's default accountant (PRV) fails
#   for so little noise in one step, so the RDP accountant is used.
# * Wider first layers do not help the attack here: the per-sample clipped
#   signal is spread over all ``m`` neurons while the noise per entry stays
#   ``sigma * C / B``.
