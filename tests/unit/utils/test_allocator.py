"""The commands' allocator choice (utils/allocator.py): one re-exec with tcmalloc, the switch
that turns it off, the fallback to glibc tunables, the loop guard, and the runtime record in
config.json; plus --precision=auto under oneDNN's ISA cap."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from deep_representation_one_class.utils import allocator

REPO = str(pathlib.Path(__file__).resolve().parents[3])
TCMALLOC = allocator.find_tcmalloc({})
needs_tcmalloc = pytest.mark.skipif(
    TCMALLOC is None or not sys.platform.startswith("linux"),
    reason="tcmalloc is not installed (apt-get install libtcmalloc-minimal4)",
)
_INHERITED = ("LD_PRELOAD", "DROC_ALLOCATOR", "DROC_ALLOCATOR_EXEC", "DROC_TCMALLOC",
              *allocator.GLIBC_TUNABLES)  # fmt: skip


def _state(**env: str) -> dict:
    """What ``python -m deep_representation_one_class.utils.allocator`` runs with."""
    clean = {k: v for k, v in os.environ.items() if k not in _INHERITED}
    proc = subprocess.run(
        [sys.executable, "-m", "deep_representation_one_class.utils.allocator"],
        cwd=REPO,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout  # one process printed once: no second run
    return {**json.loads(lines[0]), "stderr": proc.stderr}


# ----------------------------------------------------------------------------- plan (pure)
def test_plan_preloads_tcmalloc_once_and_keeps_other_preloads():
    changes = allocator.plan({"LD_PRELOAD": "/x/libfoo.so"}, pid=7, loaded=None, tcmalloc="/t.so")
    assert changes["LD_PRELOAD"] == "/t.so /x/libfoo.so"
    assert changes["DROC_ALLOCATOR_EXEC"] == "7"
    # The re-executed process (same pid, marker set) never re-executes again, loaded or not.
    assert allocator.plan(changes, pid=7, loaded=None, tcmalloc="/t.so") is None
    assert allocator.plan(changes, pid=7, loaded="/t.so", tcmalloc="/t.so") is None
    # A child inherits the loaded library: nothing to do either.
    assert allocator.plan(changes, pid=8, loaded="/t.so", tcmalloc="/t.so") is None


def test_plan_switch_and_fallback():
    assert allocator.plan({"DROC_ALLOCATOR": "system"}, pid=1, loaded=None, tcmalloc="/t") is None
    for env in ({}, {"DROC_ALLOCATOR": "glibc"}):
        tcmalloc = None if not env else "/t.so"
        changes = allocator.plan(env, pid=1, loaded=None, tcmalloc=tcmalloc)
        assert "LD_PRELOAD" not in changes
        assert {k: changes[k] for k in allocator.GLIBC_TUNABLES} == allocator.GLIBC_TUNABLES
    # Tunables the user (or a parent) set are kept and not re-read: no re-exec for them.
    assert allocator.plan(dict(allocator.GLIBC_TUNABLES), pid=1, loaded=None, tcmalloc=None) is None
    with pytest.raises(allocator.AllocatorError, match="not one of auto, tcmalloc"):
        allocator.plan({"DROC_ALLOCATOR": "fast"}, pid=1, loaded=None, tcmalloc=None)
    with pytest.raises(allocator.AllocatorError, match="libtcmalloc-minimal4"):
        allocator.plan({"DROC_ALLOCATOR": "tcmalloc"}, pid=1, loaded=None, tcmalloc=None)


def test_imported_outside_a_command_it_does_nothing(monkeypatch):
    # pytest is the program here: no re-exec, whatever is installed.
    monkeypatch.setattr(os, "execve", lambda *a: pytest.fail("re-executed pytest"))
    allocator.ensure_fast_allocator()


# ----------------------------------------------------------------------------- real re-exec
@needs_tcmalloc
def test_command_reexecutes_once_with_tcmalloc():
    state = _state()
    assert state["allocator"] == "tcmalloc" and state["reexecuted"] == "true"
    assert state["LD_PRELOAD"].split()[0] == TCMALLOC
    assert os.path.realpath(state["library"]) == os.path.realpath(TCMALLOC)


def test_switch_turns_it_off():
    state = _state(DROC_ALLOCATOR="system")
    assert state["allocator"] == "glibc" and state["reexecuted"] == "false"
    assert state["LD_PRELOAD"] is None


def test_missing_library_falls_back_to_glibc_tunables():
    state = _state(DROC_TCMALLOC="/nonexistent/libtcmalloc_minimal.so.4")
    assert state["allocator"] == "glibc-tuned" and state["reexecuted"] == "true"
    assert "MALLOC_MMAP_THRESHOLD_=33554432" in state["tunables"]
    assert "is not a file" in state["stderr"]


def test_a_library_that_fails_to_load_does_not_loop(tmp_path):
    fake = tmp_path / "libtcmalloc_minimal.so.4"
    fake.write_text("not a shared object\n")
    state = _state(DROC_TCMALLOC=str(fake))
    # The loader refuses the file and the process runs on with glibc; one exec, one line.
    assert state["reexecuted"] == "true" and state["allocator"] == "glibc"


def test_invalid_switch_is_one_line_and_exit_2():
    proc = subprocess.run(
        [sys.executable, "-m", "deep_representation_one_class.utils.allocator"],
        cwd=REPO,
        env={**os.environ, "DROC_ALLOCATOR": "fastest"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: DROC_ALLOCATOR='fastest' is not one of auto, tcmalloc, glibc, system "
        "(unset it for the default, auto)"
    ]


@needs_tcmalloc
def test_force_reexecutes_a_program_of_ones_own_before_tensorflow():
    code = (
        "import sys; from deep_representation_one_class.utils import allocator; "
        "allocator.ensure_fast_allocator(force=True); "
        "print('tensorflow' in sys.modules, allocator.current()['allocator'])"
    )
    clean = {k: v for k, v in os.environ.items() if k not in _INHERITED}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=clean, capture_output=True, text=True,
        timeout=60, check=True,
    ).stdout.split()  # fmt: skip
    assert out == ["False", "tcmalloc"]


_ENTRY_POINTS = [
    "train_and_eval_loop.py",
    "deep_representation_one_class/main.py",
    *(
        f"deep_representation_one_class/{v}.py"
        for v in ("evaluate", "score", "export", "explain", "report", "aggregate", "bench")
    ),
]


@pytest.mark.parametrize("path", _ENTRY_POINTS)
def test_entry_points_choose_the_allocator_before_anything_imports_tensorflow(path):
    import ast

    with open(os.path.join(REPO, path)) as f:
        body = ast.parse(f.read()).body
    calls = [
        i
        for i, node in enumerate(body)
        if isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and getattr(node.value.func, "id", "") == "ensure_fast_allocator"
    ]
    assert calls, f"{path} does not call ensure_fast_allocator()"
    for node in body[: calls[0]]:
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            # Only the standard library and the allocator itself may load before the call.
            assert module in ("__future__", "deep_representation_one_class.utils.allocator") or (
                not module.startswith(("deep_representation_one_class", "tensorflow", "keras"))
                and module.split(".")[0] in sys.stdlib_module_names
            ), f"{path}: 'from {module} import' runs before ensure_fast_allocator()"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                assert alias.name.split(".")[0] in sys.stdlib_module_names, (path, alias.name)
        else:
            assert isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant), (
                f"{path}: code runs before ensure_fast_allocator()"
            )


# ----------------------------------------------------------------------------- records
def test_config_json_records_the_runtime(tmp_path):
    from deep_representation_one_class import config as config_lib
    from deep_representation_one_class.training import runner
    from unit.training.test_runner import tiny_config

    cfg = tiny_config(tmp_path, train_steps=2)
    runner.run(cfg)
    with open(os.path.join(cfg.model_dir, "config.json")) as f:
        saved = json.load(f)
    runtime = saved["runtime"]
    assert runtime["allocator"] == allocator.current()["allocator"]
    assert {"onednn_max_cpu_isa", "intra_op_threads", "inter_op_threads"} <= set(runtime)
    # Not a setting: the config reads back, and the summary carries the same record.
    assert config_lib.Config.from_dict(saved).to_dict() == cfg.to_dict()
    with open(os.path.join(cfg.model_dir, "summary.json")) as f:
        assert json.load(f)["run"]["runtime"]["allocator"] == runtime["allocator"]


def test_precision_auto_honours_the_onednn_isa_cap(tmp_path):
    from deep_representation_one_class.utils import hardware

    flags = tmp_path / "cpuinfo"
    flags.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    assert hardware._cpu_has_bf16(str(flags), env={})
    for cap in ("AVX2", "avx512_core", "AVX512_CORE_VNNI"):
        assert not hardware._cpu_has_bf16(str(flags), env={"ONEDNN_MAX_CPU_ISA": cap})
    assert not hardware._cpu_has_bf16(str(flags), env={"DNNL_MAX_CPU_ISA": "AVX2"})
    for cap in ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL"):
        assert hardware._cpu_has_bf16(str(flags), env={"ONEDNN_MAX_CPU_ISA": cap})
