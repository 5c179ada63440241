"""The bottom layer: the machine and files (checkpoint headers, Hub paths, safe output, cores)."""
