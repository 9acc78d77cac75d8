"""What one run trains: the chapter's MLP with a kind of noise after each hidden layer (or on the weights)."""

import dataclasses

import minigrad as mg
from minigrad import nn
from minigrad.chapter.model import DROPOUT1, DROPOUT2, NUM_INPUTS, NUM_OUTPUTS

NOISES = ("dropout", "dropconnect", "gaussian-dropout", "uniform-noise", "hidden-noise", "input-noise")


@dataclasses.dataclass(frozen=True)
class Setting:
    """A run's regulariser. ``p1``/``p2``: the noise after hidden layer 1/2 (or on the weights into it, for
    DropConnect); ``sigma``: the standard deviation of additive Gaussian noise; ``weight_decay`` on the weights.

    Settings are hashable: results are keyed by them, and ``label`` names them in reports and results.json.
    """

    label: str
    noise: str = "dropout"
    p1: float = 0.0
    p2: float = 0.0
    sigma: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self):
        if self.noise not in NOISES:
            raise ValueError(f"unknown noise {self.noise!r}: one of {', '.join(NOISES)}")

    def as_dict(self):
        """The setting's fields as a dict, for results.json."""
        return dataclasses.asdict(self)


CHAPTER = Setting(f"dropout ({DROPOUT1}, {DROPOUT2})", p1=DROPOUT1, p2=DROPOUT2)
NO_DROPOUT = Setting("no dropout")


def dropout(p1, p2):
    """The chapter's model with standard dropout ``p1`` after the first hidden layer and ``p2`` after the second."""
    return Setting(f"dropout ({p1}, {p2})", p1=p1, p2=p2)


def build_model(setting, hidden, device):
    """The chapter's MLP with the noise of ``setting``: only the layers it needs, no placeholders."""
    sizes = [NUM_INPUTS, *hidden, NUM_OUTPUTS]
    layers = [nn.GaussianNoise(setting.sigma)] if setting.noise == "input-noise" else []
    for k, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        p_into = (0.0, setting.p1, setting.p2)[k]  # DropConnect drops the weights after a hidden layer's output
        if setting.noise == "dropconnect" and p_into > 0:
            layers.append(nn.DropConnect(fan_in, fan_out, p=p_into, device=device))
        else:
            layers.append(nn.Linear(fan_in, fan_out, device=device))
        if k < len(hidden):
            layers.append(nn.ReLU())
            noise = after_hidden(setting, (setting.p1, setting.p2)[k])
            if noise is not None:
                layers.append(noise)
    return nn.Sequential(*layers)


def after_hidden(setting, p):
    """The noise layer after a hidden layer's ReLU, or None when the setting puts none there."""
    if setting.noise == "dropout" and p > 0:
        return nn.Dropout(p)
    if setting.noise == "gaussian-dropout" and p > 0:
        return nn.GaussianDropout(p)
    if setting.noise == "uniform-noise" and p > 0:
        return nn.UniformNoise(p)
    if setting.noise == "hidden-noise" and setting.sigma > 0:
        return nn.GaussianNoise(setting.sigma)
    return None


def optimizer_for(model, setting, lr):
    """SGD; weight decay (when asked) on the weight matrices only, not on the biases."""
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    biases = [p for name, p in model.named_parameters() if not name.endswith("weight")]
    return mg.optim.SGD(
        [{"params": weights, "weight_decay": setting.weight_decay}, {"params": biases, "weight_decay": 0.0}], lr=lr
    )
