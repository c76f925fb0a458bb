"""Evaluation on whole 3D test volumes (Dice and ASSD per class) and the comparison of runs.

metrics      Dice / ASSD per class of one volume, the empty-case rule, means over volumes
inference    a run's e_B + s_B restored with what it recorded of its data; volumes predicted slice by slice
label_files  label and image volumes as NIfTI, label colour tables for ITK-SNAP and 3D Slicer
table        the paper's table layout (column order, mean(std) cells)
report       evaluate a run on test volumes -> eval/metrics.json, metrics.csv, table.md, NIfTI in world geometry
methods      method names of runs from their config.json
training_scalars  TensorBoard scalars of runs as a table over steps, mean and spread over seeds
significance paired t-test and Wilcoxon test of Dice against a reference method, over (seed, volume)
             pairs and over seeds
figures      qualitative grid and per-class Dice bars (one dot per seed)
compare      all of the above over several evaluated methods, each one run or one run per seed
"""
