"""Training: the tasks and their train steps (task, segmenter_task, cyclegan_task, synthmix_task,
task_factory), how updates are applied (optimization), distribution over replicas, the training
loop (trainer) and what it reports at its step ends (reporting, with run_log,
tensorboard_summaries and adaptation_signal), the step's memory check, and the import of official
SIFA checkpoints into a run folder."""
