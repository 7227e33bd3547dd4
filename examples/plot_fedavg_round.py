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

Below, a client holds 8 digits and trains 3 local epochs of mini-batches of
4 (six local steps, in an order the server never sees): the server gets the
8 digits back exactly, with their labels and the samples of each local step,
and the simulation of the client's steps from them reproduces the returned
parameters to round-off -- the result certifies itself.

The round runs in-process with :func:`skrecon.flower.client_update` (a real
Flower *train* message through Flower's ``ClientApp`` machinery). It needs
Flower and PyTorch (``pip install "skrecon[flower]"``).
"""

# %%
# The model and the client
# ------------------------
# A two-layer tanh classifier in float64, Gaussian weights drawn by the
# server. The client is an ordinary ``NumPyClient``: 3 local epochs of SGD in
# mini-batches of 4 reshuffled by its own generator (it keeps its shuffles
# only so that this example can compare them with what the server finds).
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
        self.orders = []  # the client's shuffles, kept here only to check the result

    def fit(self, parameters, config):
        keys = self.model.state_dict().keys()
        self.model.load_state_dict({k: torch.as_tensor(v) for k, v in zip(keys, parameters)})
        optimizer = torch.optim.SGD(self.model.parameters(), lr=config["lr"])
        generator = torch.Generator().manual_seed(1234)  # the client's own shuffling
        b = config["batch_size"]
        for _ in range(config["local_epochs"]):
            perm = torch.randperm(len(self.x), generator=generator)
            self.orders.append(perm.numpy())
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
client = FedAvgClient(batch, labels)
reply = client_update(client, sent, config=config)
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
# The search in the span of the update starts the samples a few percent
# off; the steps' order and the labels are searched on the residual of the
# simulated local steps, the samples refitted with their own steps
# (``res.start_samples``, the polish's start), and the polish makes them
# exact.
start = time.perf_counter()
res = reconstruct_update(server_model, sent, reply.parameters,
                         learning_rate=config["lr"], n_samples=reply.num_examples,
                         batch_size=config["batch_size"], epochs=config["local_epochs"],
                         random_state=0)
print(f"{time.perf_counter() - start:.1f} s: {res.message}")
errors, match = relative_error(batch, res.samples)
start_errors, start_match = relative_error(batch, res.start_samples)
print("true labels:     ", labels)
print("recovered labels:", res.labels[match])
print(f"relative error of each image: refit {np.array2string(start_errors, precision=1)}")
print(f"                              found {np.array2string(errors, precision=1)}")

# %%
# The order of the local steps
# ----------------------------
# Each epoch's two mini-batches, as the client drew them and as recovered
# (true sample indices; the order inside a mini-batch does not change the
# update).
b = config["batch_size"]
back = np.empty(len(batch), dtype=int)
back[match] = np.arange(len(batch))
for epoch, (true, got) in enumerate(zip(client.orders, res.order)):
    true_steps = [sorted(true[s:s + b].tolist()) for s in range(0, len(true), b)]
    got_steps = [sorted(back[got[s:s + b]].tolist()) for s in range(0, len(got), b)]
    print(f"epoch {epoch + 1}: client {true_steps}, recovered {got_steps}")

# %%
# The client's private batch and what the server recovered
# --------------------------------------------------------
fig, axes = plt.subplots(3, 8, figsize=(8, 3.8))
for i in range(len(batch)):
    shown = [("true", batch[i], f"{labels[i]}"),
             ("refit", res.start_samples[start_match[i]], f"{start_errors[i]:.0e}"),
             ("found", res.samples[match[i]], f"{res.labels[match[i]]}, {errors[i]:.0e}")]
    for k, (what, image, note) in enumerate(shown):
        ax = axes[k, i]
        ax.imshow(np.clip(image, 0, 1).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{what} {note}", fontsize=7)
        ax.set_xticks([])
        ax.set_yticks([])
fig.suptitle("A FedAvg round, 3 local epochs of mini-batches of 4: the client's digits "
             "(label),\nthe polish's start (relative error) and the batch found (label, "
             "relative error)", fontsize=8)
fig.tight_layout()
plt.show()
