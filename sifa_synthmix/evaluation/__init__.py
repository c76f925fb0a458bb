"""Evaluation on whole 3D test volumes (Dice and ASSD per class) and the comparison of runs.

metrics         Dice / ASSD per class of one volume, the empty-case rule, means over volumes
table           the paper's table layout (column order, mean(std) cells)
report          evaluate a run on test volumes -> eval/metrics.json, metrics.csv, table.md, NIfTI in world geometry
run_evaluation  --mode=evaluate: a run's target segmenter restored, its test volumes scored, eval/ scalars
learning_curve  target Dice and ASSD on whole volumes during training (--eval_every)
methods         method names of runs from their config.json
result_files    JSON and CSV result files written atomically
training_scalars  TensorBoard scalars of runs as a table over steps, mean and spread over seeds
significance    paired t-test and Wilcoxon test of Dice against a reference method, over (seed, volume)
                pairs and over seeds
figures         qualitative grid and per-class Dice bars (one dot per seed)
compare         all of the above over several evaluated methods, each one run or one run per seed

A run's segmenter at inference and its label maps as NIfTI are prediction/'s (inference, label_files).
"""
