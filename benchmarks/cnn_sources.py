"""Deterministic generator of distinct, structurally varied LEMUR-format CNN sources.

Each source is a module with ``supported_hyperparameters()`` returning {'lr', 'momentum'} and
``class Net(nn.Module)`` with ``__init__(self, in_shape, out_shape, prm, device)``,
``train_setup``, ``learn`` and ``forward``. Sources differ in the layer sequence (depth, block
types, activations, normalisation, pooling, channels), in the helper blocks and the head, in how
layers are held and called (``nn.Sequential``, ``nn.ModuleList``, attributes, a functional
forward) and in the training code, so that few are near-duplicates under the canonical novelty
fingerprint. Plain string building (no torch); the sources are fingerprinted, never run.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Iterator

_ACTS = (
    "nn.ReLU(inplace=True)",
    "nn.ReLU()",
    "nn.LeakyReLU(0.1)",
    "nn.LeakyReLU(negative_slope=0.2, inplace=True)",
    "nn.GELU()",
    "nn.SiLU()",
    "nn.ELU(alpha=1.0)",
    "nn.Hardswish()",
    "nn.Mish()",
    "nn.PReLU()",
    "nn.Tanh()",
    "nn.SELU()",
    "nn.CELU()",
    "nn.ReLU6()",
    "nn.Softplus()",
)
_FUNCTIONAL_ACTS = (
    "F.relu",
    "F.gelu",
    "F.silu",
    "F.elu",
    "F.leaky_relu",
    "torch.relu",
    "F.mish",
    "F.hardswish",
    "torch.tanh",
    "F.selu",
)
_NORMS = (
    "nn.BatchNorm2d({c})",
    "nn.BatchNorm2d({c}, momentum=0.05)",
    "nn.GroupNorm({g}, {c})",
    "nn.InstanceNorm2d({c}, affine=True)",
    "nn.LayerNorm([{c}, {s}, {s}])",
    "",
)
_POOLS = (
    "nn.MaxPool2d(2)",
    "nn.MaxPool2d(kernel_size=3, stride=2, padding=1)",
    "nn.AvgPool2d(2)",
    "nn.AvgPool2d(kernel_size=2, stride=2)",
    "nn.LPPool2d(2, 2)",
    "nn.FractionalMaxPool2d(2, output_ratio=0.5)",
)
_DROPOUTS = ("nn.Dropout2d(0.1)", "nn.Dropout(0.2)", "nn.Dropout2d(p=0.25)", "nn.AlphaDropout(0.1)")


class _Style:
    """The per-source choices that shape how every layer and method is written."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.conv = rng.randrange(4)
        self.act = rng.choice(_ACTS) if rng.random() < 0.6 else None
        self.norm = rng.choice(_NORMS)
        self.bias = rng.random() < 0.5

    def conv2d(
        self, c_in: int | str, c_out: int | str, k: int, stride: int = 1, groups: int = 1
    ) -> str:
        pad = k // 2
        extra = f", groups={groups}" if groups > 1 else ""
        bias = ", bias=False" if self.bias else ""
        if self.conv == 0:
            return f"nn.Conv2d({c_in}, {c_out}, {k}, {stride}, {pad}{extra}{bias})"
        if self.conv == 1:
            return (
                f"nn.Conv2d({c_in}, {c_out}, kernel_size={k}, stride={stride}, "
                f"padding={pad}{extra})"
            )
        if self.conv == 2:
            return (
                f"nn.Conv2d(in_channels={c_in}, out_channels={c_out}, kernel_size={k}, "
                f"padding={pad}{extra}{bias})"
            )
        return (
            f"nn.Conv2d({c_in}, {c_out}, ({k}, {k}), stride=({stride}, {stride}), "
            f"padding={pad}{extra})"
        )

    def activation(self) -> str:
        return self.act or self.rng.choice(_ACTS)

    def normalisation(self, c: int, size: int) -> str:
        norm = self.norm if self.rng.random() < 0.8 else self.rng.choice(_NORMS)
        return norm.format(c=c, g=max(1, c // 16), s=size)


def _helper(name: str, style: _Style) -> str:
    """Source of a helper block class, written in this source's style."""
    act = style.activation()
    norm = style.normalisation(8, 8).replace("8", "c") or "nn.Identity()"
    if "LayerNorm" in norm:
        norm = "nn.GroupNorm(1, c)"
    if name == "Residual":
        second = style.rng.choice(("out + x", "x + out", "out + self.shortcut(x)"))
        shortcut = "        self.shortcut = nn.Identity()\n" if "shortcut" in second else ""
        return f"""
class Residual(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv1 = {style.conv2d("c", "c", 3)}
        self.n1 = {norm}
        self.conv2 = {style.conv2d("c", "c", 3)}
        self.n2 = {norm}
        self.act = {act}
{shortcut}
    def forward(self, x):
        out = self.act(self.n1(self.conv1(x)))
        out = self.n2(self.conv2(out))
        return self.act({second})
"""
    if name == "SqueezeExcite":
        gate = style.rng.choice(("torch.sigmoid", "F.hardsigmoid", "torch.sigmoid"))
        pool = style.rng.choice(("x.mean(dim=(2, 3))", "F.adaptive_avg_pool2d(x, 1).flatten(1)"))
        return f"""
class SqueezeExcite(nn.Module):
    def __init__(self, c, r={style.rng.choice((4, 8, 16))}):
        super().__init__()
        self.fc1 = nn.Linear(c, max(c // r, 4))
        self.fc2 = nn.Linear(max(c // r, 4), c)

    def forward(self, x):
        w = {pool}
        w = {gate}(self.fc2({style.rng.choice(_FUNCTIONAL_ACTS)}(self.fc1(w))))
        return x * w.view(x.size(0), -1, 1, 1)
"""
    if name == "Inception":
        branches = style.rng.choice((3, 4))
        lines = [
            "        self.b1 = nn.Conv2d(c_in, b, 1)",
            "        self.b3 = nn.Sequential(nn.Conv2d(c_in, b, 1), nn.Conv2d(b, b, 3, padding=1))",
            "        self.b5 = nn.Sequential(nn.Conv2d(c_in, b, 1), nn.Conv2d(b, b, 5, padding=2))",
            "        self.bp = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), "
            f"nn.Conv2d(c_in, c_out - {branches - 1} * b, 1))",
        ][4 - branches :]
        names = ["self.b1(x)", "self.b3(x)", "self.b5(x)", "self.bp(x)"][4 - branches :]
        body = "\n".join(lines)
        return f"""
class Inception(nn.Module):
    def __init__(self, c_in, c_out):
        super().__init__()
        b = c_out // {branches}
{body}
        self.act = {act}

    def forward(self, x):
        return self.act(torch.cat([{", ".join(names)}], {style.rng.choice(("1", "dim=1"))}))
"""
    # Bottleneck (inverted residual)
    mid_act = act.replace("inplace=True", "")
    ret = style.rng.choice(
        (
            "y = self.block(x)\n        return x + y if self.use_skip else y",
            "if self.use_skip:\n            return x + self.block(x)\n        return self.block(x)",
        )
    )
    return f"""
class Bottleneck(nn.Module):
    def __init__(self, c_in, c_out, expand):
        super().__init__()
        hidden = c_in * expand
        self.use_skip = c_in == c_out
        self.block = nn.Sequential(
            nn.Conv2d(c_in, hidden, 1, bias=False),
            nn.BatchNorm2d(hidden),
            {mid_act},
            nn.Conv2d(hidden, hidden, 3, padding=1, groups=hidden, bias=False),
            nn.BatchNorm2d(hidden),
            {mid_act},
            nn.Conv2d(hidden, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out),
        )

    def forward(self, x):
        {ret}
"""


def _block(style: _Style, c_in: int, c_out: int, size: int) -> tuple[list[str], set[str]]:
    """One block: the layer expressions it adds and the helper classes it needs."""
    rng = style.rng
    kind = rng.randrange(10)
    helpers: set[str] = set()
    norm = style.normalisation(c_out, size)
    if kind <= 2:
        k = rng.choice((3, 3, 5, 1, 7))
        layers = [style.conv2d(c_in, c_out, k), norm, style.activation()]
    elif kind == 3:
        layers = [
            style.conv2d(c_in, c_out, 3),
            style.activation(),
            style.conv2d(c_out, c_out, 3),
            norm,
            style.activation(),
        ]
    elif kind == 4:  # depthwise separable
        layers = [
            style.conv2d(c_in, c_in, 3, groups=c_in),
            style.conv2d(c_in, c_out, 1),
            norm,
            style.activation(),
        ]
    elif kind == 5:
        layers = [style.conv2d(c_in, c_out, 1), f"Residual({c_out})"]
        helpers.add("Residual")
    elif kind == 6:
        layers = [style.conv2d(c_in, c_out, 3), norm, style.activation(), f"SqueezeExcite({c_out})"]
        helpers.add("SqueezeExcite")
    elif kind == 7:
        layers = [f"Inception({c_in}, {c_out})"]
        helpers.add("Inception")
    elif kind == 8:
        layers = [f"Bottleneck({c_in}, {c_out}, {rng.choice((2, 4, 6))})"]
        helpers.add("Bottleneck")
    else:  # factorised k x 1, 1 x k
        k = rng.choice((3, 5, 7))
        layers = [
            f"nn.Conv2d({c_in}, {c_out}, ({k}, 1), padding=({k // 2}, 0))",
            f"nn.Conv2d({c_out}, {c_out}, (1, {k}), padding=(0, {k // 2}))",
            norm,
            style.activation(),
        ]
    if rng.random() < 0.25:
        layers.append(rng.choice(_DROPOUTS))
    return [layer for layer in layers if layer], helpers


def _head(style: _Style, c_last: int) -> list[str]:
    rng = style.rng
    pool = rng.choice(
        ("nn.AdaptiveAvgPool2d(1)", "nn.AdaptiveMaxPool2d(1)", "nn.AdaptiveAvgPool2d((1, 1))")
    )
    flat = rng.choice(("nn.Flatten()", "nn.Flatten(1)", "nn.Flatten(start_dim=1)"))
    hidden = rng.choice((0, 0, 64, 128, 256, 512))
    if not hidden:
        return [pool, flat, f"nn.Linear({c_last}, out_shape[0])"]
    head = [pool, flat, f"nn.Linear({c_last}, {hidden})", style.activation()]
    if rng.random() < 0.5:
        head.append(rng.choice(("nn.Dropout(0.5)", "nn.Dropout(p=0.3)", "nn.BatchNorm1d({h})")))
    if rng.random() < 0.3:
        head += [f"nn.Linear({hidden}, {hidden // 2})", style.activation()]
        hidden //= 2
    return [h.replace("{h}", str(hidden)) for h in head] + [f"nn.Linear({hidden}, out_shape[0])"]


def _layout(
    style: _Style, stem: str, layers: list[str], head: list[str]
) -> tuple[list[str], list[str]]:
    """(__init__ body lines, forward body lines) for one way of holding the layers."""
    rng = style.rng
    kind = rng.randrange(5)
    if kind == 0:  # Sequential features + classifier
        init = [f"        self.stem = {stem}", "        self.features = nn.Sequential("]
        init += [f"            {layer}," for layer in layers] + ["        )"]
        init += ["        self.classifier = nn.Sequential("]
        init += [f"            {layer}," for layer in head] + ["        )"]
        fwd = ["        x = self.features(self.stem(x))", "        return self.classifier(x)"]
    elif kind == 1:  # ModuleList in a loop
        init = ["        self.layers = nn.ModuleList(["]
        init += [f"            {layer}," for layer in [stem, *layers]] + ["        ])"]
        init += ["        self.head = nn.Sequential(" + ", ".join(head) + ")"]
        fwd = [
            "        for layer in self.layers:",
            "            x = layer(x)",
            "        return self.head(x)",
        ]
    elif kind == 2:  # one attribute per layer
        init = [f"        self.layer0 = {stem}"]
        fwd = ["        x = self.layer0(x)"]
        for i, layer in enumerate([*layers, *head], start=1):
            init.append(f"        self.layer{i} = {layer}")
            fwd.append(f"        x = self.layer{i}(x)")
        fwd.append("        return x")
    elif kind == 3:  # a list built with append, then Sequential(*layers)
        init = ["        layers = []", f"        layers.append({stem})"]
        init += [f"        layers.append({layer})" for layer in layers]
        init += ["        self.body = nn.Sequential(*layers)"]
        init += [f"        self.fc = nn.Sequential({', '.join(head[2:])})"]
        pooled = rng.choice(
            (
                "torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)",
                "x.mean(dim=(2, 3))",
                "F.adaptive_max_pool2d(x, 1).view(x.size(0), -1)",
            )
        )
        fwd = ["        x = self.body(x)", f"        x = {pooled}", "        return self.fc(x)"]
    else:  # OrderedDict-free named stages with a functional activation in forward
        act = rng.choice(_FUNCTIONAL_ACTS)
        init = [f"        self.stem = {stem}"]
        fwd = [f"        x = {act}(self.stem(x))"]
        for i, layer in enumerate(layers):
            init.append(f"        self.block{i} = {layer}")
            fwd.append(f"        x = self.block{i}(x)")
        init.append("        self.head = nn.Sequential(" + ", ".join(head) + ")")
        fwd.append("        return self.head(x)")
    return init, fwd


_SETUPS = (
    """    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = ({crit}.to(self.device),)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=prm['lr'],
                                         momentum=prm['momentum']{opt})
""",
    """    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = [{crit}]
        params = [p for p in self.parameters() if p.requires_grad]
        self.optimizer = torch.optim.SGD(params, lr=prm['lr'], momentum=prm['momentum']{opt})
""",
    """    def train_setup(self, prm):
        self.to(self.device)
        lr, momentum = prm['lr'], prm['momentum']
        self.criteria = ({crit},)
        self.optimizer = torch.optim.SGD(
            self.parameters(),
            lr=lr,
            momentum=momentum{opt},
        )
""",
    """    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.CrossEntropyLoss().to(self.device),)
        decay = [p for n, p in self.named_parameters() if p.ndim > 1]
        no_decay = [p for n, p in self.named_parameters() if p.ndim <= 1]
        self.optimizer = torch.optim.SGD(
            [{{'params': decay, 'weight_decay': 5e-4}},
             {{'params': no_decay, 'weight_decay': 0.0}}],
            lr=prm['lr'],
            momentum=prm['momentum'],
        )
""",
)
_LEARNS = (
    """    def learn(self, train_data):
        self.train()
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            outputs = self(inputs)
            loss = self.criteria[0](outputs, labels)
            loss.backward(){clip}
            self.optimizer.step()
""",
    """    def learn(self, train_data):
        self.train()
        for batch in train_data:
            x, y = batch[0].to(self.device), batch[1].to(self.device)
            self.optimizer.zero_grad(set_to_none=True)
            loss = self.criteria[0](self.forward(x), y)
            loss.backward(){clip}
            self.optimizer.step()
""",
    """    def learn(self, train_data):
        self.train()
        total = 0.0
        for step, (inputs, labels) in enumerate(train_data):
            inputs = inputs.to(self.device, non_blocking=True)
            labels = labels.to(self.device, non_blocking=True)
            outputs = self(inputs)
            loss = self.criteria[0](outputs, labels)
            self.optimizer.zero_grad()
            loss.backward(){clip}
            self.optimizer.step()
            total += loss.item()
        return total / max(step + 1, 1)
""",
    """    def learn(self, train_data):
        self.train()
        criterion = self.criteria[0]
        for inputs, labels in train_data:
            inputs = inputs.to(self.device)
            labels = labels.to(self.device)
            for p in self.parameters():
                p.grad = None
            loss = criterion(self(inputs), labels)
            if not torch.isfinite(loss):
                continue
            loss.backward(){clip}
            self.optimizer.step()
""",
)
_INITS = (
    "",
    """
    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode='fan_out', nonlinearity='relu')
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)
""",
    """
    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.constant_(m.bias, 0)
""",
)
_IMPORTS = (
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F",
    "import torch\nfrom torch import nn\nfrom torch.nn import functional as F",
    "import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\nimport math",
)
_HYPERPARAMETERS = (
    "def supported_hyperparameters():\n    return {'lr', 'momentum'}",
    "def supported_hyperparameters():\n    return set({'lr': 0.01, 'momentum': 0.9})",
    "def supported_hyperparameters():\n    return set(['lr', 'momentum'])",
)


def _source(rng: random.Random) -> str:
    style = _Style(rng)
    depth = rng.randint(2, 10)
    channels = [rng.choice((8, 16, 24, 32, 48, 64))]
    layers: list[str] = []
    helpers: set[str] = set()
    size = 32
    for _ in range(depth):
        c_out = min(channels[-1] * rng.choice((1, 1, 2, 2, 3)), 512)
        block, needed = _block(style, channels[-1], c_out, size)
        layers += block
        helpers |= needed
        channels.append(c_out)
        if size > 2 and rng.random() < 0.6:
            if rng.random() < 0.3:  # downsample with a strided conv instead of pooling
                layers.append(style.conv2d(c_out, c_out, 3, stride=2))
            else:
                layers.append(rng.choice(_POOLS))
            size //= 2
    stem = style.conv2d("in_shape[1]", channels[0], rng.choice((3, 3, 5, 7)))
    init, fwd = _layout(style, stem, layers, _head(style, channels[-1]))
    weight_init = rng.choice(_INITS)
    if weight_init:
        init.append("        self._init_weights()")
    crit = rng.choice(
        ("nn.CrossEntropyLoss()", "nn.CrossEntropyLoss(label_smoothing=0.1)", "nn.NLLLoss()")
    )
    if crit == "nn.NLLLoss()":
        fwd[-1] = fwd[-1].replace("return ", "return F.log_softmax(", 1) + ", dim=1)"
    opt = rng.choice(
        ("", ", weight_decay=5e-4", ", nesterov=True", ", weight_decay=1e-4, nesterov=True")
    )
    clip = rng.choice(
        (
            "",
            "",
            "\n            nn.utils.clip_grad_norm_(self.parameters(), 3.0)",
            "\n            torch.nn.utils.clip_grad_value_(self.parameters(), 1.0)",
        )
    )
    parts = [
        rng.choice(_IMPORTS),
        "",
        "",
        rng.choice(_HYPERPARAMETERS),
        "",
        *(_helper(name, style) for name in sorted(helpers)),
        "",
        "class Net(nn.Module):",
        "    def __init__(self, in_shape, out_shape, prm, device):",
        "        super().__init__()",
        "        self.device = device",
        *init,
        weight_init,
        rng.choice(_SETUPS).format(crit=crit, opt=opt),
        rng.choice(_LEARNS).format(clip=clip),
        "    def forward(self, x):",
        *fwd,
        "",
    ]
    return "\n".join(parts)


def generate_sources(n: int, seed: int = 0) -> Iterator[str]:
    """Yield ``n`` distinct CNN sources, the same ones for the same ``seed``."""
    rng = random.Random(seed)
    seen: set[bytes] = set()
    produced = 0
    while produced < n:
        src = _source(rng)
        key = hashlib.blake2b(src.encode(), digest_size=16).digest()
        if key in seen:
            continue
        seen.add(key)
        produced += 1
        yield src


_CONTRACT_ATTRS = {"device", "optimizer", "criteria"}


def renamed(code: str, tag: str = "v") -> str:
    """The same network with every user-chosen name changed and a comment added.

    Attributes the code assigns (``self.<name> = ...``, except the contract's ``device``,
    ``optimizer`` and ``criteria``) and the usual locals get a new, consistent name: what a
    model that "rewrites" a known network without changing it would produce. The novelty
    fingerprint must see through it.
    """
    attrs = set(re.findall(r"\bself\.(\w+)\s*=", code)) - _CONTRACT_ATTRS
    out = re.sub(
        r"\bself\.(\w+)",
        lambda m: f"self.{tag}_{m.group(1)}" if m.group(1) in attrs else m.group(0),
        code,
    )
    out = re.sub(r"\b(x|out|b|c)\b", lambda m: f"{tag}_{m.group(1)}", out)
    return f"# {tag}: a new idea, surely\n{out}"
