"""Model zoo: plain ``torch.nn.Module`` recommenders with configurable sizes.

Every model has ``input_names`` (forward argument names), ``task`` ("ctr" or "retrieval"),
``output`` ("logit" or "score"), ``config`` (constructor kwargs) and
``example_inputs(batch_size)``.
"""

from .deepfm import DeepFM
from .dlrm import DLRM, PADDING_ID
from .ncf import NeuMF
from .two_tower import TwoTower
from .wide_deep import WideDeep
from .zoo import ZOO, ModelError, batch_dynamic_shapes, build_model, export_model, model_for_data

__all__ = [
    "DLRM", "DeepFM", "WideDeep", "TwoTower", "NeuMF", "PADDING_ID",
    "ZOO", "ModelError", "build_model", "model_for_data", "batch_dynamic_shapes", "export_model",
]
