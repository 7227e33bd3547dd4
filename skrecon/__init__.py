"""skrecon: reconstruct a federated-learning client's batch from one gradient.

The tensor-decomposition attack of Wang, Lee & Lei (AISTATS 2023), made
exact by a Levenberg-Marquardt refinement of the gradient model, as
scikit-learn estimators.
"""

from .moments import MomentTensorTransformer
from .reconstructor import GradientReconstructor

__version__ = "0.1.0"

__all__ = ["GradientReconstructor", "MomentTensorTransformer", "__version__"]
