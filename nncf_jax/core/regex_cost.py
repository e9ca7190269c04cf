r"""A static bound on the backtracking of a scope's regular expression.

Python's `re` backtracks and has no timeout: ``(a+)+$``, ``(.?){30}z`` or
``(x|x)*y`` take time exponential in the length of the name they are
searched in (``(.?){30}z`` takes tens of seconds on ``Dense_0/kernel``,
``(x|x)*y`` hours on a name of 40 x's). Before a pattern is searched,
`regex_search_cost` bounds the backtracking steps it can take: for any name
of a given length (cheap, and enough for most patterns), or name by name
from their actual characters; `nncf_jax.core.paths` refuses a pattern whose
bound on some name is over `MAX_REGEX_STEPS`. Measured on CPython 3.12,
``re`` takes 2e8 to 1e10 bound steps per second, so an accepted pattern
spends at most about 50 ms on a name (typical ones, microseconds), and it
matches exactly as ``re.search`` does.

The bound is an upper bound: a character class other than a literal, a
set of literals and ranges, ``\d``, ``\w`` or ``\s`` is assumed to
match every character, and so is everything under IGNORECASE. So it also
refuses some patterns that would in fact run fast: many unbounded repeats
over characters the names are full of (``.*.*.*.*.*.*z`` on a
60-character name), or case-insensitive ones with several wildcards on
long names. ``.*a.*b.*c.*d``, ``^Conv_\d+/kernel$`` or
``.*(query|key|value)/kernel$`` are accepted on names of hundreds of
characters.

The analysis reads the parse tree of Python's regex parser
(``re._parser``, private, the same from 3.11 to 3.13). An operator it does
not know counts as too costly, so a newer Python can make it refuse more,
never hang. Bounding a pattern on one name spends at most `_FLOW_BUDGET`
vector operations (about 50 ms; typical patterns, under a millisecond); a
pattern that needs more is refused as too complex to bound.

Why not a timeout: ``re`` holds the GIL while it matches, so a watchdog
thread cannot stop it; ``SIGALRM`` works only in the main thread on Unix and
would take over the user's own alarm; a subprocess per pattern costs more
than the whole build. The names are known before matching, so a bound
computed from the pattern and the names is both portable and exact about
what it refuses.
"""

from __future__ import annotations

import functools
import re
import warnings
from re import _constants as _sre
from re import _parser as _sre_parser
from typing import Any

import numpy as np

__all__ = ["MAX_REGEX_STEPS", "regex_search_cost"]

MAX_REGEX_STEPS = 10**7
# Vector operations the bound on one name may spend (about 50 ms).
_FLOW_BUDGET = 20_000


class _TooCostly(Exception):
    pass


def _width(width: int, length: int) -> np.ndarray:
    ways = np.zeros(length + 1)
    if width <= length:
        ways[width] = 1.0
    return ways


def _sequence_cost(items: Any, length: int, limit: float) -> tuple[np.ndarray, float]:
    # ways[n]: ways the items can match exactly n characters; work: steps tried
    # when the items are entered once.
    ways, work = _width(0, length), 1.0
    for op, av in items:
        item_ways, item_work = _item_cost(op, av, length, limit)
        work += ways.sum() * item_work
        if work > limit:
            raise _TooCostly
        ways = _then(ways, item_ways, length, limit)
    return ways, work


def _fixed_width(ways: np.ndarray) -> int | None:
    """The width of a part that matches one way, of one width; else None."""
    (widths,) = np.nonzero(ways)
    return int(widths[0]) if len(widths) == 1 and ways[widths[0]] == 1.0 else None


def _then(ways: np.ndarray, item_ways: np.ndarray, length: int, limit: float) -> np.ndarray:
    """Ways of a part followed by an item: a convolution (a shift for a fixed width)."""
    width = _fixed_width(item_ways)
    if width is not None:
        out = np.zeros(length + 1)
        out[width:] = ways[: length + 1 - width]
        return out
    return np.minimum(np.convolve(ways, item_ways)[: length + 1], limit)


def _item_cost(op: Any, av: Any, length: int, limit: float) -> tuple[np.ndarray, float]:
    if op in (_sre.LITERAL, _sre.NOT_LITERAL, _sre.ANY, _sre.IN):
        return _width(1, length), 1.0
    if op is _sre.AT:
        return _width(0, length), 1.0
    if op is _sre.GROUPREF:  # one way, of any width
        return np.ones(length + 1), 1.0
    if op is _sre.SUBPATTERN:
        return _sequence_cost(av[-1], length, limit)
    if op is _sre.ATOMIC_GROUP:
        return _sequence_cost(av, length, limit)
    if op in (_sre.ASSERT, _sre.ASSERT_NOT):  # width 0; its work is spent at each entry
        return _width(0, length), _sequence_cost(av[1], length, limit)[1]
    if op in (_sre.BRANCH, _sre.GROUPREF_EXISTS):
        alternatives = av[1] if op is _sre.BRANCH else av[1:]
        ways, work = np.zeros(length + 1), 1.0
        for alternative in alternatives:
            alt_ways, alt_work = (
                (_width(0, length), 1.0)
                if alternative is None
                else _sequence_cost(alternative, length, limit)
            )
            ways, work = ways + alt_ways, work + alt_work
        return np.minimum(ways, limit), work
    if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
        return _repeat_cost(*av, length, limit)
    # An opcode this table does not know (a newer Python): assume the worst.
    raise _TooCostly


def _repeat_cost(
    low: int, high: int, body: Any, length: int, limit: float
) -> tuple[np.ndarray, float]:
    body_ways, body_work = _sequence_cost(body, length, limit)
    width = _fixed_width(body_ways)
    if width:
        # One way per count: count k matches k * width characters, and the
        # matcher tries every count that fits plus one that does not.
        fits = min(high, length // width)
        ways = np.zeros(length + 1)
        ways[[k * width for k in range(low, fits + 1)]] = 1.0
        work = (min(high, fits + 1) + 1) * body_work
        if work > limit:
            raise _TooCostly
        return ways, work
    # Past `low`, an iteration that matches nothing ends the loop (sre's rule),
    # so at most `length` more iterations can run.
    nonempty = body_ways.copy()
    nonempty[0] = 0.0
    done = _width(0, length)  # ways after k iterations
    ways = done.copy() if low == 0 else np.zeros(length + 1)
    work, k = 0.0, 0
    while k < high:
        step = body_ways if k < low else nonempty
        after = _then(done, step, length, limit)
        work += done.sum() * body_work
        if work > limit:
            raise _TooCostly
        k += 1
        if k < low and np.array_equal(after, done):
            # Steady (a body that matches only the empty string): the rest of
            # the forced iterations cost the same each.
            work += (low - k) * done.sum() * body_work
            if work > limit:
                raise _TooCostly
            k = low
        elif low > k > length + 2:
            raise _TooCostly  # forced iterations still growing: (a|){1000}-like
        done = after
        if k >= low:
            ways = np.minimum(ways + done, limit)
        if not done.any():
            break
    return ways, work


@functools.lru_cache(maxsize=256)
def _cost_at(source: str, length: int, limit: float) -> float:
    try:
        with warnings.catch_warnings():  # re.compile has warned about the pattern already
            warnings.simplefilter("ignore")
            items = _sre_parser.parse(source)
        anchored = bool(items.data) and items.data[0] in (
            (_sre.AT, _sre.AT_BEGINNING_STRING),
            (_sre.AT, _sre.AT_BEGINNING),
        )
        if anchored and items.data[0][1] is _sre.AT_BEGINNING and items.state.flags & re.M:
            anchored = False
        # re.search tries every start; the name left after start s has
        # length - s characters, and the cost grows with it: bound the sum in
        # four blocks by each block's longest rest.
        if anchored:
            return _sequence_cost(items.data, length, limit)[1] + length
        total, previous = 0.0, -1
        for block in range(1, 5):
            rest = -(-length * block // 4)
            if rest > previous:
                total += (rest - previous) * _sequence_cost(items.data, rest, limit)[1]
                previous = rest
            if total > limit:
                raise _TooCostly
        return total
    except _TooCostly:
        return float("inf")
    except RecursionError:
        raise ValueError("its groups nest too deeply to bound its matching time") from None


class _NameFlow:
    r"""The backtracking bound of a pattern on one given name.

    Like `_sequence_cost` but over positions of the actual name: ``v[i]`` is
    the number of ways the matcher reaches position ``i``, and a character
    atom lets a way through only where it can match the character there. A
    literal, a set of literals and ranges, ``\d``, ``\w`` and ``\s`` are
    tested (over-approximated: a Unicode digit passes ``\d`` even under
    ``re.ASCII``); anything else, and everything under IGNORECASE, passes
    every character. So the bound is still an upper bound, and ``.*a.*b.*c``
    costs what the a, b and c of the name allow, not what any name of that
    length could.
    """

    def __init__(self, name: str, limit: float):
        self.n, self.limit, self.work, self.budget = len(name), limit, 0.0, _FLOW_BUDGET
        self.codes = np.array([ord(c) for c in name], dtype=np.int64)
        self.classes = {
            _sre.CATEGORY_DIGIT: np.array([c.isdecimal() for c in name], dtype=bool),
            _sre.CATEGORY_WORD: np.array([c.isalnum() or c == "_" for c in name], dtype=bool),
            _sre.CATEGORY_SPACE: np.array([c.isspace() for c in name], dtype=bool),
        }
        self.ones = np.ones(self.n, dtype=bool)

    def spend(self, amount: float) -> None:
        self.work += amount
        self.budget -= 1
        if self.work > self.limit:
            raise _TooCostly
        if self.budget < 0:
            raise ValueError("it is too complex to bound its matching time")

    def matches(self, op: Any, av: Any, icase: bool) -> np.ndarray:
        """Where a one-character atom may match (True where unsure)."""
        if icase or op is _sre.ANY:
            return self.ones
        if op is _sre.LITERAL:
            return self.codes == av
        if op is _sre.NOT_LITERAL:
            return self.codes != av
        found, exact, negate = np.zeros(self.n, dtype=bool), True, False
        for item_op, item_av in av:  # op is IN
            if item_op is _sre.NEGATE:
                negate = True
            elif item_op is _sre.LITERAL:
                found |= self.codes == item_av
            elif item_op is _sre.RANGE:
                found |= (self.codes >= item_av[0]) & (self.codes <= item_av[1])
            elif item_op is _sre.CATEGORY and item_av in self.classes:
                found |= self.classes[item_av]
            else:
                exact = False
        return ~found if negate and exact else found if exact else self.ones

    def empty(self, items: Any, icase: bool) -> np.ndarray:
        """Per position, the ways ``items`` can match the empty string there."""
        out = np.ones(self.n + 1)
        for op, av in items:
            if op in (_sre.LITERAL, _sre.NOT_LITERAL, _sre.ANY, _sre.IN):
                return np.zeros(self.n + 1)
            if op is _sre.AT:
                out = out * self.anchor(av)
            elif op is _sre.SUBPATTERN:
                out = out * self.empty(av[-1], icase or bool(av[1] & re.I))
            elif op is _sre.ATOMIC_GROUP:
                out = out * self.empty(av, icase)
            elif op in (_sre.BRANCH, _sre.GROUPREF_EXISTS):
                alternatives = av[1] if op is _sre.BRANCH else av[1:]
                out = out * sum(
                    np.ones(self.n + 1) if a is None else self.empty(a, icase) for a in alternatives
                )
            elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
                # Only the forced iterations may match empty (see `repeat`).
                with np.errstate(over="ignore"):
                    out = out * np.minimum(self.empty(av[2], icase) ** av[0], self.limit)
            # GROUPREF and lookarounds may match empty: factor 1.
            out = np.minimum(out, self.limit)
        return out

    def anchor(self, where: Any) -> np.ndarray:
        mask = np.ones(self.n + 1)
        if where in (_sre.AT_BEGINNING, _sre.AT_BEGINNING_STRING):
            mask[1:] = 0.0  # (MULTILINE ^ also after a newline: names have none that matter)
            if where is _sre.AT_BEGINNING:
                mask[1:][self.codes == 10] = 1.0
        return mask

    def sequence(self, items: Any, v: np.ndarray, icase: bool) -> np.ndarray:
        self.spend(v.sum())
        for op, av in items:
            v = self.item(op, av, v, icase)
        return v

    def item(self, op: Any, av: Any, v: np.ndarray, icase: bool) -> np.ndarray:
        if op in (_sre.LITERAL, _sre.NOT_LITERAL, _sre.ANY, _sre.IN):
            self.spend(v.sum())
            out = np.zeros(self.n + 1)
            out[1:] = v[:-1] * self.matches(op, av, icase)
            return out
        if op is _sre.AT:
            self.spend(v.sum())
            return v * self.anchor(av)
        if op is _sre.GROUPREF:  # one way, of any width
            self.spend(v.sum())
            return np.cumsum(v)
        if op is _sre.SUBPATTERN:
            return self.sequence(av[-1], v, icase or bool(av[1] & re.I))
        if op is _sre.ATOMIC_GROUP:
            return self.sequence(av, v, icase)
        if op in (_sre.ASSERT, _sre.ASSERT_NOT):
            if av[0] == 1:  # lookahead: runs where it stands
                self.sequence(av[1], v, icase)
            else:  # lookbehind: runs from a fixed width back
                self.spend(v.sum() * _sequence_cost(av[1], self.n, self.limit)[1])
            return v
        if op in (_sre.BRANCH, _sre.GROUPREF_EXISTS):
            self.spend(v.sum())
            alternatives = av[1] if op is _sre.BRANCH else av[1:]
            return sum(v if a is None else self.sequence(a, v, icase) for a in alternatives)
        if op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT, _sre.POSSESSIVE_REPEAT):
            return self.repeat(*av, v, icase)
        raise _TooCostly  # an opcode this table does not know: assume the worst

    def repeat(self, low: int, high: int, body: Any, v: np.ndarray, icase: bool) -> np.ndarray:
        empty = self.empty(body, icase)
        done, k = v, 0
        out = v.copy() if low == 0 else np.zeros(self.n + 1)
        while k < high:
            before = self.work
            after = self.sequence(body, done, icase)
            if k >= low:  # an iteration past `low` that matches nothing ends the loop
                after = np.maximum(after - done * empty, 0.0)
            k += 1
            if k < low and np.array_equal(after, done):
                self.spend((low - k) * (self.work - before))  # steady: same cost each
                k = low
            elif low > k > self.n + 2:
                raise _TooCostly  # forced iterations still growing: (a|){1000}-like
            done = after
            if k >= low:
                out = out + done
            if not done.any() or k > low + self.n + 1:
                break
        return out


@functools.lru_cache(maxsize=8192)
def _cost_on(source: str, name: str, limit: float) -> float:
    flow = _NameFlow(name, limit)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            items = _sre_parser.parse(source)
        # re.search tries every start position: one way at each.
        flow.sequence(items.data, np.ones(len(name) + 1), bool(items.state.flags & re.I))
        return flow.work
    except _TooCostly:
        return float("inf")
    except RecursionError:
        raise ValueError("its groups nest too deeply to bound its matching time") from None


def regex_search_cost(pattern: str | re.Pattern[str], name: str | int) -> float:
    """Upper bound of the backtracking steps of ``re.search(pattern, name)``.

    Given a length, it counts the ways each part of the pattern can split a
    name of that length, assuming that every character class matches every
    character, summed over the start positions ``re.search`` tries: a bound
    for every name of that length, exact for a run of ``.*`` (``C(n + k,
    k)`` ways). Given a name, it counts the same over that name's actual
    characters (see `_NameFlow`): much tighter when the pattern has
    literals. Either way it never undercounts what the backtracking matcher
    can try, up to a constant factor per step.

    Args:
      pattern: a regular expression (without ``{re}``) or a compiled one.
      name: the name it will be searched in, or the length of the longest
        such name.

    Returns:
      The bound; ``inf`` once it exceeds 100 * `MAX_REGEX_STEPS` (the
      count stops there).

    Raises:
      ValueError: the groups nest too deeply for the analysis (a few
        hundred levels; ``re`` itself refuses about 500), or, for a name,
        the bound needs over `_FLOW_BUDGET` vector operations.
      re.error: ``pattern`` is not a valid regular expression.

    Example:
      >>> regex_search_cost("^Conv_\\d+/kernel$", 14) < 1e3
      True
      >>> regex_search_cost("(a+)+$", 64) > MAX_REGEX_STEPS
      True
      >>> regex_search_cost(".*a.*b.*c.*d", 64) > MAX_REGEX_STEPS
      True
      >>> regex_search_cost(".*a.*b.*c.*d", "ResBlock_11/MultiHeadAttention_0/query/kernel") < 1e5
      True
    """
    source = pattern.pattern if isinstance(pattern, re.Pattern) else pattern
    limit = 100.0 * MAX_REGEX_STEPS
    if isinstance(name, str):
        return _cost_on(source, name, limit)
    return _cost_at(source, max(int(name), 0), limit)
