"""A trained run's target segmenter put to use: restored with what the run recorded of its data
(inference), new scans prepared by the run's recipe (scan_recipe) and segmented on their own grid
(scan_prediction), label maps as NIfTI (label_files), and the SavedModel export (export)."""
