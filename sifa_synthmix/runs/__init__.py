"""Run folders: the name of every part of one and its config, fingerprint and checkpoints
(run_folder), the checkpoints a run can rely on (checkpoint_files), and its locks (run_lock)."""
