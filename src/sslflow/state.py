"""The state of what training carries from step to step (a module, an optimizer, a scheduler or a torch.Generator),
read and restored the same way for a checkpoint and for rank 0's broadcast under torchrun."""

import torch


def get_state(obj):
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


def set_state(obj, state) -> None:
    if isinstance(obj, torch.Generator):
        obj.set_state(state)
    else:
        obj.load_state_dict(state)
