"""EfficientFormerV2 architecture search: objectives, search algorithms, results, the ``nas`` CLI."""
import shlex

from nas.mes import MesSpec, mobile_efficiency_score


def nas_command(*words) -> str:
    """A command line the project prints (report stages, hints): ``nas WORD ...``, quoted as a shell
    reads it. The tests parse every one with the real parser."""
    return "nas " + shlex.join(str(word) for word in words)


__all__ = ["MesSpec", "mobile_efficiency_score", "nas_command"]
