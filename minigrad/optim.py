"""Optimizers. SGD: w <- w - lr * (dL/dw + weight_decay * w), applied in place to each parameter."""
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
