"""Label efficiency: does VoCo pretraining help when few patients are labelled?

The study is the ``ctvoco-study`` program (``ctvoco.study``); this script runs it with the
same options, so that every benchmark lives under ``benchmarks/``::

    python benchmarks/label_efficiency.py --out label_efficiency     # the phantom study
    python benchmarks/label_efficiency.py --data rsna --root /data/rsna --pretrained w.pth

See docs/results.md for the protocol and the last run's results.
"""

from __future__ import annotations

from ctvoco.study.main import main

if __name__ == "__main__":
    main()
