"""Pure torch networks with typed arguments: no configs, no files, no progress bars."""
