"""Candidates that try to score without learning (issue 11): rebuilt labels, replayed batches,
a second optimizer, test-time training, hidden parameters, forged counters, the system calls
the filter gained, and frames a candidate forges to confuse the trusted side.

Each one worked, or crashed the trusted side, before the evaluator closed it.
"""

from __future__ import annotations

from functools import cache

from candidates import replace, with_prefix

LEARN_LOOP = "for inputs, labels in train_data:"
STEP = "self.optimizer.step()"
FORWARD = "return self.head(torch.flatten(self.features(x), 1))"
LIBC = "import numpy.ctypeslib as _nc\n_libc = _nc.ctypes.CDLL(None, use_errno=True)\n"
OS = "_os = torch.serialization.os\n"


@cache
def digits_test_labels() -> list[int]:
    """The digits test labels in the dataset's own (public, fixed) order."""
    from services.evaluator.datasets import build_digits

    return [int(v) for v in build_digits()[1]]


# Nearest neighbour against the digits set rebuilt from scikit-learn: 100 % before the sandbox's
# view lost scikit-learn.
REBUILD_FROM_SKLEARN = replace(
    FORWARD,
    """import sklearn.datasets as _sd
        ref = torch.tensor(_sd.load_digits().images, dtype=torch.float32).flatten(1)
        ref = (ref - ref.mean(1, keepdim=True)) / (ref.std(1, keepdim=True) + 1e-6)
        small = x[:, 0, ::4, ::4].flatten(1)
        small = (small - small.mean(1, keepdim=True)) / (small.std(1, keepdim=True) + 1e-6)
        label = torch.tensor(_sd.load_digits().target)[torch.cdist(small, ref).argmin(1)]
        out = self.head(torch.flatten(self.features(x), 1))
        return out if self.training else nn.functional.one_hot(label, 10).float() * 50""",
)

# The dataset file looked for anywhere in the sandbox's view.
FIND_DATASET_FILES = with_prefix(
    OS + "for _root, _dirs, _files in _os.walk('/'):\n"
    "    _dirs[:] = [d for d in _dirs if d not in ('proc', 'sys', 'dev')]\n"
    "    for _f in _files:\n"
    "        if _f in ('digits.csv.gz', 'cifar-10-python.tar.gz') or 'sklearn' in _root:\n"
    "            print('FOUND-DATASET', _root, _f)"
)


def labels_by_position() -> str:
    """Predicts test label i for the i-th test input scored: 100 % in the dataset's order."""
    table = repr(digits_test_labels())
    return replace(
        FORWARD,
        f"""out = self.head(torch.flatten(self.features(x), 1))
        if self.training or x.shape[0] <= 4:
            return out
        table = torch.tensor({table})
        pos = getattr(self, "_pos", 0)
        self._pos = pos + x.shape[0]
        return nn.functional.one_hot(table[pos : pos + x.shape[0]], 10).float() * 50""",
    )


# A content-keyed label table the size CIFAR-10's test set needs (10,000 entries).
TEST_SET_COPY_IN_CODE = with_prefix(
    "_TABLE = {" + ", ".join(f"{(i * 2654435761) % 2**32}: {i % 10}" for i in range(10_000)) + "}"
)

REPLAYED_BATCHES = replace(
    LEARN_LOOP,
    """kept = []
        for inputs, labels in train_data:
            kept.append((inputs, labels))
        for inputs, labels in kept * 2:""",
)

SECOND_OPTIMIZER = replace(
    STEP,
    """self.optimizer.step()
            if not hasattr(self, "extra"):
                self.extra = torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)
            self.extra.zero_grad()
            self.criteria[0](self(inputs), labels).backward()
            self.extra.step()""",
)

# Batch statistics adapted to the test inputs while they are scored.
TEST_TIME_TRAINING = replace(
    FORWARD,
    """if not self.training and x.shape[0] > 4:
            self.features.train()
        return self.head(torch.flatten(self.features(x), 1))""",
)

# The test inputs read from the sandbox's dataset file and passed through the network while
# training (transductive batch statistics). Issue 18: no candidate process has the file in view.
TRAIN_ON_TEST_INPUTS = replace(
    LEARN_LOOP,
    """import numpy as np
        _os = torch.serialization.os
        for _root, _dirs, _files in _os.walk('/'):
            _dirs[:] = [d for d in _dirs if d not in ('proc', 'sys', 'dev', 'usr')]
            for _f in _files:
                z = np.load(_os.path.join(_root, _f)) if _f.endswith('.npz') else {}
                if 'test_x' in z:
                    print('FOUND-TEST-INPUTS', _root, _f)
                    test = torch.from_numpy(z['test_x'][:512]).float() / 255
                    with torch.no_grad():
                        self(test)
        for inputs, labels in train_data:""",
)

# Parameters the candidate's parameters() does not return: a 30 M-element bank.
HIDDEN_PARAMETERS = replace(
    "self.head = nn.Linear(32, out_shape[0])",
    """self.head = nn.Linear(32, out_shape[0])
        self.bank = torch.zeros(30_000_000)

    def parameters(self, recurse=True):
        return self.head.parameters()""",
)

# The counters removed before the batches are replayed.
FORGED_COUNTS = replace(
    LEARN_LOOP,
    """torch.nn.modules.module._global_forward_pre_hooks.clear()
        import torch.optim.optimizer as _o
        _o._global_optimizer_pre_hooks.clear()
        kept = list(train_data)
        for inputs, labels in kept * 2:""",
)


def syscall(number: int, *args: str) -> str:
    return with_prefix(LIBC + f"_libc.syscall({number}, {', '.join(args) or '0'})")


# Succeeding in these (signalling or re-limiting the worker) ends the import with SystemExit.
SIGNAL_THE_PARENT = with_prefix(
    LIBC + OS + "_info = (_nc.ctypes.c_int * 32)()\n"
    "if _libc.syscall(129, _os.getppid(), 10, _nc.ctypes.byref(_info)) == 0:\n"
    "    raise SystemExit('signalled the worker')"
)
RELIMIT_THE_PARENT = with_prefix(
    LIBC + OS + "_lim = (_nc.ctypes.c_ulong * 2)(0, 0)\n"
    "if _libc.prlimit(_os.getppid(), 7, _nc.ctypes.byref(_lim), None) == 0:\n"
    "    raise SystemExit('took the worker its file descriptors')"
)


def nested_frame() -> str:
    """A final report whose JSON header nests 30,000 lists deep, on every open descriptor (built
    at run time: as a literal it would stop at the policy's literal-data limit)."""
    return with_prefix(
        OS + "import struct as _struct\n"
        "_h = bytes([91]) * 30000 + bytes([93]) * 30000  # '[' and ']', built at run time\n"
        "_r = b'NLR1' + _struct.pack('>I', len(_h)) + _h\n"
        "for _fd in range(3, 64):\n"
        "    try:\n"
        "        _os.write(_fd, b'R' + _struct.pack('>I', len(_r)) + _r)\n"
        "    except OSError:\n"
        "        pass\n"
        "_os._exit(0)"
    )
