"""The gradient noise of the landscapes: a seeded stream that Python and the interactive page share.

Step k of a noisy trajectory adds σ·ξ_k to the gradient, ξ_k a pair of standard normals. The page
(JavaScript, ``landscape_assets/landscape_math.js``) must draw the very same ξ_k as Python, so the
stream is not torch's generator (Mersenne Twister plus torch's own normal transform, which would have
to be re-implemented in the browser) but two short, well-known pieces that both languages write in a
few lines with exact integer arithmetic:

- SplitMix64 (Steele, Lea & Flood 2014, the seeder of the xoshiro family) on a 64-bit state
  ``s ← s + 0x9E3779B97F4A7C15``, then ``z ← (z ⊕ z≫30)·0xBF58476D1CE4E5B9``,
  ``z ← (z ⊕ z≫27)·0x94D049BB133111EB``, ``z ← z ⊕ z≫31`` (all mod 2⁶⁴), and ``u = (z ≫ 11)·2⁻⁵³``,
  a uniform in [0, 1) (exact in a float64);
- Box–Muller: from two uniforms u, v, ``r = √(−2·ln(1 − u))`` and ``ξ = (r·cos 2πv, r·sin 2πv)``.

The seed is taken mod 2⁶⁴. The integers are bitwise the same on both sides; ln, cos and sin may differ
by an ulp between the C library and the browser, far below the page's tolerance (1e-9 over 200 steps).
"""

from __future__ import annotations

import math

import numpy as np

MASK64 = (1 << 64) - 1
GOLDEN_GAMMA = 0x9E3779B97F4A7C15
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB
TWO_PI = 2 * math.pi


class SplitMix64:
    """The SplitMix64 generator: 64-bit outputs and uniforms in [0, 1) with 53 random bits."""

    def __init__(self, seed: int) -> None:
        self.state = int(seed) & MASK64

    def next_u64(self) -> int:
        self.state = (self.state + GOLDEN_GAMMA) & MASK64
        z = self.state
        z = ((z ^ (z >> 30)) * MIX1) & MASK64
        z = ((z ^ (z >> 27)) * MIX2) & MASK64
        return z ^ (z >> 31)

    def uniform(self) -> float:
        return (self.next_u64() >> 11) * 2.0**-53


def gradient_noise(seed: int, steps: int) -> np.ndarray:
    """ξ_0 … ξ_{steps−1}: a (steps, 2) float64 array of standard normals, one Box–Muller pair per step."""
    generator = SplitMix64(seed)
    noise = np.empty((steps, 2), dtype=np.float64)
    for k in range(steps):
        u, v = generator.uniform(), generator.uniform()
        r = math.sqrt(-2.0 * math.log(1.0 - u))
        angle = TWO_PI * v
        noise[k, 0] = r * math.cos(angle)
        noise[k, 1] = r * math.sin(angle)
    return noise
