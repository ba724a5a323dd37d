"""The DROC augmentation-string grammar: parse strings into specs, build specs into view functions.

``parse("cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5,+rotate90")`` turns the
reference's ``--aug_list`` syntax into plain data (a tuple of ``ViewSpec``); it runs no TensorFlow
op, so configs can be validated before anything is built. ``build_view_fn`` then turns the specs
into one function ``fn(image, seed) -> (view_0, ..., view_{V-1})`` made of the ops registered in
``AUG_OPS``. Views are comma separated; a view starting with ``+`` extends view 0 (``+`` alone
copies it); inside a view the ops are ``+``-separated and applied in order; ``x`` resets the
chain to a plain resize. Numeric parameters are token suffixes (``cnr0.5``, ``crop24``,
``gray0.2``), and ``jitter`` takes ``_b``/``_c``/``_s``/``_h`` suffixes in any order.
"""

from __future__ import annotations

import dataclasses
import decimal
import inspect
import re
from collections.abc import Callable, Sequence

import tensorflow as tf

from deep_representation_one_class.augment.ops import AUG_OPS, AugmentError, Op, factory_params

__all__ = [
    "PAPER_AUG",
    "ROTATIONS",
    "AugmentError",
    "OpSpec",
    "ViewSpec",
    "build_view_fn",
    "format_views",
    "parse",
    "valid_tokens",
    "view_names",
]

# The reference scripts' augmentation (spec §2): crop, flip, colour jitter, grey, blur.
PAPER_AUG = "cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5"
# Views 1-3 of rotation prediction: view 0 rotated by 90, 180 and 270 degrees.
ROTATIONS = ",+rotate90,+rotate180,+rotate270"

# The reset token: "x" replaces the chain built so far with the test-mode base op, i.e. a resize.
_RESET = "x"

# Ops whose single parameter is written as a numeric suffix: canonical op -> (param, kind).
_SUFFIX_PARAMS: dict[str, tuple[str, str]] = {
    "cnr": ("min_scale", "scale"),
    "crop": ("crop_size", "size"),
    "gray": ("p", "prob"),
    "blur": ("p", "prob"),
    "cutout": ("scale", "scale"),
}

# Ops whose parameters are written as "_<key><number>" suffixes: op -> {key: (param, kind)}.
_KEYED_PARAMS: dict[str, dict[str, tuple[str, str]]] = {
    "jitter": {
        "b": ("brightness", "nonneg"),
        "c": ("contrast", "unit"),
        "s": ("saturation", "unit"),
        "h": ("hue", "nonneg"),
    },
}

# kind -> (check, description of the valid values).
_KINDS: dict[str, tuple[Callable[[float], bool], str]] = {
    "prob": (lambda v: 0.0 <= v <= 1.0, "a probability in [0, 1]"),
    "scale": (lambda v: 0.0 < v <= 1.0, "in (0, 1]"),
    "unit": (lambda v: 0.0 <= v <= 1.0, "in [0, 1]"),
    "nonneg": (lambda v: v >= 0.0, ">= 0"),
    "size": (lambda v: v > 0, "a positive integer"),
}

_FLOAT_RE = re.compile(r"(?:\d+(?:\.\d*)?|\.\d+)")
_INT_RE = re.compile(r"\d+")
_NAME_RE = re.compile(r"([a-z_]+)(.*)")


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """One op of a view: a canonical registered name and its parameters (defaults filled in).

    Attributes:
      name: canonical ``AUG_OPS`` key, e.g. ``"cnr"`` (never an alias such as
        ``"crop_and_resize"``).
      params: ``(param, value)`` pairs in the factory's signature order.
    """

    name: str
    params: tuple[tuple[str, float], ...] = ()

    @property
    def kwargs(self) -> dict[str, float]:
        """The parameters as keyword arguments for the op factory."""
        return dict(self.params)

    @property
    def token(self) -> str:
        """The canonical token string, e.g. ``cnr0.5`` or ``jitter_b0.4_c0.4_s0.4_h0``."""
        values = self.kwargs
        if self.name in _KEYED_PARAMS:
            keys = _KEYED_PARAMS[self.name]
            return self.name + "".join(
                f"_{key}{_format_number(values[param])}" for key, (param, _) in keys.items()
            )
        if self.name in _SUFFIX_PARAMS:
            return self.name + _format_number(values[_SUFFIX_PARAMS[self.name][0]])
        return self.name


@dataclasses.dataclass(frozen=True)
class ViewSpec:
    """The ordered ops producing one view."""

    ops: tuple[OpSpec, ...]

    @property
    def spec_string(self) -> str:
        """The canonical ``+``-joined token string of this view."""
        return "+".join(op.token for op in self.ops)


def _format_number(value: float) -> str:
    # Positional notation (never "1e-05"), so that parse() reads the token back exactly.
    return str(value) if isinstance(value, int) else format(decimal.Decimal(repr(value)), "f")


def valid_tokens() -> list[str]:
    """The op names accepted by the grammar (registered names, aliases and ``x``), sorted."""
    return sorted([*AUG_OPS.names(with_aliases=True), _RESET])


def _fail(message: str, where: str) -> AugmentError:
    return AugmentError(f"{message} {where}")


def _number(text: str, kind: str, what: str, where: str) -> float | int:
    """Parses and validates a numeric parameter written in the string."""
    if kind == "size":
        if not _INT_RE.fullmatch(text):
            raise _fail(f"{what} must be a positive integer, got '{text}'", where)
        value: float | int = int(text)
    else:
        if not _FLOAT_RE.fullmatch(text):
            raise _fail(
                f"{what} must be a non-negative decimal number such as 0.5, got '{text}'", where
            )
        value = float(text)
    check, valid = _KINDS[kind]
    if not check(value):
        raise _fail(f"{what} must be {valid}, got {text}", where)
    return value


def _spec(name: str, given: dict[str, float | int], where: str) -> OpSpec:
    """An OpSpec with the factory defaults filled in for parameters not given."""
    params = []
    for param, default in factory_params(name).items():
        if param in given:
            params.append((param, given[param]))
        elif default is inspect.Parameter.empty:
            example = f"{name}24" if name == "crop" else f"{name}<number>"
            raise _fail(f"op '{name}' needs a parameter (e.g. '{example}')", where)
        else:
            params.append((param, default))
    return OpSpec(name, tuple(params))


def _parse_keyed(name: str, rest: str, where: str) -> OpSpec:
    """Parses ``_b0.4_c0.4``-style suffixes of a keyed op such as jitter."""
    keys = _KEYED_PARAMS[name]
    syntax = "".join(f"_{key}<number>" for key in keys)
    if rest and not rest.startswith("_"):
        raise _fail(f"'{name}' parameters are written as {name}{syntax} (any subset/order)", where)
    given: dict[str, float | int] = {}
    for part in rest.split("_")[1:]:
        key, text = part[:1], part[1:]
        if key not in keys or not text:
            raise _fail(
                f"bad {name} parameter '_{part}'; use {syntax} with keys "
                f"{', '.join(keys)} (any subset/order)",
                where,
            )
        param, kind = keys[key]
        if param in given:
            raise _fail(f"{name} parameter '_{key}' is given twice", where)
        given[param] = _number(text, kind, f"{name} {param} ('_{key}')", where)
    return _spec(name, given, where)


def _parse_token(token: str, where: str) -> OpSpec:
    """Parses one non-reset token into an OpSpec."""
    if token in AUG_OPS:
        return _spec(AUG_OPS.canonical(token), {}, where)
    head = token.split("_", 1)[0]
    if head in _KEYED_PARAMS:
        return _parse_keyed(head, token[len(head) :], where)
    match = _NAME_RE.fullmatch(token)
    name = match.group(1) if match else token
    if not match or name not in AUG_OPS:
        raise _fail(
            f"unknown augmentation op '{token}'; valid ops: {', '.join(valid_tokens())}"
            " (cnr/crop/gray/blur/cutout take a numeric suffix, jitter takes _b/_c/_s/_h)",
            where,
        )
    name = AUG_OPS.canonical(name)
    if name in _KEYED_PARAMS:
        return _parse_keyed(name, match.group(2), where)
    if name not in _SUFFIX_PARAMS:
        raise _fail(f"op '{name}' takes no parameter, got '{token}'", where)
    param, kind = _SUFFIX_PARAMS[name]
    value = _number(match.group(2), kind, f"{name} {param}", where)
    return _spec(name, {param: value}, where)


def parse(aug_list: str) -> tuple[ViewSpec, ...]:
    """Parses a DROC augmentation string into one ViewSpec per produced view.

    Pure Python (no TensorFlow op runs), so it can validate a config early.

    Args:
      aug_list: e.g. ``"cnr0.5+hflip+jitter_b0.4_c0.4_s0.4_h0.4+gray0.2+blur0.5,+"``. Views are
        comma separated; a view starting with ``+`` is view 0's string followed by the rest
        (``+`` alone copies view 0). Tokens are ``+`` separated, empty tokens are dropped, names
        are case-insensitive and aliases are canonicalised (``crop_and_resize`` -> ``cnr``).
        ``x`` resets the chain to ``[resize]``.

    Returns:
      A non-empty tuple of ViewSpec with canonical names and all parameters filled in.

    Raises:
      AugmentError: empty string or view, a leading ``+`` on the first view, an unknown op, a
        malformed number or an out-of-range parameter.
    """
    if not isinstance(aug_list, str):
        raise AugmentError(f"augmentation list must be a string, got {type(aug_list).__name__}")
    if not aug_list.strip():
        raise AugmentError("augmentation list is empty; use e.g. 'x' for un-augmented images")
    raw_views = [view.strip().lower() for view in aug_list.split(",")]
    views = []
    for index, raw in enumerate(raw_views):
        where = f"(view {index} '{raw}' of '{aug_list}')"
        if not raw:
            raise _fail(f"view {index} is empty; use 'x' for an un-augmented view", where)
        if raw.startswith("+"):
            if index == 0:
                raise _fail("the first view must not start with '+' (there is no view 0)", where)
            # Reference behaviour: the *string* of view 0 is prepended, so an "x" in the suffix
            # still resets everything before it.
            raw = raw_views[0] + raw
        ops: list[OpSpec] = []
        for token in (t.strip() for t in raw.split("+")):
            if not token:
                continue
            if token == _RESET:
                ops = [OpSpec("resize")]
            else:
                ops.append(_parse_token(token, where))
        if not ops:
            raise _fail(f"view {index} has no op; use 'x' for an un-augmented view", where)
        views.append(ViewSpec(tuple(ops)))
    return tuple(views)


def format_views(views: Sequence[ViewSpec]) -> str:
    """The canonical, fully expanded string of ``views`` (``parse`` of it gives ``views`` back)."""
    return ",".join(view.spec_string for view in views)


def view_names(aug_list: str | Sequence[ViewSpec]) -> tuple[str, ...]:
    """Canonical, fully expanded string of each view, e.g. for logs and summaries."""
    views = parse(aug_list) if isinstance(aug_list, str) else aug_list
    return tuple(view.spec_string for view in views)


def _build_chain(
    view: ViewSpec,
    view_index: int,
    size: int,
    training: bool,
    reference_blur: bool,
    reference_jitter: bool,
) -> list[Op]:
    chain: list[Op] = []
    for position, op in enumerate(view.ops):
        kwargs = op.kwargs
        if op.name == "blur":
            kwargs["reference_blur"] = reference_blur
        if op.name == "jitter" and reference_jitter:
            # The reference drew one component order per view when it built the graph; here a
            # fixed function of (view, position) does, so runs are reproducible.
            kwargs["reference_order"] = 1000 * view_index + position
        chain.extend(AUG_OPS.get(op.name)(size=size, training=training, **kwargs))
    return chain


def build_view_fn(
    views: Sequence[ViewSpec] | str,
    size: int,
    training: bool,
    reference_blur: bool = False,
    reference_jitter: bool = False,
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, ...]]:
    """Builds the function that turns one image into its augmented views.

    Args:
      views: parsed views (or an augmentation string, which is parsed first).
      size: the target side H (``input_shape[0]``) handed to every op.
      training: False gives the test-mode ops (random ops are the identity, crop-type ops are a
        resize).
      reference_blur: True reproduces the reference, whose blur never ran; False blurs as
        intended. Only the ``blur`` op receives it.
      reference_jitter: True reproduces the reference's colour jitter: no clipping to [0, 1]
        and one component order per view for the whole run; False clips after each component
        and draws the order per sample.

    Returns:
      ``fn(image, seed)``: ``image`` is [H, W, C] uint8 (scaled by 1/255) or float in [0, 1] with
      a static C; ``seed`` is an int32 or int64 [2] stateless seed (equal values give equal
      outputs whatever the dtype). It returns a tuple of
      ``len(views)`` float32 images, [size, size, C] for chains that end in a resize-type op
      (``crop<N>``/``base`` give N x N in training; chains without a resize keep the input size).
      Views get independent seeds split from ``seed``, and the ops of a view get seeds split from
      the view's seed, so the output is a deterministic function of ``(image, seed)``.

    Raises:
      AugmentError: invalid views, size or op parameters (raised here, not at run time).
    """
    if isinstance(views, str):
        views = parse(views)
    views = tuple(views)
    if not views or not all(isinstance(v, ViewSpec) for v in views):
        raise AugmentError("build_view_fn needs a non-empty sequence of ViewSpec (see parse())")
    if not isinstance(size, int) or size <= 0:
        raise AugmentError(f"image size must be a positive int, got {size!r}")
    chains = [
        _build_chain(view, index, size, training, reference_blur, reference_jitter)
        for index, view in enumerate(views)
    ]

    def view_fn(image: tf.Tensor, seed: tf.Tensor) -> tuple[tf.Tensor, ...]:
        image = tf.convert_to_tensor(image)
        if image.dtype == tf.uint8:
            image = tf.cast(image, tf.float32) / 255.0
        elif image.dtype.is_floating:
            image = tf.cast(image, tf.float32)
        else:
            raise AugmentError(f"images must be uint8 or float in [0, 1], got {image.dtype.name}")
        # The stateless kernels hash int32 and int64 seeds differently; one dtype makes the
        # output a function of the seed's values only.
        seed = tf.cast(seed, tf.int64)
        view_seeds = tf.random.experimental.stateless_split(seed, num=len(chains))
        outputs = []
        for index, chain in enumerate(chains):
            out = image
            if chain:
                op_seeds = tf.random.experimental.stateless_split(view_seeds[index], len(chain))
                for position, op in enumerate(chain):
                    out = op(out, op_seeds[position])
            outputs.append(out)
        return tuple(outputs)

    return view_fn
