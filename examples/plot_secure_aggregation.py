"""
=====================================================================
Secure aggregation protects nothing: 16 clients' patches from the sum
=====================================================================

In a FedSGD round each client takes one SGD step on its own batch from the
same global parameters, and with secure aggregation the server sees only
the *sum* of the clients' updates (or FedAvg's weighted mean of their
returned parameters), never one client's. All updates are gradients at the
same parameters, so their sum is the gradient of the union of the clients'
batches: one bigger batch (:ref:`theory-requirements`). skrecon reads it
like any other gradient -- every sample of every client, and its label; what
is lost is only which client sent which sample.

The model is an ordinary PyTorch classifier at its default initialisation
(uniform weights, nothing crafted by the server): 32x32 colour patches
(3 072 inputs), a tanh layer of 2 048 neurons, 10 classes, in float64.
Each of 16 clients holds 8 patches of scikit-learn's two sample
photographs: 128 samples (the fit took 19 s, the whole script 32 s, on a
two-core machine with a test run beside it).
"""

# %%
# The round: 16 clients, one step each, summed
# --------------------------------------------
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import nn

from skrecon import GradientReconstructor
from skrecon.datasets import load_sample_image_patches
from skrecon.flower import update_query
from skrecon.metrics import relative_error

n_clients, per_client, n_neurons, lr = 16, 8, 2048, 0.1
torch.manual_seed(0)
model = nn.Sequential(nn.Linear(3072, n_neurons), nn.Tanh(),
                      nn.Linear(n_neurons, 10)).double()
sent = [v.detach().numpy().copy() for v in model.state_dict().values()]

patches = load_sample_image_patches(n_clients * per_client, random_state=0)
labels = np.random.default_rng(0).integers(0, 10, len(patches))
returned = []
for c in range(n_clients):
    rows = slice(c * per_client, (c + 1) * per_client)
    client = nn.Sequential(nn.Linear(3072, n_neurons), nn.Tanh(),
                           nn.Linear(n_neurons, 10)).double()
    client.load_state_dict(model.state_dict())
    optimizer = torch.optim.SGD(client.parameters(), lr=lr)
    nn.CrossEntropyLoss()(client(torch.as_tensor(patches[rows])),
                          torch.as_tensor(labels[rows])).backward()
    optimizer.step()
    returned.append([v.detach().numpy().copy() for v in client.state_dict().values()])

# what secure aggregation reveals: the mean of the returned parameters
aggregate = [np.mean([r[k] for r in returned], axis=0) for k in range(len(sent))]

# %%
# The server's attack on the aggregate
# ------------------------------------
# ``update_query`` turns the sent and aggregated parameters into the
# first layer's gradient (it also takes the list of the clients' returns).
q = update_query(model, sent, aggregate, learning_rate=lr,
                 batch_size=n_clients * per_client)
start = time.perf_counter()
rec = GradientReconstructor(activation=q.activation, bias=q.has_bias, random_state=0)
rec.fit(q.grad, **q.fit_params)
elapsed = time.perf_counter() - start
errors, perm = relative_error(patches, rec.samples_)
print(f"{rec.batch_size_} samples read off the aggregate of {n_clients} clients in "
      f"{elapsed:.0f} s: {rec.n_found_} found, worst relative error {errors.max():.1e}, "
      f"labels right: {np.mean(np.asarray(rec.labels_)[perm] == labels):.0%}")

# %%
# Every client's patches, as the server recovered them
# ----------------------------------------------------
fig, axes = plt.subplots(per_client, n_clients, figsize=(12, 0.9 * per_client + 0.6),
                         squeeze=False)
for c in range(n_clients):
    for k in range(per_client):
        ax = axes[k, c]
        ax.imshow(np.clip(rec.samples_[perm[c * per_client + k]], 0, 1).reshape(32, 32, 3))
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, c].set_title(f"client {c + 1}", fontsize=7)
fig.suptitle(f"{len(patches)} patches of {n_clients} clients, recovered from the sum "
             "of their updates")
fig.tight_layout()
plt.show()
