"""Prediction with trained classifiers: from CT series to a competition submission.

- :mod:`~ctvoco.inference.discover`: the series of a ``test_images``-style tree.
- :mod:`~ctvoco.inference.checkpoints`: classifiers and their inference specs, read from
  checkpoints as data.
- :mod:`~ctvoco.inference.cache`: the series preprocessed as the models were trained.
- :mod:`~ctvoco.inference.predict`: the models run on every series (:func:`predict_submission`).
- :mod:`~ctvoco.inference.submission`: one row per patient, and the files written.
"""

from ctvoco.inference.checkpoints import LoadedClassifier, load_classifier, load_for_prediction
from ctvoco.inference.discover import discover_input
from ctvoco.inference.predict import Prediction, predict_submission

__all__ = [
    "LoadedClassifier",
    "Prediction",
    "discover_input",
    "load_classifier",
    "load_for_prediction",
    "predict_submission",
]
