"""Train a pyrovae VAE with the SVI loop every Pyro user knows, then generate and predict.

python examples/svi_loop.py
"""

import torch
from pyro.infer import SVI, Predictive, Trace_ELBO
from pyro.optim import Adam

import pyrovae

config = pyrovae.load_config("examples/configs/digits.toml")  # scikit-learn's digits, offline
data = pyrovae.load_splits(config.data, torch.device("cpu"))
vae = pyrovae.build_program(config.model, data.x_shape)  # a PyroModule with .model and .guide

svi = SVI(vae.model, vae.guide, Adam({"lr": 1e-3}), Trace_ELBO())
for epoch in range(1, 31):
    x = torch.bernoulli(data.train)  # a fresh binarization each epoch
    loss = sum(svi.step(batch) for batch in x.split(100)) / len(x)
    if epoch % 10 == 0:
        valid = svi.evaluate_loss(data.valid) / len(data.valid)
        print(f"epoch {epoch}: train {loss:.2f}, validation {valid:.2f} nats per digit")

new_digits = vae.model(None, batch_size=16)  # model(None) generates (binary draws of x)
predictive = Predictive(vae.model, guide=vae.guide, num_samples=4)
draws = predictive(data.valid[:8])["x"]  # posterior-predictive draws: (4, 8, 1, 8, 8)
print(new_digits.shape, draws.shape)
