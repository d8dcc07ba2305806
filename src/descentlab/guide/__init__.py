"""``descentlab guide``: the source article as one interactive, offline page whose numbers equal the library's.

Sections follow the article — gradient descent, minibatch SGD, momentum, AdaGrad, RMSProp, Adam, saddle
points and local minima, which optimizer to start with — each with the update in its correct form, a
live figure and a loss-vs-step curve. Modules: :mod:`.sections` (controls and defaults, data),
:mod:`.theory` (closed-form rates, the article's uncorrected Adam; NumPy), :mod:`.minibatch` (the tiny
regression task), :mod:`.numbers` (the library's side of the conformance table), :mod:`.claim` (section 8),
:mod:`.page` (the HTML). Import layers: guide → landscape_page → landscape → optim.
"""

from __future__ import annotations

from .claim import load_claim
from .page import guide_spec, render_guide, write_guide

__all__ = ["guide_spec", "load_claim", "render_guide", "write_guide"]
