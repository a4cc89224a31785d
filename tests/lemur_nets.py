"""LEMUR-style networks (written for these tests) using constructs common in LEMUR's code.

Each entry: the source and the protocol fields LEMUR would train it with (its transform's input
size, the preset's parameter limit). Shared by the unit tests and the evaluator benchmark,
which reports the share that passes before and after issue 11.
"""

from __future__ import annotations

from candidates import GOOD_NET, replace

HEAD = """
import torch
import torch.nn as nn


def supported_hyperparameters():
    return {HP}
"""

# LEMUR's usual training code (the same as the good network's).
TRAIN = "\n" + GOOD_NET[GOOD_NET.index("    def train_setup") :]


def net(hp: str, body: str, train: str = TRAIN) -> str:
    return HEAD.replace("{HP}", hp) + body + train


SETATTR_BLOCKS = net(
    "{'lr', 'momentum'}",
    """
class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        c = in_shape[1]
        for i, width in enumerate((16, 32)):
            setattr(self, f'conv{i}', nn.Sequential(nn.Conv2d(c, width, 3, padding=1),
                                                     nn.BatchNorm2d(width), nn.ReLU()))
            c = width
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, out_shape[0])

    def forward(self, x):
        for i in range(2):
            x = getattr(self, f'conv{i}')(x)
        return self.fc(torch.flatten(self.pool(x), 1))
""",
)

CLASS_NAME = net(
    "{'lr', 'momentum'}",
    """
class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.name = self.__class__.__name__ + '-' + type(self).__name__
        self.body = nn.Sequential(nn.Conv2d(in_shape[1], 16, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(16, out_shape[0]))

    def forward(self, x):
        return self.body(x)
""",
)

ONE_CYCLE = net(
    "{'lr', 'momentum'}",
    """
class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.body = nn.Sequential(nn.Conv2d(in_shape[1], 16, 3, padding=1), nn.ReLU(),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(16, out_shape[0]))

    def forward(self, x):
        return self.body(x)
""",
    replace(
        "    def learn(self, train_data):\n",
        "    def learn(self, train_data):\n"
        "        self.train()\n"
        "        scheduler = torch.optim.lr_scheduler.OneCycleLR(\n"
        "            self.optimizer, max_lr=0.01, epochs=1, steps_per_epoch=len(train_data))\n"
        "        assert train_data.batch_size and len(train_data.dataset) > 0\n",
        replace(
            "            self.optimizer.step()\n",
            "            self.optimizer.step()\n            scheduler.step()\n",
            TRAIN,
        ),
    ),
)

EXTRA_HYPERPARAMETERS = net(
    "{'lr', 'momentum', 'weight_decay', 'alpha'}",
    """
class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.body = nn.Sequential(nn.Conv2d(in_shape[1], 16, 3, padding=1),
                                  nn.LeakyReLU(prm['alpha']), nn.AdaptiveAvgPool2d(1),
                                  nn.Flatten(), nn.Linear(16, out_shape[0]))

    def forward(self, x):
        return self.body(x)
""",
    replace(
        'momentum=prm["momentum"])',
        'momentum=prm["momentum"],\n'
        '                                         weight_decay=prm["weight_decay"])',
        TRAIN,
    ),
)

# AlexNet's stem: too small an image leaves nothing after the third pooling.
ALEXNET_STYLE = net(
    "{'lr', 'momentum', 'dropout'}",
    """
class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.features = nn.Sequential(
            nn.Conv2d(in_shape[1], 16, 11, stride=4, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(16, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(3, 2),
            nn.Conv2d(32, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(3, 2))
        self.classifier = nn.Sequential(nn.Dropout(prm['dropout']), nn.Flatten(),
                                        nn.Linear(32, out_shape[0]))

    def forward(self, x):
        return self.classifier(self.features(x))
""",
)

# A VGG-sized classifier head: above the local presets' limit, within the paper preset's.
WIDE_CLASSIC = net(
    "{'lr', 'momentum'}",
    """
class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.features = nn.Sequential(nn.Conv2d(in_shape[1], 64, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(9))
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(64 * 81, 4096), nn.ReLU(),
                                        nn.Linear(4096, out_shape[0]))

    def forward(self, x):
        return self.classifier(self.features(x))
""",
)

# ConvNeXt's stage configuration prints itself through ``self.__dict__`` (LEMUR's ConvNeXt.py,
# from torchvision): an attribute trick the AST policy refused until issue 18 left those to the
# sandbox.
CONVNEXT_CONFIG_REPR = net(
    "{'lr', 'momentum'}",
    """
class StageConfig:
    def __init__(self, input_channels, out_channels, num_layers):
        self.input_channels = input_channels
        self.out_channels = out_channels
        self.num_layers = num_layers

    def __repr__(self):
        s = self.__class__.__name__ + "("
        s += "input_channels={input_channels}, out_channels={out_channels}"
        s += ", num_layers={num_layers})"
        return s.format(**self.__dict__)


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        stages = [StageConfig(16, 32, 1), StageConfig(32, None, 1)]
        self.stem = nn.Conv2d(in_shape[1], 16, 4, stride=4)
        layers = []
        for cfg in stages:
            for _ in range(cfg.num_layers):
                layers += [nn.Conv2d(cfg.input_channels, cfg.input_channels, 7, padding=3,
                                     groups=cfg.input_channels), nn.GELU()]
            if cfg.out_channels is not None:
                layers.append(nn.Conv2d(cfg.input_channels, cfg.out_channels, 2, stride=2))
        self.stages = nn.Sequential(*layers)
        self.names = repr(stages)
        self.head = nn.Linear(stages[-1].input_channels, out_shape[0])

    def forward(self, x):
        return self.head(self.stages(self.stem(x)).mean((2, 3)))
""",
)

TORCHVISION_OPS = net(
    "{'lr', 'momentum'}",
    """
from torchvision.ops import StochasticDepth


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.drop = StochasticDepth(0.1, 'row')
        self.fc = nn.Linear(in_shape[1], out_shape[0])

    def forward(self, x):
        return self.fc(self.drop(x.mean((2, 3))))
""",
).replace("import torch.nn as nn\n", "import torch.nn as nn\n", 1)

# Like torchvision's MNASNet (in LEMUR's corpus): the module refuses a state without the per-module
# "version" that ``state_dict()`` records, so a network's state must load with it.
VERSIONED_STATE = net(
    "{'lr', 'momentum'}",
    """
class Net(nn.Module):
    _version = 2

    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.device = device
        self.conv = nn.Conv2d(in_shape[1], 8, 3, padding=1)
        self.fc = nn.Linear(8, out_shape[0])

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args):
        if local_metadata.get("version") not in (1, 2):
            raise ValueError(f"version should be 1 or 2, not {local_metadata.get('version')}")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args)
""",
)

# name -> (code, the EvaluationProtocol request LEMUR's training of it corresponds to)
NETS: dict[str, tuple[str, dict[str, object]]] = {
    "setattr_blocks": (SETATTR_BLOCKS, {}),
    "class_name": (CLASS_NAME, {}),
    "one_cycle_len": (ONE_CYCLE, {}),
    "extra_hyperparameters": (EXTRA_HYPERPARAMETERS, {}),
    "alexnet_style_64px": (ALEXNET_STYLE, {"input_size": 64}),
    "wide_classic_paper_limit": (WIDE_CLASSIC, {"name": "paper", "input_size": 32}),
    "torchvision_ops": (TORCHVISION_OPS, {}),
    "convnext_config_repr": (CONVNEXT_CONFIG_REPR, {}),
    "versioned_state": (VERSIONED_STATE, {}),
}


def lemur_outcomes(data: object, batch_size: int = 8) -> dict[str, str]:
    """name -> final status of each network, run in process (static stages, then the harness)
    under the protocol its request resolves to, on ``data`` (a SandboxData)."""
    from dataclasses import replace

    from nasloop.config import EvaluatorConfig
    from nasloop.rpc import InvalidArgument
    from nasloop.v1 import common_pb2 as common
    from services.evaluator import protocols
    from services.evaluator.harness import Harness
    from services.evaluator.policy import static_check
    from services.evaluator.task import Task

    cfg = EvaluatorConfig()
    out = {}
    for name, (code, request) in NETS.items():
        try:
            p = protocols.resolve(common.EvaluationProtocol(**request), cfg)  # type: ignore[arg-type]
        except (ValueError, InvalidArgument) as e:  # a protocol this evaluator cannot give
            out[name] = f"refused protocol: {e}"
            continue
        static = static_check(code, cfg.max_code_bytes)
        if static.status != common.STATUS_OK:
            out[name] = common.Status.Name(static.status)
            continue
        p = replace(p, dataset="tiny", batch_size=batch_size, train_subset=0, test_subset=0)
        out[name] = common.Status.Name(Harness(Task(name, code, p), data).run().status)  # type: ignore[arg-type]
    return out
