"""
Your own SVI loop on digits
===========================

A pyrovae VAE is a Pyro model/guide pair like any other: ``pyro.infer.SVI`` trains it,
``model(None)`` generates and ``Predictive`` draws from its posterior predictive. This is the
README's example (``examples/svi_loop.py``) with a shorter budget and pictures.
"""

# %%
# Data and model
# --------------
# The default config is the digits VAE: 8x8 images, a 10-dimensional latent, MLP encoder and
# decoder, a Bernoulli likelihood. ``build_program`` turns its ``model`` section into a
# ``PyroModule`` with ``.model`` and ``.guide``.

import matplotlib.pyplot as plt
import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.optim import Adam

import pyrovae

torch.manual_seed(0)
config = pyrovae.load_config()  # every default: scikit-learn's digits, offline
data = pyrovae.load_splits(config.data, torch.device("cpu"))
vae = pyrovae.build_program(config.model, data.x_shape)
print(data.x_shape, len(data.train), "training digits")

# %%
# The SVI loop
# ------------
# A fresh binarization of the training images each epoch, as in the VAE literature; the loss is
# the negative ELBO in nats per digit.

svi = SVI(vae.model, vae.guide, Adam({"lr": 3e-3}), Trace_ELBO())
train_curve, valid_curve = [], []
for _ in range(15):
    x = torch.bernoulli(data.train)
    train_curve.append(sum(svi.step(batch) for batch in x.split(100)) / len(x))
    valid_curve.append(svi.evaluate_loss(data.valid) / len(data.valid))
print(f"{len(train_curve)} epochs: train {train_curve[-1]:.2f}, valid {valid_curve[-1]:.2f}")

plt.figure(figsize=(5, 3))
plt.plot(train_curve, label="train")
plt.plot(valid_curve, label="validation")
plt.xlabel("epoch")
plt.ylabel("negative ELBO (nats per digit)")
plt.legend()
plt.tight_layout()

# %%
# Generate and reconstruct
# ------------------------
# ``model(None, batch_size=n)`` draws new digits (binary draws of x); ``Predictive`` with the
# guide draws posterior-predictive reconstructions of given digits.

with torch.no_grad():
    new_digits = vae.model(None, batch_size=16)
    predictive = Predictive(vae.model, guide=vae.guide, num_samples=1)
    originals = data.valid[:8]
    reconstructions = predictive(originals)["x"][0]

fig, axes = plt.subplots(3, 8, figsize=(8, 3.2))
rows = [new_digits[:8], originals, reconstructions]
for row, images, title in zip(axes, rows, ["new", "original", "reconstructed"], strict=True):
    for ax, image in zip(row, images, strict=True):
        ax.imshow(image.reshape(8, 8), cmap="gray_r")
        ax.set_xticks([])
        ax.set_yticks([])
    row[0].set_ylabel(title, fontsize=8)
plt.tight_layout()
