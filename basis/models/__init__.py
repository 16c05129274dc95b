"""Networks of the method."""
from basis.models.rsis import RSIS, ConvLSTMCell, ModelConfig, RSISOutput

__all__ = ["RSIS", "ConvLSTMCell", "ModelConfig", "RSISOutput"]
