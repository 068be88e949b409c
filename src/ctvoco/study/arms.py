"""The arms of the study: which initialisation the classifier's backbone starts from.

=================  ==========================  ===============================
arm                backbone before finetuning  VoCo pretraining starts from
=================  ==========================  ===============================
``scratch``        random                      (none)
``voco``           VoCo export                 random
``imagenet``       ImageNet weights            (none)
``imagenet+voco``  VoCo export                 ImageNet weights
=================  ==========================  ===============================

The paper's question is ``imagenet`` against ``imagenet+voco``; ``scratch`` against
``voco`` asks the same without ImageNet. The ImageNet arms need a local weight file for
the backbone (there is no download): ``--pretrained FILE``, or ``<backbone>.safetensors``
(``.pth``, ``.pt``, ``.bin``) in ``$CTVOCO_WEIGHTS_DIR`` or ``~/.cache/ctvoco/weights``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ctvoco.errors import UserError
from ctvoco.models.backbone import WEIGHT_SUFFIXES, local_imagenet_weights


@dataclass(frozen=True)
class Arm:
    """One initialisation of the classifier's backbone.

    Attributes:
        name: ``scratch``, ``voco``, ``imagenet`` or ``imagenet+voco``.
        imagenet: The weights (of finetuning, or of the VoCo pretraining) start from
            ImageNet.
        voco: The backbone is VoCo-pretrained on the study's unlabelled volumes first.
    """

    name: str
    imagenet: bool
    voco: bool

    @property
    def slug(self) -> str:
        """The name as a folder name (``imagenet_voco``)."""
        return self.name.replace("+", "_")


ARMS: Final[dict[str, Arm]] = {
    arm.name: arm
    for arm in (
        Arm("scratch", imagenet=False, voco=False),
        Arm("voco", imagenet=False, voco=True),
        Arm("imagenet", imagenet=True, voco=False),
        Arm("imagenet+voco", imagenet=True, voco=True),
    )
}
"""Every arm, by name."""

COMPARISONS: Final[tuple[tuple[str, str], ...]] = (
    ("scratch", "voco"),
    ("imagenet", "imagenet+voco"),
    ("scratch", "imagenet"),
)
"""``(reference, treatment)`` pairs reported as paired differences when both ran."""


def imagenet_weights(backbone: str, pretrained: str | os.PathLike[str] | None) -> Path | None:
    """The local ImageNet weight file for ``backbone``, or ``None`` when there is none.

    Args:
        backbone: The timm name.
        pretrained: A weight file given by the user (``--pretrained``); without one, the
            weights folder is searched (:func:`ctvoco.models.backbone.local_imagenet_weights`).

    Raises:
        UserError: ``pretrained`` is given but is not a file.
    """
    if pretrained is not None:
        path = Path(pretrained).expanduser()
        if not path.is_file():
            raise UserError(f"--pretrained {path}: no such file (ImageNet weights of {backbone})")
        return path.resolve()
    return local_imagenet_weights(backbone)


def missing_weights_message(backbone: str) -> str:
    """What to do when the ImageNet arms cannot run: where the weights were looked for."""
    folder = os.environ.get("CTVOCO_WEIGHTS_DIR") or "~/.cache/ctvoco/weights"
    names = ", ".join(f"{backbone}{s}" for s in WEIGHT_SUFFIXES)
    return (
        f"no local ImageNet weights for {backbone} (looked for {names} in {folder}); pass "
        "--pretrained FILE (a state_dict saved from timm.create_model"
        f"('{backbone}', pretrained=True)) to run the imagenet and imagenet+voco arms"
    )


def select_arms(
    requested: Sequence[str] | None, backbone: str, weights: Path | None
) -> tuple[list[Arm], str | None]:
    """The arms to run, and a note on those left out (``None`` when none is).

    Args:
        requested: Arm names (``--arms``); ``None``: every arm whose inputs exist.
        backbone: The timm name (for the message naming the missing weights).
        weights: The local ImageNet weight file, ``None`` when there is none.

    Raises:
        UserError: An unknown arm, or an ImageNet arm requested without weights.
    """
    if requested is None:
        if weights is not None:
            return list(ARMS.values()), None
        return [ARMS["scratch"], ARMS["voco"]], (
            "the imagenet and imagenet+voco arms are left out: " + missing_weights_message(backbone)
        )
    unknown = [name for name in requested if name not in ARMS]
    if unknown:
        raise UserError(
            f"--arms: unknown arm(s) {', '.join(unknown)}; choose from {', '.join(ARMS)}"
        )
    arms = [ARMS[name] for name in dict.fromkeys(requested)]
    needing = [arm.name for arm in arms if arm.imagenet]
    if needing and weights is None:
        raise UserError(f"--arms {' '.join(needing)}: " + missing_weights_message(backbone))
    return arms, None
