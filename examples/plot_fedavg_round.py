"""
=================================================================
FedAvg: the batch behind local epochs of mini-batches
=================================================================

In FedAvg a client does not send a gradient: it trains for a few local
epochs, in mini-batches that it reshuffles every epoch, and returns its
parameters. The update is then a sum of gradients taken at different
weights, in an order the server never sees. :func:`skrecon.flower.update_query`
refuses it; :func:`skrecon.fedavg.reconstruct_update` does not: from the
parameters sent and returned and what the server set in the round's config
(learning rate, batch size, epochs) and the client's ``num_examples``, it
finds the samples in the span of the first layer's update, orders the steps,
and polishes the samples until a simulation of the client's SGD reproduces
the returned parameters -- or says that it could not.

Below, a client trains 3 local epochs of mini-batches: the search's start
is within a few percent, the labels are right, but the order of the steps
is not found and the polish stalls; the result is flagged, not certified.
The same client with one local epoch of mini-batches (or with 3
full-batch epochs) gives its batch back exactly.

The round runs in-process with :func:`skrecon.flower.client_update` (a real
Flower *train* message through Flower's ``ClientApp`` machinery). It needs
Flower and PyTorch (``pip install "skrecon[flower]"``).
"""

# %%
# The model and the client
# ------------------------
# A two-layer tanh classifier in float64, Gaussian weights drawn by the
# server. The client is an ordinary ``NumPyClient``: 3 local epochs of SGD in
# mini-batches of 4 reshuffled by its own generator.
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from flwr.client import NumPyClient
from torch import nn

from skrecon.datasets import load_digits_batch
from skrecon.fedavg import reconstruct_update
from skrecon.flower import client_update, update_query
from skrecon.metrics import relative_error
from skrecon.torch import gaussian_reinit_


def make_model():
    return nn.Sequential(nn.Linear(64, 256), nn.Tanh(), nn.Linear(256, 10)).double()


server_model = gaussian_reinit_(make_model(), random_state=0)
sent = [v.numpy().copy() for v in server_model.state_dict().values()]
batch, labels = load_digits_batch(8, random_state=0)


class FedAvgClient(NumPyClient):
    def __init__(self, batch, labels):
        self.model = make_model()
        self.x, self.y = torch.as_tensor(batch), torch.as_tensor(labels)

    def fit(self, parameters, config):
        keys = self.model.state_dict().keys()
        self.model.load_state_dict({k: torch.as_tensor(v) for k, v in zip(keys, parameters)})
        optimizer = torch.optim.SGD(self.model.parameters(), lr=config["lr"])
        generator = torch.Generator().manual_seed(1234)  # the client's own shuffling
        b = config["batch_size"]
        for _ in range(config["local_epochs"]):
            perm = torch.randperm(len(self.x), generator=generator)
            for start in range(0, len(self.x), b):
                idx = perm[start:start + b]
                optimizer.zero_grad()
                nn.CrossEntropyLoss()(self.model(self.x[idx]), self.y[idx]).backward()
                optimizer.step()
        returned = [v.numpy().copy() for v in self.model.state_dict().values()]
        return returned, len(self.x), {}


# %%
# The round
# ---------
config = {"lr": 0.05, "batch_size": 4, "local_epochs": 3}
reply = client_update(FedAvgClient(batch, labels), sent, config=config)
print(f"the client trained on {reply.num_examples} examples, "
      f"{config['local_epochs']} epochs of mini-batches of {config['batch_size']}")

# %%
# One-step tools refuse it
# ------------------------
# Six local steps over mini-batches: the first layer's update has the rank
# of all 8 samples, more than one step's 4.
try:
    update_query(server_model, sent, reply.parameters, learning_rate=config["lr"],
                 batch_size=config["batch_size"])
except ValueError as exc:
    print("update_query:", exc)

# %%
# The FedAvg reconstruction
# -------------------------
start = time.perf_counter()
res = reconstruct_update(server_model, sent, reply.parameters,
                         learning_rate=config["lr"], n_samples=reply.num_examples,
                         batch_size=config["batch_size"], epochs=config["local_epochs"],
                         random_state=0)
print(f"{time.perf_counter() - start:.1f} s: {res.message}")
errors, match = relative_error(batch, res.samples)
print("true labels:     ", labels)
print("recovered labels:", res.labels[match])
print(f"largest relative error of an image: {errors.max():.1e}")
back = np.empty(len(batch), dtype=int)
back[match] = np.arange(len(batch))
for epoch, order in enumerate(res.order):
    steps = [sorted(back[order[s:s + 4]].tolist()) for s in range(0, len(order), 4)]
    print(f"epoch {epoch + 1}: recovered steps (true sample indices) {steps}")

# %%
# One local epoch of mini-batches
# -------------------------------
# Here the steps' order is found (each sample's step is the one whose
# weights fit its column of the update best) and the polish certifies the
# batch: the simulated local steps reproduce the returned parameters.
config1 = {"lr": 0.05, "batch_size": 4, "local_epochs": 1}
reply1 = client_update(FedAvgClient(batch, labels), sent, config=config1)
start = time.perf_counter()
res1 = reconstruct_update(server_model, sent, reply1.parameters,
                          learning_rate=config1["lr"], n_samples=reply1.num_examples,
                          batch_size=config1["batch_size"], epochs=1, random_state=0)
errors1, match1 = relative_error(batch, res1.samples)
print(f"{time.perf_counter() - start:.1f} s: {res1.message}")
print(f"largest relative error of an image: {errors1.max():.1e}; labels right: "
      f"{np.mean(res1.labels[match1] == labels):.0%}")

# %%
# The client's private batch and what the server recovered
# --------------------------------------------------------
# Top: the 3-epoch round (the search's start and the flagged polish); bottom:
# the 1-epoch round, certified.
start_errors = relative_error(batch, res.start_samples)
fig, axes = plt.subplots(4, 8, figsize=(8, 4.8))
for i in range(len(batch)):
    shown = [("true", batch[i], labels[i]),
             ("E=3 start", res.start_samples[start_errors[1][i]], None),
             ("E=3 got", res.samples[match[i]], res.labels[match[i]]),
             ("E=1 got", res1.samples[match1[i]], res1.labels[match1[i]])]
    for k, (what, image, label) in enumerate(shown):
        ax = axes[k, i]
        ax.imshow(np.clip(image, 0, 1).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(what if label is None else f"{what} {label}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
fig.suptitle("FedAvg rounds, mini-batches of 4: the client's digits; 3 epochs "
             "(start, flagged polish); 1 epoch (certified)", fontsize=9)
fig.tight_layout()
plt.show()
