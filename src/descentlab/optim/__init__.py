"""descentlab.optim: the classic gradient-descent family as drop-in ``torch.optim`` optimizers.

``SGD``, ``Adagrad``, ``RMSprop``, ``Adam`` and ``AdamW`` take torch.optim's arguments, defaults and
``state_dict`` layout; each is built from one :class:`Rule` declaration. ``create(name, params)``
and ``names()`` use the article's vocabulary (gd, sgd, momentum, nesterov, adagrad, rmsprop, adam,
adamw).

Engine options: ``foreach``, ``fused``, ``capturable`` and ``differentiable`` are accepted and stored
in the param groups so checkpoints move to and from torch.optim; ``foreach=False``, ``fused=False``
and ``differentiable=True`` ask for the per-tensor core. ``differentiable=True`` steps with autograd
on, as torch's (hypergradients through a non-leaf parameter and an lr that requires grad);
``fused=True`` gives the for-loop's numbers (torch's fused CPU kernels differ from them by a few ulps);
``capturable=True`` raises on CPU parameters as torch does and changes nothing elsewhere; torch's
constructor errors (``fused`` with ``foreach`` or ``differentiable``) are raised with its messages.
``set_engine(opt, mode)`` picks the path (:mod:`.engine`).
"""

from __future__ import annotations

from ._base import RuleOptimizer, optimizer_class
from .adagrad import ADAGRAD_RULE
from .adam import ADAM_RULE, ADAMW_RULE
from .define import DefinedRule, define_rule
from .engine import Route, engine_mode, last_routes, set_engine
from .hyper import Hyper, engine_option, flag, learning_rate, real, real_pair
from .ops import add_ratio, add_scaled
from .probe import shape_problem
from .registry import Entry, create, entries, names, register, resolve, rule_of
from .rmsprop import RMSPROP_RULE
from .rule import Buffer, Rule, RuleError, filled_with, zeros
from .sgd import SGD_RULE

SGD = optimizer_class(SGD_RULE, module=__name__)
Adagrad = optimizer_class(ADAGRAD_RULE, module=__name__)
RMSprop = optimizer_class(RMSPROP_RULE, module=__name__)
Adam = optimizer_class(ADAM_RULE, module=__name__)
AdamW = optimizer_class(ADAMW_RULE, module=__name__)

register("gd", SGD, {}, "Gradient Descent: SGD fed the full training set each step (batch_size=None)",
         full_batch=True)
register("sgd", SGD, {}, "Stochastic Gradient Descent on minibatches")
register("momentum", SGD, {"momentum": 0.9}, "SGD with heavy-ball momentum 0.9")
register("nesterov", SGD, {"momentum": 0.9, "nesterov": True}, "SGD with Nesterov momentum 0.9")
register("adagrad", Adagrad, {}, "AdaGrad: per-coordinate steps shrinking with the sum of g²")
register("rmsprop", RMSprop, {}, "RMSProp: per-coordinate steps from a running average of g²")
register("adam", Adam, {}, "Adam: momentum + RMSProp scaling + bias correction")
register("adamw", AdamW, {}, "AdamW: Adam with decoupled weight decay")

__all__ = [
    "SGD", "Adagrad", "RMSprop", "Adam", "AdamW",
    "Rule", "Buffer", "RuleError", "Hyper", "RuleOptimizer",
    "create", "names", "entries", "resolve", "register", "rule_of", "Entry", "optimizer_class",
    "define_rule", "DefinedRule", "shape_problem", "set_engine", "engine_mode", "last_routes", "Route",
    "real", "real_pair", "flag", "learning_rate", "engine_option", "zeros", "filled_with", "add_scaled", "add_ratio",
]
