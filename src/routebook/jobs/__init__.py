"""Offline jobs: evaluation, calibration and data loading."""
