"""Optimizers. SGD: w <- w - lr * (dL/dw + weight_decay * w), applied in place to each parameter."""
import math

from . import kernels


class Optimizer:
    """Holds parameter groups: lists of parameters that share settings such as ``lr``.

    ``params`` is an iterable of Parameters, or of dicts ``{"params": [...], **settings}`` whose
    settings override the defaults for that group (e.g. weight decay on weights only).
    """

    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError("optimizer got an empty parameter list: pass model.parameters()")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.defaults = defaults
        self.param_groups = []
        for group in groups:
            group = {**defaults, **group, "params": list(group["params"])}
            self._check(group)
            self.param_groups.append(group)

    def _check(self, group):
        pass

    def zero_grad(self):
        """Forget the gradients (set them to None, so the next backward assigns rather than adds)."""
        for group in self.param_groups:
            for parameter in group["params"]:
                parameter.grad = None

    def step(self):
        raise NotImplementedError


class SGD(Optimizer):
    """Minibatch stochastic gradient descent: w <- w - lr * (g + weight_decay * w).

    The loss is already a mean over the batch, so the gradient needs no division by the batch
    size (the chapter's ``sgd(params, lr, batch_size)`` divides because its loss is a sum).
    """

    def __init__(self, params, lr, weight_decay=0.0):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay})

    def _check(self, group):
        if not group["lr"] > 0:
            raise ValueError(f"learning rate must be > 0, got {group['lr']}")
        if not group["weight_decay"] >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {group['weight_decay']}")

    def step(self):
        for group in self.param_groups:
            lr, weight_decay = group["lr"], group["weight_decay"]
            for parameter in group["params"]:
                if parameter.grad is not None:  # in place: the array the model holds is updated
                    kernels.sgd_update(parameter.data, parameter.grad, lr, weight_decay)


class StepLR:
    """Learning-rate schedule: lr = initial lr * gamma^(epoch // step_size). Call ``step()`` once per epoch."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        if step_size < 1 or not gamma > 0:
            raise ValueError(f"StepLR needs step_size >= 1 and gamma > 0, got {step_size} and {gamma}")
        self.optimizer, self.step_size, self.gamma = optimizer, step_size, gamma
        self.initial = [group["lr"] for group in optimizer.param_groups]
        self.epoch = 0

    def factor(self, epoch):
        return self.gamma ** (epoch // self.step_size)

    def step(self):
        self.epoch += 1
        for group, initial in zip(self.optimizer.param_groups, self.initial):
            group["lr"] = initial * self.factor(self.epoch)


class CosineAnnealingLR(StepLR):
    """lr = eta_min + (initial lr - eta_min) (1 + cos(pi epoch / T_max)) / 2: from the initial rate to eta_min."""

    def __init__(self, optimizer, T_max, eta_min=0.0):  # noqa: N803 (PyTorch's name)
        if T_max < 1:
            raise ValueError(f"CosineAnnealingLR needs T_max >= 1, got {T_max}")
        self.optimizer, self.T_max, self.eta_min = optimizer, T_max, eta_min
        self.initial = [group["lr"] for group in optimizer.param_groups]
        self.epoch = 0

    def step(self):
        self.epoch += 1
        progress = min(self.epoch, self.T_max) / self.T_max
        for group, initial in zip(self.optimizer.param_groups, self.initial):
            group["lr"] = self.eta_min + (initial - self.eta_min) * (1 + math.cos(math.pi * progress)) / 2
