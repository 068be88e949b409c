"""The label-efficiency study: does VoCo pretraining help when few patients are labelled?

``ctvoco-study`` trains the classifier from several initialisations (*arms*,
:mod:`~ctvoco.study.arms`) on a fraction of the labelled patients, for several seeds, and
scores every run on held-out patients that neither pretraining nor finetuning saw
(:mod:`~ctvoco.study.sources`, :mod:`~ctvoco.study.protocol`). The report
(:mod:`~ctvoco.study.report`) gives each arm's score with a bootstrap interval beside the
two constant floors, the paired difference between arms with its interval and the smallest
difference the study could have detected, and the AUCs with intervals.

Modules: :mod:`~ctvoco.study.arms` (what is compared), :mod:`~ctvoco.study.design` (the
runs), :mod:`~ctvoco.study.sources` (the phantom or a user's RSNA copy),
:mod:`~ctvoco.study.protocol` (``protocol.json`` and the leakage check),
:mod:`~ctvoco.study.runs` (training and scoring), :mod:`~ctvoco.study.report` and
:mod:`~ctvoco.study.main` (the program).
"""
