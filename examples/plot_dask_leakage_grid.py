"""
==============================================
A leakage grid on a Dask cluster
==============================================

An audit asks more than one question at a time: which defence, how strong,
for which batch size? :func:`skrecon.evaluation.leakage_grid` runs the
whole grid — defence × strength × seed × batch size — and returns one tidy
table, in the schema of :func:`skrecon.evaluation.leakage_curve` with a
``batch_size`` column. Its trials go through joblib, so any joblib backend
runs them: one process, a pool of processes, or a `Dask
<https://distributed.dask.org>`_ cluster through joblib's ``"dask"``
backend. Every trial depends on its seed alone, so the table does not
depend on where it ran.

Here the cluster is a :class:`distributed.LocalCluster` in this process
(two worker threads); pointing a :class:`distributed.Client` at the
scheduler of a real cluster runs the same code on many machines.
"""

# %%
# The grid
# --------
# Batches of 4 and 8 handwritten digits drawn from a pool of 40 (each seed
# draws its own batch), a first layer of 3 000 tanh neurons with a Gaussian
# bias, and two defences: Gaussian noise relative to the gradient's norm,
# and clipping of the gradient's global norm (which only rescales it).
import time

import joblib
import matplotlib.pyplot as plt
import numpy as np
from distributed import Client, LocalCluster

from skrecon.datasets import load_digits_batch
from skrecon.defenses import GaussianGradientNoise, GlobalNormClipping
from skrecon.evaluation import leakage_grid
from skrecon.plotting import plot_leakage_curve

data, _ = load_digits_batch(40, random_state=0)
defenses = [(GaussianGradientNoise(relative=True), "scale", [1e-6, 1e-4, 1e-2]),
            (GlobalNormClipping(), "max_norm", [1e-3, 1.0])]
grid = dict(seeds=[0, 1], data_range=1.0,
            query_params={"n_neurons": 3000, "activation": "tanh", "bias": "gaussian"})

# %%
# On the cluster
# --------------
# ``joblib.parallel_config(backend="dask")`` sends the trials to the client's
# cluster; ``n_jobs=-1`` uses all of its worker threads.
with LocalCluster(n_workers=1, threads_per_worker=2, processes=False,
                  dashboard_address=None) as cluster, Client(cluster):
    start = time.perf_counter()
    with joblib.parallel_config(backend="dask"):
        table = leakage_grid(data, [4, 8], defenses, n_jobs=-1, **grid)
    dask_time = time.perf_counter() - start
n_trials = int(np.sum(table["sample"] == 0))
print(f"{len(table['sample'])} rows (one per true sample) from {n_trials} trials "
      f"in {dask_time:.1f} s on the cluster")

# %%
# The same grid in this process
# -----------------------------
# The discrete outcomes are identical; the errors agree to round-off (the
# workers run BLAS with other thread counts, which changes the last bits of
# exact reconstructions).
local = leakage_grid(data, [4, 8], defenses, **grid)
same = all(np.array_equal(local[k], table[k]) for k in
           ("defense", "strength", "seed", "batch_size", "sample", "batch_size_found",
            "converged", "status"))
gap = np.max(np.abs(local["relative_error"] - table["relative_error"]))
print(f"discrete columns identical: {same}; largest difference of the relative "
      f"errors: {gap:.1e}")

# %%
# The table
# ---------
# Median and worst relative error per defence, strength and batch size.
print(f"{'defence':>22} {'strength':>9} {'B':>3}   median error   worst error")
for name in np.unique(table["defense"]):
    for s in np.unique(table["strength"][table["defense"] == name]):
        for B in (4, 8):
            rows = (table["defense"] == name) & (table["strength"] == s) & (
                table["batch_size"] == B)
            err = table["relative_error"][rows]
            print(f"{name:>22} {s:9g} {B:3d}   {np.nanmedian(err):12.1e}"
                  f"   {np.nanmax(err):11.1e}")

# %%
# The noise curves, one per batch size
# ------------------------------------
# :func:`~skrecon.plotting.plot_leakage_curve` draws one curve from the rows
# of one defence and batch size.
fig, ax = plt.subplots(figsize=(5, 3.6))
for B in (4, 8):
    rows = (table["defense"] == "GaussianGradientNoise") & (table["batch_size"] == B)
    plot_leakage_curve({k: v[rows] for k, v in table.items()}, ax=ax,
                       label=f"B = {B}")
ax.set_title("Gaussian noise, 3 000 tanh neurons")
ax.legend()
fig.tight_layout()
plt.show()
