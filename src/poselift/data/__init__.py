"""Datasets: the prepared-dataset layout, standard dataset readers, detections, windows for lifting."""
