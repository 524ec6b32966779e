"""
Comparing estimators: ELBO against IWAE
=======================================

The same VAE trained with the ELBO (``trace``) and with the importance-weighted bound of Burda
et al. (2015) with K = 5 particles (``iwae:5``), same seed and budget, then scored alike: test
ELBO and importance-sampled log-likelihood on the same digits. ``pyrovae compare`` does this for
any number of variants from a file; here it is spelled out with ``pyrovae.train`` and
``pyrovae.evaluate``.
"""

# %%
# Train both
# ----------

import math
import tempfile

import matplotlib.pyplot as plt

import pyrovae

estimators = {"trace": "trace", "iwae:5": "{name='iwae', particles=5}"}
base = ["train.epochs=5", "train.lr=3e-3", "train.device=cpu"]
tmp = tempfile.TemporaryDirectory()
results = {}
for label, estimator in estimators.items():
    config = pyrovae.load_config(overrides=[*base, f"train.estimator={estimator}"])
    run = pyrovae.train(config, out=f"{tmp.name}/{label.replace(':', '')}", quiet=True)
    results[label] = pyrovae.evaluate(run.directory, particles=100, limit=200)
    print(f"{label}: ELBO {results[label].elbo:.2f}, log p(x) {results[label].log_likelihood:.2f}")

# %%
# Compare on the same digits
# --------------------------
# Both are scored on the same 200 test digits, so their log-likelihoods compare pairwise: the
# difference per digit and its standard error are much tighter than either number alone.

a, b = (results[k].log_likelihoods for k in estimators)
differences = [y - x for x, y in zip(a, b, strict=True)]
mean = sum(differences) / len(differences)
stderr = math.sqrt(sum((d - mean) ** 2 for d in differences) / (len(differences) - 1) / len(a))
print(f"log p(x) of iwae:5 minus trace: {mean:+.2f} +- {stderr:.2f} nats per digit")

fig, ax = plt.subplots(figsize=(5, 3))
labels = list(results)
ax.bar([i - 0.2 for i in range(2)], [-results[k].elbo for k in labels], 0.4, label="-ELBO")
ax.bar(
    [i + 0.2 for i in range(2)],
    [-results[k].log_likelihood for k in labels],
    0.4,
    label="-log p(x), K = 100",
)
ax.set_xticks(range(2), labels)
ax.set_ylabel("nats per digit (lower is better)")
ax.set_ylim(min(-r.log_likelihood for r in results.values()) - 5)
ax.legend()
plt.tight_layout()
tmp.cleanup()
