"""pyrovae's own components, registered by name when this package is imported: priors, guides
(variational families), likelihoods, networks, datasets and programs (whole model/guide pairs).
The estimators are registered by ``pyrovae.inference.estimators``."""

from pyrovae.components import datasets, likelihoods  # noqa: F401
from pyrovae.components.guides import flows, gaussian  # noqa: F401
from pyrovae.components.networks import conv, mlp  # noqa: F401
from pyrovae.components.priors import flow, vamp  # noqa: F401
from pyrovae.components.priors import gaussian as gaussian_priors  # noqa: F401
from pyrovae.components.programs import cvae, m2, two_layer, vae  # noqa: F401
