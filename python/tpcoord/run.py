"""torchrun with the tpcoord rendezvous backend, for torch versions without out-of-tree backends (< 2.5):

    python -m tpcoord.run --rdzv-backend=tpcoord --rdzv-endpoint=HOST:PORT --rdzv-id=JOB --nnodes=MIN:MAX \\
                          --nproc-per-node=K train.py [script args]

(also installed as `tpcoord-run`). It registers the backend (tpcoord/torchrun.py) in torchrun's registry and
runs torchrun's own main with the same arguments. On torch 1.13 it also spells the launcher's hyphenated
options the way that torchrun parses them (--rdzv_backend), and mends 1.13's --redirects/--tee parse on
Python 3.11 (torch's Std.from_str finds no member for 0 there, so that every launch fails; fixed upstream in
torch 2.0). On torch >= 2.5 plain `torchrun --rdzv-backend=tpcoord` works as well (the entry point).
"""
import re
import sys


def register():
    """Registers the tpcoord backend with torchrun (idempotent: the entry point registers the same creator)."""
    from torch.distributed.elastic.rendezvous import rendezvous_handler_registry as registry
    from .torchrun import BACKEND, create_handler
    registry.register(BACKEND, create_handler)


def launcher_argv(parser, argv):
    """`argv` with each option of torchrun's own part (before the training script) spelt as `parser` knows
    it: --rdzv-backend becomes --rdzv_backend where only that is defined. The script's arguments are left
    alone."""
    known = parser._option_string_actions
    out, i = [], 0
    while i < len(argv):
        token = argv[i]
        if token == "--" or not token.startswith("-"):
            return out + argv[i:]  # the training script and its arguments
        name, eq, value = token.partition("=")
        if name.startswith("--") and name not in known and "--" + name[2:].replace("-", "_") in known:
            name = "--" + name[2:].replace("-", "_")
        out.append(name + eq + value)
        action = known.get(name)
        if not eq and action is not None and action.nargs != 0 and i + 1 < len(argv):
            out.append(argv[i + 1])  # the option's value
            i += 1
        i += 1
    return out


def _mend_std_from_str():
    """torch 1.13 on Python 3.11: Std.from_str("0") is None (iterating an IntFlag skips 0 and aliases)."""
    from torch.distributed.elastic.multiprocessing import Std
    import torch.distributed.elastic.multiprocessing.api as api
    if Std.from_str("0") is not None:
        return

    def from_str(cls, vm):
        if re.match(api._VALUE_REGEX, vm):
            return cls(int(vm))
        if re.match(api._MAPPING_REGEX, vm):
            return {int(i): cls(int(v)) for i, v in (m.split(":") for m in vm.split(","))}
        raise ValueError("%s does not match: <%s> or <%s>" % (vm, api._VALUE_REGEX, api._MAPPING_REGEX))

    Std.from_str = classmethod(from_str)


def main(argv=None):
    from torch.distributed import run
    register()
    _mend_std_from_str()
    argv = launcher_argv(run.get_args_parser(), sys.argv[1:] if argv is None else list(argv))
    run.main(argv)


if __name__ == "__main__":
    main()
