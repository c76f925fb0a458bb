"""Training: the tasks and their train steps (task, segmenter_task, cyclegan_task, synthmix_task,
task_factory), how updates are applied (optimization), distribution over replicas, the training
loop (trainer) with what it reports (run_log, tensorboard_summaries, adaptation_signal), the step's
memory check, and the import of official SIFA checkpoints into a run folder."""
