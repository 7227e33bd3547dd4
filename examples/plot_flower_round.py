"""
===============================================================
One Flower round: a client's update gives its 16 digits back
===============================================================

A `Flower <https://flower.ai>`_ client holds 16 private handwritten digits
and trains a PyTorch classifier on them. In one federated round the server
sends the global parameters, the client takes one step of SGD on its batch
and returns its new parameters -- the usual ``NumPyClient.fit``. The server
never sees a gradient, only the parameters it sent and those it got back.
That is enough: one SGD step moves the parameters by ``-lr`` times the
gradient, and skrecon needs the gradient only up to scale.

The round runs in-process with :func:`skrecon.flower.client_update`: the
server's *train* message goes through Flower's own ``ClientApp`` machinery,
without network, SuperLink or Ray. :func:`skrecon.flower.update_query`
turns the two parameter lists into the gradient query of the first layer.
It needs Flower and PyTorch (``pip install "skrecon[flower]"``).
"""

# %%
# The model and the server's query
# --------------------------------
# A two-layer classifier: 64 pixels, a tanh layer of 4096 neurons, 10
# classes, in float64 (in float32 the difference of the two parameter lists
# keeps only the digits they do not share). The server draws the first two
# layers at random (:func:`~skrecon.torch.gaussian_reinit_`) before the round.
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from flwr.client import NumPyClient
from torch import nn

from skrecon import GradientReconstructor
from skrecon.datasets import load_digits_batch
from skrecon.flower import client_update, update_query
from skrecon.metrics import relative_error
from skrecon.torch import gaussian_reinit_

n_neurons = 4096


def make_model():
    return nn.Sequential(nn.Linear(64, n_neurons), nn.Tanh(),
                         nn.Linear(n_neurons, 10)).double()


server_model = gaussian_reinit_(make_model(), random_state=0)
sent = [v.numpy().copy() for v in server_model.state_dict().values()]

# %%
# The client
# ----------
# An ordinary Flower ``NumPyClient``: load the parameters, one step of SGD on
# the softmax cross-entropy of its batch, return the parameters and the
# number of examples.
batch, labels = load_digits_batch(16, random_state=0)


class DigitsClient(NumPyClient):
    def __init__(self, batch, labels):
        self.model = make_model()
        self.x, self.y = torch.as_tensor(batch), torch.as_tensor(labels)

    def fit(self, parameters, config):
        keys = self.model.state_dict().keys()
        self.model.load_state_dict({k: torch.as_tensor(v) for k, v in zip(keys, parameters)})
        optimizer = torch.optim.SGD(self.model.parameters(), lr=config["lr"])
        optimizer.zero_grad()
        nn.CrossEntropyLoss()(self.model(self.x), self.y).backward()
        optimizer.step()
        returned = [v.numpy().copy() for v in self.model.state_dict().values()]
        return returned, len(self.x), {}


# %%
# The round
# ---------
# The server sends ``sent`` with the round's config; the client answers.
reply = client_update(DigitsClient(batch, labels), sent, config={"lr": 0.1})
print(f"the client trained on {reply.num_examples} examples")

# %%
# What the server does with the reply
# -----------------------------------
# ``(sent - returned) / lr`` is the gradient at the weights the server chose.
# The client's ``num_examples`` is the batch size of its one step: an update
# of higher rank would be several local steps, which skrecon refuses.
q = update_query(server_model, sent, reply.parameters, learning_rate=0.1,
                 batch_size=reply.num_examples)
print("first-layer gradient:", q.grad.shape, " activation:", q.activation)

start = time.perf_counter()
rec = GradientReconstructor(activation="tanh", bias=q.has_bias, loss="cross_entropy",
                            batch_size=reply.num_examples, random_state=0)
rec.fit(q.grad, **q.fit_params)
print(f"reconstructed {rec.batch_size_} samples in {time.perf_counter() - start:.1f} s, "
      f"gradient residual {rec.gradient_residual_:.1e}")

errors, perm = relative_error(batch, rec.samples_)
print("true labels:     ", labels)
print("recovered labels:", rec.labels_[perm])
print(f"largest relative error of an image: {errors.max():.1e}; "
      f"labels right: {np.mean(rec.labels_[perm] == labels):.0%}")

# %%
# The client's private batch and what the server recovered
# --------------------------------------------------------
fig, axes = plt.subplots(4, 8, figsize=(8, 4.8))
for i in range(len(batch)):
    shown = [(batch[i], labels[i]), (rec.samples_[perm[i]], rec.labels_[perm[i]])]
    for k, (image, label) in enumerate(shown):
        ax = axes[2 * (i // 8) + k, i % 8]
        ax.imshow(np.clip(image, 0, 1).reshape(8, 8), cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(f"{'true' if k == 0 else 'got'} {label}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
fig.suptitle("One Flower round: 16 private digits (true) and the server's "
             "reconstruction (got)")
fig.tight_layout()
plt.show()

# %%
# Notes
# -----
# * The learning rate only scales the update; ``learning_rate`` is there to
#   get the gradient's true scale.
# * Several local steps (FedAvg with local epochs) are out of scope: over
#   several mini-batches the update's rank exceeds ``num_examples`` of one
#   step and :func:`~skrecon.flower.update_query` raises; several epochs on
#   the same batch show as a ``gradient_residual_`` far above round-off.
# * A ``ClientApp`` (from a ``client_fn``, or with an ``@app.train()``
#   function of the Message API) works the same way: pass it to
#   :func:`~skrecon.flower.client_update`.
