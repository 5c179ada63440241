"""Runs `layerseg` commands one after the other in this process (argv: the commands, separated by `--then`).

Launched by torchrun in tests/test_sweep_ranks.py: every rank runs every command. The process group
is kept from one command to the next and left once at the end: torch names a re-created default group
as the first one, so a rank that joins again could read a slower rank's old address.
"""

import sys

import torch.distributed as dist

from layerseg_merge.cli import main

if __name__ == "__main__":
    leave = dist.destroy_process_group
    dist.destroy_process_group = lambda *args, **kwargs: None
    command: list[str] = []
    for argument in [*sys.argv[1:], "--then"]:
        if argument != "--then":
            command.append(argument)
            continue
        main(command, standalone_mode=False)
        command = []
    if dist.is_initialized():
        leave()
