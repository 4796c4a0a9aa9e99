"""Butcher tableaus: each Runge-Kutta method is data, checked on construction.

A tableau ``(c, A, b)`` defines one explicit Runge-Kutta step of size h,

    k_i = func(t + c_i h, y + h * sum_{j<i} A_ij k_j),   y1 = y + h * sum_i b_i k_i,

and an embedded pair adds weights ``b_low`` of a lower order whose difference
``e = b - b_low`` estimates the local error (chapter "From ResNets to ODE
solvers"). Coefficients are exact fractions so the checks below are exact:

* each row of ``A`` sums to its ``c_i`` (stages are consistent in time),
* ``b`` sums to 1 and ``sum_i b_i c_i^(k-1) = 1/k`` for k up to the order
  (the quadrature order conditions),
* the error weights ``e`` sum to 0,
* dense-output weights at theta = 1 equal ``b``.

The stepping code never sees fractions: each tableau derives its own float
copies (:attr:`ButcherTableau.c_float` and friends) and tensor copies per
dtype and device (:meth:`ButcherTableau.coefficients`), computed once.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction as F
from functools import cached_property

import torch

from nodebook.solvers import interp


def _to_floats(value):
    """Fractions to floats, keeping the nesting (a tuple, or a tuple of rows)."""
    if value and isinstance(value[0], tuple):
        return tuple(tuple(float(x) for x in row) for row in value)
    return tuple(float(x) for x in value)


@dataclass(frozen=True)
class ButcherTableau:
    """An explicit (embedded) Runge-Kutta method.

    name: registry name; citation: where the coefficients come from.
    c: (s,) nodes; a: s rows, row i holding A_i0..A_i(i-1); b: (s,) weights.
    order: order of ``b``. b_low / embedded_order: the embedded estimate
    (adaptive methods only). fsal: the last stage is f(t+h, y1) ("first same
    as last"), so the next step reuses it. dense: dense-output weight
    polynomials (see :mod:`nodebook.solvers.interp`), or None; dense_order:
    their order (local error O(h^(dense_order+1)) inside a step).
    torchdiffeq: the name under which torchdiffeq 0.2.5 computes this very
    method, or None (nodebook's ``rk4`` is the classical method, which
    torchdiffeq does not have: its ``rk4`` is the 3/8 rule, our ``rk4_38``).
    """

    name: str
    citation: str
    c: tuple
    a: tuple
    b: tuple
    order: int
    b_low: tuple | None = None
    embedded_order: int | None = None
    fsal: bool = False
    dense: tuple | None = None
    dense_order: int | None = None
    torchdiffeq: str | None = None

    def __post_init__(self):
        s = len(self.c)
        if len(self.a) != s or len(self.b) != s:
            raise ValueError(f"{self.name}: c, a, b must all have {s} entries")
        for i, (ci, row) in enumerate(zip(self.c, self.a)):
            if len(row) != i:
                raise ValueError(f"{self.name}: row {i} of A must have {i} entries (explicit method)")
            if sum(row, F(0)) != ci:
                raise ValueError(f"{self.name}: row {i} of A sums to {sum(row, F(0))}, not c_{i} = {ci}")
        if sum(self.b, F(0)) != 1:
            raise ValueError(f"{self.name}: b sums to {sum(self.b, F(0))}, not 1")
        for k in range(1, self.order + 1):
            q = sum((bi * ci ** (k - 1) for bi, ci in zip(self.b, self.c)), F(0))
            if q != F(1, k):
                raise ValueError(f"{self.name}: quadrature condition of order {k} fails "
                                 f"(sum b c^{k - 1} = {q}, not 1/{k})")
        if self.b_low is not None:
            if len(self.b_low) != s or sum(self.e, F(0)) != 0:
                raise ValueError(f"{self.name}: error weights b - b_low must sum to 0")
            if self.embedded_order is None:
                raise ValueError(f"{self.name}: an embedded pair needs embedded_order")
        if self.fsal and (self.c[-1] != 1 or tuple(self.a[-1]) != tuple(self.b[:-1]) or self.b[-1] != 0):
            raise ValueError(f"{self.name}: FSAL needs the last row of A to be b and c_s = 1")
        if (self.dense is None) != (self.dense_order is None):
            raise ValueError(f"{self.name}: dense and dense_order go together")
        if self.dense is not None:
            for i, row in enumerate(self.dense):
                if sum(row, F(0)) != self.b[i]:
                    raise ValueError(f"{self.name}: dense weight {i} at theta=1 is "
                                     f"{sum(row, F(0))}, not b_{i} = {self.b[i]}")

    @property
    def stages(self) -> int:
        return len(self.c)

    @property
    def adaptive(self) -> bool:
        return self.b_low is not None

    @property
    def e(self) -> tuple | None:
        """Error weights ``b - b_low`` (exact), or None without an embedded pair."""
        if self.b_low is None:
            return None
        return tuple(bi - bl for bi, bl in zip(self.b, self.b_low))

    # ------------------------------------------------ derived copies, computed once
    # (cached_property stores into the instance's __dict__, which a frozen
    # dataclass allows; the caches take no part in equality or hashing)
    @cached_property
    def c_float(self) -> tuple:
        return _to_floats(self.c)

    @cached_property
    def a_float(self) -> tuple:
        return _to_floats(self.a)

    @cached_property
    def b_float(self) -> tuple:
        return _to_floats(self.b)

    @cached_property
    def e_float(self) -> tuple | None:
        return None if self.b_low is None else _to_floats(self.e)

    @cached_property
    def dense_float(self) -> tuple | None:
        return None if self.dense is None else _to_floats(self.dense)

    @cached_property
    def _tensor_cache(self) -> dict:
        return {}

    def coefficients(self, dtype: torch.dtype, device) -> tuple:
        """``(rows, b, e)`` as tensors of ``dtype`` on ``device``, made once per pair.

        rows[i] holds A_i0..A_i(i-1) (rows[0] is None); e is None for a method
        without an embedded pair.
        """
        key = (dtype, torch.device(device))
        cache = self._tensor_cache
        if key not in cache:
            def T(x):
                return torch.tensor(x, dtype=dtype, device=device)
            rows = [None] + [T(r) for r in self.a_float[1:]]
            cache[key] = (rows, T(self.b_float), None if self.b_low is None else T(self.e_float))
        return cache[key]


def _fr(*xs) -> tuple:
    return tuple(F(x) for x in xs)


EULER = ButcherTableau(
    name="euler",
    citation="L. Euler, Institutionum calculi integralis (1768); Hairer, Norsett & Wanner, "
             "Solving ODEs I, Sec. II.1",
    c=_fr(0), a=((),), b=_fr(1), order=1, torchdiffeq="euler")

MIDPOINT = ButcherTableau(
    name="midpoint",
    citation="C. Runge, Math. Ann. 46 (1895); Hairer, Norsett & Wanner, Solving ODEs I, Sec. II.1 (eq. 1.5)",
    c=_fr(0, "1/2"), a=((), _fr("1/2")), b=_fr(0, 1), order=2, torchdiffeq="midpoint")

RK4 = ButcherTableau(
    name="rk4",
    citation="W. Kutta, Z. Math. Phys. 46 (1901), the classical 4th-order method; "
             "Hairer, Norsett & Wanner, Solving ODEs I, Table II.1.2",
    c=_fr(0, "1/2", "1/2", 1),
    a=((), _fr("1/2"), _fr(0, "1/2"), _fr(0, 0, 1)),
    b=_fr("1/6", "1/3", "1/3", "1/6"), order=4)

RK4_38 = ButcherTableau(
    name="rk4_38",
    citation="W. Kutta, Z. Math. Phys. 46 (1901), the 3/8 rule; Hairer, Norsett & Wanner, "
             "Solving ODEs I, Table II.1.2 (right); what torchdiffeq calls 'rk4'",
    c=_fr(0, "1/3", "2/3", 1),
    a=((), _fr("1/3"), _fr("-1/3", 1), _fr(1, -1, 1)),
    b=_fr("1/8", "3/8", "3/8", "1/8"), order=4, torchdiffeq="rk4")

_BOSH3_B = _fr("2/9", "1/3", "4/9", 0)
BOSH3 = ButcherTableau(
    name="bosh3",
    citation="P. Bogacki & L. F. Shampine, A 3(2) pair of Runge-Kutta formulas, "
             "Appl. Math. Lett. 2(4):321-325 (1989)",
    c=_fr(0, "1/2", "3/4", 1),
    a=((), _fr("1/2"), _fr(0, "3/4"), _BOSH3_B[:3]),
    b=_BOSH3_B, order=3,
    b_low=_fr("7/24", "1/4", "1/3", "1/8"), embedded_order=2,
    fsal=True,
    dense=interp.hermite_weights(_BOSH3_B, first=0, last=3), dense_order=3,
    torchdiffeq="bosh3")

_DOPRI5_B = _fr("35/384", 0, "500/1113", "125/192", "-2187/6784", "11/84", 0)
_DOPRI5_D = _fr("-12715105075/11282082432", 0, "87487479700/32700410799",
                "-10690763975/1880347072", "701980252875/199316789632",
                "-1453857185/822651844", "69997945/29380423")
DOPRI5 = ButcherTableau(
    name="dopri5",
    citation="J. R. Dormand & P. J. Prince, A family of embedded Runge-Kutta formulae, "
             "J. Comput. Appl. Math. 6(1):19-26 (1980); error estimate and dense output: "
             "L. F. Shampine, Some practical Runge-Kutta formulas, Math. Comp. 46(173):135-150 "
             "(1986), as in Hairer, Norsett & Wanner, Solving ODEs I, Sec. II.6",
    c=_fr(0, "1/5", "3/10", "4/5", "8/9", 1, 1),
    a=((),
       _fr("1/5"),
       _fr("3/40", "9/40"),
       _fr("44/45", "-56/15", "32/9"),
       _fr("19372/6561", "-25360/2187", "64448/6561", "-212/729"),
       _fr("9017/3168", "-355/33", "46732/5247", "49/176", "-5103/18656"),
       _DOPRI5_B[:6]),
    b=_DOPRI5_B, order=5,
    # Shampine's (1986) 4th-order companion, as in torchdiffeq, so step counts
    # match; Dormand & Prince's original is
    # (5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40).
    b_low=_fr("1951/21600", 0, "22642/50085", "451/720", "-12231/42400", "649/6300", "1/60"),
    embedded_order=4,
    fsal=True,
    dense=interp.dopri5_weights(_DOPRI5_B, _DOPRI5_D), dense_order=4,
    torchdiffeq="dopri5")

ALL = (EULER, MIDPOINT, RK4, RK4_38, BOSH3, DOPRI5)
