"""Worked examples of user rules declared with :func:`descentlab.optim.define_rule`.

``descentlab.examples.lion:lion`` and ``descentlab.examples.adabelief:adabelief`` are accepted
wherever an optimizer name is (``descentlab race --optimizers adam,descentlab.examples.lion:lion``).
"""
