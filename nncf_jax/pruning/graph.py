"""Channel groups of a model, found by walking its jaxpr.

At build time the model's forward ``apply_fn(variables, x)`` is traced once
with `jax.make_jaxpr`. Every value whose last (feature) axis carries
channels is tagged with a *channel space*; the walk follows NNCF's rules
(REFERENCE.md section 5):

- a convolution or ``dot_general`` with a kernel parameter starts a new space
  owned by that kernel's output channels, and records the kernel as a
  *consumer* of its input's space (its input channels read that space);
- elementwise ops (add, mul, max, relu, batch-norm arithmetic, bias adds via
  ``broadcast_in_dim``) pass the space through and merge the spaces of their
  operands (residual adds) into one group; per-channel parameters met on the
  way (biases, batch-norm scale/bias/mean/var) are *attached* to the space;
- pooling, padding, reductions over other axes, transposes and reshapes that
  keep the last axis pass through;
- a depthwise convolution (``feature_group_count`` equal to its input
  channels) joins its producer's space;
- a concatenation along the channel axis gives a *segmented* value: a list
  of ``(space, offset, size)``, its operands' spaces side by side (concat
  offsets). Elementwise ops between values of identical segmentation
  (offsets and sizes; their spaces merge pairwise), and pooling, padding,
  reductions over other axes, transposes and slices that keep the last axis,
  pass it through; a kernel reading it records one consumer member per
  segment, with the segment's offset on its input-channel axis;
- anything else touching a space (a reshape that mixes the channel axis,
  reductions over channels, grouped convolutions, unknown primitives; a
  segmented value reaching a reshape, a depthwise convolution, a
  per-channel parameter, an elementwise op with a differently segmented
  value, or a concatenation along another axis) and the model's output make
  the space (every segment's space) *unprunable*, with the reason recorded.

The same walker, given kept-channel indices per group, *evaluates* the
jaxpr with physically smaller parameters (`evaluate_jaxpr`): shapes baked
into equations (``broadcast_in_dim``, ``reshape``, depthwise
``feature_group_count``) are adjusted from the actual operand shapes, and
full-width constants met in elementwise ops are gathered to the kept
channels. Space ids are assigned in walk order, so an evaluation walk of the
same jaxpr meets the same spaces as the analysis walk.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.extend import core as jcore

from nncf_jax.core.paths import flatten_params

__all__ = [
    "ChannelGroup",
    "Member",
    "OpCount",
    "PruningGraph",
    "build_pruning_graph",
    "evaluate_jaxpr",
    "segment_keep",
    "trace_model",
]

_ELEMENTWISE = frozenset(
    """add sub mul div max min neg exp exp2 log log1p expm1 tanh logistic abs sqrt rsqrt cbrt
    integer_pow pow erf erfc erf_inv select_n sign convert_element_type stop_gradient square
    copy copy_p clamp sin cos tan floor ceil round is_finite ne eq gt ge lt le and or not xor
    nextafter atan2 reduce_precision rem""".split()
)
_CALLS = frozenset(
    "jit pjit closed_call core_call remat checkpoint custom_jvp_call custom_vjp_call "
    "custom_vjp_call_jaxpr".split()
)
_REDUCTIONS = frozenset(
    "reduce_sum reduce_max reduce_min reduce_prod reduce_and reduce_or argmax argmin".split()
)
_WINDOWS = frozenset("reduce_window_sum reduce_window_max reduce_window_min reduce_window".split())


@dataclass(frozen=True)
class Member:
    """One parameter's axis that carries a group's channels.

    Attributes:
      path: variables path, e.g. ``params/Conv_0/kernel`` or ``batch_stats/BatchNorm_0/mean``.
      axis: the axis of that parameter indexed by the group's channels.
    """

    path: str
    axis: int
    offset: int = 0
    length: int | None = None

    @property
    def segmented(self) -> bool:
        """Covers ``[offset, offset + length)`` of its axis only (a consumer
        reading a concatenation), not the whole axis."""
        return self.length is not None


def segment_keep(full: int, segments: Sequence[tuple[int, int, Any]]) -> np.ndarray:
    """bool ``(full,)``: which channels of an axis made of segments stay.

    ``segments``: ``(offset, size, kept indices within the segment)``;
    channels outside every segment stay.
    """
    keep = np.ones(full, bool)
    for offset, size, idx in segments:
        keep[offset : offset + size] = False
        keep[offset + np.asarray(idx, np.int64)] = True
    return keep


@dataclass(frozen=True)
class ChannelGroup:
    """Channels that must be pruned together (one shared mask).

    Attributes:
      index: position in `PruningGraph.groups`.
      size: number of channels ``N``.
      producers: kernels whose output filters form the group (several after a
        residual add; a depthwise kernel joins its producer).
      consumers: kernels reading the group on their input-channel axis.
      attached: per-channel parameters (biases, norm scales/offsets, batch statistics).
      reasons: why the group cannot be pruned; empty when it can.
    """

    index: int
    size: int
    producers: tuple[Member, ...]
    consumers: tuple[Member, ...]
    attached: tuple[Member, ...]
    reasons: tuple[str, ...]

    @property
    def prunable(self) -> bool:
        return not self.reasons

    def members(self) -> tuple[Member, ...]:
        """Every parameter axis the group's mask applies to."""
        return self.producers + self.consumers + self.attached


@dataclass(frozen=True)
class OpCount:
    """A convolution or dense op, for FLOPs counting.

    Attributes:
      kernel: its kernel's variables path.
      in_group: group index of its input channels, or None (model input,
        unprunable value, a concatenation).
      out_group: group index of its output channels, or None.
      flops: full FLOPs, ``2 * MACs``.
      depthwise: a depthwise convolution (its cost scales with one channel count only).
      in_segments: for an input made by a concatenation along channels,
        ``(group index or None, channels)`` per segment; its cost scales with
        the kept channels summed over the segments.
    """

    kernel: str
    in_group: int | None
    out_group: int | None
    flops: int
    depthwise: bool
    in_segments: tuple[tuple[int | None, int], ...] = ()


@dataclass(frozen=True)
class PruningGraph:
    """What the jaxpr walk found.

    Attributes:
      groups: every channel group that has a producer kernel, prunable or not.
      ops: the convolution / dense ops in execution order.
      space_group: ``space id -> group index`` (for `evaluate_jaxpr`).
      shapes: ``variables path -> shape`` of every variable.
    """

    groups: tuple[ChannelGroup, ...]
    ops: tuple[OpCount, ...]
    space_group: Mapping[int, int]
    shapes: Mapping[str, tuple[int, ...]]

    @property
    def prunable_groups(self) -> tuple[ChannelGroup, ...]:
        return tuple(g for g in self.groups if g.prunable)

    def flops(self, kept: Mapping[int, int] | None = None) -> int:
        """FLOPs (``2 * MACs`` of convolutions and dense ops) with ``kept[g]`` channels per group."""
        kept = kept or {}
        total = 0.0
        for op in self.ops:
            frac = 1.0
            if op.out_group is not None:
                frac *= kept.get(op.out_group, self.groups[op.out_group].size) / max(
                    self.groups[op.out_group].size, 1
                )
            if op.in_group is not None and not op.depthwise:
                frac *= kept.get(op.in_group, self.groups[op.in_group].size) / max(
                    self.groups[op.in_group].size, 1
                )
            if op.in_segments and not op.depthwise:
                full = sum(n for _, n in op.in_segments)
                now = sum(n if g is None else kept.get(g, n) for g, n in op.in_segments)
                frac *= now / max(full, 1)
            total += op.flops * frac
        return round(total)

    def shrunk_shapes(self, kept: Mapping[int, int] | None = None) -> dict[str, tuple[int, ...]]:
        """Each variable's shape once ``kept[g]`` channels of each group remain."""
        shapes = {p: list(s) for p, s in self.shapes.items()}
        removed: dict[tuple[str, int], int] = {}
        for g in self.groups:
            if g.index in (kept or {}):
                for m in g.members():
                    if m.segmented:
                        key = (m.path, m.axis)
                        removed[key] = removed.get(key, 0) + m.length - kept[g.index]
                    else:
                        shapes[m.path][m.axis] = kept[g.index]
        for (path, axis), n in removed.items():
            shapes[path][axis] -= n
        return {p: tuple(s) for p, s in shapes.items()}

    def num_params(self, kept: Mapping[int, int] | None = None, collection: str = "params") -> int:
        """Parameter count of one collection with ``kept[g]`` channels per group."""
        prefix = f"{collection}/"
        return sum(
            int(np.prod(s)) for p, s in self.shrunk_shapes(kept).items() if p.startswith(prefix)
        )


@dataclass
class _Space:
    size: int
    producers: list[Member] = field(default_factory=list)
    consumers: list[Member] = field(default_factory=list)
    attached: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _V:
    """What the walk knows of one value.

    ``space``: channel space of its last axis (activations); ``origins``:
    variables it is derived from by shape-only or elementwise ops, when it
    is not an activation; ``value``: the array (evaluation walks only);
    ``segs``: ``((space, offset, size), ...)`` of a value concatenated along
    its last axis (``space`` is then None).
    """

    space: int | None = None
    origins: frozenset = frozenset()
    value: Any = None
    segs: tuple[tuple[int, int, int], ...] = ()


def _last(aval) -> int | None:
    shape = getattr(aval, "shape", ())
    return shape[-1] if shape else None


class _Walker:
    def __init__(self, evaluate: bool, kept: Mapping[int, Any] | None, space_group=None):
        self.evaluate = evaluate
        self.kept = kept or {}
        self.space_group = space_group or {}
        self.parent: list[int] = []
        self.spaces: list[_Space] = []
        self.ops: list[tuple[str, int | None, int | None, int, bool, tuple]] = []
        self.input_spaces: set[int] = set()
        self.first_conv: set[int] = set()
        self.downsample: set[int] = set()

    # --- union-find ---------------------------------------------------------

    def new_space(self, size: int) -> int:
        self.parent.append(len(self.parent))
        self.spaces.append(_Space(size))
        return len(self.parent) - 1

    def find(self, s: int) -> int:
        while self.parent[s] != s:
            self.parent[s] = self.parent[self.parent[s]]
            s = self.parent[s]
        return s

    def union(self, a: int, b: int) -> int:
        a, b = self.find(a), self.find(b)
        if a != b:
            self.parent[b] = a
            if self.spaces[a].size != self.spaces[b].size:
                self.spaces[a].reasons.append("channel counts disagree in an elementwise op")
        return a

    def block(self, s: int | None, reason: str) -> None:
        if s is not None:
            self.spaces[self.find(s)].reasons.append(reason)

    def block_value(self, v: _V, reason: str) -> None:
        """Blocks a value's space, or every segment's space of a concatenation."""
        self.block(v.space, reason)
        for s, _, _ in v.segs:
            self.block(s, reason)

    # --- evaluation helpers -------------------------------------------------

    def kept_of(self, s: int | None):
        if not self.evaluate or s is None:
            return None
        return self.kept.get(self.space_group.get(s))

    def segs_kept(self, segs):
        """Kept channel indices of a concatenated value (segments' kept
        indices shifted by their offsets), or None when nothing is pruned."""
        if not self.evaluate:
            return None
        kept = [self.kept_of(s) for s, _, _ in segs]
        if all(k is None for k in kept):
            return None
        return jnp.concatenate(
            [
                jnp.arange(o, o + n, dtype=jnp.int32)
                if k is None
                else jnp.asarray(k, jnp.int32) + jnp.int32(o)
                for (_, o, n), k in zip(segs, kept, strict=True)
            ]
        )

    # --- the walk -------------------------------------------------------------

    def run(self, jaxpr, consts: Sequence[_V], args: Sequence[_V]) -> list[_V]:
        env: dict[Any, _V] = {}

        def read(atom) -> _V:
            if isinstance(atom, jcore.Literal):
                return _V(value=atom.val)
            return env[atom]

        for var, info in zip(jaxpr.constvars, consts, strict=True):
            env[var] = info
        for var, info in zip(jaxpr.invars, args, strict=True):
            env[var] = info
        for eqn in jaxpr.eqns:
            outs = self.eqn(eqn, [read(a) for a in eqn.invars])
            for var, info in zip(eqn.outvars, outs, strict=True):
                env[var] = info
        return [read(a) for a in jaxpr.outvars]

    def bind(self, eqn, values, **overrides):
        if not self.evaluate:
            return [None] * len(eqn.outvars)
        params = {**eqn.params, **overrides}
        out = eqn.primitive.bind(*values, **params)
        return list(out) if eqn.primitive.multiple_results else [out]

    def opaque(self, eqn, ins: Sequence[_V], reason: str) -> list[_V]:
        for i in ins:
            self.block_value(i, reason)
        return [_V(value=v) for v in self.bind(eqn, [i.value for i in ins])]

    def eqn(self, eqn, ins: list[_V]) -> list[_V]:
        name = eqn.primitive.name
        avals = [getattr(a, "aval", None) for a in eqn.invars]
        out_avals = [v.aval for v in eqn.outvars]
        if name in _CALLS:
            sub = next(
                (eqn.params[k] for k in ("jaxpr", "call_jaxpr", "fun_jaxpr") if k in eqn.params),
                None,
            )
            if sub is not None:
                if hasattr(sub, "consts"):
                    return self.run(sub.jaxpr, [_V(value=c) for c in sub.consts], ins)
                return self.run(sub, [], ins)
        segmented = any(i.segs for i in ins)
        if name in _ELEMENTWISE:
            if segmented:
                return self.segmented_elementwise(eqn, ins, avals)
            return self.elementwise(eqn, ins, avals, out_avals)
        if name == "broadcast_in_dim":
            return self.broadcast(eqn, ins[0], avals[0], out_avals[0])
        if name in ("reshape", "squeeze", "transpose", "pad", "slice") or name in _REDUCTIONS:
            return self.shape_op(eqn, name, ins, avals, out_avals)
        if name in _WINDOWS:
            dims = eqn.params.get("window_dimensions")
            strides = eqn.params.get("window_strides")
            if dims is not None and dims[-1] == 1 and strides[-1] == 1:
                return self.passthrough(eqn, ins)
            return self.opaque(eqn, ins, f"{name} pools over the channel axis")
        if name == "concatenate":
            nd = len(out_avals[0].shape)
            if eqn.params["dimension"] != nd - 1:
                if segmented:
                    return self.opaque(
                        eqn, ins, "a concatenation along channels, concatenated along another axis"
                    )
                return self.passthrough(eqn, ins)
            return self.concat(eqn, ins, avals)
        if name == "conv_general_dilated":
            return self.conv(eqn, ins, avals, out_avals)
        if name == "dot_general":
            return self.dot(eqn, ins, avals, out_avals)
        return self.opaque(eqn, ins, f"reaches {name!r}, which the pruning walk does not handle")

    def passthrough(self, eqn, ins: list[_V]) -> list[_V]:
        if any(i.segs for i in ins):
            carriers = [i for i in ins if i.segs or i.space is not None]
            if len(carriers) == 1:  # pooling a concatenation over space
                segs = carriers[0].segs
                return [_V(value=v, segs=segs) for v in self.bind(eqn, [i.value for i in ins])]
            return self.opaque(
                eqn, ins, f"a concatenation along channels reaches {eqn.primitive.name}"
            )
        spaces = [i.space for i in ins if i.space is not None]
        s = spaces[0] if spaces else None
        for other in spaces[1:]:
            s = self.union(s, other)
        origins = frozenset().union(*(i.origins for i in ins)) if s is None else frozenset()
        return [_V(s, origins, v) for v in self.bind(eqn, [i.value for i in ins])]

    def elementwise(self, eqn, ins, avals, out_avals) -> list[_V]:
        spaces = [i.space for i in ins if i.space is not None]
        if not spaces:
            origins = frozenset().union(*(i.origins for i in ins))
            return [_V(None, origins, v) for v in self.bind(eqn, [i.value for i in ins])]
        s = spaces[0]
        for other in spaces[1:]:
            s = self.union(s, other)
        size = self.spaces[self.find(s)].size
        for i, aval in zip(ins, avals, strict=True):
            if i.space is None and i.origins:
                last = _last(aval)
                if last == size and size > 1:
                    self.spaces[self.find(s)].attached.extend(sorted(i.origins))
                elif last not in (None, 1):
                    self.block(s, f"{sorted(i.origins)} broadcast against the channels")
        values = [i.value for i in ins]
        kept = self.kept_of(s)
        if kept is not None:
            # Full-width per-channel constants meet kept-width activations:
            # gather them to the kept channels.
            values = [
                jnp.take(v, kept, axis=-1)
                if i.space is None and np.ndim(v) >= 1 and np.shape(v)[-1] == size != len(kept)
                else v
                for i, v in zip(ins, values, strict=True)
            ]
        return [_V(s, frozenset(), v) for v in self.bind(eqn, values)]

    def concat(self, eqn, ins, avals) -> list[_V]:
        """Concatenation along channels: the operands' spaces side by side."""
        if not any(i.segs or i.space is not None for i in ins):
            return [_V(value=v) for v in self.bind(eqn, [i.value for i in ins])]
        segs, offset = [], 0
        for i, aval in zip(ins, avals, strict=True):
            n = aval.shape[-1]
            if i.segs:
                segs.extend((s, offset + o, m) for s, o, m in i.segs)
            elif i.space is not None:
                segs.append((i.space, offset, n))
            else:
                return self.opaque(
                    eqn, ins, "concatenated along the channel axis with a non-activation operand"
                )
            offset += n
        # Shapes follow: the operands are already at their kept widths.
        outs = self.bind(eqn, [i.value for i in ins])
        return [_V(value=outs[0], segs=tuple(segs))]

    def segmented_elementwise(self, eqn, ins, avals) -> list[_V]:
        """An elementwise op on concatenations of identical segmentation."""
        segs = next(i.segs for i in ins if i.segs)
        layout = [(o, n) for _, o, n in segs]
        for i, aval in zip(ins, avals, strict=True):
            if i.segs:
                if [(o, n) for _, o, n in i.segs] != layout:
                    return self.opaque(
                        eqn, ins, "elementwise op between differently segmented concatenations"
                    )
            elif i.space is not None:
                return self.opaque(
                    eqn, ins, "elementwise op between a concatenation and a channel space"
                )
            elif i.origins and _last(aval) not in (None, 1):
                return self.opaque(
                    eqn, ins, f"{sorted(i.origins)} broadcast against concatenated channels"
                )
        out = list(segs)
        for i in ins:
            if i.segs and i.segs is not segs:
                out = [
                    (self.union(a, b), o, n)
                    for (a, o, n), (b, _, _) in zip(out, i.segs, strict=True)
                ]
        values = [i.value for i in ins]
        kept = self.segs_kept(out)
        if kept is not None:
            total = sum(n for _, _, n in out)
            values = [
                jnp.take(v, kept, axis=-1)
                if not i.segs and np.ndim(v) >= 1 and np.shape(v)[-1] == total
                else v
                for i, v in zip(ins, values, strict=True)
            ]
        return [_V(value=v, segs=tuple(out)) for v in self.bind(eqn, values)]

    def broadcast(self, eqn, x: _V, aval, out_aval) -> list[_V]:
        shape, dims = tuple(out_aval.shape), tuple(eqn.params["broadcast_dimensions"])
        if (x.space is not None or x.segs) and not (
            dims and dims[-1] == len(shape) - 1 and aval.shape[-1] == shape[-1]
        ):
            return self.opaque(eqn, [x], "broadcast moves the channel axis")
        new_shape = list(shape)
        if self.evaluate:
            for i, d in enumerate(dims):
                if aval.shape[i] == shape[d]:
                    new_shape[d] = np.shape(x.value)[i]
        outs = self.bind(eqn, [x.value], shape=tuple(new_shape))
        return [_V(x.space, x.origins, outs[0], x.segs)]

    def shape_op(self, eqn, name, ins, avals, out_avals) -> list[_V]:
        x, aval, out_aval = ins[0], avals[0], out_avals[0]
        nd = len(aval.shape)
        keeps = nd >= 1
        overrides = {}
        if name == "reshape":
            keeps = keeps and out_aval.shape and aval.shape[-1] == out_aval.shape[-1]
            if keeps and self.evaluate:
                overrides["new_sizes"] = (*eqn.params["new_sizes"][:-1], np.shape(x.value)[-1])
        elif name == "squeeze":
            keeps = keeps and nd - 1 not in eqn.params["dimensions"]
        elif name == "transpose":
            keeps = keeps and eqn.params["permutation"][-1] == nd - 1
        elif name == "pad":
            keeps = keeps and tuple(eqn.params["padding_config"][-1]) == (0, 0, 0)
        elif name == "slice":
            strides = eqn.params.get("strides")
            keeps = (
                keeps
                and eqn.params["start_indices"][-1] == 0
                and eqn.params["limit_indices"][-1] == aval.shape[-1]
                and (strides is None or strides[-1] == 1)
            )
            if keeps and self.evaluate:
                limits = list(eqn.params["limit_indices"])
                limits[-1] = np.shape(x.value)[-1]
                overrides["limit_indices"] = tuple(limits)
        else:  # reductions
            keeps = keeps and nd - 1 not in eqn.params["axes"]
        if x.segs and (not keeps or name == "reshape"):
            return self.opaque(eqn, ins, f"a concatenation along channels reaches {name}")
        if not keeps:
            if x.space is None:
                return [_V(value=v) for v in self.bind(eqn, [i.value for i in ins])]
            return self.opaque(eqn, ins, f"{name} mixes the channel axis")
        outs = self.bind(eqn, [i.value for i in ins], **overrides)
        for i in ins[1:]:  # e.g. the padding value of pad: a scalar, never a space
            self.block_value(i, f"used as an operand of {name}")
        origins = x.origins if x.space is None and not x.segs else frozenset()
        return [_V(x.space, origins, v, x.segs) for v in outs]

    def consume(self, kernel: str, axis: int, lhs: _V, out: int) -> None:
        """Records ``kernel``'s input-channel axis as a consumer of ``lhs``:
        one member per segment (with its offset) for a concatenation."""
        if lhs.space is not None:
            self.spaces[self.find(lhs.space)].consumers.append(Member(kernel, axis))
        for s, o, n in lhs.segs:
            self.spaces[self.find(s)].consumers.append(Member(kernel, axis, o, n))
        ins = [lhs.space] if lhs.space is not None else [s for s, _, _ in lhs.segs]
        if any(s in self.input_spaces for s in ins):
            self.first_conv.add(out)

    def kernel_of(self, info: _V) -> str | None:
        return next(iter(info.origins)) if info.space is None and len(info.origins) == 1 else None

    def conv(self, eqn, ins, avals, out_avals) -> list[_V]:
        lhs, rhs = ins
        kernel = self.kernel_of(rhs)
        dn = eqn.params["dimension_numbers"]
        nd = len(avals[0].shape)
        if (
            kernel is None
            or (lhs.space is None and lhs.origins)
            or dn.lhs_spec[1] != nd - 1
            or dn.out_spec[1] != nd - 1
            or eqn.params["batch_group_count"] != 1
        ):
            return self.opaque(eqn, ins, "convolution without a kernel parameter or not NHWC")
        cin = avals[0].shape[-1]
        cout = out_avals[0].shape[-1]
        groups = eqn.params["feature_group_count"]
        o_axis, i_axis = dn.rhs_spec[0], dn.rhs_spec[1]
        spatial = [avals[1].shape[d] for d in dn.rhs_spec[2:]]
        flops = 2 * _size(out_avals[0].shape) * int(np.prod(spatial)) * (cin // groups)
        strided = any(s > 1 for s in eqn.params["window_strides"])
        overrides = {}
        if lhs.segs and groups != 1:
            return self.opaque(eqn, ins, "grouped convolution of a concatenation along channels")
        if groups == 1:
            out = self.new_space(cout)
            self.spaces[out].producers.append(Member(kernel, o_axis))
            self.consume(kernel, i_axis, lhs, out)
            if strided:
                self.downsample.add(out)
            self.ops.append((kernel, lhs.space, out, flops, False, _seg_sizes(lhs)))
        elif groups == cin == cout and lhs.space is not None:
            out = lhs.space
            self.spaces[self.find(out)].producers.append(Member(kernel, o_axis))
            self.ops.append((kernel, None, out, flops, True, ()))
            if self.evaluate:
                overrides["feature_group_count"] = np.shape(lhs.value)[-1]
        else:
            return self.opaque(eqn, ins, f"grouped convolution ({groups} groups)")
        outs = self.bind(eqn, [lhs.value, rhs.value], **overrides)
        return [_V(out, frozenset(), outs[0])]

    def dot(self, eqn, ins, avals, out_avals) -> list[_V]:
        lhs, rhs = ins
        kernel = self.kernel_of(rhs)
        (lc, rc), (lb, _rb) = eqn.params["dimension_numbers"]
        nd = len(avals[0].shape)
        if (
            kernel is None
            or (lhs.space is None and lhs.origins)
            or len(avals[1].shape) != 2
            or tuple(lb) != ()
            or tuple(lc) != (nd - 1,)
            or len(rc) != 1
        ):
            return self.opaque(eqn, ins, "dot_general that is not a dense layer")
        cin = avals[0].shape[-1]
        o_axis = 1 - rc[0]
        out = self.new_space(avals[1].shape[o_axis])
        self.spaces[out].producers.append(Member(kernel, o_axis))
        self.consume(kernel, rc[0], lhs, out)
        flops = 2 * _size(out_avals[0].shape) * cin
        self.ops.append((kernel, lhs.space, out, flops, False, _seg_sizes(lhs)))
        outs = self.bind(eqn, [lhs.value, rhs.value])
        return [_V(out, frozenset(), outs[0])]


def _seg_sizes(v: _V) -> tuple[tuple[int, int], ...]:
    return tuple((s, n) for s, _, n in v.segs)


def trace_model(apply_fn: Callable[..., Any], variables: Any, x: Any):
    """``(closed jaxpr, variables paths)`` of ``apply_fn(variables, x)``.

    The jaxpr's inputs are the variables' leaves in `flatten_params` order, then ``x``.
    """
    paths = list(flatten_params(variables))
    closed = jax.make_jaxpr(lambda v, inp: apply_fn(v, inp))(variables, x)
    return closed, paths


def _walk(walker: _Walker, closed, paths: Sequence[str], leaves: Sequence[Any], x: Any):
    inputs = [_V(None, frozenset([p]), leaf) for p, leaf in zip(paths, leaves, strict=True)]
    x_aval = closed.jaxpr.invars[len(paths)].aval
    x_space = walker.new_space(_last(x_aval) or 1)
    walker.input_spaces.add(x_space)
    walker.spaces[x_space].reasons.append("model input")
    inputs.append(_V(x_space, frozenset(), x))
    consts = [_V(value=c) for c in closed.consts]
    return walker.run(closed.jaxpr, consts, inputs)


def build_pruning_graph(
    apply_fn: Callable[..., Any],
    variables: Any,
    x: Any,
    *,
    targeted: Callable[[str], bool] = lambda path: True,
    prune_first_conv: bool = False,
    prune_downsample_convs: bool = False,
) -> PruningGraph:
    """Traces ``apply_fn(variables, x)`` and groups its channels.

    Args:
      apply_fn: the model's forward, ``apply_fn(variables, x)`` (one input).
      variables: the model's variables (``params``, ``batch_stats``, ...).
      x: an example input (only its shape and dtype matter).
      targeted: whether a producer kernel (variables path) is inside the
        algorithm's scopes; a group with a kernel outside them is unprunable.
      prune_first_conv: prune the output filters of convolutions reading the model input.
      prune_downsample_convs: prune the output filters of strided convolutions.

    Returns:
      The `PruningGraph`.

    Example:
      >>> graph = build_pruning_graph(model.apply, variables, x)  # doctest: +SKIP
      >>> [[m.path for m in g.producers] for g in graph.prunable_groups]  # doctest: +SKIP
    """
    closed, paths = trace_model(apply_fn, variables, x)
    walker = _Walker(evaluate=False, kept=None)
    outs = _walk(walker, closed, paths, [None] * len(paths), None)
    for o in outs:
        walker.block_value(o, "model output")
    # A kernel used twice (shared weights) ties the spaces it appears in
    # (a consumer of a concatenation: segment by segment).
    for role in ("producers", "consumers"):
        owner: dict[tuple[str, int], int] = {}
        for s in range(len(walker.spaces)):
            for m in getattr(walker.spaces[s], role):
                key = (m.path, m.offset)
                if key in owner:
                    walker.union(owner[key], s)
                owner[key] = s
    for s in walker.first_conv:
        if not prune_first_conv:
            walker.block(s, "first convolution (prune_first_conv is false)")
    for s in walker.downsample:
        if not prune_downsample_convs:
            walker.block(s, "downsampling convolution (prune_downsample_convs is false)")
    shapes = {p: tuple(np.shape(leaf)) for p, leaf in flatten_params(variables).items()}
    roots: dict[int, list[int]] = {}
    for s in range(len(walker.spaces)):
        roots.setdefault(walker.find(s), []).append(s)
    groups, space_group = [], {}
    for root, members in roots.items():
        producers = [m for s in members for m in walker.spaces[s].producers]
        if not producers:
            continue
        index = len(groups)
        size = walker.spaces[root].size
        reasons = [r for s in members for r in walker.spaces[s].reasons]
        reasons += [f"{m.path} is outside the scopes" for m in producers if not targeted(m.path)]
        attached = []
        for path in dict.fromkeys(p for s in members for p in walker.spaces[s].attached):
            if shapes[path] and shapes[path][-1] == size:
                attached.append(Member(path, len(shapes[path]) - 1))
            else:
                reasons.append(f"{path} has shape {shapes[path]} against {size} channels")
        groups.append(
            ChannelGroup(
                index=index,
                size=size,
                producers=tuple(dict.fromkeys(producers)),
                consumers=tuple(
                    dict.fromkeys(m for s in members for m in walker.spaces[s].consumers)
                ),
                attached=tuple(attached),
                reasons=tuple(dict.fromkeys(reasons)),
            )
        )
        for s in members:
            space_group[s] = index
    ops = tuple(
        OpCount(
            kernel,
            space_group.get(i) if i is not None else None,
            space_group.get(o),
            f,
            dw,
            tuple((space_group.get(s), n) for s, n in segs),
        )
        for kernel, i, o, f, dw, segs in walker.ops
    )
    return PruningGraph(tuple(groups), ops, space_group, shapes)


def _size(shape: Sequence[Any]) -> int:
    """Elements of a shape; a symbolic (export) batch counts as 1 (FLOPs are
    only reported for the traced batch)."""
    total = 1
    for d in shape:
        total *= d if isinstance(d, int | np.integer) else 1
    return int(total)


def evaluate_jaxpr(
    graph: PruningGraph,
    apply_fn: Callable[..., Any],
    full_variables: Any,
    small_variables: Any,
    kept: Mapping[int, Any],
    x: Any,
) -> Any:
    """Runs the model with physically smaller variables.

    The model is traced at full size (``full_variables`` may be
    `jax.ShapeDtypeStruct` leaves) for ``x``'s shape, and the jaxpr is
    evaluated equation by equation on ``small_variables`` (sliced with
    ``kept``, see `nncf_jax.pruning.shrink`). Jittable.

    Args:
      graph: the `PruningGraph` of the model.
      apply_fn: the model's forward.
      full_variables: the variables' full shapes.
      small_variables: the sliced variables, same tree structure.
      kept: ``group index -> int32 indices`` of the kept channels.
      x: the input.
    """
    closed, paths = trace_model(apply_fn, full_variables, jax.ShapeDtypeStruct(x.shape, x.dtype))
    walker = _Walker(evaluate=True, kept=kept, space_group=graph.space_group)
    leaves = list(flatten_params(small_variables).values())
    outs = _walk(walker, closed, paths, leaves, x)
    out_tree = jax.tree_util.tree_structure(
        jax.eval_shape(apply_fn, full_variables, jax.ShapeDtypeStruct(x.shape, x.dtype))
    )
    return jax.tree_util.tree_unflatten(out_tree, [o.value for o in outs])
