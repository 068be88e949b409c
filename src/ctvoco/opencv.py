"""OpenCV as ctvoco uses it: single-threaded.

ctvoco parallelises with processes (preprocessing workers, DataLoader workers). An OpenCV
thread pool started in a parent process can leave locks held in a forked child, which then
hangs on its first OpenCV call; keeping OpenCV single-threaded everywhere avoids that.
Import ``cv2`` from here.
"""

from __future__ import annotations

import cv2

cv2.setNumThreads(1)

__all__ = ["cv2"]
