"""sfc-kit: Shared Feature Calibration (Zhao et al., AAAI 2024) for weakly supervised
semantic segmentation, from image labels to the final segmentation mIoU."""

__version__ = "0.1.0"
