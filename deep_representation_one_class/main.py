"""Command line of training: the only module that defines absl flags.

``droc train --method=contrastive`` (or its aliases ``python train_and_eval_loop.py``,
``python -m deep_representation_one_class.train`` and ``droc-train``) parses the flags, builds
one validated ``Config`` from the flags the user gave (``resolve.build``: the method's and the
dataset's registered defaults fill the rest) and calls ``training.runner.run``. The flags are
generated from ``Config``'s fields and from every registered method's and task's options, so a
new setting is declared once. Every flag of the reference keeps its name and meaning (spec §2);
``--help`` lists them all.
"""

from __future__ import annotations

import os
import sys
import typing
from typing import Any

from deep_representation_one_class.utils.allocator import ensure_fast_allocator

# First of all: a command re-executes itself once with tcmalloc (or glibc tunables), which
# the dynamic loader and glibc only read at start (utils/allocator.py).
ensure_fast_allocator()

from absl import app, flags, logging  # noqa: E402

from deep_representation_one_class import cli  # noqa: E402

# Before TensorFlow is first imported: resolve imports the registries, which import it.
cli.quiet_tensorflow()
cli.require_tensorflow()

from deep_representation_one_class import config as config_lib  # noqa: E402
from deep_representation_one_class import resolve  # noqa: E402
from deep_representation_one_class.errors import ConfigError  # noqa: E402
from deep_representation_one_class.training import runner  # noqa: E402

FLAGS = flags.FLAGS

# Reference flags that are not settings of the run itself.
flags.DEFINE_string(
    "model_dir",
    None,
    "Run folder (checkpoints, tb/, summary.json). Default: "
    "runs/<method>[_da-<type>]/<dataset>/c<category>/s<seed>.",
)
flags.DEFINE_string("ckpt_prefix", "", "Optional sub-folder of --model_dir (reference flag).")
flags.DEFINE_string(
    "file_path", None, "Optional run sub-folder under model_dir/ckpt_prefix (reference flag)."
)
flags.DEFINE_bool("verbose", False, "Show full tracebacks on errors.")

_SEQUENCE_FIELDS: dict[str, type] = {}


def _flag_kind(annotation: Any, default: Any) -> tuple[str, type | None]:
    """('bool'|'int'|'float'|'str'|'list', element type of a list)."""
    text = str(annotation)
    if isinstance(default, bool) or text == "bool":
        return "bool", None
    if text.startswith("tuple[int"):
        return "list", int
    if text.startswith("tuple[str") or isinstance(default, tuple):
        return "list", str
    if isinstance(default, int) or text == "int":
        return "int", None
    if isinstance(default, float) or text == "float":
        return "float", None
    return "str", None


def _define(name: str, kind: str, default: Any, help_text: str, choices=None) -> None:
    shown = default
    if kind == "list":
        shown = ",".join(str(v) for v in default) if default else None
    if choices:
        flags.DEFINE_enum(name, shown, list(choices), help_text)
    elif kind == "bool":
        flags.DEFINE_bool(name, default, help_text)
    elif kind == "int":
        flags.DEFINE_integer(name, default, help_text)
    elif kind == "float":
        flags.DEFINE_float(name, default, help_text)
    elif kind == "list":
        flags.DEFINE_list(name, shown, help_text)
    else:
        flags.DEFINE_string(name, default, help_text)


def _define_all() -> None:
    hints = typing.get_type_hints(config_lib.Config)
    for field in config_lib.flag_fields():
        default = config_lib.field_default(field)
        kind, elem = _flag_kind(hints[field.name], default)
        if kind == "list":
            _SEQUENCE_FIELDS[field.name] = elem or str
        _define(
            field.name,
            kind,
            default,
            config_lib.field_help(field),
            field.metadata.get("choices"),
        )
    for name, (opt, owners) in sorted(resolve.option_owners().items()):
        kind, elem = _flag_kind(opt.type.__name__, opt.default)
        if kind == "list":
            _SEQUENCE_FIELDS[name] = elem or str
        _define(name, kind, opt.default, f"{opt.help} [{', '.join(owners)}]")


_define_all()


def _parse_list(name: str, values: list[str]) -> tuple:
    if name == "head_dims" and [v.strip().lower() for v in values] in (["none"], [""], []):
        return ()
    elem = _SEQUENCE_FIELDS[name]
    if elem is int:
        try:
            return tuple(int(float(v)) for v in values)
        except ValueError:
            raise ConfigError(
                f"--{name} must be comma-separated integers, got {','.join(values)}"
            ) from None
    return tuple(v.strip() for v in values if v.strip())


def given_settings(f=FLAGS) -> dict[str, Any]:
    """The settings the user gave on the command line (flag name -> typed value)."""
    names = {fl.name for fl in config_lib.flag_fields()} | set(resolve.option_owners())
    given: dict[str, Any] = {}
    for name in sorted(names):
        if not f[name].present:
            continue
        value = f[name].value
        if name in _SEQUENCE_FIELDS:
            value = _parse_list(name, value or [])
        given[name] = value
    return given


def default_model_dir(method: str, dataset: str, category: str, seed: int, distaug: str) -> str:
    name = method if distaug in ("", "1") else f"{method}_da-{distaug}"
    safe_cat = str(category).replace("/", "_").replace(" ", "_")
    return os.path.join("runs", name, dataset, f"c{safe_cat}", f"s{seed}")


def config_from_flags(f=FLAGS) -> config_lib.Config:
    """Builds and validates the Config from parsed flags (registered defaults filled in)."""
    cfg = resolve.build(**given_settings(f))
    model_dir = f.model_dir or default_model_dir(
        cfg.method, cfg.dataset, cfg.category, cfg.seed, cfg.distaug_type
    )
    model_dir = os.path.join(model_dir, f.ckpt_prefix or "", f.file_path or "")
    return cfg.replace(model_dir=os.path.normpath(model_dir))


def main(argv) -> int:
    if len(argv) > 1:
        raise ConfigError(f"unexpected arguments {argv[1:]}; flags look like --name=value")
    cfg = config_from_flags()
    logging.info("Run folder: %s", cfg.model_dir)
    result = runner.run(cfg)
    if not result.metrics and result.status in ("worker_done", "already_complete"):
        print(f"\nworker done (step {result.global_step}); the chief writes {result.model_dir}")
        return 0
    print(
        f"\n{cfg.method} on {cfg.dataset} category {cfg.category} "
        f"({result.status.replace('_', ' ')}, step {result.global_step}); run folder "
        f"{result.model_dir}"
    )
    print(cli.format_table(result.metrics))
    return 0


_HELP = ("-h", "-?", "--help", "--helpshort")


def usage(prog: str) -> str:
    """``--help``: what the command does and every flag of a run (absl's own ``--help`` lists
    only the flags of ``__main__``, which defines none here)."""
    flags_help = FLAGS.module_help(__name__).split("\n", 2)[-1]  # without the module's name
    return (
        f"usage: {prog} [--flag=value ...]\n\n"
        "Trains a representation on the inliers of --dataset/--category, then fits and "
        "evaluates\none-class classifiers on it; prints the AUROC table and writes the run "
        "folder.\n\nflags (--helpfull adds absl's and TensorFlow's own):\n"
        f"{flags_help}\n"
    )


def parse_flags(argv: list[str]) -> list[str]:
    """Parses the command line; a bad flag ends in one 'error:' line and exit code 2.

    (absl's own parser prints "FATAL Flags parsing error" and exits with 1.)
    """
    if any(a in _HELP for a in argv[1:]):
        sys.stdout.write(usage(os.path.basename(argv[0]) if argv else "droc train"))
        sys.exit(0)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"error: {msg} (see --helpfull)", file=sys.stderr)
        sys.exit(cli.EXIT_USAGE)


def _guarded_main(argv) -> None:
    sys.exit(cli.guard(lambda: main(argv), verbose=FLAGS.verbose))


def run_cli() -> None:
    """Console-script entry point."""
    logging.set_verbosity(logging.INFO)
    app.run(_guarded_main, flags_parser=parse_flags)


__all__ = ["config_from_flags", "default_model_dir", "given_settings", "main", "run_cli"]
