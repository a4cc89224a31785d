"""Networks that try to raise the reward without learning more than one epoch allows (issue 18):
one of each attack class of the issue, written anew (not the issue's own programs).

Each is the good network with one change; run on the ``quick`` protocol beside the good network
itself, each must gain nothing: be refused, or score no more than the honest network plus a
stated margin (tests/adversarial/test_reward.py).
"""

from __future__ import annotations

from functools import cache

from candidates import GOOD_NET, replace, with_prefix

LEARN = "    def learn(self, train_data):\n"
LEARN_LOOP = "        for inputs, labels in train_data:\n"
STEP = "            self.optimizer.step()\n"
FORWARD = "        return self.head(torch.flatten(self.features(x), 1))\n"
TRAIN_SETUP_END = (
    '        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm["lr"], '
    'momentum=prm["momentum"])\n'
)
EXTRA_EPOCHS = 6

# Finds the evaluator's dataset file wherever it is in view: a NumPy archive with train_x.
FIND_NPZ = """
def _dataset_file():
    import numpy as np
    _os = torch.serialization.os
    for root, dirs, files in _os.walk("/"):
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev", "usr", "lib", "etc")]
        for f in files:
            if f.endswith(".npz"):
                try:
                    z = np.load(_os.path.join(root, f))
                except (OSError, ValueError):
                    continue
                if "train_x" in z.files and "train_y" in z.files:
                    return z
    return None


def _normalised(z, x):
    x = torch.from_numpy(x).float() * float(z["scale"])
    mean = torch.from_numpy(z["mean"]).view(1, -1, 1, 1)
    return (x - mean) / torch.from_numpy(z["std"]).view(1, -1, 1, 1)
"""


def _in_learn_after_loop(code: str) -> str:
    """The good network whose learn() keeps its batches and then runs ``code`` (indented for
    learn's body; ``kept`` holds the (inputs, labels) batches of the one epoch)."""
    body = "".join(f"        {line}\n" if line else "\n" for line in code.strip().splitlines())
    net = replace(LEARN_LOOP, "        kept = []\n" + LEARN_LOOP)
    net = replace(STEP, STEP + "            kept.append((inputs, labels))\n", net)
    return net.rstrip("\n") + "\n" + body


# 1. Replay through copied layers, outside every module call and every optimizer: the layers'
# tensors are copied, the kept batches run through them functionally six more times with a hand
# written SGD step, and the result is copied back into the network.
REPLAY_THROUGH_COPIED_LAYERS = _in_learn_after_loop(
    f"""
import torch.nn.functional as F
conv1, bn1, conv2, bn2 = self.features[0], self.features[1], self.features[4], self.features[5]
own = [conv1.weight, conv1.bias, bn1.weight, bn1.bias, conv2.weight, conv2.bias,
       bn2.weight, bn2.bias, self.head.weight, self.head.bias]
ws = [t.detach().clone().requires_grad_(True) for t in own]
velocity = [torch.zeros_like(w) for w in ws]
stats = [b.detach().clone() for b in (bn1.running_mean, bn1.running_var,
                                      bn2.running_mean, bn2.running_var)]

def twin(x):
    h = F.conv2d(x, ws[0], ws[1], padding=1)
    h = F.relu(F.batch_norm(h, stats[0], stats[1], ws[2], ws[3], training=True))
    h = F.max_pool2d(h, 2)
    h = F.conv2d(h, ws[4], ws[5], padding=1)
    h = F.relu(F.batch_norm(h, stats[2], stats[3], ws[6], ws[7], training=True))
    return F.linear(torch.flatten(F.adaptive_avg_pool2d(h, 1), 1), ws[8], ws[9])

for _ in range({EXTRA_EPOCHS}):
    for x, y in kept:
        grads = torch.autograd.grad(F.cross_entropy(twin(x), y), ws)
        with torch.no_grad():
            for w, g, v in zip(ws, grads, velocity):
                v.mul_(0.9).add_(g)
                w.sub_(0.01 * v)
with torch.no_grad():
    for t, w in zip(own, ws):
        t.copy_(w)
    for b, c in zip((bn1.running_mean, bn1.running_var, bn2.running_mean, bn2.running_var), stats):
        b.copy_(c)
"""
)

# 2. The meter switched off through torch's global hook table (the hook's bound object), the
# batches replayed through the network and its own optimizer, the meter switched back on.
METER_OFF_THROUGH_GLOBAL_HOOKS = _in_learn_after_loop(
    f"""
import torch.nn.modules.module as _mm
import torch.optim.optimizer as _oo
hooks = [*_mm._global_forward_pre_hooks.values(), *_oo._global_optimizer_pre_hooks.values()]
owners = [h.__self__ for h in hooks if hasattr(h, "__self__")]
saved = [(o, dict(o.__dict__)) for o in owners]
for o in owners:
    for name, value in list(o.__dict__.items()):
        if isinstance(value, str):
            o.__dict__[name] = "off"
for _ in range({EXTRA_EPOCHS}):
    for inputs, labels in kept:
        self.optimizer.zero_grad()
        self.criteria[0](self(inputs), labels).backward()
        self.optimizer.step()
for o, state in saved:
    o.__dict__.update({{k: v for k, v in state.items() if isinstance(v, str)}})
"""
)

# 3. Training in train_setup() (before learn(), where nothing counts) on the training split
# read from the dataset file in the sandbox's view.
TRAIN_IN_SETUP_FROM_FILE = with_prefix(
    FIND_NPZ,
    replace(
        TRAIN_SETUP_END,
        TRAIN_SETUP_END
        + f"""        z = _dataset_file()
        if z is not None:
            x, y = _normalised(z, z["train_x"]), torch.from_numpy(z["train_y"])
            self.train()
            for _ in range({EXTRA_EPOCHS}):
                for i in range(0, len(y), 32):
                    self.optimizer.zero_grad()
                    self.criteria[0](self(x[i:i + 32]), y[i:i + 32]).backward()
                    self.optimizer.step()
""",
    ),
)

# 4. No learning at all: each scored input answered with the label of its nearest training
# input in the dataset file in view.
NEAREST_NEIGHBOUR_OVER_FILE = with_prefix(
    FIND_NPZ,
    replace(
        FORWARD,
        """        out = self.head(torch.flatten(self.features(x), 1))
        if self.training:
            return out
        if not hasattr(self, "_memory"):
            z = _dataset_file()
            self._memory = None if z is None else (
                _normalised(z, z["train_x"]).flatten(1), torch.from_numpy(z["train_y"]))
        if self._memory is None:
            return out
        ref, labels = self._memory
        nearest = labels[torch.cdist(x.flatten(1), ref).argmin(1)]
        return nn.functional.one_hot(nearest, out.shape[1]).float() * 50
""",
    ),
)


def _content_key() -> str:
    """A network-side key of a digits image from its normalised 3x32x32 tensor: the 8x8 source
    image's 0..16 grey levels recovered from each image's own range, hashed."""
    return """
def _key(img):
    g = img[0, ::4, ::4].flatten()
    lo, hi = g.min(), g.max()
    levels = torch.round((g - lo) / (hi - lo + 1e-9) * 16).long().tolist()
    h = 0
    for v in levels:
        h = (h * 17 + v) % 1000003
    return h
"""


@cache
def literal_label_table() -> str:
    """5. The public digits set in the source: a content hash of every image -> its label."""
    import numpy as np
    from sklearn.datasets import load_digits

    d = load_digits()
    table = {}
    for image, label in zip(d.images, d.target, strict=True):
        g = np.rint(image * (255 / 16)).flatten()  # what the evaluator's file holds
        levels = np.round((g - g.min()) / (g.max() - g.min() + 1e-9) * 16).astype(int)
        h = 0
        for v in levels:
            h = (h * 17 + int(v)) % 1000003
        table[h] = int(label)
    return with_prefix(
        _content_key() + f"\n_TABLE = {table!r}\n",
        replace(
            FORWARD,
            """        out = self.head(torch.flatten(self.features(x), 1))
        if self.training:
            return out
        known = [_TABLE.get(_key(img), -1) for img in x]
        hit = torch.tensor([k >= 0 for k in known])
        picked = nn.functional.one_hot(torch.tensor(known).clamp(min=0), out.shape[1]) * 50.0
        return torch.where(hit[:, None], picked, out)
""",
        ),
    )


# 6. Labels rebuilt from a dataset package's own data file (scikit-learn's digits.csv.gz),
# looked for along the import path and the filesystem, read with numpy only.
REBUILD_FROM_PACKAGE_FILE = replace(
    FORWARD,
    """        out = self.head(torch.flatten(self.features(x), 1))
        if self.training:
            return out
        if not hasattr(self, "_digits"):
            import numpy as np
            _os = torch.serialization.os
            self._digits = None
            here = _os.path.dirname(_os.path.dirname(np.__file__))  # site-packages
            places = [here, "/usr", "/opt", "/"]
            for place in places:
                for root, dirs, files in _os.walk(place):
                    dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
                    if "digits.csv.gz" in files:
                        rows = np.loadtxt(_os.path.join(root, "digits.csv.gz"), delimiter=",")
                        self._digits = (torch.tensor(rows[:, :-1]).float(),
                                        torch.tensor(rows[:, -1]).long())
                        break
                if self._digits is not None:
                    break
        if self._digits is None:
            return out
        ref, labels = self._digits
        small = x[:, 0, ::4, ::4].flatten(1)
        small = (small - small.min(1, keepdim=True).values)
        small = small / (small.max(1, keepdim=True).values + 1e-9) * 16
        nearest = labels[torch.cdist(small, ref).argmin(1)]
        return nn.functional.one_hot(nearest, out.shape[1]).float() * 50
""",
)

# 7. State beyond the parameter limit kept in plain Python lists (nested, so that no registered
# module or tensor attribute holds it): a 25 M-element bank and the training batches, used to
# answer each scored input with the label of its nearest training input.
HIDDEN_ELEMENTS = 25_000_000
HIDDEN_STATE_IN_A_LIST = replace(
    FORWARD,
    """        out = self.head(torch.flatten(self.features(x), 1))
        memory = getattr(self, "memory", None)
        if self.training or not memory or not memory[1]:
            return out
        ref, labels = torch.cat(memory[1]).flatten(1), torch.cat(memory[2])
        nearest = labels[torch.cdist(x.flatten(1), ref).argmin(1)]
        return nn.functional.one_hot(nearest, out.shape[1]).float() * 50
""",
    replace(
        LEARN_LOOP,
        f"        self.memory = [[torch.zeros({HIDDEN_ELEMENTS})], [], []]\n"
        + LEARN_LOOP
        + "            self.memory[1].append(inputs.detach().clone())\n"
        + "            self.memory[2].append(labels.detach().clone())\n",
    ),
)

CARRY_VALUE = "carry-over-3f81a0"
CARRY_PATHS = ("/dev/shm/nasloop-carry", "/tmp/nasloop-carry")


def carry_writer() -> str:
    """8a. Leaves a file in /dev/shm and in /tmp for the next candidate on the same worker."""
    return with_prefix(
        "_os = torch.serialization.os\n"
        f"for _p in {CARRY_PATHS!r}:\n"
        "    try:\n"
        "        _fd = _os.open(_p, _os.O_CREAT | _os.O_WRONLY | _os.O_TRUNC, 0o666)\n"
        f"        _os.write(_fd, {CARRY_VALUE.encode()!r})\n"
        "        _os.close(_fd)\n"
        "        print('left', _p)\n"
        "    except OSError as e:\n"
        "        print('could not leave', _p, type(e).__name__)"
    )


def carry_reader() -> str:
    """8b. Prints what an earlier candidate left in /dev/shm and /tmp."""
    return with_prefix(
        "_os = torch.serialization.os\n"
        f"for _p in {CARRY_PATHS!r}:\n"
        "    try:\n"
        "        print('found', _p, _os.read(_os.open(_p, _os.O_RDONLY), 64))\n"
        "    except OSError as e:\n"
        "        print('nothing at', _p, type(e).__name__)"
    )


HONEST = GOOD_NET
