"""EfficientFormerV2 architecture search: objectives, search algorithms, results, the ``nas`` CLI."""
from nas.mes import MesSpec, mobile_efficiency_score

__all__ = ["MesSpec", "mobile_efficiency_score"]
